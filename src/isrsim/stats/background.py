"""Smooth polynomial background model per channel (physics.md section 7.1 step 1).

What to use when
----------------
* :func:`fit_background` fits a polynomial of configurable order (default 4, as in BESIII
  2017) to a :class:`~isrsim.stats.histogram.Histogram`, skipping masked bins. Unweighted
  spectra use the Poisson likelihood (Baker-Cousins chi2 for the fit quality), weighted
  spectra a chi2 with the sum-of-weights-squared variances. The minimiser is iminuit
  (MIGRAD with the analytic gradient) started from the linear least-squares solution.
* :meth:`BackgroundFit.residuals` / :meth:`BackgroundFit.pulls` give data - fit and
  (data - fit) / error, as in Fig. 2 of the BESIII 2017 paper (arXiv:1705.04265).

The polynomial is expanded in Chebyshev polynomials T_k(x) of the mapped variable
x = (2M - lo - hi) / (hi - lo) in [-1, 1], and the per-bin expectation is the exact
bin-average of the polynomial times the bin content scale, so the coefficient covariance is
well conditioned even at order 4-8 (a monomial basis in M is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as cheb
from scipy import stats as sps

from ..exceptions import ConfigError
from .histogram import Histogram

__all__ = ["BackgroundFit", "chebyshev_bin_basis", "fit_background"]


def chebyshev_bin_basis(edges: np.ndarray, order: int, lo: float, hi: float) -> np.ndarray:
    """Bin-averaged Chebyshev basis: B[i, k] = mean of T_k(x(M)) over bin i.

    Parameters
    ----------
    edges : ndarray
        Bin edges in GeV.
    order : int
        Polynomial order (number of basis functions is order + 1).
    lo, hi : float
        Range in GeV mapped onto x in [-1, 1].

    Returns
    -------
    ndarray, shape (nbins, order + 1)
    """
    edges = np.asarray(edges, dtype=np.float64)
    x = (2.0 * edges - lo - hi) / (hi - lo)
    basis = np.empty((edges.size - 1, order + 1))
    dx = np.diff(x)
    for k in range(order + 1):
        c = np.zeros(k + 1)
        c[k] = 1.0
        prim = cheb.chebval(x, cheb.chebint(c))
        basis[:, k] = np.diff(prim) / dx
    return basis


def _check_order(order: int) -> int:
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or not 0 <= order <= 12:
        msg = f"order = {order!r} must be an integer in [0, 12]"
        raise ConfigError(msg)
    return int(order)


@dataclass(frozen=True)
class BackgroundFit:
    """Result of a polynomial background fit.

    Attributes
    ----------
    hist : Histogram
        The fitted spectrum.
    order : int
        Polynomial order.
    coefficients : ndarray
        Chebyshev coefficients (expected counts per bin, bin-averaged basis).
    covariance : ndarray
        Covariance of the coefficients (inverse Hessian of the nll).
    chi2 : float
        Fit quality: Baker-Cousins likelihood-ratio chi2 (Poisson) or the weighted chi2.
    ndf : int
        Used bins minus fitted parameters.
    pvalue : float
        chi2 survival probability with ndf degrees of freedom.
    method : str
        ``"poisson"`` or ``"chi2"``.
    valid : bool
        iminuit's ``fmin.is_valid``.
    """

    hist: Histogram
    order: int
    coefficients: np.ndarray
    covariance: np.ndarray
    chi2: float
    ndf: int
    pvalue: float
    method: str
    valid: bool

    @property
    def chi2_ndf(self) -> float:
        """chi2 / ndf (nan if ndf <= 0)."""
        return self.chi2 / self.ndf if self.ndf > 0 else float("nan")

    def basis(self, edges: np.ndarray | None = None) -> np.ndarray:
        """Bin-averaged basis on ``edges`` (default: the histogram's edges)."""
        e = self.hist.edges if edges is None else np.asarray(edges, dtype=np.float64)
        return chebyshev_bin_basis(e, self.order, self.hist.lo, self.hist.hi)

    def expected(self) -> np.ndarray:
        """Fitted background per bin (all bins, including masked ones)."""
        return self.basis() @ self.coefficients

    def expected_error(self) -> np.ndarray:
        """Standard deviation of the fitted background per bin from the coefficient covariance."""
        b = self.basis()
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", b, self.covariance, b), 0.0))

    def density(self, mass: np.ndarray | float) -> np.ndarray:
        """Fitted background density in events per GeV at ``mass`` (GeV)."""
        m = np.asarray(mass, dtype=np.float64)
        x = (2.0 * m - self.hist.lo - self.hist.hi) / (self.hist.hi - self.hist.lo)
        # coefficients are per bin; convert to per GeV with the (uniform) bin width
        return cheb.chebval(x, self.coefficients) / float(np.mean(self.hist.widths))

    def residuals(self) -> np.ndarray:
        """Data - fit per bin (masked bins included)."""
        return self.hist.counts - self.expected()

    def pulls(self) -> np.ndarray:
        """(data - fit) / sqrt(variance) per bin (0 where the variance is 0)."""
        var = self.hist.variances if self.method == "chi2" else np.maximum(self.expected(), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(var > 0, self.residuals() / np.sqrt(var), 0.0)
        return out


def _fit_arrays(hist: Histogram):
    used = hist.mask
    n = hist.counts[used]
    if hist.weighted:
        var = hist.variances[used].copy()
        pos = var > 0
        floor = float(np.min(var[pos])) if np.any(pos) else 1.0
        var[~pos] = floor
    else:
        var = np.maximum(n, 1.0)
    return used, n, var


def fit_background(hist: Histogram, order: int = 4, *, method: str = "auto") -> BackgroundFit:
    """Fit a polynomial background to the unmasked bins of ``hist``.

    Parameters
    ----------
    hist : Histogram
        Spectrum (masked bins are ignored).
    order : int
        Polynomial order (default 4: BESIII 2017, physics.md section 7.1 step 1).
    method : {"auto", "poisson", "chi2"}
        ``"auto"`` uses the Poisson likelihood for unweighted and the weighted chi2 for
        weighted histograms.

    Returns
    -------
    BackgroundFit

    Raises
    ------
    ConfigError
        Too few used bins, an empty spectrum or an unknown method.
    """
    from iminuit import Minuit  # heavy import kept local

    order = _check_order(order)
    if method not in ("auto", "poisson", "chi2"):
        msg = f"method = {method!r} must be 'auto', 'poisson' or 'chi2'"
        raise ConfigError(msg)
    if method == "auto":
        method = "chi2" if hist.weighted else "poisson"
    used, n, var = _fit_arrays(hist)
    if n.size <= order + 1:
        msg = f"histogram {hist.name!r} has {n.size} unmasked bins, need > order + 1 = {order + 1}"
        raise ConfigError(msg)
    if not np.sum(n) > 0:
        msg = f"histogram {hist.name!r} is empty in the fit range {hist.lo}-{hist.hi} GeV"
        raise ConfigError(msg)
    design = chebyshev_bin_basis(hist.edges, order, hist.lo, hist.hi)[used]
    # start: weighted linear least squares
    wls = 1.0 / np.sqrt(var)
    start, *_ = np.linalg.lstsq(design * wls[:, None], n * wls, rcond=None)
    if method == "poisson" and np.any(design @ start <= 0):
        start = np.zeros(order + 1)
        start[0] = max(float(np.mean(n)), 1.0)
    poisson = method == "poisson"

    def nll(c: np.ndarray) -> float:
        nu = design @ c
        if poisson:
            if np.any(nu <= 0):
                return 1e300
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(n > 0, n * np.log(n / nu), 0.0)
            return float(np.sum(nu - n + t))
        return float(0.5 * np.sum((n - nu) ** 2 / var))

    def grad(c: np.ndarray) -> np.ndarray:
        nu = design @ c
        l1 = 1.0 - n / np.where(nu > 0, nu, 1e-300) if poisson else (nu - n) / var
        return design.T @ l1

    m = Minuit(nll, start, grad=grad)
    m.errordef = Minuit.LIKELIHOOD
    m.strategy = 1
    m.migrad()
    c = np.array(m.values)
    nu = design @ c
    hess = design.T @ (design * (n / np.maximum(nu, 1e-300) ** 2 if poisson else 1.0 / var)[:, None])
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full((order + 1, order + 1), np.nan)
    chi2 = 2.0 * nll(c)
    ndf = int(n.size - (order + 1))
    return BackgroundFit(hist, order, c, cov, chi2, ndf, float(sps.chi2.sf(chi2, ndf)),
                         method, bool(m.fmin.is_valid))
