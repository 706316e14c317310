"""Tests of the two-track helix vertex fit (prompt pairs, 17 MeV A', conversions)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from isrsim.constants import M_E
from isrsim.exceptions import ConfigError
from isrsim.reco import toys
from isrsim.reco.vertexfit import fit_vertex

BZ = 1.5  # Belle II solenoid [T]
#: Belle II-like helix resolutions (cm, rad), detectors.md 1 (d0 ~ 15-20 um, z0 ~ 20-25 um).
B2_SIGMAS = dict(sigma_d0=20e-4, sigma_phi0=5e-4, sigma_rel_pt=0.004, sigma_z0=25e-4,
                 sigma_tanl=5e-4, rho_d0_phi0=-0.3)


def _measure(rng, e_minus, e_plus, vertex, smear=True):
    h1 = toys.helices_from_states(vertex, e_minus[:, :3], -1.0, BZ)
    h2 = toys.helices_from_states(vertex, e_plus[:, :3], 1.0, BZ)
    c1 = toys.diagonal_covariance(h1, **B2_SIGMAS)
    c2 = toys.diagonal_covariance(h2, **B2_SIGMAS)
    if smear:
        h1 = toys.smear_helices(rng, h1, c1)
        h2 = toys.smear_helices(rng, h2, c2)
    return h1, c1, h2, c2


def _mass(a, b):
    s = a + b
    return np.sqrt(np.maximum(s[:, 3] ** 2 - np.sum(s[:, :3] ** 2, axis=1), 0.0))


def _xy_chi2(r):
    xy = r.vertex[:, :2]
    c = r.vertex_cov[:, :2, :2]
    return np.einsum("ni,nij,nj->n", xy, np.linalg.inv(c), xy)


def test_prompt_pair_pulls_and_chi2():
    # 300 MeV pair at 1 GeV from the origin: well-separated tracks, linear regime.
    # N = 4000: sigma(std of pull) = 1/sqrt(2N) = 0.011 -> 5 % tolerance is 4.5 sigma.
    rng = np.random.default_rng(11)
    n = 4000
    em, ep = toys.two_body_pair(rng, n, 0.3, 1.0, M_E)
    r = fit_vertex(*_measure(rng, em, ep, np.zeros((n, 3))), bz=BZ, mass=M_E)
    assert r.converged.all()
    for j in range(3):
        pull = r.vertex[:, j] / np.sqrt(r.vertex_cov[:, j, j])
        assert abs(pull.mean()) < 0.05
        assert abs(pull.std() - 1.0) < 0.05
    assert stats.kstest(r.chi2, stats.chi2(1).cdf).pvalue > 0.01
    # r_xy consistent with 0: the xy position's chi2 w.r.t. the origin follows chi2(2)
    assert stats.kstest(_xy_chi2(r), stats.chi2(2).cdf).pvalue > 0.01
    # the pair comes from the IP: masses before and after agree (true M = 0.3 GeV)
    assert abs(np.median(r.delta_m)) < 1e-4
    assert abs(np.median(r.m_after) - 0.3) < 1e-3


def test_prompt_17mev_aprime_delta_m_centred():
    # physics.md 5.4: a prompt A' has Delta M ~ 0. 17 MeV at 2 GeV (opening ~17 mrad).
    rng = np.random.default_rng(12)
    n = 4000
    em, ep = toys.two_body_pair(rng, n, 0.017, 2.0, M_E)
    meas = _measure(rng, em, ep, np.zeros((n, 3)))
    r = fit_vertex(*meas, bz=BZ, mass=M_E)
    assert r.converged.mean() > 0.99
    dm = r.delta_m
    # median of N draws has sigma ~ 1.25 std/sqrt(N); allow 4 of those
    assert abs(np.median(dm)) < 4 * 1.25 * dm.std() / np.sqrt(n)
    assert abs(np.median(r.m_after) - 0.017) < 0.5e-3
    # r_xy consistent with 0 within its error. Nearly parallel helices make the fit mildly
    # non-linear (measured pull width ~1.08), so instead of exact chi2(2) coverage (99 %)
    # require >= 97 % of events inside the 99 % contour of chi2(2) for the inner twin choice;
    # the default lower-chi2 choice moves the pairs whose far (~cm) intersection fits better
    # (2.7 % here, 0.960 inside): >= 95 %, and the two agree on >= 95 % of the pairs.
    inside = _xy_chi2(r) < stats.chi2(2).ppf(0.99)
    inner = fit_vertex(*meas, bz=BZ, mass=M_E, twin="inner")
    assert np.mean(_xy_chi2(inner) < stats.chi2(2).ppf(0.99)) > 0.97
    assert np.mean(inside) > 0.95
    assert np.mean(np.abs(r.r_xy - inner.r_xy) < 1e-4) > 0.95
    assert np.median(r.r_xy_sig) < 2.0


def test_unsmeared_conversion_recovers_vertex_and_mass():
    # Exact helices (no smearing): the chi2 minimum (0) is at the conversion point. Along
    # the photon direction the chi2 valley of tangent helices is flat (quartic), so the
    # iteration stops (chi2 change < 1e-3) within a small fraction of the fit's own error.
    rng = np.random.default_rng(13)
    em, ep, v, _ = toys.conversion_pair(rng, 200, radius=2.2, e_gamma=1.0, x_share=0.5)
    meas = _measure(rng, em, ep, v, smear=False)
    r = fit_vertex(*meas, bz=BZ, mass=M_E)
    # both circle intersections are fitted and the lower chi2 kept: every pair is recovered
    assert np.all(r.chi2 < 1e-3)
    assert np.all(np.abs(r.r_xy - 2.2) < 0.2 * r.r_xy_err)
    assert np.median(np.abs(r.r_xy - 2.2)) < 1e-4
    assert np.max(np.abs(r.m_after - _mass(em, ep))) < 1e-3
    # twin="inner" fits only the inner intersection when z cannot separate them: for some of
    # these exactly tangent pairs that is a wrong local minimum (chi2 > 0; 11 of 200 here)
    inner = fit_vertex(*meas, bz=BZ, mass=M_E, twin="inner")
    assert 0.8 < np.mean(inner.chi2 < 1e-3) < 1.0


def test_exact_twin_tie_takes_the_inner_vertex():
    # e- and e+ of equal pT and tanl, symmetric about a common direction, from (0.5, 0.3, 0.2)
    # cm, unsmeared: the two circles cross a second time at the same z, where the pair fits
    # equally well (chi2 ~ 0 at both). min_chi2 must then keep the inner crossing, the true
    # vertex, not whichever seed came first (before: the mirrored one for ~40 % of such pairs).
    rng = np.random.default_rng(5)
    n, pt, half, tanl = 400, 0.5, 0.15, 0.3
    phi = rng.uniform(-np.pi, np.pi, n)

    def track(sign):
        p = np.stack([pt * np.cos(phi + sign * half), pt * np.sin(phi + sign * half),
                      np.full(n, pt * tanl)], axis=1)
        return np.column_stack([p, np.sqrt(np.sum(p * p, axis=1) + M_E**2)])

    v = np.array([0.5, 0.3, 0.2])
    meas = _measure(rng, track(-1.0), track(1.0), v, smear=False)
    r = fit_vertex(*meas, bz=BZ, mass=M_E, twin="min_chi2")
    assert np.all(r.chi2 < 1e-6)
    np.testing.assert_allclose(r.vertex, np.broadcast_to(v, (n, 3)), atol=1e-4)


def test_twin_conventions_on_smeared_conversions():
    # Twin minima lie on both sides of the conversion point (vertexfit docstring): keeping the
    # lower chi2 is never worse than the inner choice, differs on a sizeable fraction of pairs
    # and removes the inner choice's pull towards the IP. R = 1 cm, 3000 pairs: r_xy has a
    # spread ~0.3 cm, so the median is known to ~0.3 * 1.25 / sqrt(3000) = 0.007 cm; the inner
    # bias is ~0.14 cm (> 15 of those).
    rng = np.random.default_rng(14)
    n = 3000
    em, ep, v, _ = toys.conversion_pair(rng, n, radius=1.0, e_gamma=1.0, x_share=0.5)
    meas = _measure(rng, em, ep, v)
    best = fit_vertex(*meas, bz=BZ, mass=M_E)
    inner = fit_vertex(*meas, bz=BZ, mass=M_E, twin="inner")
    both = np.isfinite(best.chi2) & np.isfinite(inner.chi2)
    assert both.mean() > 0.99
    assert np.all(best.chi2[both] <= inner.chi2[both] + 1e-9)
    differ = np.mean(best.r_xy[both] != inner.r_xy[both])
    assert 0.1 < differ < 0.5
    assert abs(np.median(best.r_xy) - 1.0) < 0.035
    assert np.median(inner.r_xy) < 1.0 - 0.07
    # the single-intersection pairs are fitted identically by both conventions
    same = best.r_xy[both] == inner.r_xy[both]
    np.testing.assert_array_equal(best.chi2[both][same], inner.chi2[both][same])


@pytest.mark.parametrize(("radius", "m_pca_table"), [(1.0, 9.1e-3), (2.2, 19.8e-3)])
def test_conversions_fake_mass_and_radius(radius, m_pca_table):
    # physics.md 5.4 table (Belle II, 1.5 T, x = 1/2): M_PCA = 9.1 MeV at R = 1.0 cm and
    # 19.8 MeV at R = 2.2 cm (quoted to 0.1 MeV; eq. 5.3 good to < 1 %) -> 1.5 % tolerance.
    rng = np.random.default_rng(14)
    n = 3000
    em, ep, v, _ = toys.conversion_pair(rng, n, radius=radius, e_gamma=1.0, x_share=0.5)
    r = fit_vertex(*_measure(rng, em, ep, v), bz=BZ, mass=M_E)
    assert r.converged.mean() > 0.98
    assert abs(np.median(r.m_before) / m_pca_table - 1.0) < 0.015
    # after the vertex fit the mass falls back near the true pair mass (median ~1.5 MeV,
    # physics.md 5.3): "a few MeV" -> within 2.5 MeV, and far below M_PCA
    m_true = _mass(em, ep)
    assert abs(np.median(r.m_after) - np.median(m_true)) < 2.5e-3
    assert np.median(r.delta_m) < -0.5 * m_pca_table
    # r_xy peaks at R: histogram mode within 1.5 bins (1 mm) of R; median within 2 mm
    h, edges = np.histogram(r.r_xy, bins=np.arange(0.0, 2 * radius + 1e-9, 0.1))
    mode = 0.5 * (edges[np.argmax(h)] + edges[np.argmax(h) + 1])
    assert abs(mode - radius) < 0.15
    assert abs(np.median(r.r_xy) - radius) < 0.2
    assert np.median(r.r_xy_sig) > 1.0


def test_vertex_bad_input_one_line():
    h = np.array([[0.0, 0.1, 0.005, 0.0, 0.2]])
    c = toys.diagonal_covariance(h, sigma_d0=1e-3, sigma_phi0=1e-3, sigma_rel_pt=0.01,
                                 sigma_z0=1e-3, sigma_tanl=1e-3)
    bad = c.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ConfigError, match=r"track2.cov\[0\] diagonal") as exc:
        fit_vertex(h, c, h, bad, bz=BZ, mass=M_E)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="different numbers of events"):
        fit_vertex(h, c, np.vstack([h, h]), np.vstack([c, c]), bz=BZ, mass=M_E)
    with pytest.raises(ConfigError, match="bz"):
        fit_vertex(h, c, h, c, bz=-1.0, mass=M_E)
    with pytest.raises(ConfigError, match=r"twin = 'outer' is invalid: allowed one of inner, min_chi2"):
        fit_vertex(h, c, h, c, bz=BZ, mass=M_E, twin="outer")
