"""Upper limits on a narrow signal at fixed mass hypotheses (physics.md sections 7.1-7.3).

What to use when
----------------
* :class:`Channel` describes one spectrum (e.g. mu mu or e e): its histogram, the mass
  resolution sigma(m), the signal shape, the Gaussian-constrained systematics and the
  background polynomial order. Several channels share one parameter of interest (POI).
* :func:`upper_limit` / :func:`scan_limits`: profile-likelihood limit at one / many masses,
  background polynomial refitted (profiled) at every signal value, over the full spectrum
  (``signal="shape"``: the whole Gaussian is fitted across bins; ``signal="bin"``: only the
  bin containing m, with the containment f = erf(h / (sqrt2 sigma)), physics.md 7.1 step 2).
* :func:`sliding_scan`: BaBar-style sliding fit (physics.md 7.3): a low-order polynomial
  plus the user's signal shape in a window of +-``window_nsigma`` sigma(m) around m.
* :func:`counting_upper_limit`: single-bin counting experiment with known background.

Conventions (labels used in results):

``"qtilde_asymptotic"``
    one-sided q~_mu of Cowan, Cranmer, Gross, Vitells (arXiv:1007.1727, eq. 16),
    limit where q~_mu = Phi^-1(CL)^2 (1.6424 at 90 % CL), the physics.md 7.2 recipe. This
    threshold is the exact asymptotic CL quantile of q~_mu only where mu >= Phi^-1(CL) sigma_mu,
    i.e. for mu_hat >= 0 (coverage 0.90, tested on toys); after a downward fluctuation
    (mu_hat < 0) the exact quantile is lower (CCGV eq. 67: the limit would be
    mu_hat + 1.2816 sigma, down to zero or below), so this rule over-covers there (e.g. 99.8 % at
    a true mu = 0.3 sigma). Use ``"cls_asymptotic"`` for the CCGV CLs limit.
``"rolke_chi2"``
    -2 Delta ln L = chi2_1 quantile(CL) (2.7055 at 90 % CL), the Rolke-Lopez-Conrad /
    TRolke convention used by the BESIII-era papers (physics/0403059); the reference is the
    best fit with mu clipped at 0, as for q~_mu. Conservative (about 95 % one-sided coverage).
``"cls_asymptotic"``
    CLs = CL_{s+b} / CL_b <= 1 - CL with q~_mu and the Asimov data set for sigma
    (arXiv:1007.1727, eqs. 65-66 and section 5).

Validity: all three are asymptotic (Wilks / Asimov) limits, right when the expected background
under the signal is large. Below ~10 events they under-cover, CLs included (exact Poisson
coverage of a counting experiment, minimum over the true signal: q~_mu 0.84 at b = 3, 0.75 at
b = 0.5, 0.59 for b -> 0; CLs 0.86, 0.84, 0.75), and for n = 0, b -> 0 they give 0.82 (q~_mu)
and 1.35 (CLs) instead of the exact 2.30 (review 2026-11-22); physics.md 7.2 asks for toys there:
:mod:`isrsim.stats.toylimits` (``toy_upper_limit``, ``counting_toy_upper_limit``; the closed
form ``counting_exact_upper_limit`` for a known background).
Spectra with ~0.2 or more background events per bin under the signal covered 0.89-0.90 in the
same review.

Nuisance parameters: theta_n scales every channel's signal by exp(norm_unc_c theta_n)
(efficiency / ISR-QED normalisation, fully correlated between channels; log-normal, so the
signal never vanishes or changes sign, :mod:`isrsim.stats._kernels`); theta_r scales
sigma(m) by (1 + res_unc_c theta_r) (quadratic morphing of the template through
theta_r = -1, 0, +1). Both carry a unit Gaussian constraint; the polynomial coefficients
are free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from ..exceptions import ConfigError
from ._kernels import profile_fit
from .background import chebyshev_bin_basis, fit_background
from .histogram import Histogram

__all__ = [
    "CONVENTIONS",
    "Channel",
    "LimitScan",
    "SignalFit",
    "SpuriousSignal",
    "UpperLimit",
    "bin_containment",
    "counting_upper_limit",
    "fit_signal",
    "gaussian_shape",
    "scan_limits",
    "sliding_scan",
    "spurious_signal",
    "threshold",
    "upper_limit",
]

CONVENTIONS = ("qtilde_asymptotic", "rolke_chi2", "cls_asymptotic")

#: Newton iterations per profile fit: a dense spectrum needs < 10; a sparse one (empty bins,
#: barrier stages, see isrsim.stats._kernels) up to ~60 from a cold start.
_MAX_ITER = 200
_TOL = 1e-9


def threshold(convention: str, cl: float = 0.90) -> float:
    """Critical value of -2 Delta ln L for a likelihood-ratio convention.

    ``"qtilde_asymptotic"``: Phi^-1(cl)^2 (1.6424 at 0.90); ``"rolke_chi2"``: chi2_1
    quantile (2.7055 at 0.90); physics.md section 7.2. ``"cls_asymptotic"`` has no fixed
    threshold and returns nan.
    """
    _check_convention(convention, cl)
    if convention == "qtilde_asymptotic":
        return float(sps.norm.ppf(cl) ** 2)
    if convention == "rolke_chi2":
        return float(sps.chi2.ppf(cl, 1))
    return float("nan")


def _check_convention(convention: str, cl: float) -> None:
    if convention not in CONVENTIONS:
        msg = f"convention = {convention!r} must be one of {', '.join(CONVENTIONS)}"
        raise ConfigError(msg)
    _check_cl(cl)


def _check_cl(cl: float) -> None:
    if not 0.5 < cl < 1.0:
        msg = f"cl = {cl} must be in (0.5, 1)"
        raise ConfigError(msg)


def gaussian_shape(lo: np.ndarray, hi: np.ndarray, mass: float, sigma: float) -> np.ndarray:
    """Fraction of a Gaussian(mass, sigma) in each bin [lo, hi) (GeV)."""
    return special.ndtr((hi - mass) / sigma) - special.ndtr((lo - mass) / sigma)


def bin_containment(sigma: float | np.ndarray, half_width: float = 0.005) -> np.ndarray:
    """Containment f = erf(h / (sqrt2 sigma)) of a centred Gaussian in +-h (physics.md 7.1).

    f = 0.6827, 0.4680, 0.3231 for sigma = 5, 8, 12 MeV and h = 5 MeV.
    """
    return special.erf(half_width / (np.sqrt(2.0) * np.asarray(sigma, dtype=np.float64)))


ShapeFn = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]


#: Largest relative resolution uncertainty: the signal template is morphed quadratically
#: through sigma (1 - res_unc), sigma, sigma (1 + res_unc) and extrapolated with the same
#: parabola; against the exact Gaussian bin integrals at sigma (1 + res_unc theta) the morph is
#: off by <= 2.3 % of the peak bin for |theta| <= 3 at res_unc = 0.1, but by 15 % (and negative
#: bins) at 0.2 and 24-53 % at 0.3 (5 MeV bins, sigma 8 MeV; review 2026-11-22).
RES_UNC_MAX = 0.1


@dataclass(frozen=True)
class Channel:
    """One spectrum entering a (possibly combined) limit.

    Attributes
    ----------
    hist : Histogram
        Observed spectrum (masked bins are ignored in every fit).
    sigma_m : float or callable
        Mass resolution in GeV, a constant or a function of the hypothesis mass (GeV).
    norm_unc : float
        Relative uncertainty on the signal yield (efficiency, normalisation), in [0, 0.5);
        log-normal: the yield scales by ``exp(norm_unc theta_n)``.
    res_unc : float
        Relative Gaussian uncertainty on sigma_m, in [0, :data:`RES_UNC_MAX`].
    order : int
        Background polynomial order for full-range fits (default 4, BESIII 2017).
    signal_scale : float or callable
        Expected total signal events in this channel per unit of the POI, constant or a
        function of mass (1 for a yield POI; see :mod:`isrsim.stats.epsilon` for eps^2).
    signal_shape : callable, optional
        ``f(lo_edges, hi_edges, mass, sigma) -> fractions`` (e.g. from simulated
        resolution); default :func:`gaussian_shape`.
    name : str
        Label (defaults to the histogram's name).
    """

    hist: Histogram
    sigma_m: float | Callable[[float], float]
    norm_unc: float = 0.0
    res_unc: float = 0.0
    order: int = 4
    signal_scale: float | Callable[[float], float] = 1.0
    signal_shape: ShapeFn | None = None
    name: str = ""

    def __post_init__(self) -> None:
        label = self.name or self.hist.name or "channel"
        object.__setattr__(self, "name", label)
        if not (np.isfinite(self.norm_unc) and 0.0 <= self.norm_unc < 0.5):
            msg = f"{label}: norm_unc = {self.norm_unc} must be in [0, 0.5)"
            raise ConfigError(msg)
        if not (np.isfinite(self.res_unc) and 0.0 <= self.res_unc <= RES_UNC_MAX):
            msg = (f"{label}: res_unc = {self.res_unc} must be in [0, {RES_UNC_MAX}] (the quadratic "
                   "template morphing through sigma (1 +- res_unc) is accurate to ~2 % of the peak "
                   "bin out to 3 standard deviations of the nuisance there; at 0.2 it is off by "
                   "15 % and turns bins negative)")
            raise ConfigError(msg)
        if not callable(self.sigma_m) and not (np.isfinite(self.sigma_m) and self.sigma_m > 0):
            msg = f"{label}: sigma_m = {self.sigma_m} GeV must be > 0"
            raise ConfigError(msg)
        if self.hist.nbins == 0 or not np.any(self.hist.counts[self.hist.mask] != 0):
            msg = f"{label}: histogram is empty in the unmasked fit range"
            raise ConfigError(msg)

    def sigma_at(self, mass: float) -> float:
        """Resolution in GeV at ``mass``; validated > 0."""
        s = float(self.sigma_m(mass)) if callable(self.sigma_m) else float(self.sigma_m)
        if not (np.isfinite(s) and s > 0):
            msg = f"{self.name}: sigma_m({mass}) = {s} GeV must be > 0"
            raise ConfigError(msg)
        return s

    def scale_at(self, mass: float) -> float:
        """Signal events per unit POI at ``mass``; validated > 0."""
        s = float(self.signal_scale(mass)) if callable(self.signal_scale) else float(self.signal_scale)
        if not (np.isfinite(s) and s > 0):
            msg = f"{self.name}: signal_scale({mass}) = {s} must be > 0"
            raise ConfigError(msg)
        return s


@dataclass(frozen=True)
class UpperLimit:
    """Upper limit at one mass hypothesis.

    Attributes
    ----------
    mass : float
        Hypothesis mass in GeV (nan for counting experiments).
    convention : str
        One of :data:`CONVENTIONS`.
    cl : float
        Confidence level.
    upper_limit : float
        Upper limit on the POI.
    poi_hat : float
        Unconstrained best-fit POI (may be negative).
    poi_hat_error : float
        Its Hesse error, sqrt((H^-1)_{mu mu}) with H the exact observed Hessian of -ln L at
        the best fit; nan where that is undefined (H not positive definite, or the best fit
        on the nu -> 0 boundary of an empty bin, e.g. mu_hat < 0 in a sparse spectrum).
    z_local : float
        Signed local significance sign(mu_hat) sqrt(2 |ln L(mu_hat) - ln L(0)|).
    yield_per_poi : tuple of float
        Expected total signal events per unit POI in each channel.
    converged : bool
        All fits converged (Newton decrement below tolerance); False also when a fit failed
        numerically (the limit is then nan or unreliable).
    """

    mass: float
    convention: str
    cl: float
    upper_limit: float
    poi_hat: float
    poi_hat_error: float
    z_local: float
    yield_per_poi: tuple[float, ...] = field(default=())
    converged: bool = True


@dataclass(frozen=True)
class LimitScan:
    """Limits over a list of mass hypotheses (arrays of length n_mass).

    ``yield_per_poi`` has shape (n_mass, n_channels); ``channel_names`` labels its columns.
    """

    mass: np.ndarray
    convention: str
    cl: float
    upper_limit: np.ndarray
    poi_hat: np.ndarray
    poi_hat_error: np.ndarray
    z_local: np.ndarray
    yield_per_poi: np.ndarray
    converged: np.ndarray
    channel_names: tuple[str, ...]
    method: str = "full"

    @classmethod
    def from_limits(cls, limits: Sequence[UpperLimit], names: tuple[str, ...], method: str) -> LimitScan:
        """Stack per-hypothesis results."""
        return cls(
            mass=np.array([x.mass for x in limits]),
            convention=limits[0].convention,
            cl=limits[0].cl,
            upper_limit=np.array([x.upper_limit for x in limits]),
            poi_hat=np.array([x.poi_hat for x in limits]),
            poi_hat_error=np.array([x.poi_hat_error for x in limits]),
            z_local=np.array([x.z_local for x in limits]),
            yield_per_poi=np.array([x.yield_per_poi for x in limits]),
            converged=np.array([x.converged for x in limits]),
            channel_names=names,
            method=method,
        )


# ---------------------------------------------------------------------------------------
# model assembly


class _Problem:
    """Flattened binned model at one hypothesis (internal; see module docstring).

    The internal POI is ``mu_int = poi * rscale`` so that mu_int is O(events).
    """

    def __init__(self, n, var, poisson, design, r, sn, s0, ds, d2s, p_bkg, rscale, mass, yields):
        self.n = np.ascontiguousarray(n, dtype=np.float64)
        self.var = np.ascontiguousarray(var, dtype=np.float64)
        self.poisson = np.ascontiguousarray(poisson, dtype=np.bool_)
        self.design = np.ascontiguousarray(design, dtype=np.float64)
        self.b0 = np.zeros(self.n.size)
        self.r = np.ascontiguousarray(r, dtype=np.float64)
        self.sn = np.ascontiguousarray(sn, dtype=np.float64)
        self.s0 = np.ascontiguousarray(s0, dtype=np.float64)
        self.ds = np.ascontiguousarray(ds, dtype=np.float64)
        self.d2s = np.ascontiguousarray(d2s, dtype=np.float64)
        self.aux = np.zeros(2)
        self.npb = self.design.shape[1]
        self.p_bkg = np.concatenate([p_bkg, [0.0, 0.0, 0.0]])
        self.rscale = rscale
        self.mass = mass
        self.yields = yields
        self.ok = True

    def with_data(self, n: np.ndarray, var: np.ndarray, aux: np.ndarray | None = None) -> _Problem:
        """Shallow copy with new observed counts (pseudo-experiments, Asimov data)."""
        new = object.__new__(_Problem)
        new.__dict__.update(self.__dict__)
        new.n = np.ascontiguousarray(n, dtype=np.float64)
        new.var = np.ascontiguousarray(var, dtype=np.float64)
        new.aux = np.zeros(2) if aux is None else np.ascontiguousarray(aux, dtype=np.float64)
        new.ok = True
        return new

    def fit(self, mu: float | None, start: np.ndarray | None = None):
        p0 = (self.p_bkg if start is None else start).copy()
        fit_mu = mu is None
        if not fit_mu:
            p0[self.npb + 2] = mu
        f, p, status, var_mu = profile_fit(p0, fit_mu, self.n, self.var, self.poisson, self.design,
                                           self.b0, self.r, self.sn, self.s0, self.ds, self.d2s,
                                           self.aux, _MAX_ITER, _TOL)
        if status == 3 and start is not None:
            return self.fit(mu, None)
        if status == 3:
            # background start invalid for this mu (nu <= 0): shift background up
            p0 = self.p_bkg.copy()
            if not fit_mu:
                p0[self.npb + 2] = mu
            f, p, status, var_mu = profile_fit(p0, fit_mu, self.n, self.var, self.poisson,
                                               self.design, self.b0, self.r, self.sn, self.s0,
                                               self.ds, self.d2s, self.aux, _MAX_ITER, _TOL)
        if status not in (0, 2):
            self.ok = False
        return f, p, var_mu

    def expected_counts(self, p: np.ndarray) -> np.ndarray:
        tn, tr, mu = p[self.npb], p[self.npb + 1], p[self.npb + 2]
        s = self.s0 + tr * self.ds + 0.5 * tr * tr * self.d2s
        # the kernels' expression and order (isrsim.stats._kernels)
        return mu * (self.r * np.exp(self.sn * tn) * s) + self.b0 + self.design @ p[: self.npb]


def _shape_templates(ch: Channel, lo: np.ndarray, hi: np.ndarray, mass: float, sigma: float):
    shape = ch.signal_shape or gaussian_shape
    s0 = np.asarray(shape(lo, hi, mass, sigma), dtype=np.float64)
    if ch.res_unc > 0:
        sp = np.asarray(shape(lo, hi, mass, sigma * (1 + ch.res_unc)), dtype=np.float64)
        sm = np.asarray(shape(lo, hi, mass, sigma * (1 - ch.res_unc)), dtype=np.float64)
        return s0, 0.5 * (sp - sm), sp - 2 * s0 + sm
    z = np.zeros_like(s0)
    return s0, z, z


def _check_mass(ch: Channel, mass: float) -> None:
    h = ch.hist
    if not (np.isfinite(mass) and h.lo < mass < h.hi):
        msg = f"mass hypothesis {mass} GeV is outside the spectrum {h.lo}-{h.hi} GeV of {ch.name!r}"
        raise ConfigError(msg)
    for lo, hi in h.mask_windows:
        if lo <= mass <= hi:
            msg = f"mass hypothesis {mass} GeV lies in the masked window {lo}-{hi} GeV of {ch.name!r}"
            raise ConfigError(msg)


def _channel_arrays(ch: Channel, used: np.ndarray):
    h = ch.hist
    n = h.counts[used]
    if h.weighted:
        var = h.variances[used].copy()
        pos = var > 0
        var[~pos] = float(np.min(var[pos])) if np.any(pos) else 1.0
        pois = np.zeros(n.size, dtype=bool)
    else:
        var = np.maximum(n, 1.0)
        pois = np.ones(n.size, dtype=bool)
    return n, var, pois


def _build_problem(channels: Sequence[Channel], mass: float, *, signal: str, bkg_starts,
                   window_nsigma: float | None = None, window_order: int = 2) -> _Problem:
    ns, vs, ps, sels, rs, sns, s0s, dss, d2ss, designs, starts, yields = ([] for _ in range(12))
    offset = 0
    for ic, ch in enumerate(channels):
        _check_mass(ch, mass)
        h = ch.hist
        sigma = ch.sigma_at(mass)
        used = h.mask.copy()
        if window_nsigma is None:
            design = chebyshev_bin_basis(h.edges, ch.order, h.lo, h.hi)
            start = None if bkg_starts is None else bkg_starts[ic]
        else:
            half = window_nsigma * sigma
            wlo, whi = max(h.lo, mass - half), min(h.hi, mass + half)
            used &= (h.edges[1:] > wlo + 1e-12) & (h.edges[:-1] < whi - 1e-12)
            if used.sum() <= window_order + 2:
                msg = (f"{ch.name}: sliding window {wlo:.4f}-{whi:.4f} GeV at m = {mass} has "
                       f"{used.sum()} usable bins, need > {window_order + 2}; raise window_nsigma")
                raise ConfigError(msg)
            design = chebyshev_bin_basis(h.edges, window_order, float(h.edges[:-1][used][0]),
                                         float(h.edges[1:][used][-1]))
            start = None
        lo, hi = h.edges[:-1][used], h.edges[1:][used]
        if signal == "shape":
            s0, ds, d2s = _shape_templates(ch, lo, hi, mass, sigma)
        else:  # single bin: containment of the bin holding the mass
            k = int(np.searchsorted(h.edges, mass, side="right") - 1)
            if not used[k]:
                msg = (f"{ch.name}: signal = 'bin' at the mass hypothesis {mass} GeV needs bin {k} "
                       f"[{h.edges[k]:.6g}, {h.edges[k + 1]:.6g}) GeV, which is masked (mask windows "
                       f"{list(h.mask_windows)}): choose a mass whose bin is unmasked or signal = 'shape'")
                raise ConfigError(msg)
            onebin = np.zeros(h.nbins)
            onebin[k] = 1.0
            sel = onebin[used] > 0
            s0 = np.zeros(used.sum())
            ds = np.zeros_like(s0)
            d2s = np.zeros_like(s0)
            a, b = h.edges[k : k + 1], h.edges[k + 1 : k + 2]
            t0, t1, t2 = _shape_templates(ch, a, b, mass, sigma)
            s0[sel], ds[sel], d2s[sel] = t0, t1, t2
        n, var, pois = _channel_arrays(ch, used)
        sels.append(offset + np.flatnonzero(used))
        offset += h.nbins
        d = design[used]
        if start is None:
            w = 1.0 / np.sqrt(var)
            start, *_ = np.linalg.lstsq(d * w[:, None], n * w, rcond=None)
            if np.any(d @ start <= 0):
                start = np.zeros(d.shape[1])
                start[0] = max(float(np.mean(n)), 1.0)
        scale = ch.scale_at(mass)
        yields.append(scale)
        ns.append(n)
        vs.append(var)
        ps.append(pois)
        designs.append(d)
        starts.append(start)
        rs.append(np.full(n.size, scale))
        sns.append(np.full(n.size, ch.norm_unc))
        s0s.append(s0)
        dss.append(ds)
        d2ss.append(d2s)
    # block-diagonal background design
    ntot = sum(x.size for x in ns)
    ptot = sum(x.shape[1] for x in designs)
    design = np.zeros((ntot, ptot))
    i0 = j0 = 0
    for d in designs:
        design[i0 : i0 + d.shape[0], j0 : j0 + d.shape[1]] = d
        i0 += d.shape[0]
        j0 += d.shape[1]
    r = np.concatenate(rs)
    rscale = float(np.max(r))
    prob = _Problem(np.concatenate(ns), np.concatenate(vs), np.concatenate(ps), design, r / rscale,
                    np.concatenate(sns), np.concatenate(s0s), np.concatenate(dss), np.concatenate(d2ss),
                    np.concatenate(starts), rscale, mass, tuple(yields))
    prob.sel = np.concatenate(sels)
    return prob


# ---------------------------------------------------------------------------------------
# limits on a prepared problem


def _cls_value(qt: float, qa: float) -> float:
    """Asymptotic CLs for q~_mu with the Asimov value q_A (arXiv:1007.1727 eqs. 65-66)."""
    qa = max(qa, 1e-300)
    sqa = np.sqrt(qa)
    if qt <= qa:
        sq = np.sqrt(max(qt, 0.0))
        clsb = special.ndtr(-sq)
        clb = special.ndtr(sqa - sq)
    else:
        clsb = special.ndtr(-(qt + qa) / (2 * sqa))
        clb = special.ndtr(-(qt - qa) / (2 * sqa))
    return float(clsb / clb) if clb > 0 else 1.0


def _cls_upper(q_of: Callable[[float], float], qa_of: Callable[[float], float], cl: float,
               step: float) -> tuple[float, bool]:
    """Asymptotic CLs upper limit: the mu > 0 where CLs(q~_mu, q~_mu,A) = 1 - cl (CCGV eqs. 65-66,
    :func:`_cls_value`), bracketed from 0 with the initial ``step``; ``q_of`` / ``qa_of`` give
    q~_mu of the data and of the Asimov data set."""
    alpha = 1.0 - cl

    def g(mu: float) -> float:
        if mu <= 0:
            return -alpha
        return alpha - _cls_value(q_of(mu), qa_of(mu))

    return _solve_upper(g, 0.0, step)


def _solve_upper(func: Callable[[float], float], lo: float, step: float, *,
                 xtol_rel: float = 1e-6) -> tuple[float, bool]:
    """Find mu > lo with func(mu) = 0, func increasing, func(lo) < 0; bracket by expansion, then
    to ``xtol_rel`` relative accuracy."""
    hi = lo + step
    flo = func(lo)
    if flo >= 0:
        return lo, True
    if not np.isfinite(flo):
        return float("nan"), False
    for _ in range(60):
        fhi = func(hi)
        if not np.isfinite(fhi):  # a failed profile fit: never bracket on NaN
            return float("nan"), False
        if fhi > 0:
            break
        lo, flo = hi, fhi
        step *= 2.0
        hi = lo + step
    else:
        return float("nan"), False
    xtol = xtol_rel * max(abs(hi), 1e-12)
    try:
        root = optimize.brentq(func, lo, hi, xtol=xtol, rtol=1e-7)
    except ValueError:
        # the profiled fit is path dependent (warm starts): brentq re-evaluated an end point on
        # the other side. Bisect on the stored bracket values instead, never re-evaluating them.
        a, fa, b, fb = lo, flo, hi, fhi
        for _ in range(200):
            if b - a <= xtol:
                break
            mid = 0.5 * (a + b)
            fm = func(mid)
            if not np.isfinite(fm):
                return float("nan"), False
            if fm > 0:
                b, fb = mid, fm
            else:
                a, fa = mid, fm
        root = a - fa * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
    return float(root), True


class _ObservedQ:
    """q~_mu of a problem's data (arXiv:1007.1727 eq. 16): the free fit, the conditional fit at
    mu = 0, the reference (best fit with mu_hat clipped at 0) and q~ at any mu, each conditional
    fit warm-started from the previous one."""

    def __init__(self, prob: _Problem):
        self.prob = prob
        f_hat, p_hat, var_mu = prob.fit(None)
        npb = prob.npb
        self.f_hat, self.p_hat = f_hat, p_hat
        self.mu_hat = float(p_hat[npb + 2])
        # reported Hesse error: nan where undefined (never the bracketing scale below)
        self.err_hat = float(np.sqrt(var_mu)) if var_mu > 0 else float("nan")
        self.f0, self.p0, _ = prob.fit(0.0, p_hat)
        dq0 = max(2.0 * (self.f0 - f_hat), 0.0)
        self.z = float(np.sign(self.mu_hat) * np.sqrt(dq0))
        if self.mu_hat >= 0:
            self.f_ref, self.p_ref, self.mu_ref = f_hat, p_hat, self.mu_hat
        else:
            self.f_ref, self.p_ref, self.mu_ref = self.f0, self.p0, 0.0
        sig = self.err_hat
        if not np.isfinite(sig) or sig <= 0:  # scale for bracketing the limit only
            sig = max(np.sqrt(max(prob.n.sum(), 1.0)), 1.0)
        self.scale = float(sig)
        self._last = self.p_ref

    def at(self, mu: float) -> tuple[float, np.ndarray | None]:
        """(q~_mu, parameters of the conditional fit at mu); (0, None) for mu <= the reference
        mu, (nan, None) if the conditional fit failed."""
        if mu <= self.mu_ref:
            return 0.0, None
        f, p, _ = self.prob.fit(mu, self._last)
        if not np.isfinite(f):  # restart the profile from the best fit before giving up
            f, p, _ = self.prob.fit(mu, self.p_ref)
        if not np.isfinite(f):
            return float("nan"), None
        self._last = p
        return max(2.0 * (f - self.f_ref), 0.0), p

    def q(self, mu: float) -> float:
        return self.at(mu)[0]


def _limit_on_problem(prob: _Problem, convention: str, cl: float,
                      obs: _ObservedQ | None = None) -> UpperLimit:
    """The limit in ``convention``; ``obs``: the data's fits if already made."""
    obs = _ObservedQ(prob) if obs is None else obs
    npb = prob.npb
    q_of, mu_ref, sig_hat, p0 = obs.q, obs.mu_ref, obs.scale, obs.p0

    if convention in ("qtilde_asymptotic", "rolke_chi2"):
        thr = threshold(convention, cl)
        mu_up, ok = _solve_upper(lambda m: q_of(m) - thr, mu_ref, np.sqrt(thr) * sig_hat)
    else:
        # Asimov background-only data from the conditional mu = 0 fit (arXiv:1007.1727 sec. 5)
        asimov = prob.with_data(np.maximum(prob.expected_counts(p0), 1e-12), prob.var,
                                aux=p0[npb : npb + 2])
        fa0, pa0, _ = asimov.fit(0.0, p0)
        cache_a = {"p": pa0}

        def qa_of(mu: float) -> float:
            f, p, _ = asimov.fit(mu, cache_a["p"])
            cache_a["p"] = p
            return max(2.0 * (f - fa0), 0.0)

        mu_up, ok = _cls_upper(q_of, qa_of, cl, max(mu_ref, 0.0) + 1.5 * sig_hat)
        ok = ok and asimov.ok
    rs = prob.rscale
    return UpperLimit(mass=prob.mass, convention=convention, cl=cl, upper_limit=mu_up / rs,
                      poi_hat=obs.mu_hat / rs, poi_hat_error=obs.err_hat / rs, z_local=obs.z,
                      yield_per_poi=prob.yields, converged=bool(ok and prob.ok))


def _check_channels(channels: Channel | Sequence[Channel]) -> tuple[Channel, ...]:
    if isinstance(channels, Channel):
        return (channels,)
    chans = tuple(channels)
    if not chans or not all(isinstance(c, Channel) for c in chans):
        msg = "channels must be a Channel or a non-empty sequence of Channel"
        raise ConfigError(msg)
    return chans


def _bkg_starts(chans: Sequence[Channel]) -> list[np.ndarray]:
    return [fit_background(c.hist, c.order).coefficients for c in chans]


def _check_signal(signal: str) -> None:
    if signal not in ("shape", "bin"):
        msg = f"signal = {signal!r} must be 'shape' (full Gaussian fit) or 'bin' (single bin)"
        raise ConfigError(msg)


def _check_masses(masses) -> np.ndarray:
    m = np.atleast_1d(np.asarray(masses, dtype=np.float64))
    if m.size == 0:
        msg = "masses is empty: give at least one mass hypothesis"
        raise ConfigError(msg)
    return m


def upper_limit(channels: Channel | Sequence[Channel], mass: float, *,
                convention: str = "qtilde_asymptotic", cl: float = 0.90,
                signal: str = "shape") -> UpperLimit:
    """Profile-likelihood upper limit on the POI at one mass hypothesis (physics.md 7.2).

    Parameters
    ----------
    channels : Channel or sequence of Channel
        Spectra combined at likelihood level with a common POI.
    mass : float
        Hypothesis mass in GeV (inside every spectrum, outside masked windows).
    convention : str
        One of :data:`CONVENTIONS`.
    cl : float
        Confidence level (default 0.90).
    signal : {"shape", "bin"}
        Full-shape Gaussian fit across bins, or the single-bin containment variant.

    Returns
    -------
    UpperLimit
    """
    _check_convention(convention, cl)
    _check_signal(signal)
    chans = _check_channels(channels)
    return _run_scan(chans, _check_masses([mass]), convention, cl, signal)[0][0]


def _build_problems(chans, masses, signal, *, window_nsigma=None, window_order=2) -> list[_Problem]:
    starts = _bkg_starts(chans) if window_nsigma is None else None
    return [_build_problem(chans, float(m), signal=signal, bkg_starts=starts,
                           window_nsigma=window_nsigma, window_order=window_order) for m in masses]


def _run_scan(chans, masses, convention, cl, signal, *, window_nsigma=None, window_order=2):
    problems = _build_problems(chans, masses, signal, window_nsigma=window_nsigma,
                               window_order=window_order)
    limits = [_limit_on_problem(p, convention, cl) for p in problems]
    method = ("sliding" if window_nsigma is not None else "full") + ("" if signal == "shape" else "-bin")
    return limits, method


def scan_limits(channels: Channel | Sequence[Channel], masses: Sequence[float] | np.ndarray, *,
                convention: str = "qtilde_asymptotic", cl: float = 0.90,
                signal: str = "shape") -> LimitScan:
    """Upper limits at every mass in ``masses`` with the full-range profiled polynomial.

    See :func:`upper_limit` for the parameters; returns a :class:`LimitScan`.
    """
    _check_convention(convention, cl)
    _check_signal(signal)
    chans = _check_channels(channels)
    limits, method = _run_scan(chans, _check_masses(masses), convention, cl, signal)
    return LimitScan.from_limits(limits, tuple(c.name for c in chans), method)


def sliding_scan(channels: Channel | Sequence[Channel], masses: Sequence[float] | np.ndarray, *,
                 convention: str = "qtilde_asymptotic", cl: float = 0.90,
                 window_nsigma: float = 15.0, order: int = 2) -> LimitScan:
    """BaBar-style sliding signal + background fit (physics.md 7.3, arXiv:1406.2980).

    At each mass m a polynomial of order ``order`` (Chebyshev on the window) plus the
    channel's ``signal_shape`` of width sigma(m) is fitted in the bins within
    m +- ``window_nsigma`` sigma(m) (clipped to the spectrum; masked bins dropped).
    """
    _check_convention(convention, cl)
    chans = _check_channels(channels)
    if not (np.isfinite(window_nsigma) and window_nsigma >= 2):
        msg = f"window_nsigma = {window_nsigma} must be >= 2"
        raise ConfigError(msg)
    if not isinstance(order, (int, np.integer)) or not 0 <= order <= 6:
        msg = f"order = {order!r} must be an integer in [0, 6]"
        raise ConfigError(msg)
    limits, method = _run_scan(chans, _check_masses(masses), convention, cl, "shape",
                               window_nsigma=float(window_nsigma), window_order=int(order))
    return LimitScan.from_limits(limits, tuple(c.name for c in chans), method)


@dataclass(frozen=True)
class SignalFit:
    """Unconstrained signal + background fit at one mass (POI may be negative).

    Attributes: ``mass`` (GeV), ``poi_hat``, ``poi_hat_error`` (Hesse error from the exact
    observed Hessian; nan where undefined, see :class:`UpperLimit`), ``z_local`` (signed
    sqrt(2 ln L_{s+b}/L_b)), ``converged``.
    """

    mass: float
    poi_hat: float
    poi_hat_error: float
    z_local: float
    converged: bool


def fit_signal(channels: Channel | Sequence[Channel], mass: float, *, signal: str = "shape") -> SignalFit:
    """Fit signal + profiled polynomial at ``mass`` without computing a limit (fast)."""
    _check_signal(signal)
    chans = _check_channels(channels)
    prob = _build_problem(chans, float(mass), signal=signal, bkg_starts=None)
    f_hat, p_hat, var_mu = prob.fit(None)
    f0, _, _ = prob.fit(0.0, p_hat)
    mu_hat = float(p_hat[prob.npb + 2])
    z = float(np.sign(mu_hat) * np.sqrt(max(2.0 * (f0 - f_hat), 0.0)))
    err = float(np.sqrt(var_mu)) if var_mu > 0 else float("nan")
    return SignalFit(float(mass), mu_hat / prob.rscale, err / prob.rscale, z, prob.ok)


@dataclass(frozen=True)
class SpuriousSignal:
    """Fitted signal on a background-only spectrum vs mass (arrays of length n_mass).

    ``ratio = poi_hat / poi_hat_error``; on an Asimov spectrum it measures the bias of the
    background model (spurious signal), in units of the statistical error (nan where the
    Hesse error is undefined).
    """

    mass: np.ndarray
    poi_hat: np.ndarray
    poi_hat_error: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """Spurious signal in units of its statistical error."""
        return self.poi_hat / self.poi_hat_error


def spurious_signal(channels: Channel | Sequence[Channel], masses: Sequence[float] | np.ndarray, *,
                    signal: str = "shape") -> SpuriousSignal:
    """Signal fitted at each mass on the given (typically Asimov, background-only) spectra."""
    fits = [fit_signal(channels, float(m), signal=signal) for m in _check_masses(masses)]
    return SpuriousSignal(np.array([f.mass for f in fits]), np.array([f.poi_hat for f in fits]),
                          np.array([f.poi_hat_error for f in fits]))


def counting_upper_limit(n_obs: float, background: float, *, convention: str = "qtilde_asymptotic",
                         cl: float = 0.90, efficiency: float = 1.0, efficiency_unc: float = 0.0
                         ) -> UpperLimit:
    """Upper limit on the signal yield of a single-bin counting experiment.

    The background is known exactly; the signal expectation is ``efficiency * s`` with an
    optional Gaussian-constrained relative uncertainty ``efficiency_unc``. Same likelihood
    machinery as the spectrum fits (physics.md 7.2). Asymptotic: for a background below ~10
    events the limits under-cover (module docstring, "Validity"); use toys there
    (:func:`isrsim.stats.counting_toy_upper_limit`), or without an efficiency uncertainty the
    closed form :func:`isrsim.stats.counting_exact_upper_limit`.
    """
    _check_convention(convention, cl)
    return _limit_on_problem(_counting_problem(n_obs, background, efficiency, efficiency_unc),
                             convention, cl)


def _counting_problem(n_obs: float, background: float, efficiency: float,
                      efficiency_unc: float) -> _Problem:
    """The single-bin problem of :func:`counting_upper_limit` (arguments validated)."""
    for nm, v, lo in (("n_obs", n_obs, 0.0), ("background", background, 1e-300),
                      ("efficiency", efficiency, 1e-300)):
        if not (np.isfinite(v) and v >= lo):
            msg = f"{nm} = {v} must be finite and {'> 0' if lo > 0 else '>= 0'}"
            raise ConfigError(msg)
    if not 0 <= efficiency_unc < 0.5:
        msg = f"efficiency_unc = {efficiency_unc} must be in [0, 0.5)"
        raise ConfigError(msg)
    one = np.ones(1)
    prob = _Problem(np.array([float(n_obs)]), one, np.ones(1, dtype=bool), np.zeros((1, 0)),
                    one * efficiency, one * efficiency_unc, one, np.zeros(1), np.zeros(1),
                    np.zeros(0), 1.0, float("nan"), (float(efficiency),))
    prob.b0 = np.array([float(background)])
    return prob
