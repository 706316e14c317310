"""Upper limits from pseudo-experiments (Neyman construction with q~_mu; CLs), for low counts.

Why: the asymptotic conventions of :mod:`isrsim.stats.limits` assume many background events
under the signal. Below ~10 they under-cover (exact coverage of a counting experiment, minimum
over the true signal: q~_mu 0.84 at b = 3, 0.75 at b = 0.5; CLs 0.86 and 0.84), and physics.md
7.2 asks for toys there. These functions compute the same limits with the distribution of
q~_mu sampled instead of assumed.

Method (the LHC frequentist recipe, ATL-PHYS-PUB-2011-011 / CMS-NOTE-2011-005 section 2;
q~_mu of Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727 eq. 16):

* at a tested mu, the nuisance parameters are fixed to their conditional fit to the data,
  theta^^(mu) (polynomial coefficients, theta_n, theta_r); pseudo-data are drawn from that model
  (Poisson bins: Poisson counts; weighted bins: Gaussian with the spectrum's sum-of-weights-
  squared variance) with the global observables of the constrained nuisances drawn from
  N(theta^^(mu), 1), and each pseudo-experiment is fitted like the data (free fit, mu_hat clipped
  at 0, fit at mu: q~_mu, :func:`isrsim.stats._kernels.toy_qtilde`);
* ``"qtilde_toys"``: CL_s+b(mu) = P(q~_mu >= q~_mu,obs | mu, theta^^(mu)); the limit is the mu
  where it falls to 1 - CL (a Neyman construction in q~_mu: it covers, up to the discreteness of
  the counts and the tie rule below, which make it over-cover);
* ``"cls_toys"``: CLs = CL_s+b / CL_b with CL_b(mu) = P(q~_mu >= q~_mu,obs | 0, theta^^(0)) from
  background-only pseudo-experiments (Read, J. Phys. G 28 (2002) 2693); for n = 0 in a counting
  experiment CLs = e^-mu whatever the background, i.e. 2.30 events at 90 % CL.

The pseudo-experiments reuse the same uniform random numbers at every tested mu (common random
numbers: Poisson counts are the quantile function of a fixed u, :func:`~isrsim.stats._kernels.
poisson_quantile`), so CL(mu) is a step function without toy-to-toy noise between neighbouring
mu and the root finder converges. A q~ of a pseudo-experiment within ``TIE_TOLERANCE`` of the
observed one counts as at least as extreme (discrete counts give exact ties), and so does a
pseudo-experiment with exactly the data's counts in every bin, whatever its global observables.
The last rule departs from the plain recipe on purpose: there the randomised global observables
of a constrained nuisance break the ties between equal counts, about half of them against the
data, and with the observed global observables at their nominal values the limit becomes the
"mid-p" one: any efficiency_unc > ~1e-5 lowered the q~ limit of n = 0, b = 1 from 1.29 to
0.64 and the CLs limit of n = 3, b = 1 from 5.71 to 5.19, below the exact classical limits,
with a minimum coverage of 0.80 (q~) and 0.86 (CLs) at b = 1 (review 2026-11-22). With the
rule the limits are continuous in the uncertainty (equal to the unc = 0 ones up to ~1e-2) and
conservative; at large uncertainties more than a Cousins-Highland average over the efficiency
(CLs, n = 3, b = 1, log-normal: 5.90 vs 5.77 at 10 %, 6.50 vs 5.96 at 20 %). The toy
statistical uncertainty of the limit, ``toy_error``, is the binomial relative error of CL at the
limit divided by the logarithmic slope of CL(mu) (a secant over 0.7-1.3 times the limit: CL falls
roughly exponentially, and a short secant of the step function is noisy).

Enough pseudo-experiments: the limit rests on the ones at least as extreme as the data, about
(1 - CL) n_toys of the s+b ensemble for "qtilde_toys", and for "cls_toys" CL_b n_toys of the
b-only ensemble too. With fewer than :data:`MIN_EXTREME` of either at the limit the result is
flagged (``converged = False``; ``n_extreme`` tells how many): e.g. n = 0 over a background b has
CL_b = e^-b and needs n_toys >> MIN_EXTREME e^b. Where no b-only pseudo-experiment is as extreme
as the data, CLs is unknown: the limit is nan.

Randomness only through the ``rng`` argument (numpy.random.Generator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..exceptions import ConfigError
from ._kernels import poisson_quantiles, toy_qtilde
from .limits import (
    _MAX_ITER,
    _TOL,
    Channel,
    UpperLimit,
    _build_problems,
    _check_channels,
    _check_cl,
    _check_masses,
    _check_signal,
    _counting_problem,
    _limit_on_problem,
    _ObservedQ,
    _Problem,
    _solve_upper,
)
from .toys import _check_toys

__all__ = ["TOY_METHODS", "ToyUpperLimit", "counting_exact_upper_limit", "counting_toy_upper_limit",
           "toy_upper_limit"]

#: Toy-based limit methods and the asymptotic convention each is compared with.
TOY_METHODS = {"qtilde_toys": "qtilde_asymptotic", "cls_toys": "cls_asymptotic"}
#: Absolute tolerance on q~ for "at least as extreme as observed" (fits converge to ~1e-9).
TIE_TOLERANCE = 1e-6
#: Fewest pseudo-experiments accepted: CL = 0.1 is then resolved to +-0.03.
MIN_TOYS = 100
#: Largest (pseudo-experiments x bins) per ensemble: two float64 arrays of that size are kept.
MAX_TOY_BINS = 20_000_000
#: Fewest pseudo-experiments at least as extreme as the data (per ensemble) at the limit for
#: ``converged`` (the binomial error of CL is then below 1/sqrt(10) = 32 %).
MIN_EXTREME = 10
#: Relative accuracy of the root in mu (well below the toy error of any sensible ensemble).
_XTOL_REL = 1e-3


@dataclass(frozen=True)
class ToyUpperLimit:
    """Toy-based upper limit at one mass hypothesis.

    Attributes
    ----------
    mass : float
        Hypothesis mass in GeV (nan for counting experiments).
    method : str
        ``"qtilde_toys"`` or ``"cls_toys"`` (:data:`TOY_METHODS`).
    cl : float
        Confidence level.
    upper_limit : float
        Upper limit on the POI.
    toy_error : float
        Its statistical uncertainty from the finite number of pseudo-experiments (nan if CL(mu)
        is flat around the limit). A first-order (binomial) estimate: with ~50 or more
        pseudo-experiments as extreme as the data it matches the seed-to-seed spread (0.18 vs
        0.18 events, CLs on a sparse spectrum, 1000 pseudo-experiments, 8 seeds), with ~10 it
        can understate it (0.45 vs 0.72, 200 pseudo-experiments, 12 seeds; 2026-11-22).
    n_toys : int
        Pseudo-experiments per tested mu (per hypothesis, s+b and b-only each for CLs).
    n_failed : int
        Most pseudo-experiments at any tested mu whose fits failed; they are left out of CL.
    n_extreme : int
        Pseudo-experiments at least as extreme as the data at the limit (the smaller number of
        the s+b and b-only ensembles for CLs); 0 if no limit was found.
    asymptotic : UpperLimit
        The same limit in the asymptotic convention of :data:`TOY_METHODS` (with ``poi_hat``,
        ``poi_hat_error``, ``z_local`` of the data and ``yield_per_poi``).
    converged : bool
        The data's fits converged, the root was bracketed, at most 1 % of the
        pseudo-experiments failed at any tested mu, and ``n_extreme >= MIN_EXTREME``.
    """

    mass: float
    method: str
    cl: float
    upper_limit: float
    toy_error: float
    n_toys: int
    n_failed: int
    n_extreme: int
    asymptotic: UpperLimit
    converged: bool


def _check_toy_args(method: str, cl: float, n_toys, rng) -> None:
    if method not in TOY_METHODS:
        msg = f"method = {method!r} must be one of {', '.join(TOY_METHODS)}"
        raise ConfigError(msg)
    _check_cl(cl)
    _check_toys(n_toys, rng, MIN_TOYS)


class _Ensemble:
    """The random numbers of ``n_toys`` pseudo-experiments of one problem, reused at every mu."""

    def __init__(self, prob: _Problem, n_toys: int, rng: np.random.Generator):
        nb = prob.n.size
        if n_toys * nb > MAX_TOY_BINS:
            msg = (f"n_toys = {n_toys} x {nb} bins exceeds {MAX_TOY_BINS} (memory): use fewer "
                   "pseudo-experiments or a narrower spectrum")
            raise ConfigError(msg)
        # u in the open interval (0, 1): Phi^-1(u) finite
        self.u = (rng.integers(0, 2**53, size=(n_toys, nb)) + 0.5) * 2.0**-53
        self.z = special.ndtri(self.u)
        self.z_aux = rng.standard_normal((n_toys, 2))

    def q(self, prob: _Problem, obs: _ObservedQ, mu: float,
          p_gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q~_mu of the pseudo-experiments drawn at the parameters ``p_gen``, and which of them
        have exactly the data's counts in every bin (all bins Poisson only)."""
        npb = prob.npb
        nu = np.maximum(prob.expected_counts(p_gen), 0.0)
        starts = np.vstack([p_gen, obs.p_hat, obs.p0, prob.p_bkg])
        q, _ = toy_qtilde(float(mu), nu, prob.var, prob.poisson, self.u, self.z, self.z_aux,
                          np.ascontiguousarray(p_gen[npb : npb + 2]), starts, prob.design, prob.b0,
                          prob.r, prob.sn, prob.s0, prob.ds, prob.d2s, _MAX_ITER, _TOL)
        if not prob.poisson.all():
            return q, np.zeros(q.size, dtype=bool)
        nu_t = np.broadcast_to(nu, self.u.shape)
        counts = poisson_quantiles(self.u, np.ascontiguousarray(nu_t), self.z)
        return q, np.all(counts == prob.n, axis=1)


def _fraction_extreme(q_same: tuple[np.ndarray, np.ndarray], q_obs: float) -> tuple[float, int, int]:
    """(fraction of the finite q with q >= q_obs - TIE_TOLERANCE or with the data's counts,
    number finite, number failed)."""
    q, same = q_same
    ok = np.isfinite(q)
    n_ok = int(ok.sum())
    n_bad = q.size - n_ok
    if n_ok == 0:
        return float("nan"), 0, n_bad
    extreme = (q[ok] >= q_obs - TIE_TOLERANCE) | same[ok]
    return float(np.count_nonzero(extreme)) / n_ok, n_ok, n_bad


class _NoTail(Exception):
    """No b-only pseudo-experiment is as extreme as the data: CLs is unknown."""


def _cl_value(terms: tuple[float, float, int, int]) -> float:
    """CL_s+b / CL_b (CL_b = 1 for the Neyman construction)."""
    p_sb, c_b, _, _ = terms
    if not c_b > 0:
        raise _NoTail
    return p_sb / c_b


def _toy_limit_on_problem(prob: _Problem, method: str, cl: float, n_toys: int,
                          rng: np.random.Generator) -> ToyUpperLimit:
    alpha = 1.0 - cl
    obs = _ObservedQ(prob)
    step = obs.scale
    asym = _limit_on_problem(prob, TOY_METHODS[method], cl, obs)  # also the bracketing scale
    sb = _Ensemble(prob, n_toys, rng)
    bo = _Ensemble(prob, n_toys, rng) if method == "cls_toys" else None
    state = {"n_failed": 0}

    def cl_terms(mu: float) -> tuple[float, float, int, int]:
        """(CL_s+b, CL_b, toys used in each) at mu; CL_b = 1 for "qtilde_toys"."""
        q_obs, p_mu = obs.at(mu)
        if not np.isfinite(q_obs):  # the data's fit at mu failed: no limit (never "no tail")
            return np.nan, 1.0, 0, 0
        if p_mu is None:  # mu <= reference: q~_obs = 0, every pseudo-experiment is as extreme
            return 1.0, 1.0, n_toys, n_toys
        p_sb, n_sb, bad = _fraction_extreme(sb.q(prob, obs, mu, p_mu), q_obs)
        state["n_failed"] = max(state["n_failed"], bad)
        if bo is None:
            return p_sb, 1.0, n_sb, n_toys
        c_b, n_b, bad = _fraction_extreme(bo.q(prob, obs, mu, obs.p0), q_obs)
        state["n_failed"] = max(state["n_failed"], bad)
        return p_sb, c_b, n_sb, n_b

    mu_ref = obs.mu_ref
    if np.isfinite(asym.upper_limit) and asym.upper_limit * prob.rscale > mu_ref:
        step = asym.upper_limit * prob.rscale - mu_ref
    try:
        mu_up, ok = _solve_upper(lambda m: alpha - _cl_value(cl_terms(m)), mu_ref, step,
                                 xtol_rel=_XTOL_REL)
    except _NoTail:
        mu_up, ok = float("nan"), False
    err = float("nan")
    n_extreme = 0
    if ok and np.isfinite(mu_up) and mu_up > mu_ref:
        p_sb, c_b, n_sb, n_b = cl_terms(mu_up)
        n_extreme = round(p_sb * n_sb) if bo is None else min(round(p_sb * n_sb), round(c_b * n_b))
        # toy error: binomial relative error of CL over the logarithmic slope of CL(mu)
        rel2 = (1.0 - p_sb) / max(p_sb * n_sb, 1.0)
        if bo is not None:
            rel2 += (1.0 - c_b) / max(c_b * n_b, 1.0)
        lo, hi = max(mu_ref, 0.7 * mu_up), 1.3 * mu_up
        floor = 0.5 / n_toys
        try:
            c_lo = max(_cl_value(cl_terms(lo)), floor)
            c_hi = max(_cl_value(cl_terms(hi)), floor)
        except _NoTail:
            c_lo = c_hi = floor
        log_slope = (np.log(c_lo) - np.log(c_hi)) / (hi - lo)
        if log_slope > 0:
            err = float(np.sqrt(rel2) / log_slope)
    rs = prob.rscale
    conv = bool(ok and prob.ok and asym.converged and state["n_failed"] <= 0.01 * n_toys
                and n_extreme >= MIN_EXTREME)
    return ToyUpperLimit(mass=prob.mass, method=method, cl=cl, upper_limit=float(mu_up) / rs,
                         toy_error=err / rs, n_toys=int(n_toys), n_failed=int(state["n_failed"]),
                         n_extreme=int(n_extreme),
                         asymptotic=asym, converged=conv)


def toy_upper_limit(channels: Channel | Sequence[Channel], mass: float, *, rng: np.random.Generator,
                    method: str = "cls_toys", cl: float = 0.90, n_toys: int = 2000,
                    signal: str = "shape") -> ToyUpperLimit:
    """Toy-based profile-likelihood upper limit on the POI at one mass (module docstring).

    Parameters
    ----------
    channels, mass, cl, signal
        As for :func:`isrsim.stats.upper_limit`.
    rng : numpy.random.Generator
        Source of the pseudo-experiments.
    method : {"cls_toys", "qtilde_toys"}
        CLs or the plain Neyman construction in q~_mu (:data:`TOY_METHODS`).
    n_toys : int
        Pseudo-experiments per tested mu (>= :data:`MIN_TOYS`; the toy error of the limit falls
        like 1/sqrt(n_toys): ~3 % of the limit for 2000 at 90 % CL).

    Returns
    -------
    ToyUpperLimit
    """
    _check_toy_args(method, cl, n_toys, rng)
    _check_signal(signal)
    chans = _check_channels(channels)
    prob = _build_problems(chans, _check_masses([mass]), signal)[0]
    return _toy_limit_on_problem(prob, method, cl, int(n_toys), rng)


def counting_toy_upper_limit(n_obs: float, background: float, *, rng: np.random.Generator,
                             method: str = "cls_toys", cl: float = 0.90, n_toys: int = 2000,
                             efficiency: float = 1.0, efficiency_unc: float = 0.0) -> ToyUpperLimit:
    """Toy-based upper limit on the signal yield of a single-bin counting experiment with a known
    background (the model of :func:`isrsim.stats.counting_upper_limit`); see
    :func:`toy_upper_limit` for ``rng``, ``method``, ``n_toys``."""
    _check_toy_args(method, cl, n_toys, rng)
    prob = _counting_problem(n_obs, background, efficiency, efficiency_unc)
    return _toy_limit_on_problem(prob, method, cl, int(n_toys), rng)


def counting_exact_upper_limit(n_obs: int, background: float, *, method: str = "cls_toys",
                               cl: float = 0.90, efficiency: float = 1.0) -> float:
    """The limit :func:`counting_toy_upper_limit` converges to for infinitely many
    pseudo-experiments, in closed form: a counting experiment with a known background and
    efficiency, no nuisance parameter.

    For a known background q~_mu falls strictly with n below mu + b (arXiv:1007.1727 eq. 16 for
    one Poisson bin), so "at least as extreme as n_obs" is N <= n_obs:
    CL_s+b(mu) = P(N <= n_obs | eff mu + b) and CL_b = P(N <= n_obs | b). ``"qtilde_toys"`` solves
    CL_s+b = 1 - CL (the classical Poisson upper limit with background, e.g. 2.30, 3.89, 5.32
    events for n = 0, 1, 2 and b = 0 at 90 % CL, PDG Review of Particle Physics, "Statistics",
    table of Poisson limits), ``"cls_toys"`` CL_s+b / CL_b = 1 - CL (Read, J. Phys. G 28 (2002)
    2693; 2.30 events for n = 0 whatever b). Used where the background under the signal is small
    (:data:`isrsim.workflows.sideband.SMALL_BACKGROUND`) and as the reference of the toys.

    Parameters
    ----------
    n_obs : int
        Observed events (a non-negative integer).
    background : float
        Known expected background, >= 0.
    method : {"cls_toys", "qtilde_toys"}
    cl : float
    efficiency : float
        Signal efficiency (the limit is on the yield before it).

    Returns
    -------
    float
        Upper limit on the signal yield (0 for the Neyman construction when the observation
        is so low that even mu = 0 is excluded: CL_s+b(0) < 1 - CL).
    """
    from scipy import optimize, stats

    if method not in TOY_METHODS:
        msg = f"method = {method!r} must be one of {', '.join(TOY_METHODS)}"
        raise ConfigError(msg)
    _check_cl(cl)
    if isinstance(n_obs, (bool, np.bool_)) or not isinstance(n_obs, (int, np.integer)) or n_obs < 0:
        msg = f"n_obs = {n_obs!r} must be an integer >= 0 (observed events)"
        raise ConfigError(msg)
    for nm, v, lo in (("background", background, 0.0), ("efficiency", efficiency, 1e-300)):
        if not (isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) and v >= lo):
            msg = f"{nm} = {v!r} must be finite and {'> 0' if lo > 0 else '>= 0'}"
            raise ConfigError(msg)
    n, b, alpha = int(n_obs), float(background), 1.0 - cl
    cl_b = float(stats.poisson.cdf(n, b)) if method == "cls_toys" else 1.0

    def excess(s: float) -> float:  # CL(s) - (1 - CL), falling in s
        return float(stats.poisson.cdf(n, s + b)) / cl_b - alpha

    if excess(0.0) <= 0.0:
        return 0.0
    hi = n + 10.0 + 10.0 * np.sqrt(n + 1.0)
    while excess(hi) > 0.0:
        hi *= 2.0
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-12, rtol=1e-12)) / float(efficiency)
