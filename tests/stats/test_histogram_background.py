from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import chebyshev as cheb
from scipy import integrate, stats

from isrsim.exceptions import ConfigError
from isrsim.stats import chebyshev_bin_basis, fit_background, make_histogram


def test_histogram_counts_weights_and_jpsi_mask():
    m = np.array([1.501, 1.505, 1.512, 3.0, 3.39])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    h = make_histogram(m, w)
    assert h.nbins == 190
    assert np.isclose(h.widths[0], 0.010)
    assert h.counts[0] == 3.0 and h.variances[0] == 5.0  # 1 + 4
    assert h.counts[1] == 0.5 and h.variances[1] == 0.25
    assert h.weighted
    # J/psi window 2.95-3.20 GeV: bins [2.95, 2.96) ... [3.19, 3.20) are masked: 25 bins
    assert np.sum(~h.mask) == 25
    assert not h.mask[np.searchsorted(h.edges, 3.0) - 1]
    assert h.mask[np.searchsorted(h.edges, 2.945) - 1] and h.mask[np.searchsorted(h.edges, 3.205) - 1]
    hu = make_histogram(m)
    assert not hu.weighted and np.array_equal(hu.counts, hu.variances)


def test_chebyshev_bin_basis_is_bin_average():
    edges = np.linspace(1.5, 3.4, 20)
    b = chebyshev_bin_basis(edges, 4, 1.5, 3.4)
    for k in range(5):
        c = np.zeros(k + 1)
        c[k] = 1
        for i in (0, 7, 18):
            ref, _ = integrate.quad(lambda m: cheb.chebval((2 * m - 4.9) / 1.9, c), edges[i], edges[i + 1])
            assert b[i, k] == pytest.approx(ref / (edges[i + 1] - edges[i]), rel=1e-10, abs=1e-12)


def test_background_fit_recovers_polynomial(rng, edges):
    truth = np.array([8000.0, 1500.0, 900.0, 300.0, -60.0])
    mu = chebyshev_bin_basis(edges, 4, 1.5, 3.4) @ truth
    n = rng.poisson(mu)
    h = make_histogram(np.repeat(0.5 * (edges[1:] + edges[:-1]), n))
    fit = fit_background(h, 4)
    assert fit.valid and fit.method == "poisson" and fit.ndf == 165 - 5
    # coefficients vs truth: chi2 with 5 dof below its 99.9 % quantile
    d = fit.coefficients - truth
    assert d @ np.linalg.solve(fit.covariance, d) < stats.chi2.ppf(0.999, 5)
    # goodness of fit: a correct model gives p > 0.001 except in 0.1 % of seeds
    assert fit.pvalue > 1e-3
    assert np.std(fit.pulls()[h.mask]) == pytest.approx(1.0, abs=4 / np.sqrt(2 * 165))


def test_poisson_pulls_use_the_fitted_expectation_at_low_counts():
    """Pulls of a Poisson fit are (n - nu) / sqrt(nu) with nu the fit (Pearson), so that their
    squares sum to ~ndf even at nu ~ 2 per bin: E[(n - nu)^2 / nu] = 1, Var = 2 + 1/nu = 2.5 per
    bin, sd of the sum 50 for 1000 bins (+ a few for the 3 fitted coefficients). Dividing by the
    data variance instead (Neyman, 0 for empty bins) gives E ~ 0.53 per bin at nu = 2 (sum
    ~530), far outside the 4 sd band."""
    rng = np.random.default_rng(7)
    edges = np.linspace(1.0, 2.0, 1001)
    truth = np.array([2.0, -0.3, 0.1])
    mu = chebyshev_bin_basis(edges, 2, 1.0, 2.0) @ truth
    n = rng.poisson(mu)
    h = make_histogram(np.repeat(0.5 * (edges[1:] + edges[:-1]), n), lo=1.0, hi=2.0,
                       bin_width=0.001, mask_windows=None)
    fit = fit_background(h, 2)
    assert fit.valid and h.nbins == 1000
    s2 = float(np.sum(fit.pulls() ** 2))
    assert s2 == pytest.approx(fit.ndf, abs=4.0 * np.sqrt(2.5 * 1000))
    assert np.mean(fit.pulls()) == pytest.approx(0.0, abs=4.0 / np.sqrt(1000))


def test_weighted_fit_uses_chi2_and_scales(rng, edges):
    mu = np.full(190, 2000.0)
    n = rng.poisson(mu)
    masses = np.repeat(0.5 * (edges[1:] + edges[:-1]), n)
    h1 = make_histogram(masses)
    h2 = make_histogram(masses, np.full(masses.size, 2.0))
    f1 = fit_background(h1, 2)
    f2 = fit_background(h2, 2)
    assert f2.method == "chi2"
    # weight 2 on every event: counts x2, variances x4 -> coefficients x2 (to the chi2-vs-
    # Poisson estimator difference, O(1/n) = 5e-4 relative) and the same chi2/ndf scale
    assert f2.coefficients[0] == pytest.approx(2 * f1.coefficients[0], rel=2e-3)
    assert f2.chi2_ndf == pytest.approx(f1.chi2_ndf, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"masses": []}, "empty"),
        ({"masses": [2.0, 2.1], "weights": [1.0]}, "length"),
        ({"masses": [2.0], "bin_width": -0.01}, "bin_width"),
        ({"masses": [2.0], "lo": 3.0, "hi": 2.0}, "range"),
        ({"masses": [2.0], "mask_windows": [(3.2, 3.1)]}, "mask_windows"),
    ],
)
def test_histogram_bad_input(kwargs, match):
    masses = kwargs.pop("masses")
    with pytest.raises(ConfigError, match=match) as exc:
        make_histogram(masses, **kwargs)
    assert "\n" not in str(exc.value)


def test_background_fit_bad_order(edges):
    h = make_histogram(np.full(10, 2.0))
    with pytest.raises(ConfigError, match="order"):
        fit_background(h, -1)
