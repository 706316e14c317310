"""Tests of the 1C (missing photon) and energy-constrained kinematic fits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import optimize, special, stats

from isrsim.beam import Beam
from isrsim.constants import K_CURV, M_MU
from isrsim.exceptions import ConfigError
from isrsim.reco import toys
from isrsim.reco.kinfit import (
    _ecfit_kernel,
    _fit1c_kernel,
    _helix_p4,
    _mass_sigma_1c,
    chi2_prob,
    fit_1c_missing_photon,
    fit_energy_constrained,
)

from .conftest import smeared_isr_pairs

DIAG = [0, 5, 9, 12, 14]  # packed indices of the 5x5 diagonal


def _wrap(a):
    return np.arctan2(np.sin(a), np.cos(a))


@pytest.fixture(scope="module")
def fit1c(isr_mumu_sample, bes_beam):
    s = isr_mumu_sample
    return fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], s["cov2"], bz=s["bz"],
                                 p4_beam=bes_beam.p4_total_lab(), mass=M_MU)


@pytest.mark.parametrize("ndf", [1, 2, 3, 4])
def test_chi2_prob_is_the_chi2_survival_function(ndf):
    # the closed forms (ndf 1, 2, 4) against scipy's incomplete-gamma chdtrc, over 0-200 and
    # at the edges (0 -> 1, inf -> 0, NaN and negative -> NaN as chdtrc)
    x = np.concatenate([np.linspace(0.0, 200.0, 20001), [np.inf, np.nan, -1e-15, -3.0]])
    np.testing.assert_allclose(chi2_prob(x, ndf), special.chdtrc(ndf, x), rtol=1e-12, atol=1e-15)
    assert chi2_prob(np.array([0.0, np.inf]), ndf).tolist() == [1.0, 0.0]


def test_1c_converges(fit1c):
    assert fit1c.converged.all()
    assert fit1c.n_iter.max() <= 5


def test_1c_chi2_follows_chi2_1dof(fit1c):
    # physics.md 7.4: one constraint -> chi2(1). Toys satisfy the constraint exactly and are
    # smeared with the covariance given to the fit; 10k events, fixed seed.
    res = stats.kstest(fit1c.chi2, stats.chi2(1).cdf)
    assert res.pvalue > 0.01
    assert fit1c.prob.min() >= 0.0
    assert fit1c.prob.max() <= 1.0


@pytest.mark.parametrize("j", [1, 2, 4])
def test_1c_pulls_fitted_vs_truth(fit1c, isr_mumu_sample, j):
    # (fitted - true)/sqrt(V_fit) ~ N(0, 1) for phi0, omega, tanl.
    # N = 10k: sigma(mean) = 0.01, sigma(std) = 1/sqrt(2N) = 0.007, so 5 % is > 5 sigma.
    s = isr_mumu_sample
    for fitted, true, cov in ((fit1c.helix1, s["true1"], fit1c.cov1),
                              (fit1c.helix2, s["true2"], fit1c.cov2)):
        pull = _wrap(fitted[:, j] - true[:, j]) / np.sqrt(cov[:, DIAG[j]])
        assert abs(pull.mean()) < 0.05
        assert abs(pull.std() - 1.0) < 0.05


@pytest.mark.parametrize("j", [1, 2, 4])
def test_1c_pulls_measured_vs_fitted(fit1c, isr_mumu_sample, j):
    # classic kinematic-fit pull (a0 - a)/sqrt(V - V_fit) ~ N(0, 1) (Avery CBX 98-37), both
    # tracks; same statistical tolerance as above.
    s = isr_mumu_sample
    for meas, cov, fitted, cov_fit in ((s["meas1"], s["cov1"], fit1c.helix1, fit1c.cov1),
                                       (s["meas2"], s["cov2"], fit1c.helix2, fit1c.cov2)):
        den = cov[:, DIAG[j]] - cov_fit[:, DIAG[j]]
        pull = _wrap(meas[:, j] - fitted[:, j]) / np.sqrt(den)
        assert abs(pull.mean()) < 0.05
        assert abs(pull.std() - 1.0) < 0.05


def _reference_1c(meas1, sig1, meas2, sig2, bz, p4_beam, mass):
    """Independent 1C fit of one event: minimise chi2 over (phi0, omega, tanl) of both tracks
    (diagonal covariances: d0 and z0 do not enter the constraint and stay) subject to
    (P - p1 - p2)^2 = 0, with scipy's SLSQP; returns (chi2, m_ll)."""
    idx = [1, 2, 4]
    a0 = np.concatenate([meas1[idx], meas2[idx]])
    sig = np.concatenate([sig1[idx], sig2[idx]])

    def four(a):
        phi0, om, tanl = a
        pt = 0.299792458e-2 * bz / abs(om)
        p = np.array([pt * np.cos(phi0), pt * np.sin(phi0), pt * tanl])
        return np.append(p, np.sqrt(p @ p + mass**2))

    def m2_miss(x):  # in units of the measurement errors, x = (a - a0)/sigma
        a = a0 + sig * x
        k = p4_beam - four(a[:3]) - four(a[3:])
        return k[3] ** 2 - k[:3] @ k[:3]

    # ftol 1e-12: SLSQP's stop on the change of chi2 (~1); 1e-14 is at the rounding of chi2 and
    # can run into the iteration cap at the minimum (event 13 of the sample: chi2 equal to the
    # fit's to 3e-12 after 500 iterations)
    res = optimize.minimize(lambda x: float(x @ x), np.zeros(6), jac=lambda x: 2 * x,
                            constraints=[{"type": "eq", "fun": m2_miss}], method="SLSQP",
                            options={"ftol": 1e-12, "maxiter": 500})
    assert res.success
    a = a0 + sig * res.x
    pair = four(a[:3]) + four(a[3:])
    return res.fun, np.sqrt(pair[3] ** 2 - pair[:3] @ pair[:3])


def _mass_pull_stats(m, sigma, m_true):
    """(mean, sd) of (m - m_true)/sigma."""
    pull = (m - m_true) / sigma
    return pull.mean(), pull.std()


def test_1c_mass_errors_are_the_spread_of_the_mass(fit1c):
    # sigma_m_ll propagates the full 10x10 fitted covariance (cross-track terms of the fit
    # included); the toys have M = 2 GeV exactly, so (m - 2)/sigma ~ N(0, 1) after the fit and
    # before it (measured errors, block-diagonal V). N = 10k: sd of the mean 0.01, of the sd
    # 1/sqrt(2N) = 0.007; 5 % is > 5 sd. Leaving out the fit's cross-track correlations would
    # not pass (next test).
    for m, sig in ((fit1c.m_ll, fit1c.sigma_m_ll), (fit1c.m_ll_raw, fit1c.sigma_m_ll_raw)):
        mean, sd = _mass_pull_stats(m, sig, 2.0)
        assert abs(mean) < 0.05
        assert abs(sd - 1.0) < 0.05
    # the constraint improves the mass (median ratio of the errors measured: 1.96)
    assert np.median(fit1c.sigma_m_ll_raw / fit1c.sigma_m_ll) > 1.5


def test_1c_mass_error_needs_the_cross_track_terms(fit1c, isr_mumu_sample):
    # the same error from the two 5x5 diagonal blocks alone (what OneCFitResult.cov1/cov2
    # give; derivatives by finite differences here) is too large: the fit correlates the
    # tracks' momenta along the constraint
    s = isr_mumu_sample
    bz = s["bz"]
    pa, pb = _p4_helices(fit1c.helix1, bz, M_MU), _p4_helices(fit1c.helix2, bz, M_MU)
    var = np.zeros(fit1c.m_ll.size)
    for h, c, first in ((fit1c.helix1, fit1c.cov1, True), (fit1c.helix2, fit1c.cov2, False)):
        jac = np.zeros((h.shape[0], 5))
        for j in (1, 2, 4):
            step = 1e-3 * np.sqrt(c[:, DIAG[j]])
            up, dn = h.copy(), h.copy()
            up[:, j] += step
            dn[:, j] -= step
            mu = _pair_mass(_p4_helices(up, bz, M_MU) + (pb if first else pa))
            md = _pair_mass(_p4_helices(dn, bz, M_MU) + (pb if first else pa))
            jac[:, j] = (mu - md) / (2 * step)
        var += np.einsum("ni,nij,nj->n", jac, _unpack(c), jac)
    # measured: median ratio 1.42, pull sd 0.72 (the sd's statistical error is 0.007)
    assert np.median(np.sqrt(var) / fit1c.sigma_m_ll) > 1.2
    _, sd = _mass_pull_stats(fit1c.m_ll, np.sqrt(var), 2.0)
    assert sd < 0.85


def _pair_mass(p):
    return np.sqrt(np.maximum(p[:, 3] ** 2 - np.sum(p[:, :3] ** 2, axis=1), 0.0))


def test_1c_matches_an_independent_constrained_minimisation(fit1c, isr_mumu_sample, bes_beam):
    # the linearised iterations reach the constrained chi2 minimum: chi2 and fitted mass of 20
    # events agree with SLSQP's (measured: 1e-11 in chi2, 2e-9 GeV in mass; the fit moves the
    # mass by ~5 MeV)
    s = isr_mumu_sample
    for i in range(20):
        c2, m = _reference_1c(s["meas1"][i], np.sqrt(s["cov1"][i, DIAG]), s["meas2"][i],
                              np.sqrt(s["cov2"][i, DIAG]), s["bz"], bes_beam.p4_total_lab(), M_MU)
        assert fit1c.chi2[i] == pytest.approx(c2, abs=1e-8, rel=1e-6)
        assert fit1c.m_ll[i] == pytest.approx(m, abs=1e-7)


def test_1c_improves_mass_resolution_and_finds_photon(fit1c, isr_mumu_sample, bes_beam):
    # True M = 2 GeV; the constraint adds information, so the fitted mass is closer (measured:
    # rms 3.7 vs 7.0 MeV; the fit itself is checked against an independent minimisation above).
    rms_fit = np.sqrt(np.mean((fit1c.m_ll - 2.0) ** 2))
    rms_raw = np.sqrt(np.mean((fit1c.m_ll_raw - 2.0) ** 2))
    assert rms_fit < 0.8 * rms_raw
    # fitted missing photon against the generated one: unbiased (median within 4 sd, sd of a
    # median ~1.25 sd/sqrt(N)) and better measured than the unfitted missing momentum
    # P - p1 - p2 (measured: energy sd 2.0 vs 8.9 MeV, 3-momentum rms 5.8 vs 9.2 MeV)
    s = isr_mumu_sample
    true = s["photon"]
    raw = (bes_beam.p4_total_lab() - _p4_helices(s["meas1"], s["bz"], M_MU)
           - _p4_helices(s["meas2"], s["bz"], M_MU))
    k = fit1c.k_miss
    de = k[:, 3] - true[:, 3]
    assert abs(np.median(de)) < 4 * 1.25 * de.std() / np.sqrt(de.size)
    assert de.std() < 0.5 * np.std(raw[:, 3] - true[:, 3])
    rms3 = np.sqrt(np.mean(np.sum((k[:, :3] - true[:, :3]) ** 2, axis=1)))
    assert rms3 < 0.8 * np.sqrt(np.mean(np.sum((raw[:, :3] - true[:, :3]) ** 2, axis=1)))
    # along the beam: toys emit it within 0.05 rad of the CM beam axis; the lab frame is
    # rotated by at most the 11 mrad crossing half angle.
    theta = np.minimum(fit1c.theta_gamma_miss, np.pi - fit1c.theta_gamma_miss)
    assert np.quantile(theta, 0.5) < 0.05


def _angle(a, b):
    c = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.arccos(np.clip(c, -1.0, 1.0))


def test_1c_crossing_angle_matters(isr_mumu_sample, bes_beam, fit1c):
    # The beam 4-vector carries p_x = 2 E_b sin(11 mrad) = 0.0415 GeV (physics.md 0). A fit
    # that ignores it still converges (the free photon direction absorbs p_x) but points the
    # photon wrong by ~0.0415 GeV / E_gamma(lab ~1.36 GeV) ~ 30 mrad; with the right beam
    # the direction error is set by the track resolution (a few mrad).
    s = isr_mumu_sample
    good = np.median(_angle(fit1c.k_miss[:, :3], s["photon"][:, :3]))
    p = bes_beam.p4_total_lab().copy()
    p[0] = 0.0
    r = fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], s["cov2"], bz=s["bz"],
                              p4_beam=p, mass=M_MU)
    bad = np.median(_angle(r.k_miss[:, :3], s["photon"][:, :3]))
    assert good < 0.01
    assert 0.02 < bad < 0.04


def test_1c_bad_input_one_line(isr_mumu_sample, bes_beam):
    s = isr_mumu_sample
    bad = s["meas1"].copy()
    bad[3, 2] = 0.0
    with pytest.raises(ConfigError, match=r"omega = 0.0") as exc:
        fit_1c_missing_photon(bad, s["cov1"], s["meas2"], s["cov2"], bz=1.0,
                              p4_beam=bes_beam.p4_total_lab(), mass=M_MU)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="shape"):
        fit_1c_missing_photon(s["meas1"][:, :4], s["cov1"], s["meas2"], s["cov2"], bz=1.0,
                              p4_beam=bes_beam.p4_total_lab(), mass=M_MU)
    with pytest.raises(ConfigError, match="time-like"):
        fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], s["cov2"], bz=1.0,
                              p4_beam=[0, 0, 5.0, 1.0], mass=M_MU)
    nan = s["cov2"].copy()
    nan[7, 0] = np.nan
    with pytest.raises(ConfigError, match=r"track2.cov\[7\]"):
        fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], nan, bz=1.0,
                              p4_beam=bes_beam.p4_total_lab(), mass=M_MU)


def test_1c_empty_input(bes_beam):
    r = fit_1c_missing_photon(np.zeros((0, 5)), np.zeros((0, 15)), np.zeros((0, 5)),
                              np.zeros((0, 15)), bz=1.0, p4_beam=bes_beam.p4_total_lab(),
                              mass=M_MU)
    assert r.chi2.shape == (0,)


# --------------------------------------------------------------------------------------
# Beam-energy spread: the beam 4-vector as a measured nuisance parameter (cov_beam)
# --------------------------------------------------------------------------------------
#: Belle II-like helix resolutions (cm, rad) for the beam-spread tests: sigma_pT/pT = 0.1 %
#: (about three times better than Belle II's) so that the beam term, with sigma_E = 4.7 / 2.7
#: MeV per beam, is ~40 % of the 1C constraint variance (asserted below).
B2_SIGMAS = {"sigma_d0": 20e-4, "sigma_phi0": 5e-4, "sigma_rel_pt": 1e-3, "sigma_z0": 30e-4,
             "sigma_tanl": 5e-4}


@pytest.fixture(scope="module")
def b2_beam():
    """SuperKEKB-like: 7.004 on 4.002 GeV, 41.5 mrad crossing half angle, 5 MeV sqrt(s) spread."""
    return Beam(e_minus_GeV=7.004, e_plus_GeV=4.002, crossing_half_angle_rad=0.0415,
                sqrt_s_spread_GeV=0.005)


def _p4_helices(h, bz, m):
    """Lab 4-momenta [n, 4] from perigee helices [n, 5] (written out here, not the kernel's)."""
    pt = K_CURV * bz / np.abs(h[:, 2])
    p = np.stack([pt * np.cos(h[:, 1]), pt * np.sin(h[:, 1]), pt * h[:, 4]], axis=1)
    return np.concatenate([p, np.sqrt(np.sum(p * p, axis=1) + m * m)[:, None]], axis=1)


def _unpack(c):
    iu = np.triu_indices(5)
    v = np.zeros((c.shape[0], 5, 5))
    v[:, iu[0], iu[1]] = c
    v[:, iu[1], iu[0]] = c
    return v


def _one_c_variances(h1, c1, h2, c2, bz, m, p4_beam, cov_beam):
    """Track and beam parts (S_t, S_b) [n] of the variance of g = (P - p1 - p2)^2 at the given
    helices, from central finite differences of g (independent of the fit's derivatives)."""
    def g(a1, a2, p):
        k = p - _p4_helices(a1, bz, m) - _p4_helices(a2, bz, m)
        return k[:, 3] ** 2 - np.sum(k[:, :3] ** 2, axis=1)

    n = h1.shape[0]
    beam = np.broadcast_to(p4_beam, (n, 4))
    s_t = np.zeros(n)
    for h, c, first in ((h1, c1, True), (h2, c2, False)):
        jac = np.zeros((n, 5))
        for j in (1, 2, 4):  # d0 and z0 do not enter g
            step = 1e-3 * np.sqrt(c[:, [0, 5, 9, 12, 14][j]])
            up, dn = h.copy(), h.copy()
            up[:, j] += step
            dn[:, j] -= step
            gu = g(up, h2, beam) if first else g(h1, up, beam)
            gd = g(dn, h2, beam) if first else g(h1, dn, beam)
            jac[:, j] = (gu - gd) / (2 * step)
        s_t += np.einsum("ni,nij,nj->n", jac, _unpack(c), jac)
    d_p = np.zeros((n, 4))
    for j in range(4):
        e = np.zeros(4)
        e[j] = 1e-5
        d_p[:, j] = (g(h1, h2, beam + e) - g(h1, h2, beam - e)) / 2e-5
    return s_t, np.einsum("ni,ij,nj->n", d_p, cov_beam, d_p)


@pytest.fixture(scope="module")
def b2_spread(b2_beam):
    """20k untagged ISR mu mu toys (M = 2 GeV, 1.5 T) whose beams are drawn per event with
    the 5 MeV sqrt(s) spread; the 1C fit with and without the beam covariance."""
    n, bz = 20_000, 1.5
    s = smeared_isr_pairs(np.random.default_rng(20241121), b2_beam, n, bz, B2_SIGMAS, beam_spread=True)
    h1, h2, c1, c2, m1, m2 = s["true1"], s["true2"], s["cov1"], s["cov2"], s["meas1"], s["meas2"]
    kw = {"bz": bz, "p4_beam": b2_beam.p4_total_lab(), "mass": M_MU}
    with_cov = fit_1c_missing_photon(m1, c1, m2, c2, cov_beam=b2_beam.p4_covariance_lab(), **kw)
    without = fit_1c_missing_photon(m1, c1, m2, c2, **kw)
    s_t, s_b = _one_c_variances(h1, c1, h2, c2, bz, M_MU, b2_beam.p4_total_lab(),
                                b2_beam.p4_covariance_lab())
    return {"n": n, "true1": h1, "true2": h2, "with_cov": with_cov, "without": without, "s_t": s_t,
            "s_b": s_b}


def test_1c_beam_term_is_sizeable(b2_spread):
    # the premise of the two tests below: the beam term is a large part of the constraint
    # variance (measured: 41 %), so that leaving it out is visible in the chi2
    frac = np.mean(b2_spread["s_b"] / (b2_spread["s_t"] + b2_spread["s_b"]))
    assert 0.3 < frac < 0.5, frac


def test_1c_chi2_with_beam_covariance_follows_chi2_1(b2_spread):
    # smeared per-event beams, fit with Beam.p4_covariance_lab(): chi2 ~ chi2(1). N = 20k:
    # sd of the mean sqrt(2/N) = 0.010, of the fraction of prob < 0.1 sqrt(0.09/N) = 0.0021;
    # 4 sigma each (measured: mean 1.015, fraction 0.103)
    f = b2_spread["with_cov"]
    n = b2_spread["n"]
    assert f.converged.all()
    assert abs(f.chi2.mean() - 1.0) < 4 * np.sqrt(2.0 / n)
    assert abs(np.mean(f.prob < 0.1) - 0.1) < 4 * np.sqrt(0.09 / n)
    assert stats.kstest(f.chi2, stats.chi2(1).cdf).pvalue > 0.01


def test_1c_chi2_without_beam_covariance_is_too_large(b2_spread):
    # without the beam term the residual has variance S_t + S_b but is divided by S_t:
    # E[chi2] = mean((S_t + S_b)/S_t) per event (computed: 1.69; measured: 1.71), sd of the mean
    # sqrt(2 mean(ratio^2)/N); the excess over 1 is many standard deviations
    f = b2_spread["without"]
    n = b2_spread["n"]
    ratio = 1.0 + b2_spread["s_b"] / b2_spread["s_t"]
    expected = ratio.mean()
    sd = np.sqrt(2.0 * np.mean(ratio**2) / n)
    assert abs(f.chi2.mean() - expected) < 4 * sd
    assert expected - 1.0 > 20 * np.sqrt(2.0 / n)
    assert f.chi2.mean() - 1.0 > 20 * np.sqrt(2.0 / n)


@pytest.mark.parametrize("j", [1, 2, 4])
def test_1c_pulls_with_beam_covariance(b2_spread, j):
    # V_fit = V - V D^T S^-1 D V with the beam term in S is the covariance of the fitted
    # tracks: pulls against truth ~ N(0, 1); same tolerance as the exact-beam pulls above.
    # Without the term the fit forces the smeared beam onto the curvatures: omega pulls have
    # an rms of ~6 (measured 5.8)
    f = b2_spread["with_cov"]
    for fitted, true, cov in ((f.helix1, b2_spread["true1"], f.cov1),
                              (f.helix2, b2_spread["true2"], f.cov2)):
        pull = _wrap(fitted[:, j] - true[:, j]) / np.sqrt(cov[:, DIAG[j]])
        assert abs(pull.mean()) < 0.05
        assert abs(pull.std() - 1.0) < 0.05
    if j == 2:
        g = b2_spread["without"]
        assert np.std((g.helix1[:, 2] - b2_spread["true1"][:, 2]) / np.sqrt(g.cov1[:, DIAG[2]])) > 3.0


def test_1c_mass_errors_with_beam_covariance(b2_spread):
    # per-event beams (5 MeV spread), M = 2 GeV: the beam term in S enters V_fit and so
    # sigma_m_ll: (m - 2)/sigma ~ N(0, 1), N = 20k (sd of the sd 0.005; 5 % is 10 sd)
    f = b2_spread["with_cov"]
    mean, sd = _mass_pull_stats(f.m_ll, f.sigma_m_ll, 2.0)
    assert abs(mean) < 0.05
    assert abs(sd - 1.0) < 0.05


def _fields_equal(a, b):
    for fld in dataclasses.fields(a):
        x, y = getattr(a, fld.name), getattr(b, fld.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y, equal_nan=True), fld.name
        else:
            assert x == y, fld.name


def test_zero_cov_beam_is_the_exact_beam(isr_mumu_sample, bes_beam, fit1c, ec_sample, b2_beam):
    # cov_beam = zeros (e.g. Beam.p4_covariance_lab() without a spread) is bit-for-bit the fit
    # without it, for both fits
    s = isr_mumu_sample
    zero = Beam.symmetric(3.773, crossing_half_angle_rad=0.011).p4_covariance_lab()
    assert not zero.any()
    r = fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], s["cov2"], bz=s["bz"],
                              p4_beam=bes_beam.p4_total_lab(), mass=M_MU, cov_beam=zero)
    _fields_equal(r, fit1c)
    e = ec_sample
    for c in ("4c", "energy"):
        kw = {"p4_beam": b2_beam.p4_total_lab(), "mass": M_MU, "constraints": c}
        _fields_equal(fit_energy_constrained(*e["args"], cov_beam=np.zeros((4, 4)), **kw),
                      fit_energy_constrained(*e["args"], **kw))


# -- energy-constrained fit -------------------------------------------------------------
def _ec_g(a, p4_beam, m):
    """Constraints (E, px, py, pz) of the energy-constrained fit, a = [n, 9] (written out)."""
    e1 = np.sqrt(np.sum(a[:, 0:3] ** 2, axis=1) + m * m)
    e2 = np.sqrt(np.sum(a[:, 3:6] ** 2, axis=1) + m * m)
    eg, th, ph = a[:, 6], a[:, 7], a[:, 8]
    k = np.stack([eg * np.sin(th) * np.cos(ph), eg * np.sin(th) * np.sin(ph), eg * np.cos(th)], 1)
    return np.stack([e1 + e2 + eg - p4_beam[3]] + [a[:, i] + a[:, 3 + i] + k[:, i] - p4_beam[i]
                                                    for i in range(3)], axis=1)


@pytest.fixture(scope="module")
def ec_sample(b2_beam):
    """ISR mu mu toys (M = 1 GeV) with the photon measured: lepton momenta smeared with
    3 MeV per component, the photon with sigma_E = 3 MeV and 1 mrad in theta and phi (both
    far better than Belle II's, so that the beam term, 4.7 / 2.7 MeV per beam, is a large part
    of S), against beams drawn per event with the 5 MeV sqrt(s) spread. Photons within
    0.4 < theta_lab < pi - 0.4 (a truth-level choice: does not bias the chi2)."""
    rng = np.random.default_rng(424242)
    lm, lp, gam = toys.isr_pair(rng, 22_000, b2_beam, 1.0, M_MU, np.pi / 2, beam_spread=True)
    e = gam[:, 3]
    th = np.arccos(gam[:, 2] / e)
    keep = (th > 0.4) & (th < np.pi - 0.4)
    n = int(keep.sum())
    true = np.concatenate([lm[keep, :3], lp[keep, :3], np.stack(
        [e[keep], th[keep], np.arctan2(gam[keep, 1], gam[keep, 0])], axis=1)], axis=1)
    sig = np.tile([3e-3] * 6 + [3e-3, 1e-3, 1e-3], (n, 1))
    meas = true + sig * rng.standard_normal((n, 9))
    cov_p = np.einsum("ni,ij->nij", sig[:, :6] ** 2, np.eye(6))
    return {"n": n, "true": true, "sig": sig,
            "args": (meas[:, 0:3], meas[:, 3:6], cov_p, meas[:, 6:9], sig[:, 6:9])}


def _ec_variances(true, sig, p4_beam, cov_beam, m):
    """Track+photon and beam parts (S_t [n, 4, 4], S_b [4, 4]) of the constraint covariance
    at the true parameters (finite differences of the constraints; diagonal V)."""
    jac = np.zeros((true.shape[0], 4, 9))
    for j in range(9):
        step = 1e-3 * sig[:, j]
        up, dn = true.copy(), true.copy()
        up[:, j] += step
        dn[:, j] -= step
        jac[:, :, j] = (_ec_g(up, p4_beam, m) - _ec_g(dn, p4_beam, m)) / (2 * step[:, None])
    s_t = np.einsum("nij,nj,nkj->nik", jac, sig**2, jac)
    order = [3, 0, 1, 2]  # constraint (E, px, py, pz) <- beam (px, py, pz, E)
    return s_t, cov_beam[np.ix_(order, order)]


@pytest.mark.parametrize("constraints", ["4c", "energy"])
def test_ec_chi2_with_and_without_beam_covariance(ec_sample, b2_beam, constraints):
    # with cov_beam: chi2 ~ chi2(ndf), mean ndf within 4 sd (sqrt(2 ndf/N), N ~ 1.9e4) and
    # prob < 0.1 in 10 % of the events within 4 binomial sd (measured: 4.007 / 0.997; 0.099).
    # Without: E[chi2] = ndf + tr(S_t^-1 S_b) per event (computed 5.90 for 4C, 2.09 for E only;
    # measured 5.91, 2.09; the beam is 52 % of the energy-constraint variance), per-event
    # variance 2 tr((1 + S_t^-1 S_b)^2).
    e = ec_sample
    n = e["n"]
    kw = {"p4_beam": b2_beam.p4_total_lab(), "mass": M_MU, "constraints": constraints}
    with_cov = fit_energy_constrained(*e["args"], cov_beam=b2_beam.p4_covariance_lab(), **kw)
    without = fit_energy_constrained(*e["args"], **kw)
    ndf = with_cov.ndf
    assert ndf == (4 if constraints == "4c" else 1)
    assert with_cov.converged.all()
    assert without.converged.all()
    assert abs(with_cov.chi2.mean() - ndf) < 4 * np.sqrt(2.0 * ndf / n)
    assert abs(np.mean(with_cov.prob < 0.1) - 0.1) < 4 * np.sqrt(0.09 / n)
    s_t, s_b = _ec_variances(e["true"], e["sig"], b2_beam.p4_total_lab(),
                             b2_beam.p4_covariance_lab(), M_MU)
    s_t, s_b = s_t[:, :ndf, :ndf], s_b[:ndf, :ndf]
    a = np.linalg.solve(s_t, np.broadcast_to(s_b, s_t.shape))  # S_t^-1 S_b
    expected = ndf + np.trace(a, axis1=1, axis2=2).mean()
    b = np.eye(ndf) + a
    var = 2.0 * np.trace(b @ b, axis1=1, axis2=2)
    assert abs(without.chi2.mean() - expected) < 4 * np.sqrt(var.sum()) / n
    assert expected - ndf > 20 * np.sqrt(2.0 * ndf / n)
    frac = np.mean(s_b[0, 0] / (s_t[:, 0, 0] + s_b[0, 0]))  # beam share of the E constraint
    assert 0.3 < frac < 0.7, frac


@pytest.mark.parametrize("constraints", ["4c", "energy"])
def test_ec_mass_errors_are_the_spread_of_the_mass(ec_sample, b2_beam, constraints):
    # M = 1 GeV toys: (m_pair - 1)/sigma_m_pair ~ N(0, 1) with the beam covariance (N ~ 1.9e4:
    # sd of the mean 0.007, of the sd 0.005; 5 % is > 7 sd); the 4C fit constrains the mass
    # more than the energy constraint alone, and both less than the unfitted momenta allow
    e = ec_sample
    fit = fit_energy_constrained(*e["args"], p4_beam=b2_beam.p4_total_lab(), mass=M_MU,
                                 constraints=constraints, cov_beam=b2_beam.p4_covariance_lab())
    mean, sd = _mass_pull_stats(fit.m_pair, fit.sigma_m_pair, 1.0)
    assert abs(mean) < 0.05
    assert abs(sd - 1.0) < 0.05
    p1, p2 = e["args"][0], e["args"][1]
    raw = _pair_mass(np.concatenate([p1 + p2, (np.sqrt(np.sum(p1**2, 1) + M_MU**2)
                                               + np.sqrt(np.sum(p2**2, 1) + M_MU**2))[:, None]], 1))
    assert np.std(fit.m_pair - 1.0) < np.std(raw - 1.0)


BAD_COV = {
    "shape": (np.eye(3), r"cov_beam has shape \(3, 3\)"),
    "nan": (np.diag([1e-6, 0.0, 1e-5, np.nan]), "cov_beam .* not finite"),
    "negative variance": (np.diag([1e-6, 0.0, -1e-5, 1e-5]), "cov_beam has negative variances"),
    "asymmetric": (np.diag([1e-6, 0.0, 1e-5, 1e-5]) + np.triu(np.full((4, 4), 1e-7), 1),
                   "cov_beam .* not symmetric"),
    "not psd": (np.array([[1e-5, 0, 0, 2e-5], [0, 0, 0, 0], [0, 0, 1e-5, 0], [2e-5, 0, 0, 1e-5]]),
                "cov_beam .* not positive semi-definite"),
    "not numeric": ("abc", "cov_beam"),
}


@pytest.mark.parametrize("case", sorted(BAD_COV))
def test_bad_cov_beam_one_line(isr_mumu_sample, bes_beam, ec_sample, case):
    bad, pattern = BAD_COV[case]
    s = isr_mumu_sample
    with pytest.raises(ConfigError, match=pattern) as exc:
        fit_1c_missing_photon(s["meas1"], s["cov1"], s["meas2"], s["cov2"], bz=s["bz"],
                              p4_beam=bes_beam.p4_total_lab(), mass=M_MU, cov_beam=bad)
    assert "\n" not in str(exc.value)
    assert "allowed" in str(exc.value)
    with pytest.raises(ConfigError, match=pattern):
        fit_energy_constrained(*ec_sample["args"], p4_beam=bes_beam.p4_total_lab(), mass=M_MU,
                               cov_beam=bad)


def test_cov_beam_rounding_is_accepted(isr_mumu_sample, bes_beam):
    # a covariance that is PSD and symmetric only up to rounding (rank 2, built in another
    # order) is accepted
    cov = Beam.symmetric(3.773, crossing_half_angle_rad=0.011, sqrt_s_spread_GeV=0.0014).p4_covariance_lab()
    u = np.linalg.eigh(cov)[1]
    w = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    rebuilt = (u * w) @ u.T
    assert not np.array_equal(rebuilt, cov)
    s = isr_mumu_sample
    r = fit_1c_missing_photon(s["meas1"][:5], s["cov1"][:5], s["meas2"][:5], s["cov2"][:5],
                              bz=s["bz"], p4_beam=bes_beam.p4_total_lab(), mass=M_MU,
                              cov_beam=rebuilt)
    assert np.all(np.isfinite(r.chi2))


# -- failed fits and covariance checks --------------------------------------------------
def _assert_nan_row(result, names, good, bad):
    for name in names:
        val = getattr(result, name)
        assert np.all(np.isfinite(val[good])), name
        assert np.all(np.isnan(val[bad])), name


ONE_C_FITTED = ("helix1", "helix2", "cov1", "cov2", "chi2", "prob", "k_miss",
                "theta_gamma_miss", "m_ll", "sigma_m_ll")
EC_FITTED = ("params", "chi2", "prob", "m_pair", "sigma_m_pair", "m_recoil")


def test_1c_failed_fit_is_nan_not_the_previous_event(isr_mumu_sample, bes_beam):
    # event 1: a track with omega = 1e-300 (valid input) whose momentum overflows, so that S is
    # not finite and the fit fails. Before, k_miss, theta_gamma_miss and cov1/cov2 of a failed
    # fit were the previous event's (the kernel's scratch arrays) and helix1/2, m_ll came from
    # the unfinished iteration (audit r01).
    s = isr_mumu_sample
    h1, c1, h2, c2 = (s[k][:2].copy() for k in ("meas1", "cov1", "meas2", "cov2"))
    h1[1, 2] = 1e-300
    r = fit_1c_missing_photon(h1, c1, h2, c2, bz=s["bz"], p4_beam=bes_beam.p4_total_lab(),
                              mass=M_MU)
    assert r.converged[0] and not r.converged[1]
    _assert_nan_row(r, ONE_C_FITTED, 0, 1)
    # the kernel itself, with the audit's non-PSD event (now refused by the Python layer)
    h = np.array([[0.0, 0.3, 0.004, 0.0, 0.5], [0.0, 2.0, -0.003, 0.0, -0.3]])
    hb = np.array([[0.0, 3.0, -0.004, 0.0, -0.4], [0.0, -1.0, 0.003, 0.0, 0.2]])
    c = np.zeros((2, 15))
    c[:, DIAG] = [1e-4, 1e-6, 1e-10, 1e-2, 1e-6]
    c[1, 6] = 1e-6  # cov(phi0, omega) >> sqrt(1e-6 * 1e-10): S < 0
    out = [np.empty((2, 5)), np.empty((2, 5)), np.empty((2, 15)), np.empty((2, 15)), np.empty(2),
           np.empty(2, np.int32), np.empty(2, np.bool_), np.empty((2, 4)), np.empty(2),
           np.empty(2), np.empty(2), np.empty(2)]
    _fit1c_kernel(h, c, hb, c.copy(), np.arange(2), 1.0, Beam.symmetric(3.773).p4_total_lab(),
                  np.zeros((4, 4)), False, M_MU, M_MU, 20, 1e-3, *out)
    hf1, hf2, cf1, cf2, chi2, _, conv, kmiss, mll, _, smll, _ = out
    assert np.isfinite(chi2[0]) and np.isnan(chi2[1]) and not conv[1]
    for arr in (hf1, hf2, cf1, cf2, kmiss, mll, smll):
        assert np.all(np.isfinite(arr[0])) and np.all(np.isnan(arr[1]))


def test_ec_failed_fit_is_nan_not_the_previous_event(ec_sample, b2_beam):
    # event 1: a photon of 1e300 GeV (valid input) makes S infinite and the fit fails. Before,
    # m_pair was the previous event's mass and params the unfinished iteration's (audit r01).
    args = [np.array(a[:2], dtype=np.float64) for a in ec_sample["args"]]
    args[3][1, 0] = 1e300
    for constraints in ("4c", "energy"):
        r = fit_energy_constrained(*args, p4_beam=b2_beam.p4_total_lab(), mass=M_MU,
                                   constraints=constraints)
        assert r.converged[0] and not r.converged[1]
        _assert_nan_row(r, EC_FITTED, 0, 1)
    # the kernel with the audit's event 1 (cov_p = -1e-5 I, refused by the Python layer): the
    # 4C fit fails (Cholesky of S) and must not report event 0's mass (1.4526 before)
    p1 = np.array([[0.5, 0.1, 1.0], [0.3, -0.2, 2.0]])
    p2 = np.array([[-0.4, 0.2, 0.8], [0.2, 0.3, 1.0]])
    cov6 = np.zeros((2, 21))
    cov6[0, [0, 6, 11, 15, 18, 20]] = 1e-5
    cov6[1, [0, 6, 11, 15, 18, 20]] = -1e-5
    ph = np.array([[5.0, 1.0, 0.3], [3.0, 1.5, -1.0]])
    out = [np.empty((2, 9)), np.empty(2), np.empty(2, np.int32), np.empty(2, np.bool_),
           np.empty(2), np.empty(2), np.empty(2)]
    _ecfit_kernel(p1, p2, cov6, ph, np.full((2, 3), 1e-2), b2_beam.p4_total_lab(),
                  np.zeros((4, 4)), False, M_MU, M_MU, 4, 20, 1e-3, *out)
    afit, chi2, _, conv, m_pair, m_recoil, sigma_m = out
    assert np.isfinite(chi2[0]) and np.isnan(chi2[1]) and not conv[1]
    for arr in (afit, m_pair, m_recoil, sigma_m):
        assert np.all(np.isfinite(arr[0])) and np.all(np.isnan(arr[1]))


def test_mass_error_is_nan_when_its_variance_is_not_positive(isr_mumu_sample, b2_beam):
    # a propagated mass variance <= 0 (or NaN) is not an error of 0 (a 0 would pass as a
    # perfect measurement into weights and pulls; before: 0.0)
    s = isr_mumu_sample
    h1, h2 = s["meas1"][0], s["meas2"][0]
    p = _helix_p4(h1[1], h1[2], h1[4], s["bz"], M_MU)
    q = _helix_p4(h2[1], h2[2], h2[4], s["bz"], M_MU)
    work = (np.zeros(10), np.inf, np.empty((6, 6)), np.empty(6))

    def sigma(cov):
        return _mass_sigma_1c(p, q, h1[2], h2[2], cov, cov, 0, *work)

    m, sig = sigma(np.zeros((1, 15)))
    assert m > 0 and np.isnan(sig)
    v = np.zeros((1, 15))
    v[0, DIAG] = -1e-8
    assert np.isnan(sigma(v)[1])
    v[0, 5] = np.nan  # var(phi0)
    assert np.isnan(sigma(v)[1])
    # energy constraint on the audit's event with cov_p = -1e-5 I: S stays positive (photon
    # term), the fit runs, the mass variance is negative -> NaN (before: converged, 0.0)
    cov6 = np.zeros((1, 21))
    cov6[0, [0, 6, 11, 15, 18, 20]] = -1e-5
    out = [np.empty((1, 9)), np.empty(1), np.empty(1, np.int32), np.empty(1, np.bool_),
           np.empty(1), np.empty(1), np.empty(1)]
    _ecfit_kernel(np.array([[0.3, -0.2, 2.0]]), np.array([[0.2, 0.3, 1.0]]), cov6,
                  np.array([[3.0, 1.5, -1.0]]), np.full((1, 3), 1e-2), b2_beam.p4_total_lab(),
                  np.zeros((4, 4)), False, M_MU, M_MU, 1, 20, 1e-3, *out)
    assert np.isfinite(out[1][0])
    assert np.isnan(out[6][0])


def _cov_p_cases():
    good = np.tile(np.eye(6) * 1e-6, (3, 1, 1))
    cases = {}
    c = good.copy()
    c[1, 0, 3] = c[1, 3, 0] = 1.5e-6  # corr(p1x, p2x) = 1.5
    cases["not psd"] = (c, r"cov_p\[1\] is not positive semi-definite")
    c = good.copy()
    c[2, 0, 1] = 1e-7  # only one triangle
    cases["asymmetric"] = (c, r"cov_p\[2\] is not symmetric")
    c = good.copy()
    c[1, 4, 4] = -1e-6
    cases["negative variance"] = (c, r"cov_p\[1\] diagonal")
    return cases


@pytest.mark.parametrize("case", ["not psd", "asymmetric", "negative variance"])
def test_ec_cov_p_must_be_a_covariance(ec_sample, b2_beam, case):
    # before, cov_p was not checked at all (audit r01: -1e-5 I was fitted, "converged")
    cov, pattern = _cov_p_cases()[case]
    args = [np.array(a[:3], dtype=np.float64) for a in ec_sample["args"]]
    args[2] = cov
    with pytest.raises(ConfigError, match=pattern) as exc:
        fit_energy_constrained(*args, p4_beam=b2_beam.p4_total_lab(), mass=M_MU)
    assert "\n" not in str(exc.value)
    assert "allowed" in str(exc.value)


def test_helix_covariance_must_be_positive_semi_definite(isr_mumu_sample, bes_beam):
    # positive diagonal is not enough (audit r01: cov(phi0, omega) = 1e-6 with variances 1e-6
    # and 1e-10, correlation 100, was fitted); a singular (rank-deficient) covariance is
    # accepted: rounding of an exactly correlated pair stays within the tolerance
    s = isr_mumu_sample
    h1, c1, h2, c2 = (s[k][:3].copy() for k in ("meas1", "cov1", "meas2", "cov2"))
    kw = {"bz": s["bz"], "p4_beam": bes_beam.p4_total_lab(), "mass": M_MU}
    bad = c2.copy()
    bad[2, 6] = 1.01 * np.sqrt(bad[2, 5] * bad[2, 9])  # corr(phi0, omega) = 1.01
    with pytest.raises(ConfigError, match=r"track2.cov\[2\] is not positive semi-definite"):
        fit_1c_missing_photon(h1, c1, h2, bad, **kw)
    v = _unpack(c2)  # omega made fully correlated with phi0 (rank 4)
    k = np.sqrt(v[:, 2, 2] / v[:, 1, 1])
    v[:, 2, :] = k[:, None] * v[:, 1, :]
    v[:, :, 2] = k[:, None] * v[:, :, 1]
    assert np.all(np.linalg.eigvalsh(v)[:, 0] < 1e-12 * np.linalg.eigvalsh(v)[:, -1])
    singular = v[:, np.triu_indices(5)[0], np.triu_indices(5)[1]]
    r = fit_1c_missing_photon(h1, c1, h2, singular, **kw)
    assert np.all(np.isfinite(r.chi2)) and np.all(np.isfinite(r.sigma_m_ll))


@pytest.mark.parametrize("constraints", ["4c", "energy"])
def test_ec_recoil_mass_is_the_mass_against_the_fitted_photon(ec_sample, b2_beam, constraints):
    """m_recoil against an independent evaluation: the mass of P - k with P the lab beam
    4-vector and k = E (sin th cos ph, sin th sin ph, cos th) the fitted photon, written out
    here (pure arithmetic: 1e-9 relative for rounding in m^2 ~ 1 GeV^2 against s ~ 110 GeV^2).
    For the 4C fit with an exact beam, momentum conservation P = p1 + p2 + k makes it the fitted
    pair mass: the constraints are met to well below the 1 MeV this allows. (With ``cov_beam``
    the beam moves in the fit but m_recoil uses the nominal P, so the two differ by O(10 MeV).)
    Belle II beams are asymmetric (p_z = 3 GeV), so a sign error in any recoil component shows."""
    e = ec_sample
    n = 2000
    args = tuple(a[:n] for a in e["args"])
    p4 = b2_beam.p4_total_lab()
    fit = fit_energy_constrained(*args, p4_beam=p4, mass=M_MU, constraints=constraints,
                                 cov_beam=b2_beam.p4_covariance_lab())
    assert fit.converged.all()
    eg, th, ph = fit.params[:, 6], fit.params[:, 7], fit.params[:, 8]
    k = np.stack([eg * np.sin(th) * np.cos(ph), eg * np.sin(th) * np.sin(ph), eg * np.cos(th), eg], 1)
    r = p4[None, :] - k
    m2 = r[:, 3] ** 2 - np.sum(r[:, :3] ** 2, axis=1)
    expect = np.sign(m2) * np.sqrt(np.abs(m2))
    np.testing.assert_allclose(fit.m_recoil, expect, rtol=1e-9, atol=1e-9)
    if constraints == "4c":
        exact = fit_energy_constrained(*args, p4_beam=p4, mass=M_MU, constraints=constraints)
        assert exact.converged.all()
        np.testing.assert_allclose(exact.m_recoil, exact.m_pair, atol=1e-3)


def test_1c_raw_mass_error_with_correlated_helix_parameters(isr_mumu_sample, bes_beam):
    """sigma_m_ll_raw = sqrt(J V J^T) for helix covariances with phi0-omega, phi0-tanl and
    omega-tanl correlations (real track fits have them; the toy covariances are diagonal apart
    from d0-phi0, and d0 does not enter the mass, so a wrong sign of dM/dphi0 is invisible
    there). Independent value: J by central finite differences of the pair mass computed here
    (step 1e-3 sigma: truncation ~1e-6 relative), V the 5x5 blocks given; rel 2e-5."""
    s = isr_mumu_sample
    n, bz = 300, s["bz"]
    h1, h2 = s["meas1"][:n], s["meas2"][:n]
    corr = np.eye(5)
    for (i, j), rho in {(0, 1): -0.3, (1, 2): 0.5, (1, 4): -0.3, (2, 4): 0.2}.items():
        corr[i, j] = corr[j, i] = rho
    assert np.linalg.eigvalsh(corr).min() > 0.2
    iu = np.triu_indices(5)
    covs = []
    for c in (s["cov1"][:n], s["cov2"][:n]):
        sig = np.sqrt(c[:, DIAG])
        covs.append((sig[:, :, None] * corr[None] * sig[:, None, :])[:, iu[0], iu[1]])
    fit = fit_1c_missing_photon(h1, covs[0], h2, covs[1], bz=bz, p4_beam=bes_beam.p4_total_lab(),
                                mass=M_MU)
    pa, pb = _p4_helices(h1, bz, M_MU), _p4_helices(h2, bz, M_MU)
    np.testing.assert_allclose(fit.m_ll_raw, _pair_mass(pa + pb), rtol=1e-12)
    var = np.zeros(n)
    for h, c, other in ((h1, covs[0], pb), (h2, covs[1], pa)):
        jac = np.zeros((n, 5))
        for j in range(5):
            step = 1e-3 * np.sqrt(c[:, DIAG[j]])
            up, dn = h.copy(), h.copy()
            up[:, j] += step
            dn[:, j] -= step
            jac[:, j] = (_pair_mass(_p4_helices(up, bz, M_MU) + other)
                         - _pair_mass(_p4_helices(dn, bz, M_MU) + other)) / (2 * step)
        var += np.einsum("ni,nij,nj->n", jac, _unpack(c), jac)
    np.testing.assert_allclose(fit.sigma_m_ll_raw, np.sqrt(var), rtol=2e-5)


def _complex_step_grad(f, x):
    """Gradient of the real-analytic ``f`` at ``x`` by complex steps (exact to rounding)."""
    h = 1e-30
    out = np.empty(x.size)
    for j in range(x.size):
        z = x.astype(complex)
        z[j] += 1j * h
        out[j] = f(z).imag / h
    return out


def _reference_1c_dense(a0, v, bz, beam, v_beam, mass, max_iter=20, tol=1e-3):
    """The 1C fit written out generically: the 10x10 covariance as a dense matrix, ``D``,
    ``D_P`` and the mass Jacobian by complex steps of ``g`` and ``M`` (not the kernel's
    formulas), ``S`` a 1x1 matrix inverted by ``np.linalg.inv`` and ``V_fit`` by the full
    product ``V - V D^T S^-1 D V``."""
    def p4(a, off, m):
        sign = np.sign(a[off + 2].real)
        pt = K_CURV * bz / (sign * a[off + 2])
        return np.array([pt * np.cos(a[off + 1]), pt * np.sin(a[off + 1]), pt * a[off + 4],
                         np.sqrt(pt * pt * (1 + a[off + 4] ** 2) + m * m)])

    def g(a, b=beam):
        k = b - p4(a, 0, mass) - p4(a, 5, mass)
        return k[3] ** 2 - k[0] ** 2 - k[1] ** 2 - k[2] ** 2

    def mass_of(a):
        q = p4(a, 0, mass) + p4(a, 5, mass)
        return np.sqrt(q[3] ** 2 - q[0] ** 2 - q[1] ** 2 - q[2] ** 2)

    a, chi2 = a0.copy(), np.inf
    for _ in range(max_iter):
        d = _complex_step_grad(g, a)[None, :]
        d_p = _complex_step_grad(lambda b, a=a: g(a.astype(complex), b), beam)[None, :]
        da = a0 - a
        da[[1, 6]] = _wrap(da[[1, 6]])
        r = g(a) + d @ da
        s_inv = np.linalg.inv(d @ v @ d.T + d_p @ v_beam @ d_p.T)
        a = a0 - (v @ d.T @ s_inv @ r)
        chi2_new = float(r @ s_inv @ r)
        done = abs(chi2_new - chi2) < tol
        chi2 = chi2_new
        if done:
            break
    v_fit = v - v @ d.T @ s_inv @ d @ v
    a[[1, 6]] = _wrap(a[[1, 6]])
    jac = _complex_step_grad(mass_of, a)
    jac0 = _complex_step_grad(mass_of, a0)
    return {"a": a, "v_fit": v_fit, "chi2": chi2, "k": beam - p4(a, 0, mass) - p4(a, 5, mass),
            "m": mass_of(a), "sigma_m": np.sqrt(jac @ v_fit @ jac), "m_raw": mass_of(a0),
            "sigma_raw": np.sqrt(jac0 @ v @ jac0)}


@pytest.mark.parametrize("with_beam_cov", [False, True])
def test_1c_kernel_matches_the_dense_lagrange_solution(isr_mumu_sample, bes_beam, b2_beam,
                                                       with_beam_cov):
    """The rank-one kernel (block-diagonal V, D non-zero only for phi0, omega, tanl, the
    scalar S) against the dense generic solution (:func:`_reference_1c_dense`) for 40 events
    with fully correlated 5x5 helix covariances and, optionally, the beam covariance: every
    output to 1e-8 relative (covariances: of their diagonal scale)."""
    s = isr_mumu_sample
    n, bz = 40, s["bz"]
    beam = bes_beam.p4_total_lab()
    # a beam covariance with all elements non-zero: Belle II's energy-spread one, scaled
    v_beam = (b2_beam.p4_covariance_lab() * (3.773 / b2_beam.sqrt_s) ** 2 if with_beam_cov
              else np.zeros((4, 4)))
    corr = np.eye(5)
    for (i, j), rho in {(0, 1): -0.4, (0, 2): 0.1, (1, 2): 0.5, (1, 4): -0.3, (2, 4): 0.2,
                        (3, 4): 0.4, (0, 3): 0.05}.items():
        corr[i, j] = corr[j, i] = rho
    iu = np.triu_indices(5)
    covs = []
    for c in (s["cov1"][:n], s["cov2"][:n]):
        sig = np.sqrt(c[:, DIAG])
        covs.append((sig[:, :, None] * corr[None] * sig[:, None, :])[:, iu[0], iu[1]])
    h1, h2 = s["meas1"][:n], s["meas2"][:n]
    fit = fit_1c_missing_photon(h1, covs[0], h2, covs[1], bz=bz, p4_beam=beam, mass=M_MU,
                                cov_beam=v_beam if with_beam_cov else None)
    assert fit.converged.all()
    v = np.zeros((n, 10, 10))
    v[:, :5, :5] = _unpack(covs[0])
    v[:, 5:, 5:] = _unpack(covs[1])
    for i in range(n):
        ref = _reference_1c_dense(np.concatenate([h1[i], h2[i]]), v[i], bz, beam, v_beam, M_MU)
        np.testing.assert_allclose(np.concatenate([fit.helix1[i], fit.helix2[i]]), ref["a"],
                                   rtol=1e-8, atol=1e-12)
        scale = np.sqrt(np.outer(np.diag(v[i]), np.diag(v[i])))
        for c, blk in ((fit.cov1[i], slice(0, 5)), (fit.cov2[i], slice(5, 10))):
            dev = np.abs(_unpack(c[None])[0] - ref["v_fit"][blk, blk]) / scale[blk, blk]
            assert dev.max() < 1e-8
        np.testing.assert_allclose(fit.chi2[i], ref["chi2"], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(fit.k_miss[i], ref["k"], rtol=1e-8, atol=1e-10)
        for key, ref_key in (("m_ll", "m"), ("sigma_m_ll", "sigma_m"), ("m_ll_raw", "m_raw"),
                             ("sigma_m_ll_raw", "sigma_raw")):
            np.testing.assert_allclose(getattr(fit, key)[i], ref[ref_key], rtol=1e-8)
