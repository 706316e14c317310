"""eps conversion (BESIII 2017 Eq. 1), channel combination, toys and global significance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from stats_spectra import sigma_m

from isrsim.constants import ALPHA
from isrsim.exceptions import ConfigError
from isrsim.stats import (
    JPSI_WINDOW,
    Channel,
    Histogram,
    chebyshev_bin_basis,
    count_upcrossings,
    global_significance_toys,
    gross_vitells,
    pseudo_experiments,
    scan_epsilon,
    window_mask,
    yield_per_epsilon2,
)

POLY = np.array([8000.0, 1500.0, 900.0, 300.0, -60.0])


def _asimov(edges, name):
    mu = chebyshev_bin_basis(edges, 4, edges[0], edges[-1]) @ POLY
    return Histogram(edges, mu.copy(), mu.copy(), window_mask(edges, [JPSI_WINDOW]), False, name,
                     (JPSI_WINDOW,))


def test_yield_per_epsilon2_physics_md():
    # physics.md 6.2: per eps^2, delta_m = 10 MeV, per QED event in the bin:
    # 2.36e4 (1.5 GeV), 3.09e4 (2.0), 3.68e4 (2.5), 4.60e4 (3.0), 5.01e4 (3.4), computed with
    # the N_f of the physics.md 6.3 table. Inverting Eq. (1) must give those N_f back, to the
    # rounding of the 3-digit yields (<= 0.5/236 = 0.21 %).
    m = np.array([1.5, 2.0, 2.5, 3.0, 3.4])
    tab = np.array([2.36e4, 3.09e4, 3.68e4, 4.60e4, 5.01e4])
    nf_table = np.array([4.096, 4.180, 4.390, 4.210, 4.380])
    nf = yield_per_epsilon2(m, 1.0, 1.0) / tab
    np.testing.assert_allclose(nf, nf_table, rtol=0.5 / 236 + 1e-4)
    # closed form of Eq. (1)
    assert yield_per_epsilon2(2.0, 1e4, 4.2) == pytest.approx(
        1e4 * 3 * np.pi * 2.0 / (2 * 4.2 * ALPHA * 0.01))


def test_combination_and_bhabha(edges):
    masses = [1.8, 2.305]
    mm = Channel(_asimov(edges, "mumu"), sigma_m)
    ee = Channel(_asimov(edges, "ee"), sigma_m)
    single = scan_epsilon(mm, masses, n_f=4.2)
    both = scan_epsilon([mm, ee], masses, n_f=4.2)
    # identical Asimov channels, Gaussian regime: the combined eps^2 limit is 1/sqrt(2) of
    # one channel (polynomials are per channel, so the statistical information doubles)
    assert both.epsilon2_ul == pytest.approx(single.epsilon2_ul / np.sqrt(2), rel=0.01)
    # eps^2 limit = N_UL / yield_per_eps2 with N_QED(bin) from the background fit
    n_qed = chebyshev_bin_basis(np.array([2.30, 2.31]), 4, 1.5, 3.4) @ POLY
    ypp = yield_per_epsilon2(2.305, n_qed, 4.2)[0]
    assert single.yield_ul[1, 0] / single.epsilon2_ul[1] == pytest.approx(ypp, rel=1e-3)
    # a Bhabha correction c scales the QED annihilation yield, hence eps^2_UL by 1/c
    corr = scan_epsilon(mm, masses, n_f=4.2, bhabha_correction={"mumu": 0.95})
    assert corr.epsilon2_ul == pytest.approx(single.epsilon2_ul / 0.95, rel=1e-6)
    # a callable N_f is evaluated at the hypothesis mass
    nfun = scan_epsilon(mm, masses, n_f=lambda m: 4.2 * (1 + 0 * m))
    assert nfun.epsilon2_ul == pytest.approx(single.epsilon2_ul, rel=1e-9)


def test_epsilon_bad_input(edges):
    mm = Channel(_asimov(edges, "mumu"), sigma_m)
    with pytest.raises(ConfigError, match="luminosity"):
        scan_epsilon(mm, [2.0], n_f=4.2, luminosity=-2.93e6)
    with pytest.raises(ConfigError, match="n_f"):
        scan_epsilon(mm, [2.0], n_f=0.5)
    with pytest.raises(ConfigError, match="unknown channels"):
        scan_epsilon(mm, [2.0], n_f=4.2, bhabha_correction={"ee": 0.9})
    with pytest.raises(ConfigError, match="bhabha_correction"):
        scan_epsilon(mm, [2.0], n_f=4.2, bhabha_correction={"mumu": 1.5})


def test_expected_bands_and_global_significance(edges, rng):
    mm = Channel(_asimov(edges, "mumu"), sigma_m)
    masses = np.arange(1.6, 2.9, 0.05)
    ex = pseudo_experiments(mm, masses, n_toys=60, rng=rng)
    assert ex.bands.shape == (5, masses.size)
    assert ex.n_failed == 0 and np.all(ex.n_used == 60)
    # Gaussian regime, q~_mu: median expected limit = 1.2816 sigma_S (mu_hat ~ N(0, sigma)
    # has median 0). With 60 toys the median's error is ~1.25 sigma/sqrt(60) = 0.16 sigma,
    # i.e. ~13 % of the limit; require 35 % per point and 10 % on the mass average.
    sig = _sigma_s(mm, masses)
    ratio = ex.median / (1.2816 * sig)
    assert np.all(np.abs(ratio - 1) < 0.35)
    assert abs(np.mean(ratio) - 1) < 0.10
    # +-1 sigma bands: the limit at mu_hat = N sigma is sigma (N + 1.2816) for N >= 0 and
    # sigma (N + sqrt(N^2 + 1.6424)) for N < 0 (q~ with the reference at mu = 0), i.e.
    # 2.2816 and 0.6255 sigma at N = +1, -1. The 15.9 % quantile of 60 toys has a standard
    # error sqrt(p (1 - p) / 60) / phi(1) = 0.195 sigma in mu_hat, times the slope of the limit
    # in mu_hat (1 and 0.385): 8.5 % and 12 % per mass. Mass average over 26 masses, allowing
    # a factor 2 for their correlation through the common background fit, 3 standard errors.
    for row, n_sig in ((3, 1.0), (1, -1.0)):
        want = n_sig + 1.2816 if n_sig >= 0 else n_sig + np.sqrt(n_sig**2 + 1.6424)
        slope = 1.0 if n_sig >= 0 else 1 + n_sig / np.sqrt(n_sig**2 + 1.6424)
        tol = 3 * 2 * 0.195 * slope / want / np.sqrt(masses.size)
        assert abs(np.mean(ex.bands[row] / (want * sig)) - 1) < tol, row
    # local Z of background-only toys ~ N(0, 1) (one per toy and mass, correlated between
    # neighbouring masses): mean within 0.1, std within 0.1
    z = ex.z_local
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
    # look-elsewhere effect: the maximum exceeds z = 1 more often than any single mass does
    # (by 5 binomial sigma of the 60 toys at least: 26 correlated masses, sigma_m ~ 2 bins)
    frac_max = np.mean(ex.z_max >= 1.0)
    frac_loc = np.mean(ex.z_local >= 1.0, axis=0).max()
    assert frac_max > frac_loc + 5 * np.sqrt(frac_loc * (1 - frac_loc) / 60)
    # Gross-Vitells (arXiv:1005.1891 eq. 2) with up-crossings of u = max(Z, 0)^2 through
    # u0 = 0.5 counted here independently, scan by scan
    u0, z_obs = 0.5, 3.0
    n_up = []
    for row in ex.z_local:
        u = [max(z, 0.0) ** 2 for z in row]
        n_up.append(sum(1 for a, b in itertools.pairwise(u) if a < u0 <= b))
    np.testing.assert_array_equal(count_upcrossings(ex.z_local, u0), n_up)
    gv = gross_vitells(z_obs, ex.z_local, u0=u0)
    p_expected = stats.norm.sf(z_obs) + np.mean(n_up) * np.exp(-(z_obs**2 - u0) / 2)
    assert np.mean(n_up) > 1  # a scan over 26 masses crosses the level
    assert gv.p_local == pytest.approx(stats.norm.sf(z_obs), rel=1e-12)
    assert gv.p_global == pytest.approx(p_expected, rel=1e-12)
    assert gv.z_global == pytest.approx(stats.norm.isf(p_expected), rel=1e-9)


def test_global_significance_from_toys_counts_the_tail():
    # toy maxima from a known distribution (standard normal, 10^4 draws): the toy global p-value
    # at z is the tail fraction, within 4 binomial sigma of 1 - Phi(z), its quoted error the
    # binomial one, its Z the normal quantile of p
    zt = np.random.default_rng(11).standard_normal(10_000)
    for z in (0.5, 1.0, 2.0):
        gs = global_significance_toys(z, zt)
        p = stats.norm.sf(z)
        sig = np.sqrt(p * (1 - p) / zt.size)
        assert gs.method == "toys"
        assert gs.p_global == pytest.approx(p, abs=4 * sig)
        assert gs.p_global_error == pytest.approx(np.sqrt(gs.p_global * (1 - gs.p_global) / zt.size))
        assert gs.z_global == pytest.approx(stats.norm.isf(gs.p_global), rel=1e-9)
        assert gs.p_local == pytest.approx(p, rel=1e-12)


def _sigma_s(ch, masses):
    from isrsim.stats import fit_signal

    return np.array([fit_signal(ch, m).poi_hat_error for m in masses])


def test_count_upcrossings_closed_form():
    z = np.array([0.0, 1.0, 0.2, -2.0, 1.5, 0.9, 0.1])
    # u = max(z,0)^2 = 0, 1, .04, 0, 2.25, .81, .01 -> up-crossings of 0.5 at i = 1 and 4
    assert count_upcrossings(z, 0.5).tolist() == [2]


def test_toys_need_generator(edges):
    mm = Channel(_asimov(edges, "mumu"), sigma_m)
    with pytest.raises(ConfigError, match="rng"):
        pseudo_experiments(mm, [2.0], n_toys=2, rng=1)
    with pytest.raises(ConfigError, match="n_toys"):
        pseudo_experiments(mm, [2.0], n_toys=0, rng=np.random.default_rng(1))
