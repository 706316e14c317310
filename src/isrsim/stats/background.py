"""Smooth polynomial background model per channel (physics.md section 7.1 step 1).

What to use when
----------------
* :func:`fit_background` fits a polynomial of configurable order (default 4, as in BESIII
  2017) to a :class:`~isrsim.stats.histogram.Histogram`, skipping masked bins. Unweighted
  spectra use the Poisson likelihood (Baker-Cousins chi2 for the fit quality), weighted
  spectra a chi2 with the sum-of-weights-squared variances. Both are convex in the
  coefficients (the expectation is linear in them); the minimiser is the damped Newton
  kernel of the limit fits (:func:`isrsim.stats._kernels.profile_fit`, no signal), started
  from the linear least-squares solution, so that the fit, the N_QED(bin) of Eq. 1 and the
  profiled background of the limits share one optimum. Empty bins may end on nu = 0 (a
  polynomial touching zero in the empty tail of a falling spectrum): the kernel reaches that
  constrained optimum with a vanishing log barrier instead of stalling at the boundary.
  ``BackgroundFit.valid`` is False if that fit did not converge; callers must not use such a
  fit silently (:func:`isrsim.stats.epsilon_channels` and
  :func:`isrsim.stats.pseudo_experiments` raise).
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
from ._kernels import NU_FLOOR, profile_fit
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
        The Newton fit converged (decrement below tolerance, or the minimum reached to
        numerical precision) and chi2 and the covariance are finite.
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
        Check ``valid`` before using the fit (False: the minimiser did not converge).

    Raises
    ------
    ConfigError
        Too few used bins, an empty spectrum or an unknown method.
    """
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
    design = np.ascontiguousarray(chebyshev_bin_basis(hist.edges, order, hist.lo, hist.hi)[used])
    # start: weighted linear least squares
    wls = 1.0 / np.sqrt(var)
    start, *_ = np.linalg.lstsq(design * wls[:, None], n * wls, rcond=None)
    poisson = method == "poisson"
    if poisson and np.any(design @ start <= 0):
        start = np.zeros(order + 1)
        start[0] = max(float(np.mean(n)), 1.0)  # T_0 = 1: a constant, > 0 in every bin
    c, nll, status = _newton_fit(design, np.ascontiguousarray(n, dtype=np.float64),
                                 np.ascontiguousarray(var, dtype=np.float64), poisson, start)
    nu = design @ c
    w = n / np.maximum(nu, NU_FLOOR) ** 2 if poisson else 1.0 / var
    hess = design.T @ (design * w[:, None])  # exact observed Hessian (0 for empty bins)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        cov = np.full((order + 1, order + 1), np.nan)
    chi2 = 2.0 * nll
    ndf = int(n.size - (order + 1))
    valid = status in (0, 2) and bool(np.isfinite(chi2)) and bool(np.all(np.isfinite(cov)))
    pvalue = float(sps.chi2.sf(chi2, ndf)) if np.isfinite(chi2) else float("nan")
    return BackgroundFit(hist, order, c, cov, chi2, ndf, pvalue, method, valid)


#: Newton iterations of the background fit (a falling sparse spectrum with many empty bins
#: needs up to ~200 from the least-squares start: barrier stages, see isrsim.stats._kernels).
_MAX_ITER = 500
_TOL = 1e-10


def _newton_fit(design: np.ndarray, n: np.ndarray, var: np.ndarray, poisson: bool,
                start: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Minimise the Poisson (Baker-Cousins / 2) or chi2 / 2 nll over the coefficients.

    Uses :func:`~isrsim.stats._kernels.profile_fit` with the signal switched off (r = 0) and
    the two nuisance parameters fixed at their constraint minimum. Returns
    (coefficients, nll, kernel status)."""
    nb, npb = design.shape
    zeros = np.zeros(nb)
    p0 = np.concatenate([np.asarray(start, dtype=np.float64), [0.0, 0.0, 0.0]])
    pois = np.full(nb, poisson, dtype=np.bool_)
    nll, p, status, _ = profile_fit(p0, False, n, var, pois, design, zeros, zeros, zeros, zeros,
                                    zeros, zeros, np.zeros(2), _MAX_ITER, _TOL)
    return p[:npb].copy(), float(nll), int(status)
