"""Tests of ``isrsim project`` / ``isrsim run`` (isrsim.workflows.project, .run) on tiny configurations."""

from __future__ import annotations

import numpy as np
import pytest

from isrsim.cli import main as cli_main
from isrsim.config import bundled_card
from isrsim.constants import ALPHA
from isrsim.detector import load_detector
from isrsim.exceptions import ConfigError
from isrsim.physics.darkphoton import n_f, sigma_aprime_gamma_isr_nb
from isrsim.workflows._common import parse_luminosities, read_candidate_tables
from isrsim.workflows.project import result_lines, run_projection


def _tiny_card(lumi="40/pb", toys=4, cap=None):
    card = bundled_card("project_besiii")
    p = card["project"]
    p["luminosity"] = lumi
    p["toys"] = toys
    p["mass"] = [1.6, 3.3]
    p.pop("mc_luminosity_max", None)
    if cap:
        p["mc_luminosity_max"] = cap
    del p["backgrounds"]["isr_pipi"]
    card["analysis"]["order"] = 4
    card["analysis"]["step"] = 0.05
    return card


def _read_csv(path):
    lines = [x for x in path.read_text().splitlines() if not x.startswith("#")]
    header = lines[0].split(",")
    data = np.array([[float(v) for v in x.split(",")] for x in lines[1:]])
    return header, data


def _fisher_eps(header, data, card):
    """Median expected eps per mass from the Fisher information of a Gaussian line on a locally
    flat background, per channel: sigma_S^2 = b 2 sqrt(pi) sigma_m / w (b = N_QED per bin of
    width w), yield per eps^2 Y = b 3 pi m / (2 N_f alpha w) (physics.md 6.2), channels combined
    in 1/sigma^2, median q~_mu 90 % limit eps^2 = 1.2816 sigma(eps^2) (arXiv:1007.1727). The
    polynomial profile widens it by a few %, and a median from 4 toys scatters by ~30 % per mass
    (neighbours correlated): tests compare the mean over the masses of eps_med/eps_Fisher with 1
    within 20 %. Coarse by design (eps ~ (sigma_m B)^(1/4): a factor 2 in sigma_m moves it by
    16-19 %); the exact scale check, an Asimov spectrum against the profiled Fisher information to
    1.5 % through the same analysis code, is test_limit.py::test_asimov_limit_matches_fisher_information."""
    w = card["analysis"]["bin_width"]
    m = data[:, header.index("mass_GeV")]
    info = np.zeros_like(m)
    for ch in ("mumu", "ee"):
        b = data[:, header.index(f"n_qed_bin_{ch}")]
        sig_m = data[:, header.index(f"sigma_m_GeV_{ch}")]
        y = b * 3 * np.pi * m / (2 * n_f(m) * ALPHA * w)
        info += y**2 / (b * 2 * np.sqrt(np.pi) * sig_m / w)
    return np.sqrt(1.2816 / np.sqrt(info))


def test_project_tiny_csv_png_and_cache(tmp_path):
    card = _tiny_card()
    s1 = run_projection(card, output=tmp_path / "out", progress=False)
    csv = tmp_path / "out" / "projection_besiii_40invpb.csv"
    png = tmp_path / "out" / "projection_besiii_40invpb.png"
    assert s1["csv"] == [str(csv)] and csv.exists() and png.stat().st_size > 10_000
    assert all(not b["cached"] for b in s1["backgrounds"])
    header, data = _read_csv(csv)
    med = data[:, header.index("eps_exp_median")]
    assert np.all(np.isfinite(med)) and np.all(med > 0)
    # Scale check against the Fisher information (_fisher_eps): the mean over the masses of
    # eps_med/eps_Fisher within 20 %
    assert np.mean(med / _fisher_eps(header, data, card)) == pytest.approx(1.0, abs=0.2)
    # N_QED(bin) (fitted polynomial at m) vs the selected candidates: 5 x the sum over the
    # hypotheses (one per 50 MeV = 5 bins, midpoint rule on a smooth curve: < 1 %) must equal
    # the number of mumu candidates in 1.6-3.3 GeV outside the J/psi window (Poisson spread
    # 1/sqrt(~1e4) = 1 %): tolerance 4 %.
    nq = data[:, header.index("n_qed_bin_mumu")]
    cands = read_candidate_tables(sorted((tmp_path / "out" / "cache").glob("*.parquet")))
    m = cands.m_ll[cands.select("mumu")]
    n_in = np.sum((m > 1.6) & (m < 3.3) & ~((m > 2.95) & (m < 3.2)))
    assert 5 * nq.sum() == pytest.approx(n_in, rel=0.04)
    # the line `isrsim run` / `isrsim project` print quotes the CSV's ranges
    (line,) = result_lines(s1)
    obs = data[:, header.index("eps_obs")]
    mass = data[:, header.index("mass_GeV")]
    assert line.startswith(f"  40/pb, {mass.min():.4g}-{mass.max():.4g} GeV: epsilon 90% CL upper limit: ")
    assert f"expected (median) {med.min():.2e} - {med.max():.2e}" in line
    assert f"pseudo-data {np.nanmin(obs):.2e} - {np.nanmax(obs):.2e}" in line
    # rerun: everything from the cache, identical numbers
    s2 = run_projection(card, output=tmp_path / "out", progress=False)
    assert all(b["cached"] for b in s2["backgrounds"])
    _, data2 = _read_csv(csv)
    np.testing.assert_array_equal(data, data2)


def test_cli_run_end_to_end(tmp_path, monkeypatch, capsys):
    """`isrsim run` (the README's main job) through the CLI on a small configuration: the
    bundled default card (BESIII, mu mu + e e + pi pi backgrounds, order-6 polynomials) at
    40/pb, 1.6-3.3 GeV, 4 toys; CSV and PNG in the default ./isrsim_output, the JSON summary on
    stdout, limits at the Fisher-information scale of :func:`_fisher_eps`, and a rerun from
    the cache."""
    import json

    monkeypatch.chdir(tmp_path)
    argv = ["run", "--luminosity", "40/pb", "--mass", "1.6", "3.3", "--toys", "4", "--quiet"]
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    s = json.loads(out)
    csv = tmp_path / "isrsim_output" / "projection_besiii_40invpb.csv"
    png = tmp_path / "isrsim_output" / "projection_besiii_40invpb.png"
    assert s["csv"] == ["isrsim_output/projection_besiii_40invpb.csv"] and csv.is_file()
    assert png.stat().st_size > 10_000
    card = bundled_card("default")
    assert [b["process"] for b in s["backgrounds"]] == list(card["project"]["backgrounds"])
    assert not any(b["cached"] for b in s["backgrounds"])
    p = s["projections"][0]
    assert p["orders"] == {"mumu": 6, "ee": 6} and p["n_toys"] == 4
    assert p["luminosity_invnb"] == pytest.approx(4e4)
    header, data = _read_csv(csv)
    m = data[:, header.index("mass_GeV")]
    assert m.min() >= 1.6 and m.max() <= 3.3 and not np.any((m > 2.95) & (m < 3.2))
    med = data[:, header.index("eps_exp_median")]
    assert np.all(np.isfinite(med)) and np.all(med > 0)
    assert np.mean(med / _fisher_eps(header, data, card)) == pytest.approx(1.0, abs=0.2)
    assert cli_main(argv) == 0
    s2 = json.loads(capsys.readouterr().out)
    assert all(b["cached"] for b in s2["backgrounds"])
    np.testing.assert_array_equal(_read_csv(csv)[1], data)


def test_project_luminosity_list_scales_mc(tmp_path):
    """Two target luminosities with the MC capped at the smaller one: the larger is scaled
    (and says so): its QED yields per bin are 4x (to 0.2 %: the polynomial is refitted to the
    scaled spectrum, whose Poisson weights differ; measured <= 0.1 %), and both
    expected-limit medians agree with the Fisher-information expectation at their luminosity
    (:func:`_fisher_eps`, eps ~ L^-1/4 in the background-dominated regime)."""
    card = _tiny_card(lumi="30/pb,120/pb", cap="30/pb")
    s = run_projection(card, output=tmp_path / "o", progress=False)
    assert len(s["csv"]) == 2
    p1, p2 = s["projections"]
    assert not p1["mc_scaled_to_luminosity"] and p2["mc_scaled_to_luminosity"]
    assert any("scaled" in n for n in p2["notes"])
    # the scaled spectrum fluctuates like the MC, 2x (sqrt(120/30)) more than data at 120/pb:
    # no significance is reported for it (it was ~2x inflated)
    assert p1["max_local_z"] is not None and p1["global_p_toys"] is not None
    assert p2["max_local_z"] is None and p2["global_p_toys"] is None
    h, d1 = _read_csv(tmp_path / "o" / "projection_besiii_30invpb.csv")
    _, d2 = _read_csv(tmp_path / "o" / "projection_besiii_120invpb.csv")
    assert np.all(np.isfinite(d1[:, h.index("z_local")])) and np.all(np.isnan(d2[:, h.index("z_local")]))
    for ch in ("mumu", "ee"):
        k = h.index(f"n_qed_bin_{ch}")
        np.testing.assert_allclose(d2[:, k] / d1[:, k], 4.0, rtol=2e-3)
    j = h.index("eps_exp_median")
    for d in (d1, d2):
        assert np.mean(d[:, j] / _fisher_eps(h, d, card)) == pytest.approx(1.0, abs=0.2)
    assert (tmp_path / "o" / "projection_besiii.png").exists()


def test_cli_project_errors(tmp_path, capsys):
    for args, want in (
        (["project", "--detector", "lep", "-o", str(tmp_path)], "no bundled projection card"),
        (["project", "--detector", "besiii", "--luminosity=-1/fb", "-o", str(tmp_path)], "luminosity"),
        (["project", "--detector", "besiii", "--mass", "2.0", "-o", str(tmp_path)], "--mass"),
        (["run", "--detector", "belle2", "-o", str(tmp_path)], "isrsim project"),
    ):
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("isrsim: error:") and err.count("\n") == 1 and want in err


def test_parse_luminosities():
    assert parse_luminosities("314/fb,1/ab") == [314e6, 1e9]
    with pytest.raises(ConfigError):
        parse_luminosities(" , ")
    with pytest.raises(ConfigError):
        parse_luminosities("2/fb,abc")


# ---------------------------------------------------------------------------------------
# Belle II low-mass projection with the MC-template background


def _tiny_belle2_card():
    card = bundled_card("project_belle2")
    p, a = card["project"], card["analysis"]
    assert a["background"] == "template"  # the bundled default for this projection
    p["luminosity"] = "314/fb,1/ab"
    p["mass"] = [0.01, 0.05]
    p["mc_luminosity_max"] = "0.3/fb"
    p["backgrounds"]["diphoton"]["events"] = 30000
    p["signal"]["masses"] = [0.01, 0.03, 0.05]
    p["signal"]["events"] = 3000
    a["step"] = 0.005
    a["bin_width"] = 0.002
    return card


def test_project_belle2_template_tiny(tmp_path):
    s = run_projection(_tiny_belle2_card(), output=tmp_path / "b2", progress=False)
    assert s["method"] == "template" and len(s["csv"]) == 2
    png = tmp_path / "b2" / "projection_belle2.png"
    assert png.stat().st_size > 10_000
    h, d1 = _read_csv(tmp_path / "b2" / "projection_belle2_314invfb.csv")
    _, d2 = _read_csv(tmp_path / "b2" / "projection_belle2_1invab.csv")
    j, k = h.index("eps_exp_median"), h.index("eps_exp_median_no_mcstat")
    assert np.all(np.isfinite(d1[:, j])) and np.all(d1[:, h.index("converged")] == 1)
    # bands ordered, MC statistics can only weaken the limit
    cols = [h.index(c) for c in ("eps_exp_m2sigma", "eps_exp_m1sigma", "eps_exp_median",
                                 "eps_exp_p1sigma", "eps_exp_p2sigma")]
    assert np.all(np.diff(d1[:, cols], axis=1) > 0)
    assert np.all(d1[:, j] >= d1[:, k] * (1 - 1e-9))
    # without MC errors the limit is background-statistics limited: eps ~ L^-1/4, so
    # 1/ab vs 314/fb gives (1000/314)^-1/4 = 0.749 (normalisation nuisances constrained in the
    # window, Asimov: exact up to O(1/sqrt(B)), 3 %)
    np.testing.assert_allclose(d2[:, k] / d1[:, k], (1000 / 314) ** -0.25, rtol=0.03)
    # yield per eps^2 against sigma(e+e- -> gamma A', eps = 1) x BR(A' -> ee) x efficiency x L
    # computed here: the analytic tree-level cross section in the generated CM photon band,
    # BR(ee) = 1 below the mu mu threshold (physics.md 6.3), and the efficiency counted from the
    # run's own signal MC (cached candidate tables: events passing the card's cuts / events
    # generated)
    y = h.index("yield_per_eps2")
    _check_yield_per_eps2(tmp_path / "b2" / "cache", h, d1, 314e6)
    _check_yield_per_eps2(tmp_path / "b2" / "cache", h, d2, 1e9)
    # Eq. 1 cross-check: N_QED from the selected ISR ee events (truth mass in the bin, W_KF
    # radiator) vs sigma(A') x BR x eff x L (tree level, W_LO). Expected per mass: W_KF/W_LO
    # (physics.md 1.3; 1.26-1.33 at 10-50 MeV) times eff(QED)/eff(A'), 1 for the same kinematics
    # (the A' at eps = 1e-3 flies ~1 mm). The tiny MC has ~100-300 ISR events per 2 MeV bin and
    # 3000 A' events per signal mass: the mean of the 9 double ratios is checked within 4 of its
    # standard errors, estimated from their scatter (~0.04); a QED yield with the tree-level
    # radiator (ratio 1/1.29 = 0.78) fails.
    r = d1[:, h.index("yield_per_eps2_eq1")] / d1[:, y]
    beam = load_detector("belle2").beam
    w_ratio = np.array([sigma_aprime_gamma_isr_nb(m, 1e-3, beam.sqrt_s, flavour="e", radiator="kf")
                        / sigma_aprime_gamma_isr_nb(m, 1e-3, beam.sqrt_s, flavour="e", radiator="lo")
                        for m in d1[:, h.index("mass_GeV")]])
    q = r / w_ratio
    err = q.std(ddof=1) / np.sqrt(q.size)
    assert err < 0.05
    assert abs(q.mean() - 1.0) < 4 * err
    # the 17 MeV region is not a hypothesis here; the summary still reports the nearest
    assert s["projections"][0]["epsilon_at_17MeV"] is not None
    lines = result_lines(s)
    assert [ln.split(",")[0] for ln in lines] == ["  314/fb", "  1/ab"]
    assert f"expected (median) {np.nanmin(d1[:, j]):.2e} - {np.nanmax(d1[:, j]):.2e}" in lines[0]
    x = s["projections"][0]["epsilon_at_17MeV"]
    i = np.argmin(np.abs(d1[:, h.index("mass_GeV")] - 0.017))
    assert f"expected at {d1[i, h.index('mass_GeV')] * 1e3:.3g} MeV {d1[i, j]:.2e} (68 %: " in lines[0]
    assert x["eps_median"] == pytest.approx(d1[i, j], rel=1e-5)  # the CSV has 6 digits
    # cache reuse: second run generates nothing
    s2 = run_projection(_tiny_belle2_card(), output=tmp_path / "b2", progress=False)
    assert all(b["cached"] for b in s2["backgrounds"])
    assert all(x["cached"] for x in s2["signal_samples"])


def _check_yield_per_eps2(cache, h, d, lumi):
    """yield_per_eps2 of a template-projection CSV against sigma x BR x eff x L.

    At the simulated masses the CSV efficiency comes from the same events as the count here:
    only the event weights (Breit-Wigner line-shape weights, 1 - O(1e-6)) and the CSV's 6
    digits differ, tolerance 1e-4 (far below the binomial error of the efficiency,
    sqrt(eff (1 - eff)/N) / eff = 1.4 % for N = 3000, that any bookkeeping slip would show).
    Between them the yield must lie between its neighbours' sigma x BR x eff x L, widened by
    3 binomial standard errors of their efficiencies."""
    import math

    import pyarrow.parquet as pq

    from isrsim.io import read_metadata
    from isrsim.physics.darkphoton import sigma_aprime_gamma_nb

    card = _tiny_belle2_card()
    cuts, pc = card["analysis"]["cuts"], card["project"]["signal"]["photon_cut"]
    band = (math.cos(pc["theta_max"]), math.cos(pc["theta_min"]))
    sqrt_s = load_detector("belle2").beam.sqrt_s
    eff = {}
    for path in sorted(cache.glob("darkphoton-*.parquet")):
        meta = read_metadata(path)
        t = pq.read_table(path)
        col = {k: t.column(k).to_numpy(zero_copy_only=False) for k in ("m_ll", "r_xy_cm", "delta_m")}
        n_pass = int(np.sum(np.isfinite(col["m_ll"]) & (col["r_xy_cm"] < cuts["r_xy_max_cm"])
                            & (col["delta_m"] > cuts["delta_m_min_GeV"])))
        eff[float(meta["cache_key"]["params"]["mass"])] = (n_pass / meta["n_events"], meta["n_events"])
    assert sorted(eff) == card["project"]["signal"]["masses"]

    def expected(m, e):
        # sigma is exactly proportional to eps^2 (physics.md 6.1): evaluate at eps = 1e-3
        return sigma_aprime_gamma_nb(m, 1e-3, sqrt_s, cos_theta_range=band) / 1e-6 * e * lumi

    mass, y = d[:, h.index("mass_GeV")], d[:, h.index("yield_per_eps2")]
    ms = sorted(eff)
    n_checked = 0
    for mi, yi in zip(mass, y):
        j = int(np.argmin(np.abs(np.array(ms) - mi)))
        if abs(ms[j] - mi) < 1e-9:
            assert yi == pytest.approx(expected(ms[j], eff[ms[j]][0]), rel=1e-4), (mi, yi)
            n_checked += 1
        else:
            k = int(np.searchsorted(ms, mi))
            bounds = []
            for mm in (ms[k - 1], ms[k]):
                e, n = eff[mm]
                de = 3 * math.sqrt(e * (1 - e) / n)
                bounds += [expected(mi, e - de), expected(mi, e + de)]
            assert min(bounds) <= yi <= max(bounds), (mi, yi, bounds)
    assert n_checked == len(ms)


def test_project_template_adds_backgrounds_of_one_process(tmp_path):
    """Two background tables of one process (diphoton split by conversion layer) are two
    independent samples (their own random streams) that add up in the MC-template background
    (the second replaced the first, and both drew the same random numbers). Checked against the
    background in +-1 sigma(m) of each hypothesis recomputed here from both cached tables
    (weights [nb] x L, the card's cuts, 2 MeV bins whose centres lie within m +- sigma_m)."""
    import pyarrow.parquet as pq

    from isrsim.io import read_metadata

    card = _tiny_belle2_card()
    p, a = card["project"], card["analysis"]
    p["luminosity"] = "314/fb"
    p["mc_luminosity_max"] = "0.05/fb"
    p["signal"]["masses"] = [0.01, 0.05]
    p["signal"]["events"] = 1000
    a["step"] = 0.01
    bp = p["backgrounds"]["diphoton"]
    bp["events"] = 6000
    p["backgrounds"]["diphoton_pxd"] = dict(bp, process="diphoton",
                                            params=dict(bp["params"], conversion_layers=["PXD"]))
    bp["params"] = dict(bp["params"], conversion_layers=["beam pipe"])
    run_projection(card, output=tmp_path / "o", progress=False)
    tables = []
    for path in sorted((tmp_path / "o" / "cache").glob("diphoton-*.parquet")):
        meta = read_metadata(path)
        t = pq.read_table(path)
        tables.append((meta, {k: t.column(k).to_numpy(zero_copy_only=False)
                              for k in ("m_ll", "r_xy_cm", "delta_m", "weight")}))
    assert len(tables) == 2
    h, d = _read_csv(tmp_path / "o" / "projection_belle2_314invfb.csv")
    cuts = a["cuts"]
    lo, hi = p["mass"]
    bw = a["bin_width"]
    edges = np.linspace(lo, hi, round((hi - lo) / bw) + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    hist = np.zeros(centres.size)
    for _, c in tables:
        keep = (np.isfinite(c["m_ll"]) & (c["r_xy_cm"] < cuts["r_xy_max_cm"])
                & (c["delta_m"] > cuts["delta_m_min_GeV"]))
        hist += np.histogram(c["m_ll"][keep], edges, weights=c["weight"][keep] * 314e6)[0]
    for m, sm, b in zip(d[:, h.index("mass_GeV")], d[:, h.index("sigma_m_GeV")],
                        d[:, h.index("bkg_pm1sigma_diphoton")]):
        pk = (centres > m - sm) & (centres < m + sm)
        assert b == pytest.approx(hist[pk].sum(), rel=1e-5), m  # CSV: 6 digits
    # each sample has its own random streams, named by its label in the card
    assert sorted(m["cache_key"]["streams"] for m, _ in tables) == ["diphoton", "diphoton_pxd"]


def test_signal_samples_of_different_masses_are_independent(tmp_path):
    """The A' samples of the template projection draw independent random numbers per mass
    (they shared the streams of the process name: the same primary vertices, photon and
    detector smearing for event i at every mass). The photon energy E_gamma = (s - m^2)/(2
    sqrt(s)) is the same at 10 and 30 MeV to 1e-5, so its measured value of one event at the two
    masses differs only by the calorimeter smearing: correlated ~0.99 with shared streams,
    0 +- 1/sqrt(n) for independent samples; tolerance 5/sqrt(n)."""
    import pyarrow.parquet as pq

    from isrsim.workflows import project

    pc = {"mode": "tagged", "theta_min": 0.338, "theta_max": 2.770}
    proj = {"selection": "belle2_lowmass",
            "signal": {"masses": [0.01, 0.03], "epsilon": 1e-3, "events": 1000, "photon_cut": pc}}
    project._signal_template(proj, load_detector("belle2"), seed=1, cache_dir=tmp_path, cuts={},
                             var="m_ll", progress=False)
    tabs = [pq.read_table(p) for p in sorted(tmp_path.glob("darkphoton-*.parquet"))]
    assert len(tabs) == 2
    ids = [t.column("event_id").to_numpy() for t in tabs]
    _, ia, ib = np.intersect1d(ids[0], ids[1], return_indices=True)
    assert ia.size > 200
    x, y = (t.column("e_gamma").to_numpy()[i] for t, i in zip(tabs, (ia, ib)))
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(ia.size)


def test_project_background_choice_validated(tmp_path):
    card = _tiny_belle2_card()
    card["analysis"]["background"] = "spline"
    with pytest.raises(ConfigError, match="analysis.background"):
        run_projection(card, output=tmp_path / "x", progress=False)
    card = _tiny_belle2_card()
    card["analysis"]["cuts"] = {"r_max": 1.0}
    with pytest.raises(ConfigError, match="analysis.cuts"):
        run_projection(card, output=tmp_path / "y", progress=False)
    # the BESIII card keeps the polynomial method (no 'background' key = polynomial)
    assert bundled_card("project_besiii")["analysis"].get("background", "polynomial") == "polynomial"


def test_cached_candidates_are_keyed_by_the_sources(tmp_path, monkeypatch):
    """A candidate table made by other isrsim sources (an edit, same version number) is not
    reused: the cache key contains the digest of the sources."""
    from isrsim.detector import load_detector
    from isrsim.workflows import project

    det = load_detector("besiii")
    bkg = {"process": "isr_mumu", "params": {"mass_range": [1.5, 3.4]}}
    kw = {"selection": "besiii2017", "seed": 3, "mc_luminosity_invnb": 200.0, "cache_dir": tmp_path}
    p1, i1 = project.background_candidates(bkg, det, **kw)
    p2, i2 = project.background_candidates(bkg, det, **kw)
    assert not i1["cached"] and i2["cached"] and p1 == p2
    monkeypatch.setattr(project, "source_digest", lambda: "0" * 64)
    p3, i3 = project.background_candidates(bkg, det, **kw)
    assert not i3["cached"] and p3 != p1


def _bhabha_card(mc: bool, lumi="10/pb"):
    """e e channel only; with ``mc`` the e e gamma background is isr_bhabha and the Bhabha
    correction is measured from isr_ee (reference) over isr_bhabha."""
    card = _tiny_card(lumi=lumi, toys=4)
    bk = card["project"]["backgrounds"]
    del bk["isr_mumu"]
    card["analysis"]["channels"] = ["ee"]
    if mc:
        bk["isr_ee"]["reference"] = True
        bk["isr_bhabha"] = {"params": {"photon_cut": {"mode": "untagged", "theta_max": 0.15}}}
        card["analysis"]["bhabha_correction"] = {"ee": "mc"}
    return card


def test_project_mc_bhabha_correction(tmp_path):
    """The MC Bhabha correction against the collinear Born expectation (validation/bhabha: the
    selected fraction follows it within ~10 %), and its effect on the e e limit: with the
    Bhabha background B_all = B_ann / c and N_QED = c B_all, the median eps^2 limit scales as
    sqrt(B_all) / (c B_all), i.e. eps by c^(-1/4) against the annihilation-only projection."""
    import math

    from isrsim.physics.born import bhabha_c_star, bhabha_primitive

    s_mc = run_projection(_bhabha_card(True), output=tmp_path / "mc", progress=False)
    info = s_mc["bhabha_correction_mc"]
    m, r, e = (np.array(info[k]) for k in ("mass_GeV", "ratio", "ratio_err"))
    assert info["chi2"] < info["ndf"] + 4 * math.sqrt(2 * info["ndf"])
    s = 3.773**2
    coll = []
    for mm in m:
        cs = bhabha_c_star(1 - mm * mm / s, math.cos(0.4))
        coll.append((cs + cs**3 / 3) / (bhabha_primitive(cs) - bhabha_primitive(-cs)))
    coll = np.array(coll)
    fit = np.array(info["fit"])
    assert np.all(np.abs(fit - coll) < 0.15 * coll + 3 * e), (fit, coll, e)
    assert np.all(np.abs(r - coll) < 0.15 * coll + 4 * e)
    assert [b["reference"] for b in s_mc["backgrounds"]] == [True, False]

    s_ann = run_projection(_bhabha_card(False), output=tmp_path / "ann", progress=False)
    h1, d1 = _read_csv(tmp_path / "mc" / "projection_besiii_10invpb.csv")
    h0, d0 = _read_csv(tmp_path / "ann" / "projection_besiii_10invpb.csv")
    assert np.allclose(d1[:, h1.index("mass_GeV")], d0[:, h0.index("mass_GeV")])
    ratio = d1[:, h1.index("eps_exp_median")] / d0[:, h0.index("eps_exp_median")]
    c = np.interp(d1[:, h1.index("mass_GeV")], m, fit)
    # 4 toys per median: ~30 % scatter per mass, neighbours correlated; the mean within 25 %
    assert np.mean(ratio * c**0.25) == pytest.approx(1.0, abs=0.25), (ratio, c)
    assert np.mean(ratio) > 1.8
    assert s_ann.get("bhabha_correction_mc") is None


def test_project_bhabha_options_validated(tmp_path):
    card = _bhabha_card(False)
    card["project"]["backgrounds"]["isr_ee"]["reference"] = True
    with pytest.raises(ConfigError, match="reference = true"):
        run_projection(card, output=tmp_path / "a", progress=False)
    card = _bhabha_card(True)
    card["project"]["backgrounds"]["isr_ee"]["reference"] = False
    with pytest.raises(ConfigError, match="isr_bhabha background"):
        run_projection(card, output=tmp_path / "b", progress=False)
    card = _bhabha_card(True)
    card["analysis"]["bhabha_correction"] = {"ee": "montecarlo"}
    with pytest.raises(ConfigError, match="bhabha_correction.ee"):
        run_projection(card, output=tmp_path / "c", progress=False)
    card = _bhabha_card(True)
    card["project"]["backgrounds"]["isr_ee"]["reference"] = "yes"
    with pytest.raises(ConfigError, match="reference"):
        run_projection(card, output=tmp_path / "d", progress=False)
    card = _bhabha_card(True)
    card["analysis"]["background"] = "template"
    with pytest.raises(ConfigError, match="polynomial"):
        run_projection(card, output=tmp_path / "e", progress=False)


class _Stop(Exception):
    pass


def test_progress_lines_on_stderr_stdout_stays_the_summary(tmp_path, monkeypatch, capsys):
    """`isrsim project` / `isrsim run` printed their progress lines on stdout ahead of the JSON
    summary (so `isrsim run > summary.json` was no JSON); they go to stderr now, like generate's
    progress bar and the lines of inject / sideband."""
    import argparse

    import isrsim.workflows.project as project
    import isrsim.workflows.run as run_mod

    def fake_background(bkg, det, **kwargs):
        return tmp_path / "x.parquet", {"process": bkg["process"], "n_events": 10,
                                        "n_candidates": 5, "cached": True, "seconds": 0.0}

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(project, "background_candidates", fake_background)
    monkeypatch.setattr(project, "read_candidate_tables", stop)
    with pytest.raises(_Stop):
        run_projection(_tiny_card(), output=tmp_path / "p", progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "isrsim project: isr_mumu: 10 events, 5 candidates (cached)" in err
    fake = {"output_dir": "d", "csv": ["d/a.csv"], "png": ["d/a.png"],
            "projections": [{"luminosity": "2.93/fb", "mass_range_GeV": [1.5, 3.4],
                             "epsilon_exp_median_range": [5e-4, 1e-3], "epsilon_obs_range": None,
                             "max_local_z": 2.5, "global_p_toys": None}]}
    monkeypatch.setattr(project, "run_projection", lambda card, **kwargs: fake)
    args = argparse.Namespace(card=None, output=str(tmp_path / "r"), detector=None, luminosity=None,
                              mass=None, epsilon=None, events=None, toys=None, seed=None,
                              workers=None, quiet=False)
    assert run_mod.main(args) is fake
    out, err = capsys.readouterr()
    assert out == ""
    assert "isrsim run: projection written to d/" in err and "CSV: d/a.csv" in err
    assert err.endswith("  2.93/fb, 1.5-3.4 GeV: epsilon 90% CL upper limit: expected (median) "
                        "5.00e-04 - 1.00e-03; max local Z 2.50\n")
