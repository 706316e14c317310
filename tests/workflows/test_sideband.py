"""Tests of ``isrsim sideband`` (isrsim.workflows.sideband)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from isrsim.exceptions import ConfigError
from isrsim.stats import counting_toy_upper_limit, counting_upper_limit
from isrsim.workflows.sideband import (
    asimov_significance,
    load_config,
    main,
    predict_background,
    projected_epsilon_limit,
)


def _args(**kw):
    base = dict(card=None, output=None, detector=None, luminosity=None, mass=None, epsilon=None,
                events=None, toys=None, seed=None, workers=None, quiet=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_asimov_significance_closed_forms():
    # no background uncertainty: Z = sqrt(2((s+b) ln(1+s/b) - s)) (arXiv:1007.1727 eq. 97)
    s, b = 10.0, 5.0
    assert asimov_significance(s, b, 0.0) == pytest.approx(math.sqrt(2 * ((s + b) * math.log1p(s / b) - s)))
    # s << b: Z -> s/sqrt(b); with sigma_b: Z -> s/sqrt(b + sigma_b^2)
    assert asimov_significance(10.0, 1e6, 0.0) == pytest.approx(10.0 / 1e3, rel=1e-3)
    assert asimov_significance(10.0, 1e6, 3e3) == pytest.approx(10.0 / math.sqrt(1e6 + 9e6), rel=1e-3)
    # the uncertainty only lowers the significance
    assert asimov_significance(10.0, 5.0, 1.0) < asimov_significance(10.0, 5.0, 0.0)


def test_predict_background_components():
    p = predict_background(0.5, 0.1, 0.2, 400.0)
    assert p["prediction"] == pytest.approx(200.0)
    assert p["sideband_stat"] == pytest.approx(200.0 / 20.0)
    assert p["stat"] == pytest.approx(200.0 * math.hypot(0.05, 0.1))
    assert p["total"] == pytest.approx(math.hypot(p["stat"], 40.0))


def test_projected_limit_inverts_the_yield():
    # S_SR(eps) = k eps^2 with a constant k: eps_UL = sqrt(S_up / k), S_up from
    # counting_upper_limit on the Asimov count n = B.
    k = 2.0e8
    s = {e: k * e * e for e in (6.8e-4, 1e-3, 1.4e-3)}
    lim = projected_epsilon_limit(s, 100.0)
    s_up = counting_upper_limit(100.0, 100.0).upper_limit
    assert lim["epsilon_ul_stat"] == pytest.approx(math.sqrt(s_up / k), rel=5e-3)  # grid step 0.3 %
    # large-B Gaussian regime: S_up ~ 1.2816 sqrt(B) (qtilde, 90 %); uncertainty inflates it
    lim2 = projected_epsilon_limit(s, 1e6, b_err=3e3)
    assert lim2["yield_ul_stat"] == pytest.approx(1.2816 * 1e3, rel=0.01)
    assert lim2["yield_ul"] == pytest.approx(1.2816 * math.sqrt(1e6 + 9e6), rel=0.01)
    assert "note" not in lim and "note" not in lim2
    # B -> 0: the asymptotic S_up (0.87) is far below the exact one, ln 10 - B for the median
    # count n = 0 (Neyman construction in q~_mu; ln 10 for CLs): the exact one is used, noted
    lim0 = projected_epsilon_limit(s, 0.01)
    assert lim0["yield_ul_stat"] == pytest.approx(math.log(10.0) - 0.01, rel=1e-9)
    assert "under-covers" in lim0["note"] and "0.01 < 10 events" in lim0["note"]
    assert lim0["epsilon_ul_stat"] == pytest.approx(math.sqrt(lim0["yield_ul_stat"] / k), rel=5e-3)
    cls0 = projected_epsilon_limit(s, 0.01, convention="cls_asymptotic")
    assert cls0["yield_ul_stat"] == pytest.approx(math.log(10.0), rel=1e-9)


def test_small_background_limit_is_the_exact_limit_of_the_median_count():
    """B = 3: the median count is 3 (P(N <= 2) = 0.42, P(N <= 3) = 0.65); the limit rises with
    n, so the median expected limit is that of n = 3, here checked against the CLs limit from
    pseudo-experiments (counting_toy_upper_limit: fits of toys, no closed form) within 4 toy
    errors; the asymptotic Asimov limit is > 10 % lower."""
    k = 2.0e8
    s = {e: k * e * e for e in (6.8e-4, 1e-3, 1.4e-3)}
    lim = projected_epsilon_limit(s, 3.0, convention="cls_asymptotic")
    toy = counting_toy_upper_limit(3, 3.0, rng=np.random.default_rng(11), method="cls_toys",
                                   n_toys=4000)
    assert toy.converged
    assert abs(lim["yield_ul_stat"] - toy.upper_limit) < 4.0 * toy.toy_error
    asym = counting_upper_limit(3.0, 3.0, convention="cls_asymptotic").upper_limit
    assert lim["yield_ul_stat"] > 1.1 * asym
    assert "exact CLs limit of the median count n = 3" in lim["note"]


def test_config_errors(tmp_path):
    card = tmp_path / "twin.toml"
    card.write_text('[analysis]\nvertex_twin = "outer"\n')
    with pytest.raises(ConfigError, match="vertex_twin = 'outer' is invalid: allowed one of inner, min_chi2"):
        load_config(_args(card=str(card)))
    with pytest.raises(ConfigError, match="mass"):
        load_config(_args(mass=[0.5]))
    with pytest.raises(ConfigError, match="mass"):
        load_config(_args(mass=[0.017, 0.02]))
    with pytest.raises(ConfigError, match="epsilon"):
        load_config(_args(epsilon=[0.0]))


@pytest.fixture(scope="module")
def sideband_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sideband")
    card = out / "card.toml"
    card.write_text(
        '[run]\ndetector = "belle2"\nluminosity = "314/fb,1/ab"\nseed = 5\n'
        '[analysis]\nepsilon = [6.8e-4, 1.4e-3]\noptimise_epsilon = 1e-3\nsignal_events = 4000\n'
        'background_events = 40000\ngrid_window = [0.003]\ngrid_r_sr = [0.2, 0.5, 1.0]\n'
        'grid_dm_sr = [0.002, 0.004]\ngrid_dm_sb = [0.004, 0.008]\ngrid_r_sb = [0.0, 0.5]\n')
    return out / "res", main(_args(card=str(card), output=str(out / "res")))


def test_sideband_end_to_end(sideband_run):
    out, s = sideband_run
    for name in ("sideband_summary.json", "sideband_regions.csv", "sideband_grid.csv",
                 "sideband_2d.png", "sideband_projections.png", "sideband_optimisation.png"):
        assert (out / name).is_file()
    reg = s["regions"]
    assert s["vertex_twin"] == "min_chi2"
    assert reg["dm_sb_GeV"] >= reg["dm_sr_GeV"]
    p314, p1ab = s["projections"]
    # contamination constraint honoured for every epsilon
    assert max(p314["contamination"].values()) <= s["max_contamination"]
    assert p1ab["epsilon_ul_median"] <= p314["epsilon_ul_median"]
    # signal cross section x BR at eps = 1.4e-3 scales as eps^2 against 6.8e-4 (physics.md 6.1):
    # ratio (1.4/0.68)^2 = 4.24 within the MC error of the two samples (< 1 %)
    sig = s["signal"]
    assert sig["0.0014"]["cross_section_nb"] / sig["0.00068"]["cross_section_nb"] == pytest.approx(
        (1.4 / 0.68) ** 2, rel=0.02)


def test_sideband_yields_from_the_mc_weights(sideband_run):
    """B_SB and B_SR at 1/ab recomputed from the conversion MC itself: the optimisation sample
    is regenerated (same card and seed: the workflow's samples are reproducible), the regions of
    the summary are applied here, and the expected events are L/N sum w_i with the generator
    weights w_i [nb] (the candidates' ``weight`` column) and N the generated events (MC
    luminosity N/sigma). Same events, so only rounding differs (1e-9)."""
    from isrsim.detector import load_detector
    from isrsim.workflows import sideband as sb

    out, s = sideband_run
    cfg = load_config(_args(card=str(out.parent / "card.toml"), output=str(out.parent / "regen")))
    bkg = sb._background_sample(cfg, load_detector(cfg["detector"]), "optimisation")
    reg = s["regions"]
    inwin = np.abs(bkg["m_ll"] - s["mass_GeV"]) < reg["window_GeV"]
    in_sb = inwin & (bkg["delta_m"] < -reg["dm_sb_GeV"]) & (bkg["r_xy_cm"] > reg["r_sb_cm"])
    in_sr = inwin & (bkg["r_xy_cm"] < reg["r_sr_cm"]) & (bkg["delta_m"] > -reg["dm_sr_GeV"])
    n_gen = s["background_events_per_sample"]
    p1ab = s["projections"][1]
    lumi = p1ab["luminosity_invnb"]
    assert lumi == pytest.approx(1e9)
    assert p1ab["b_sb_expected"] == pytest.approx(lumi / n_gen * bkg["weight"][in_sb].sum(), rel=1e-9)
    assert p1ab["b_sr_true_mc"] == pytest.approx(lumi / n_gen * bkg["weight"][in_sr].sum(), rel=1e-9)
    # the MC events counted for min_mc_events are those of non-zero weight
    live = bkg["weight"] > 0
    assert sb.region_yields(bkg, {}, sb.Regions(*reg.values()), cfg, lumi, np.zeros(live.size, int))[
        "n_mc_sb"] == int((in_sb & live).sum())


def test_sideband_limit_luminosity_scaling(sideband_run):
    """The statistical-only expected limits are not linear in L (counting in the SR with
    B = 2.8e5 / 9.0e5 events, background dominated).

    Yield: the median q~_mu 90 % limit for the Asimov count n = B solves
    2 (S - B ln(1 + S/B)) = z^2, z = Phi^-1(0.9): S_up = z sqrt(B) (1 + z/(3 sqrt(B))) up to a
    relative O(z^2/B) (6e-6 here).
    eps: S_SR(eps) = L K(eps) eps^2 with K ~ eps^gamma between the two simulated couplings
    (the SR efficiency depends on eps through the decay length; gamma from the two signal
    samples). L K eps^2 = S_up ~ sqrt(L) gives eps ~ L^(-1/(2 (2 + gamma))): the ratio
    1/ab : 314/fb is (1000/314)^(-1/(2 (2 + gamma))) = 0.78 for gamma = 0.35 (the naive
    (1000/314)^-1/4 = 0.749 for gamma = 0). Tolerance: each limit is the first point of a
    geometric eps grid with step ratio 1.0033 at or above the solution (0.33 % each, 0.66 %
    for the ratio) plus the O(1/sqrt(B)) deviation of S_up from sqrt(B) scaling
    (0.04 %, enters to the power 1/(2 + gamma)): 0.7 %."""
    from scipy.stats import norm

    _, s = sideband_run
    z = norm.ppf(0.90)  # the card's cl (default), convention qtilde_asymptotic
    p314, p1ab = s["projections"]
    for p in (p314, p1ab):
        b = p["b_sr_prediction"]["prediction"]
        s_up = z * math.sqrt(b) * (1 + z / (3 * math.sqrt(b)))
        assert p["yield_ul_median_stat_only"] == pytest.approx(s_up, rel=z * z / b + 1e-6)
    e1, e2 = 6.8e-4, 1.4e-3
    k1, k2 = (p314["signal_sr"][f"{e:g}"] / e**2 for e in (e1, e2))
    gamma = math.log(k2 / k1) / math.log(e2 / e1)
    eps = [p["epsilon_ul_median_stat_only"] for p in (p314, p1ab)]
    # the power law holds between the simulated couplings (K is clamped outside them)
    assert all(e1 < e < e2 for e in eps), eps
    ratio = eps[1] / eps[0]
    assert ratio == pytest.approx((1000 / 314) ** (-1 / (2 * (2 + gamma))), rel=0.007)
    # and not the linear-in-L scaling an error in the luminosity scaling would give
    assert abs(ratio - (1000 / 314) ** -0.5) > 0.1


def test_region_yields_ignore_zero_weight_mc():
    """Candidates of weight 0 (weighted conversion MC: trials failing the generator-level
    M_PCA preselection) do not count as MC events of a region (min_mc_events)."""
    from isrsim.workflows.sideband import Regions, region_yields

    # 3 SR candidates, 4 SB candidates of which 2 have weight 0
    r = np.array([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0])
    dm = np.array([0.0, 0.0, 0.0, -0.02, -0.02, -0.03, -0.03])
    w = np.array([1e-6, 2e-6, 1e-6, 1e-6, 3e-6, 0.0, 0.0])
    bkg = {"m_ll": np.full(7, 0.017), "r_xy_cm": r, "delta_m": dm, "xs_weight_nb": w}
    cfg = {"mass": 0.017, "syst_material": 0.2, "syst_dm_scale": 0.05, "syst_r_scale": 0.05}
    y = region_yields(bkg, {}, Regions(0.003, 0.5, 0.002, 0.004, 0.5), cfg, 1e6,
                      np.full(7, -1))
    assert (y["n_mc_sr"], y["n_mc_sb"]) == (3, 2)
    assert y["b_sb"] == pytest.approx(4.0) and y["transfer"] == pytest.approx(1.0)


def test_sideband_separates_signal_from_conversions(sideband_run):
    _, s = sideband_run
    p = s["projections"][0]
    # the SR keeps a larger fraction of the signal than of the background (S/B improves
    # over the sideband): S_SR/S_SB > B_SR/B_SB = T
    e = "0.0014"
    assert p["signal_sr"][e] / p["signal_sb"][e] > s["transfer_factor"]


def test_sideband_closure(sideband_run):
    # the prediction from the optimisation sample's transfer factor and the closure sample's
    # sideband agrees with the closure sample's own SR yield within 3 combined sigma
    # (MC statistics of both samples; the shape systematic cannot differ between them)
    out, s = sideband_run
    c = s["closure"]
    assert c["n_mc_sr"] >= 10 and c["n_mc_sb"] >= 10
    assert abs(c["pull"]) < 3.0
    # it is a closure test only if the prediction is T (optimisation sample) x B_SB (closure
    # sample) and the truth is the closure sample's SR, an independent sample: with the closure
    # sample's own T the pull would be 0 by construction. Expected events of both samples at
    # the first luminosity from sideband_regions.csv (same numbers written with 6 significant
    # digits: 5e-6 relative each, 2e-5 for a product or ratio of two).
    rows = {}
    for line in (out / "sideband_regions.csv").read_text().splitlines():
        if line.startswith(("optimisation,", "closure,")):
            f = line.split(",")
            rows[f[0]] = {"sr": float(f[3]), "sb": float(f[5])}
    opt, clo = rows["optimisation"], rows["closure"]
    assert s["transfer_factor"] == pytest.approx(opt["sr"] / opt["sb"], rel=2e-5)
    assert c["predicted"] == pytest.approx(s["transfer_factor"] * clo["sb"], rel=2e-5)
    assert c["true"] == pytest.approx(clo["sr"], rel=1e-5)
    assert clo["sb"] != pytest.approx(opt["sb"], rel=1e-3)  # another sample, another stream
    assert c["predicted"] != pytest.approx(c["true"], rel=1e-3)
    assert c["predicted_err"] < c["predicted_err_with_shape"]
    assert c["pull"] == pytest.approx((c["predicted"] - c["true"]) / math.hypot(c["predicted_err"],
                                                                              c["true_mc_err"]))


def test_sideband_reports_progress_unless_quiet(tmp_path, progress_lines):
    """`isrsim sideband` ran for minutes without a line of output while its --quiet promised
    to silence progress output: it now says on stderr which sample it generates (stdout stays
    the JSON summary), and --quiet silences it."""
    err = progress_lines(main, lambda quiet: _args(output=str(tmp_path / f"sb_{quiet}"), quiet=quiet))
    assert "isrsim sideband: signal eps = 0.00068" in err
    assert "20000 events" in err


def test_default_output_follows_the_detector(tmp_path, monkeypatch):
    """Without --output the directory is sideband_<detector> as documented; the bundled card's
    run.output = "sideband_belle2" made `--detector belle2_no_pxd2` write into sideband_belle2."""
    monkeypatch.chdir(tmp_path)
    assert load_config(_args())["output"] == "sideband_belle2"
    assert load_config(_args(detector="belle2_no_pxd2"))["output"] == "sideband_belle2_no_pxd2"
    assert load_config(_args(detector="belle2_no_pxd2", output="mine"))["output"] == "mine"
    assert list(tmp_path.iterdir()) == []
