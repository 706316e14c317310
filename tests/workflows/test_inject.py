"""Tests of ``isrsim inject`` (isrsim.workflows.inject)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from scipy import special

from isrsim.constants import ALPHA
from isrsim.exceptions import ConfigError
from isrsim.stats import gaussian_shape, make_histogram
from isrsim.workflows.inject import SignalTemplate, load_config, main, mixture_iqr_sigma, run_toys


def _args(**kw):
    base = dict(card=None, output=None, detector=None, luminosity=None, mass=None, epsilon=None,
                events=None, toys=None, seed=None, workers=None, quiet=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_signal_template_matches_gaussian():
    # Gaussian residuals (sigma = 4 MeV, 40000 draws): bin fractions agree with the exact
    # Gaussian integral within 4 binomial sigma, sqrt(p (1 - p)/N), in every bin.
    rng = np.random.default_rng(7)
    n = 40_000
    t = SignalTemplate(rng.normal(0.0, 0.004, n))
    # IQR/1.349 estimator of a Gaussian sigma: asymptotic relative error 1.166/sqrt(N) = 0.0058
    assert t.sigma0 == pytest.approx(0.004, rel=4 * 0.0058)
    edges = np.linspace(1.98, 2.02, 17)
    f = t.fractions(edges[:-1], edges[1:], 2.0, t.sigma0)
    g = gaussian_shape(edges[:-1], edges[1:], 2.0, t.sigma0)
    assert np.all(np.abs(f - g) < 4 * np.sqrt(g * (1 - g) / n) + 1e-12)
    # scaling sigma doubles the width: containment of +-sigma stays erf(1/sqrt2)
    frac = t.fractions(np.array([2.0 - 0.008]), np.array([2.0 + 0.008]), 2.0, 0.008)[0]
    assert frac == pytest.approx(special.erf(1 / math.sqrt(2)), abs=4 * math.sqrt(0.68 * 0.32 / n))


def test_mixture_width_of_known_errors():
    # equal errors: the mixture is that Gaussian
    assert mixture_iqr_sigma(np.full(10, 0.004)) == pytest.approx(0.004, rel=1e-9)
    # half 2 MeV, half 6 MeV: the 75 % point solves (Phi(x/2) + Phi(x/6))/2 = 3/4, written
    # out here with scipy's normal CDF; and against 4e5 draws from the mixture
    # (IQR/1.349 relative sd ~1.2/sqrt(N) = 0.002 for a near-Gaussian, 4 sd)
    from scipy import optimize, stats

    x75 = optimize.brentq(lambda x: 0.5 * (stats.norm.cdf(x / 2) + stats.norm.cdf(x / 6)) - 0.75, 0, 20)
    errs = np.repeat([0.002, 0.006], 5)
    assert mixture_iqr_sigma(errs) == pytest.approx(2e-3 * x75 / 1.3489795, rel=1e-9)
    rng = np.random.default_rng(5)
    draws = rng.normal(0.0, np.repeat([0.002, 0.006], 200_000))
    q1, q3 = np.percentile(draws, [25, 75])
    assert mixture_iqr_sigma(errs) == pytest.approx((q3 - q1) / 1.3489795, rel=4 * 0.002)
    with pytest.raises(ConfigError, match="mass errors"):
        mixture_iqr_sigma(np.array([np.nan, 0.0]))


def test_run_toys_pulls_and_coverage_on_a_known_model():
    # Flat 400 events/bin background, Gaussian signal of 300 events, 1600 toys. The fitted
    # yield pulls must be N(0, 1): mean within 4/sqrt(1600) = 0.1, width within
    # 4/sqrt(2*1599) = 0.071 of 1. q~_mu 90 % CL coverage: binomial sigma sqrt(0.09/1600) =
    # 0.0075; with ~2000 events in the signal region the asymptotic formula is exact to well
    # below that, so the tolerance is 4 sigma = 0.03: the chi2_1 = 2.706 two-sided rule
    # (coverage 0.95, physics.md 7.2) fails.
    rng = np.random.default_rng(11)
    t = SignalTemplate(np.random.default_rng(3).normal(0.0, 0.004, 50_000))
    h = make_histogram(np.array([2.0]), lo=1.85, hi=2.15, bin_width=0.005, mask_windows=None, name="mumu")
    b = np.full(h.nbins, 400.0)
    n = 1600
    res = run_toys(h, b, t, 2.0, np.array([300.0]), n_toys=n, rng=rng, order=1)
    pull = (res["yield_hat"][0] - 300.0) / res["yield_err"][0]
    assert abs(pull.mean()) < 4 / math.sqrt(n)
    assert abs(pull.std(ddof=1) - 1.0) < 4 / math.sqrt(2 * (n - 1))
    cov = np.mean(res["ul"][0] >= 300.0)
    assert abs(cov - 0.90) < 4 * math.sqrt(0.09 / n)
    assert res["converged"].all()


def test_config_errors():
    with pytest.raises(ConfigError, match="epsilon"):
        load_config(_args(epsilon=[-1e-3]))
    with pytest.raises(ConfigError, match="toys"):
        load_config(_args(toys=0))
    with pytest.raises(ConfigError, match="luminosity"):
        load_config(_args(luminosity="lots"))


@pytest.fixture(scope="module")
def inject_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inject")
    card = out / "card.toml"
    card.write_text(
        '[run]\ndetector = "besiii"\nluminosity = "2.93/fb"\nseed = 3\n'
        '[analysis]\nmasses = [2.0]\nepsilon = [0.0, 1.5e-3]\ntoys = 80\n'
        'background_events = 60000\nsignal_events = 6000\nmass_scan_toys = 15\norder = 3\n')
    summary = main(_args(card=str(card), output=str(out / "res")))
    return out / "res", summary


def test_inject_end_to_end(inject_run):
    out, s = inject_run
    for name in ("inject_summary.csv", "inject_toys.csv", "inject_summary.json", "inject_2.png",
                 "inject_pulls_2.png"):
        assert (out / name).is_file()
    assert json.loads((out / "inject_summary.json").read_text())["toys"] == 80
    tpl = s["templates"]["2"]
    # BESIII 2017 Eq. 1 / physics.md 6.2: per eps^2, 3 pi m / (2 N_f alpha delta_m) = 3.09e4 at
    # 2.0 GeV for delta_m = 10 MeV (N_f = 4.180); here delta_m = 5 MeV -> 6.18e4. isrsim's
    # N_f(2.0 GeV) is 4.221 (1 % above the table), hence the 2 % tolerance.
    assert tpl["signal_per_epsilon2"] / tpl["n_qed_per_bin"] == pytest.approx(2 * 3.09e4, rel=0.02)
    assert tpl["signal_per_epsilon2"] / tpl["n_qed_per_bin"] == pytest.approx(
        3 * math.pi * 2.0 / (2 * tpl["n_f"] * ALPHA * 0.005), rel=1e-9)
    # the template's width (IQR/1.349 of m_ll - m_true) is what the 1C fit's per-event mass
    # errors predict (tests/reco/test_kinfit.py pull-tests those errors on toys): statistical
    # sd of the IQR estimate 1.166/sqrt(N) (Gaussian), 3 sd, plus 0.03 for FSR, which widens
    # the core beyond the fit errors (measured with 2e4 A' -> mu mu at 2 GeV: pull width 1.015
    # with FSR, 1.003 without)
    n_sig = tpl["signal_candidates"]
    ratio = tpl["signal_sigma_GeV"] / tpl["signal_sigma_expected_GeV"]
    assert abs(ratio - 1.0) < 3 * 1.166 / math.sqrt(n_sig) + 0.03, (ratio, n_sig)
    # cached templates are reused
    s2 = main(_args(card=str(out.parent / "card.toml"), output=str(out), toys=2))
    assert s2["templates"]["2"]["cached"]


def test_too_small_a_luminosity_is_named(inject_run):
    """A luminosity with almost no expected background failed inside a pseudo-experiment's fit
    ("histogram is empty") without naming --luminosity; it is now an error naming it and the
    smallest allowed value (5 expected events per background coefficient, order 3 here)."""
    out, s = inject_run
    n_bkg_invnb = s["templates"]["2"]["background_events_expected"] / 2.93e6  # events per nb^-1
    with pytest.raises(ConfigError, match=r"luminosity = '1e-9/fb' gives .* needs at least 20: "
                                          r"allowed luminosity >= ") as exc:
        main(_args(card=str(out.parent / "card.toml"), output=str(out), toys=2, luminosity="1e-9/fb"))
    l_min = float(str(exc.value).rsplit(">= ", 1)[1].removesuffix("/nb"))
    assert l_min == pytest.approx(20 / n_bkg_invnb, rel=0.05)


def test_inject_recovers_the_signal(inject_run):
    _, s = inject_run
    p0, p1 = s["points"]
    n = p1["n_toys"]
    assert p1["n_signal_expected"] > 200  # eps = 1.5e-3 is a ~3-4 sigma signal at 2.93/fb
    # pulls N(0, 1): mean within 3/sqrt(n), width within 3/sqrt(2(n-1)) (+0.05 for the
    # polynomial/asymptotic approximation)
    for p in (p0, p1):
        assert abs(p["pull_mean"]) < 3 / math.sqrt(n) + 0.05
        assert abs(p["pull_width"] - 1.0) < 3 / math.sqrt(2 * (n - 1)) + 0.05
    # relative bias of the yield below 3 standard errors
    assert abs(p1["bias_yield"]) < 3 * p1["bias_yield_err"]
    # coverage of the 90 % limit within 3 binomial sigma, sqrt(0.09/n) (with 80 toys this
    # cannot tell 0.90 from 0.95: the convention is pinned by the 1600-toy test above)
    assert abs(p1["coverage"] - 0.90) < 3 * math.sqrt(0.09 / n)
    # epsilon limits: each toy converts its yield limit with its own fitted N_QED (BESIII 2017
    # Eq. 1, N_sig / eps^2 = N_QED(bin) 3 pi m / (2 N_f alpha delta_m)); N_QED of the toys
    # scatters by ~1 % around the expected one, so the medians follow the template's
    # signal_per_epsilon2 (pinned to Eq. 1 in test_inject_end_to_end) within 5 %
    tpl = s["templates"]["2"]
    for p in (p0, p1):
        assert p["median_ul_yield"] / p["median_ul_epsilon"] ** 2 == pytest.approx(
            tpl["signal_per_epsilon2"], rel=0.05)
    # discovery rate grows with eps; without signal Z >= 3 is rare (p = 1.35e-3 per toy)
    assert p1["discovery_rate_z3"] > p0["discovery_rate_z3"]
    assert p0["discovery_rate_z3"] <= 3 / n
    # signal found at the injected mass: best-fit mass of the local scan within
    # 3 rms/sqrt(n_scan) + half a scan step (sigma/2 / 2) of 2.0 GeV
    sig = s["templates"]["2"]["signal_sigma_GeV"]
    tol = 3 * p1["m_best_rms_GeV"] / math.sqrt(p1["n_mass_scan"]) + sig / 4
    assert abs(p1["m_best_mean_GeV"] - 2.0) < tol


def test_candidate_weights_are_cross_section_over_generated_events():
    """Each candidate stands for sigma / N_generated nb (unweighted sample), so the expected
    candidates at a luminosity L are L sigma N_cand / N_gen: sigma times the Monte Carlo
    selection efficiency. Dividing by the number of candidates instead (the expected count would
    be L sigma whatever the selection) is the error this catches; here ~half the events are
    selected."""
    from isrsim.detector import load_detector
    from isrsim.processes import make_process
    from isrsim.workflows.inject import candidates_in_memory

    det = load_detector("besiii")
    proc = make_process("isr_mumu", det.beam, mass_range=[1.8, 2.2],
                        photon_cut={"mode": "untagged", "theta_max": 0.3})
    n = 5000
    cols, info = candidates_in_memory(proc, det, n, seed=1, label="w", selection="besiii2017")
    n_cand = cols["m_ll"].size
    assert 0.2 * n < n_cand < 0.9 * n
    assert cols["xs_weight_nb"].sum() == pytest.approx(info["cross_section_nb"] * n_cand / n, rel=1e-12)


def test_background_samples_of_each_mass_have_their_own_streams(tmp_path, monkeypatch):
    """The background MC of each mass is an independent sample: its random streams are named
    per mass (all masses shared the label ``inject-bkg-isr_mumu``, i.e. the same primary
    vertices, detector smearing and generator numbers in overlapping windows)."""
    from isrsim.detector import load_detector
    from isrsim.workflows import inject

    seen = []

    def fake(process, det, n, *, seed, label, selection, **kw):
        seen.append((label, seed))
        rng = np.random.default_rng(len(seen))
        k = 100
        cols = {"channel": np.full(k, "mumu"), "m_ll": rng.uniform(1.8, 2.3, k),
                "truth_m": rng.uniform(1.8, 2.3, k), "sigma_m_ll": np.full(k, 0.004),
                "xs_weight_nb": np.full(k, 1e-6)}
        return cols, {"cross_section_nb": 0.1, "cross_section_err_nb": 0.0, "n_events": n, "seconds": 0.0}

    monkeypatch.setattr(inject, "candidates_in_memory", fake)
    cfg = load_config(_args(mass=[2.0, 2.1], output=str(tmp_path / "o")))
    det = load_detector(cfg["detector"])
    for m in cfg["masses"]:
        inject._templates(cfg, det, m, tmp_path / "cache")
    labels = [lab for lab, _ in seen]
    assert len(labels) == 4 and len(set(labels)) == 4, labels


def test_inject_reports_progress_unless_quiet(tmp_path, progress_lines):
    """`isrsim inject` printed nothing while generating its templates although --quiet promised
    to silence progress output: it now says on stderr which sample it generates (stdout stays
    the JSON summary), and --quiet silences it."""
    err = progress_lines(main, lambda quiet: _args(output=str(tmp_path / f"inj_{quiet}"), quiet=quiet))
    assert "isrsim inject: m = 2 GeV: background isr_mumu" in err
    assert "300000 events" in err


def test_default_output_follows_the_detector(tmp_path, monkeypatch):
    """Without --output the directory is inject_<detector> as documented; the bundled card's
    run.output = "inject_besiii" made `--detector belle2` write into inject_besiii."""
    monkeypatch.chdir(tmp_path)
    assert load_config(_args())["output"] == "inject_besiii"
    assert load_config(_args(detector="belle2"))["output"] == "inject_belle2"
    assert load_config(_args(detector="belle2", output="mine"))["output"] == "mine"
    assert list(tmp_path.iterdir()) == []
