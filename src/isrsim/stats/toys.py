"""Expected limits, local and global significance from pseudo-experiments.

What to use when
----------------
* :func:`pseudo_experiments` runs the *full* mass scan on background-only pseudo-spectra
  (Poisson around each channel's fitted polynomial; weighted spectra: Gaussian with the
  observed sum-of-weights-squared variances) with the Gaussian-constraint global
  observables also drawn from N(0, 1). Returns an :class:`ExpectedLimits` with the median
  and +-1/2 sigma bands of the limit per hypothesis and the maximum local significance of
  each toy (for the trials factor, physics.md 7.3). Every toy fit's convergence is recorded:
  a (toy, mass) whose limit did not converge is left out of that mass's bands, and a toy
  with any failed hypothesis is left out of ``z_max`` (its scan maximum is unknown);
  ``n_failed`` counts them.
* :func:`global_significance_toys`: p_global = fraction of toys with max Z_loc >= observed
  (an upper bound 1/N_toys, flagged, when no toy reaches it).
* :func:`gross_vitells`: p_global ~ p_local + <N_up(u0)> exp(-(u - u0)/2), u = Z_loc^2
  (Gross & Vitells, arXiv:1005.1891, eq. 3 for one degree of freedom; physics.md 7.3).

Randomness only through the ``rng`` (numpy.random.Generator) argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..exceptions import ConfigError
from .background import fit_background
from .limits import (
    Channel,
    _build_problems,
    _check_channels,
    _check_convention,
    _check_masses,
    _check_signal,
    _limit_on_problem,
)

__all__ = [
    "ExpectedLimits",
    "GlobalSignificance",
    "count_upcrossings",
    "global_significance_toys",
    "gross_vitells",
    "pseudo_experiments",
]

#: Quantiles of the background-only limit distribution: -2, -1, 0, +1, +2 sigma.
BAND_QUANTILES = tuple(float(special.ndtr(k)) for k in (-2, -1, 0, 1, 2))


@dataclass(frozen=True)
class ExpectedLimits:
    """Background-only pseudo-experiment results for a scan.

    Attributes
    ----------
    mass : ndarray
        Hypothesis masses in GeV.
    convention : str
        Limit convention.
    cl : float
        Confidence level.
    bands : ndarray, shape (5, n_mass)
        Limit quantiles at Phi(-2), Phi(-1), 0.5, Phi(1), Phi(2) (rows), over the toys whose
        fit converged at that mass (nan where none did).
    limits : ndarray, shape (n_toys, n_mass)
        Every toy's limits (including non-converged ones; see ``converged``).
    z_local : ndarray, shape (n_toys, n_mass)
        Every toy's signed local significances.
    z_max : ndarray, shape (n_toys,)
        Maximum Z_loc of each toy over the scan; nan for a toy with a non-converged fit at
        any mass (left out of the global significance).
    converged : ndarray of bool, shape (n_toys, n_mass)
        The toy's limit at that mass converged (:attr:`~isrsim.stats.UpperLimit.converged`)
        and is finite.
    """

    mass: np.ndarray
    convention: str
    cl: float
    bands: np.ndarray
    limits: np.ndarray
    z_local: np.ndarray
    z_max: np.ndarray
    converged: np.ndarray

    @property
    def median(self) -> np.ndarray:
        """Median expected limit."""
        return self.bands[2]

    @property
    def n_failed(self) -> int:
        """Number of toys with a non-converged fit at one mass hypothesis or more."""
        return int(np.sum(~np.all(self.converged, axis=1)))

    @property
    def n_used(self) -> np.ndarray:
        """Number of toys entering the bands at each mass."""
        return np.sum(self.converged, axis=0)


def _check_toys(n_toys, rng, minimum: int = 1) -> None:
    """``n_toys`` an integer >= ``minimum`` and ``rng`` a numpy.random.Generator."""
    if not isinstance(n_toys, (int, np.integer)) or n_toys < minimum:
        msg = f"n_toys = {n_toys!r} must be an integer >= {minimum}"
        raise ConfigError(msg)
    if not isinstance(rng, np.random.Generator):
        msg = f"rng = {rng!r} must be a numpy.random.Generator"
        raise ConfigError(msg)


def _toy_data(chans: Sequence[Channel], bkg: list[np.ndarray], rng: np.random.Generator):
    ns, vs = [], []
    for ch, b in zip(chans, bkg):
        h = ch.hist
        bpos = np.maximum(b, 0.0)
        if h.weighted:
            n = bpos + np.sqrt(h.variances) * rng.standard_normal(b.size)
            var = h.variances.copy()
            pos = var > 0
            var[~pos] = float(np.min(var[pos])) if np.any(pos) else 1.0
        else:
            n = rng.poisson(bpos).astype(np.float64)
            var = np.maximum(n, 1.0)
        ns.append(n)
        vs.append(var)
    return np.concatenate(ns), np.concatenate(vs)


def pseudo_experiments(channels: Channel | Sequence[Channel], masses: Sequence[float] | np.ndarray, *,
                       n_toys: int, rng: np.random.Generator, convention: str = "qtilde_asymptotic",
                       cl: float = 0.90, signal: str = "shape", window_nsigma: float | None = None,
                       window_order: int = 2) -> ExpectedLimits:
    """Expected limits and max local significance from background-only pseudo-experiments.

    Parameters
    ----------
    channels, masses, convention, cl, signal
        As for :func:`~isrsim.stats.limits.scan_limits` (or
        :func:`~isrsim.stats.limits.sliding_scan` when ``window_nsigma`` is given).
    n_toys : int
        Number of pseudo-experiments (>= 1).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ExpectedLimits
    """
    _check_convention(convention, cl)
    _check_signal(signal)
    chans = _check_channels(channels)
    masses = _check_masses(masses)
    _check_toys(n_toys, rng)
    problems = _build_problems(chans, masses, signal, window_nsigma=window_nsigma,
                               window_order=window_order)
    bkg = []
    for c in chans:
        fit = fit_background(c.hist, c.order)
        if not fit.valid:
            msg = (f"{c.name}: the order-{c.order} background fit (the truth of the toys) did not "
                   f"converge (chi2 = {fit.chi2:.6g}); choose another order (0-12: --order, analysis.order "
                   "or Channel.order)")
            raise ConfigError(msg)
        bkg.append(fit.expected())
    lim = np.empty((n_toys, masses.size))
    z = np.empty((n_toys, masses.size))
    ok = np.empty((n_toys, masses.size), dtype=bool)
    for t in range(n_toys):
        n_all, v_all = _toy_data(chans, bkg, rng)
        aux = rng.standard_normal(2)
        for j, prob in enumerate(problems):
            toy = prob.with_data(n_all[prob.sel], v_all[prob.sel], aux)
            ul = _limit_on_problem(toy, convention, cl)
            lim[t, j] = ul.upper_limit
            z[t, j] = ul.z_local
            ok[t, j] = ul.converged and np.isfinite(ul.upper_limit) and np.isfinite(ul.z_local)
    return ExpectedLimits(masses, convention, cl, _bands(lim, ok), lim, z, _z_max(z, ok), ok)


def _bands(lim: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Band quantiles per mass over the converged toys (nan where there are none)."""
    out = np.full((len(BAND_QUANTILES), lim.shape[1]), np.nan)
    for j in range(lim.shape[1]):
        x = lim[ok[:, j], j]
        if x.size:
            out[:, j] = np.quantile(x, BAND_QUANTILES)
    return out


def _z_max(z: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Scan maximum of each toy whose fits all converged (nan otherwise)."""
    out = np.full(z.shape[0], np.nan)
    good = np.all(ok, axis=1)
    if np.any(good):
        out[good] = np.max(z[good], axis=1)
    return out


@dataclass(frozen=True)
class GlobalSignificance:
    """Global significance of the largest local excess.

    Attributes
    ----------
    z_local : float
        Observed maximum local significance.
    p_local : float
        One-sided local p-value 1 - Phi(z_local).
    p_global : float
        Global p-value (look-elsewhere effect included). With toys and no toy reaching
        ``z_local``: the upper bound 1 / N_toys (see ``upper_bound``).
    p_global_error : float
        Binomial error of p_global for the toy method (0 for Gross-Vitells).
    z_global : float
        Phi^-1(1 - p_global) (0 if p_global >= 0.5); a lower bound if ``upper_bound``.
    method : str
        ``"toys"`` or ``"gross_vitells"``.
    n_up : float
        Mean number of up-crossings of u0 (Gross-Vitells only; nan for toys).
    upper_bound : bool
        p_global is only an upper bound (toys: none of the N_toys exceeded the observed Z,
        so p_global < 1 / N_toys; it is not 0).
    """

    z_local: float
    p_local: float
    p_global: float
    p_global_error: float
    z_global: float
    method: str
    n_up: float = float("nan")
    upper_bound: bool = False


def _z_of_p(p: float) -> float:
    return float(max(-special.ndtri(p), 0.0)) if p > 0 else float("inf")


def _check_z_obs(z_obs: float) -> float:
    z = float(z_obs)
    if not np.isfinite(z):
        msg = (f"z_obs = {z_obs} must be a finite local significance (every observed fit failed?): "
               "allowed -inf < z_obs < inf")
        raise ConfigError(msg)
    return z


def global_significance_toys(z_obs: float, z_max_toys: np.ndarray) -> GlobalSignificance:
    """p_global = fraction of background-only toys whose max Z_loc >= ``z_obs`` (physics.md 7.3).

    Toys with a non-finite maximum (a failed fit, see :class:`ExpectedLimits`) are ignored.
    If no toy reaches ``z_obs``, p_global = 1 / N_toys is returned as an upper bound
    (``upper_bound`` = True; z_global is then a lower bound), never 0.

    Raises
    ------
    ConfigError
        Non-finite ``z_obs`` or no finite toy maximum.
    """
    z_obs = _check_z_obs(z_obs)
    zt = np.asarray(z_max_toys, dtype=np.float64)
    zt = zt[np.isfinite(zt)]
    if zt.size == 0:
        msg = "z_max_toys has no finite entry: run pseudo_experiments with n_toys >= 1"
        raise ConfigError(msg)
    k = int(np.sum(zt >= z_obs))
    bound = k == 0
    p = (1 if bound else k) / zt.size
    err = float(np.sqrt(max(p * (1 - p), 1.0 / zt.size) / zt.size))
    return GlobalSignificance(z_obs, float(special.ndtr(-z_obs)), p, err, _z_of_p(p), "toys",
                              upper_bound=bound)


def count_upcrossings(z_scan: np.ndarray, u0: float) -> np.ndarray:
    """Number of up-crossings of the level u0 by u = max(Z, 0)^2 along the mass scan.

    ``z_scan`` has shape (n_mass,) or (n_toys, n_mass); returns one count per row.
    """
    u = np.maximum(np.atleast_2d(np.asarray(z_scan, dtype=np.float64)), 0.0) ** 2
    return np.sum((u[:, :-1] < u0) & (u[:, 1:] >= u0), axis=1)


def gross_vitells(z_obs: float, z_scans: np.ndarray, *, u0: float = 0.5) -> GlobalSignificance:
    """Gross-Vitells estimate of the global p-value (arXiv:1005.1891; physics.md 7.3).

    p_global ~ P(chi2_1 > u)/2 + <N_up(u0)> exp(-(u - u0)/2), u = z_obs^2, with <N_up>
    averaged over the rows of ``z_scans`` (the observed scan and/or a few toy scans).
    """
    z_obs = _check_z_obs(z_obs)
    if not u0 > 0:
        msg = f"u0 = {u0} must be > 0"
        raise ConfigError(msg)
    n_up = float(np.mean(count_upcrossings(z_scans, u0)))
    u = max(float(z_obs), 0.0) ** 2
    p_loc = float(special.ndtr(-z_obs))
    p = min(1.0, p_loc + n_up * np.exp(-(u - u0) / 2.0)) if u > u0 else 1.0
    return GlobalSignificance(float(z_obs), p_loc, p, 0.0, _z_of_p(p), "gross_vitells", n_up)
