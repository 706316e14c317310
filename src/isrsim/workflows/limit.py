"""``isrsim limit``: epsilon(m) upper limits from candidate tables (physics.md 6.2, 7.1, 7.2).

What to use when
----------------
* :func:`run_limit` is the CLI entry point (``isrsim limit CANDS... --luminosity 2.93/fb
  -o limits.csv --plot limits.png``).
* :func:`analyse_candidates` does the work on a :class:`~isrsim.workflows._common.CandidateSet`
  and returns a :class:`LimitResult` (used by ``isrsim project`` and the BESIII validation).
* :func:`write_limit_csv` / :func:`plot_limits` write the outputs.

Recipe (BESIII 2017, arXiv:1705.04265; physics.md 7.1):

1. per channel (mu mu, e e) a histogram of m_ll in 10 MeV bins with the J/psi window
   2.95-3.20 GeV masked and a polynomial background (order per channel: given, or the
   smallest order >= 4 whose fit has p >= 0.05, see :func:`choose_order`; the
   spurious-signal study in ``validation/stats`` shows that order 4 is not adequate over the
   full 1.5-3.4 GeV range at BESIII statistics);
2. signal: a Gaussian of width sigma(m) fitted across all bins (full shape, no containment
   factor needed); sigma(m) is fitted linearly in m from truth-matched candidates (core
   width of m_ll - m_true), or the documented BESIII parameterisation 5 -> 12 MeV when the
   tables carry no truth;
3. eps^2 via Eq. (1) with N_f from :func:`isrsim.physics.darkphoton.n_f`, channels combined
   at likelihood level with a common eps^2 (:func:`isrsim.stats.scan_epsilon`), Gaussian
   systematics on the signal normalisation and the resolution;
4. expected limits (median, +-1/2 sigma) from background-only pseudo-experiments
   (:func:`isrsim.stats.pseudo_experiments`), local significance per hypothesis and the
   global significance from the toys' maximum local significance. Toys whose fit did not
   converge are left out (per mass for the bands, entirely for the global significance),
   counted in ``LimitResult.n_toys_failed`` and reported in the notes; background fits that
   did not converge are never used (ConfigError).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, InputFileError
from ._common import (
    BESIII_RESOLUTION,
    CandidateSet,
    Resolution,
    fit_resolution,
    read_candidate_tables,
    save_figure_atomic,
    write_csv_atomic,
)

__all__ = ["LimitResult", "SignalTemplate", "TemplateLimitResult", "TemplateModel",
           "analyse_candidates", "analyse_template", "choose_order", "mass_hypotheses",
           "plot_limits", "run_limit", "template_expected", "template_toys",
           "template_upper_limit", "write_limit_csv", "write_template_csv"]

#: Orders tried by :func:`choose_order`.
AUTO_ORDERS = (4, 5, 6, 7, 8)


@dataclass
class LimitResult:
    """epsilon limits over a mass scan.

    Attributes
    ----------
    mass : ndarray
        Hypothesis masses [GeV].
    channels : tuple of str
    epsilon_obs : ndarray
        Observed 90 % CL limit on epsilon.
    bands : ndarray or None
        Expected epsilon limits, shape (5, n_mass): -2, -1, 0 (median), +1, +2 sigma.
    yield_ul : ndarray
        Upper limit on the total A' yield, shape (n_mass, n_channels).
    n_qed_bin : ndarray
        Fitted QED yield in the bin at m (after selection), shape (n_mass, n_channels).
    sigma_m : ndarray
        Resolution at m per channel [GeV], shape (n_mass, n_channels).
    z_local : ndarray
        Signed local significance (combined fit).
    converged : ndarray of bool
        The observed limit at each mass converged.
    epsilon_obs_toy_error : ndarray
        Statistical error of ``epsilon_obs`` from the finite number of pseudo-experiments
        (toy conventions ``qtilde_toys``, ``cls_toys``; NaN for the asymptotic ones).
    orders : dict
        Polynomial order per channel.
    fits : dict
        :class:`~isrsim.stats.BackgroundFit` per channel.
    hists : dict
        :class:`~isrsim.stats.Histogram` per channel.
    resolution : dict
        :class:`~isrsim.workflows._common.Resolution` per channel.
    global_p, global_p_error : float or None
        Global p-value of the largest converged local excess from the toys (an upper bound
        1 / N_toys, with a note, if no toy reached it).
    n_toys_failed : int
        Toys with a non-converged fit at one mass or more (left out of the bands at those
        masses and out of the global p-value; see ``notes``).
    """

    mass: np.ndarray
    channels: tuple[str, ...]
    epsilon_obs: np.ndarray
    bands: np.ndarray | None
    yield_ul: np.ndarray
    n_qed_bin: np.ndarray
    sigma_m: np.ndarray
    z_local: np.ndarray
    converged: np.ndarray
    orders: dict[str, int]
    fits: dict[str, Any]
    hists: dict[str, Any]
    resolution: dict[str, Resolution]
    convention: str
    n_toys: int
    luminosity_invnb: float | None
    scaled: bool
    global_p: float | None = None
    global_p_error: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    n_toys_failed: int = 0
    #: pseudo-experiments per tested eps^2 of the observed toy limits (0: asymptotic)
    limit_toys: int = 0
    epsilon_obs_toy_error: np.ndarray | None = None
    #: scaled MC: per channel the (chi2, ndf) of the same background fit with the MC's own
    #: variances (sum w^2), the fit quality the order choice uses
    fit_chi2_mc: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def median(self) -> np.ndarray:
        """Median expected epsilon limit (NaN without toys)."""
        return self.bands[2] if self.bands is not None else np.full(self.mass.size, np.nan)

    def _chi2_text(self, c: str, f: Any) -> str:
        if c not in self.fit_chi2_mc:
            return f"{f.chi2:.1f}/{f.ndf}"
        chi2_mc, ndf = self.fit_chi2_mc[c]
        return (f"{chi2_mc:.1f}/{ndf} (MC errors; {f.chi2:.1f}/{f.ndf} with Poisson errors of the "
                "target luminosity, to which the MC is scaled)")

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (ranges of the limits, fit qualities, orders, notes)."""
        def rng(a: np.ndarray) -> list[float] | None:
            a = a[np.isfinite(a)]
            return [float(a.min()), float(a.max())] if a.size else None

        zl = self.z_local[np.isfinite(self.z_local)]
        return {
            "n_masses": int(self.mass.size),
            "mass_range_GeV": [float(self.mass.min()), float(self.mass.max())],
            "channels": list(self.channels),
            "convention": self.convention,
            "epsilon_obs_range": rng(self.epsilon_obs),
            "epsilon_exp_median_range": rng(self.median),
            "n_toys": self.n_toys,
            "limit_toys": self.limit_toys,
            "max_local_z": float(zl.max()) if zl.size else None,
            "global_p_toys": self.global_p,
            "global_p_error": self.global_p_error,
            "n_toys_failed": self.n_toys_failed,
            "orders": dict(self.orders),
            "background_fit_chi2_ndf": {c: self._chi2_text(c, f) for c, f in self.fits.items()},
            "resolution": {c: {"source": r.source, "sigma_at_lo_GeV": float(r(self.mass.min())),
                               "sigma_at_hi_GeV": float(r(self.mass.max()))}
                           for c, r in self.resolution.items()},
            "converged_fraction": float(np.mean(self.converged)),
            "luminosity_invnb": self.luminosity_invnb,
            "mc_scaled_to_luminosity": self.scaled,
            "seconds": round(self.seconds, 2),
            "notes": list(self.notes),
        }


#: Most mass hypotheses one scan may have (each costs a profile fit and memory for its window).
MAX_HYPOTHESES = 100_000


def _check_step(step: float, lo: float, hi: float) -> None:
    """The scan step: positive, at most the range, and at most :data:`MAX_HYPOTHESES` points."""
    smallest = (hi - lo) / MAX_HYPOTHESES
    if not (np.isfinite(step) and smallest <= step <= hi - lo):
        msg = (f"step = {step} GeV is invalid: allowed {smallest:.6g} <= step <= {hi - lo:.6g} GeV "
               f"(at most {MAX_HYPOTHESES} mass hypotheses in {lo:.6g}-{hi:.6g} GeV)")
        raise ConfigError(msg)


def mass_hypotheses(lo: float, hi: float, step: float,
                    mask_windows: Sequence[Sequence[float]] = ()) -> np.ndarray:
    """Hypotheses lo + step/2, lo + 3 step/2, ... < hi, dropping those inside masked windows
    (physics.md 7.1 step 5: step <= sigma(m)/2 or one bin)."""
    _check_step(step, lo, hi)
    m = lo + step * (0.5 + np.arange(int(np.floor((hi - lo) / step + 1e-9))))
    m = m[m < hi]
    for a, b in mask_windows:
        m = m[(m < a) | (m > b)]
    if m.size == 0:
        msg = f"no mass hypotheses in {lo}-{hi} GeV outside the masked windows {list(mask_windows)}"
        raise ConfigError(msg)
    return m


def choose_order(hist: Any, orders: Sequence[int] = AUTO_ORDERS, p_min: float = 0.05):
    """Smallest polynomial order in ``orders`` whose background fit converged and has p-value
    >= ``p_min`` (else the highest order whose fit converged). Returns (order, fit).

    Fits that did not converge (``BackgroundFit.valid`` False) are never ranked or returned;
    if no order converges, ConfigError."""
    from ..stats import fit_background

    best = None
    for o in orders:
        fit = fit_background(hist, o)
        if not fit.valid:
            continue
        if fit.pvalue >= p_min:
            return o, fit
        best = (o, fit)
    if best is None:
        msg = (f"{hist.name}: no polynomial background fit of order {list(orders)} converged: "
               "give the order explicitly (0-12) or widen the bins")
        raise ConfigError(msg)
    return best


def _histogram(m: np.ndarray, w: np.ndarray, *, lo: float, hi: float, bin_width: float,
               mask_windows, name: str, expectation: bool):
    from ..stats import make_histogram

    h = make_histogram(m, None if np.all(w == 1.0) else w, lo=lo, hi=hi, bin_width=bin_width,
                       mask_windows=mask_windows, name=name)
    if expectation:
        # scaled Monte Carlo: the spectrum is the expected count at the target luminosity;
        # treat it as (Asimov-like) pseudo-data with Poisson errors of that luminosity
        h = h.with_counts(h.counts)
    return h


def _check_coverage(h, name: str) -> None:
    """Mass range must be covered by the candidates (no empty edge bins)."""
    n = h.counts
    k = max(1, min(3, n.size // 10))
    if not (np.any(n[:k] > 0) and np.any(n[-k:] > 0)):
        msg = (f"mass range {h.lo:.4g}-{h.hi:.4g} GeV is outside the {name} spectrum (no candidates "
               "in its first or last bins): choose --mass inside the generated/selected range")
        raise ConfigError(msg)


#: Default-range margin inside the generated mass window, in units of the mass resolution.
EDGE_MARGIN_SIGMAS = 5.0


def _generated_window(metadata: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """Intersection of the generator-level mass windows (``process_config.mass_range``) of the
    tables' inputs, or None if none records one (e.g. real data, darkphoton-only tables). Every
    window's edges lie outside the intersection or on its boundary, so inside it the summed
    spectrum has no generator step."""
    lo, hi, found = -math.inf, math.inf, False
    for meta in metadata:
        for inp in meta.get("inputs") or [meta]:
            mr = (inp.get("process_config") or {}).get("mass_range")
            if isinstance(mr, (list, tuple)) and len(mr) == 2:
                lo, hi, found = max(lo, float(mr[0])), min(hi, float(mr[1])), True
    return (lo, hi) if found and lo < hi else None


def _default_range(cands: CandidateSet, bin_width: float) -> tuple[float, float]:
    """Spectrum and scan range without ``--mass``: the candidates' 0.1-99.9 % range, inside the
    generated mass window (:func:`_generated_window`) by :data:`EDGE_MARGIN_SIGMAS` times the
    mass resolution (1.4826 MAD of m_ll - m_true; 2 bins without truth), on bin edges. At a
    window edge the spectrum is a step smeared by the resolution, which no polynomial follows:
    scanned up to the edges, a flat spectrum with sigma_m = 8 MeV gives local significances
    |Z| of 9-12 in the edge bins, none above 3.1 from 40 MeV inside
    (``tests/workflows/test_limit.py``); 1/fb of BESIII isr_mumu 1.5-3.4 GeV gave |Z| up to
    ~20 at the edges."""
    m = cands.m_ll
    a, b = np.percentile(m, [0.1, 99.9])
    window = _generated_window(cands.metadata)
    if window is not None:
        d = m - cands.m_true
        d = d[np.isfinite(d)]
        sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) if d.size >= 100 else 0.0
        margin = max(EDGE_MARGIN_SIGMAS * sigma, 2 * bin_width)
        a, b = max(a, window[0] + margin), min(b, window[1] - margin)
    lo = np.ceil(a / bin_width - 1e-9) * bin_width
    hi = np.floor(b / bin_width + 1e-9) * bin_width
    if hi - lo < 10 * bin_width:
        msg = f"candidate masses span only {a:.4g}-{b:.4g} GeV: give --mass MIN MAX"
        raise ConfigError(msg)
    return float(round(lo, 9)), float(round(hi, 9))


def analyse_candidates(cands: CandidateSet, *, mass_range: Sequence[float] | None = None,
                       step: float | None = None, bin_width: float = 0.010,
                       order: int | Mapping[str, int] | None = None,
                       convention: str = "qtilde_asymptotic", n_toys: int = 50, seed: int = 1,
                       limit_toys: int = 1000, mask_windows: Sequence[Sequence[float]] | None = None,
                       norm_unc: float = 0.05, res_unc: float = 0.02,
                       bhabha_correction: Mapping[str, float] | None = None, n_f: Any = None,
                       resolution: Mapping[str, Resolution] | None = None,
                       channels: Sequence[str] | None = None) -> LimitResult:
    """epsilon limits from candidates (see the module docstring for the recipe).

    Parameters
    ----------
    cands : CandidateSet
        From :func:`~isrsim.workflows._common.read_candidate_tables`.
    mass_range : (lo, hi), optional
        Spectrum and scan range [GeV] (default: the candidates' 0.1-99.9 % range, kept
        5 sigma_m inside the generated mass window, :func:`_default_range`).
    step : float, optional
        Hypothesis step [GeV] (default ``bin_width``).
    bin_width : float
        delta_m [GeV] (10 MeV: BESIII 2017).
    order : int, mapping or None
        Background polynomial order (per channel with a mapping); None chooses per channel
        with :func:`choose_order`.
    convention : str
        One of :data:`isrsim.stats.CONVENTIONS`, or a toy method of
        :data:`isrsim.stats.TOY_METHODS` (``qtilde_toys``, ``cls_toys``): the observed limit at
        each mass is then the toy-based one (:func:`isrsim.stats.toy_upper_limit`, for low
        counts where the asymptotic formulae under-cover; 10-30 s per mass with 1000
        pseudo-experiments), while z_local and the expected bands use the asymptotic
        counterpart (``qtilde_asymptotic``, ``cls_asymptotic``).
    n_toys : int
        Background-only pseudo-experiments for the expected bands (0: none).
    seed : int
        Seed of the toys.
    limit_toys : int
        Pseudo-experiments per tested eps^2 of a toy convention (>= ``MIN_TOYS`` = 100).
    mask_windows : sequence of (lo, hi), optional
        Default: the J/psi window 2.95-3.20 GeV if it overlaps the range.
    norm_unc, res_unc : float
        Relative Gaussian systematics on the signal normalisation (BESIII 2017: 3.5-6.5 %)
        and on sigma(m).
    bhabha_correction : mapping, optional
        Annihilation fraction of the e e yield per channel (1 for isrsim's s-channel MC).
    n_f : float, callable or None
        N_f(m); None uses :func:`isrsim.physics.darkphoton.n_f`.
    resolution : mapping of channel to Resolution, optional
        Overrides the truth-based resolution fit.
    channels : sequence of str, optional
        Channels to use (default: all present).
    """
    from ..stats import (
        CONVENTIONS,
        JPSI_WINDOW,
        TOY_METHODS,
        Channel,
        EpsilonScan,
        epsilon_channels,
        global_significance_toys,
        pseudo_experiments,
        scan_limits,
    )
    from ..stats.toylimits import MIN_TOYS

    t0 = time.perf_counter()
    if convention not in CONVENTIONS and convention not in TOY_METHODS:
        msg = (f"convention = {convention!r} is invalid: allowed "
               f"{', '.join([*CONVENTIONS, *TOY_METHODS])}")
        raise ConfigError(msg)
    asym_convention = TOY_METHODS.get(convention, convention)
    if convention in TOY_METHODS and (isinstance(limit_toys, bool)
                                      or not isinstance(limit_toys, (int, np.integer))
                                      or limit_toys < MIN_TOYS):
        msg = f"limit toys = {limit_toys!r} must be an integer >= {MIN_TOYS}"
        raise ConfigError(msg)
    if not (np.isfinite(bin_width) and bin_width > 0):
        msg = f"bin_width = {bin_width} GeV must be > 0"
        raise ConfigError(msg)
    if not isinstance(n_toys, (int, np.integer)) or n_toys < 0:
        msg = f"toys = {n_toys!r} must be an integer >= 0"
        raise ConfigError(msg)
    chan_names = list(channels) if channels is not None else cands.channels
    if not chan_names:
        msg = "no channels to analyse"
        raise InputFileError(msg)
    if mass_range is None:
        lo, hi = _default_range(cands, bin_width)
    else:
        lo, hi = (float(x) for x in mass_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
            msg = f"mass range = ({lo}, {hi}) GeV must satisfy 0 <= MIN < MAX"
            raise ConfigError(msg)
        if hi - lo < 10 * bin_width:
            msg = f"mass range {lo}-{hi} GeV must span at least 10 bins of {bin_width} GeV"
            raise ConfigError(msg)
    if mask_windows is None:
        mask_windows = [JPSI_WINDOW] if (JPSI_WINDOW[1] > lo and JPSI_WINDOW[0] < hi) else []
    mask_windows = [tuple(float(x) for x in w) for w in mask_windows]
    step = bin_width if step is None else float(step)
    masses = mass_hypotheses(lo, hi, step, mask_windows)

    notes = list(cands.notes)
    hists, fits, orders, res_models, chans = {}, {}, {}, {}, []
    chi2_mc: dict[str, tuple[float, int]] = {}
    for c in chan_names:
        sel = cands.select(c)
        if not sel.any():
            msg = f"no candidates in channel {c!r}; tables hold {cands.channels}"
            raise InputFileError(msg)
        m, w = cands.m_ll[sel], cands.weight[sel]
        h = _histogram(m, w, lo=lo, hi=hi, bin_width=bin_width, mask_windows=mask_windows,
                       name=c, expectation=cands.scaled)
        _check_coverage(h, c)
        from ..stats import fit_background

        # scaled MC: the order test and the reported fit quality need the spectrum's real
        # fluctuations, the MC's (variance sum w^2): with Poisson errors of the target luminosity
        # its chi2 grew by L/L_MC
        h_mc = (_histogram(m, w, lo=lo, hi=hi, bin_width=bin_width, mask_windows=mask_windows,
                           name=c, expectation=False) if cands.scaled else None)
        f_mc = None
        if order is None:
            if h_mc is not None:
                o, f_mc = choose_order(h_mc)
                fit = fit_background(h, o)
            else:
                o, fit = choose_order(h)
        else:
            if isinstance(order, Mapping) and c not in order:
                msg = (f"order = {dict(order)!r} has no entry for the channel {c!r}: give an "
                       f"order (0-12) for each of {chan_names}")
                raise ConfigError(msg)
            o = int(order[c]) if isinstance(order, Mapping) else int(order)
            fit = fit_background(h, o)
            if not fit.valid:
                msg = (f"{c}: the order-{o} background fit did not converge (chi2 = {fit.chi2:.6g}): "
                       "choose another order (0-12)")
                raise ConfigError(msg)
        if resolution is not None and c in resolution:
            r = resolution[c]
        else:
            r = fit_resolution(cands.m_true[sel], m, lo, hi)
            if r is None:
                if hi < 1.4 or lo > 3.5:
                    msg = (f"channel {c!r}: the candidates carry no truth mass (truth_m) to measure "
                           "the resolution, and the BESIII parameterisation only covers 1.5-3.4 GeV")
                    raise InputFileError(msg)
                r = BESIII_RESOLUTION
                notes.append(f"{c}: no truth-matched candidates; resolution = {r.source}")
        hists[c], fits[c], orders[c], res_models[c] = h, fit, o, r
        if h_mc is not None:
            f_mc = f_mc if f_mc is not None else fit_background(h_mc, o)
            chi2_mc[c] = (float(f_mc.chi2), int(f_mc.ndf))
        chans.append(Channel(h, sigma_m=r, norm_unc=norm_unc, res_unc=res_unc, order=o, name=c))

    # channels with POI eps^2, made once for the scan, the toy limits and the bands
    echans = epsilon_channels(chans, n_f=n_f, bhabha_correction=bhabha_correction)
    scan = EpsilonScan.from_scan(scan_limits(echans, masses, convention=asym_convention))
    ypp = scan.limits.yield_per_poi  # (n_mass, n_chan): events per unit eps^2
    eps_obs, yield_ul, converged = scan.epsilon_ul, scan.yield_ul, scan.limits.converged
    eps_err = np.full(masses.size, np.nan)
    if convention in TOY_METHODS:
        eps_obs, yield_ul, converged, eps_err = _toy_observed(
            echans, masses, ypp, method=convention, n_toys=int(limit_toys), seed=int(seed))
        notes.append(f"observed limits from pseudo-experiments ({convention}, {int(limit_toys)} per "
                     f"tested eps^2; toy error in eps_obs_toy_error); z_local and the expected bands "
                     f"are {asym_convention}")
        if not np.all(converged):
            notes.append(f"{int(np.sum(~converged))} of {masses.size} toy limits did not converge "
                         f"(converged = False: typically fewer than 10 pseudo-experiments as extreme "
                         f"as the data, at a deficit; increase --limit-toys)")
    from ..stats import resolve_n_f, yield_per_epsilon2

    nf = resolve_n_f(n_f)
    nf_m = np.array([nf(float(x)) for x in masses])
    # N_QED(bin) per channel = ypp / (yield per eps^2 per unit N_QED)
    n_qed = ypp / yield_per_epsilon2(masses, 1.0, nf_m, bin_width)[:, None]
    sigma_m = np.array([[res_models[c](float(x)) for c in chan_names] for x in masses])
    bands = None
    gp = gpe = None
    n_failed = 0
    if n_toys > 0:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(7,))))
        exp = pseudo_experiments(echans, masses, n_toys=int(n_toys), rng=rng,
                                 convention=asym_convention)
        bands = np.sqrt(np.maximum(exp.bands, 0.0))
        n_failed = exp.n_failed
        if n_failed:
            notes.append(f"{n_failed} of {n_toys} pseudo-experiments had a non-converged fit at one "
                         "mass hypothesis or more: left out of the bands at those masses (per mass "
                         f"{int(exp.n_used.min())}-{int(exp.n_used.max())} toys used) and out of the "
                         "global significance")
        zl = scan.limits.z_local
        good = scan.limits.converged & np.isfinite(zl)
        if cands.scaled:
            pass  # no significance of a scaled-MC spectrum (note below)
        elif not np.any(good):
            notes.append("no observed fit converged: no global significance")
        elif not np.any(np.isfinite(exp.z_max)):
            notes.append("no pseudo-experiment converged at every mass: no global significance")
        else:
            g = global_significance_toys(float(np.max(zl[good])), exp.z_max)
            gp, gpe = g.p_global, g.p_global_error
            if g.upper_bound:
                notes.append(f"global p-value < {gp:.3g}: no pseudo-experiment reached the observed "
                             f"maximum local Z = {g.z_local:.3g} (global_p is that upper bound)")
    z_local = scan.limits.z_local
    unphysical = np.isfinite(eps_obs) & (eps_obs >= 1.0)
    if unphysical.any():
        notes.append(f"epsilon limit >= 1 at {int(unphysical.sum())} of {masses.size} masses: outside "
                     "the kinetic-mixing domain (eps < 1), no constraint there (luminosity too small "
                     "for this spectrum?)")
    if cands.scaled:
        notes.append("Monte Carlo rescaled to the target luminosity: the 'observed' limit is that of "
                     "the expected spectrum (MC fluctuations scaled), the bands are Poisson toys at "
                     "the target luminosity; no local or global significance is given (z_local = "
                     "nan): the spectrum's bin-to-bin fluctuations are the MC's, sqrt(L/L_MC) times "
                     "those of data at L, and would inflate Z by that factor")
        z_local = np.full_like(z_local, np.nan)
    return LimitResult(
        mass=masses, channels=tuple(chan_names), epsilon_obs=eps_obs, bands=bands,
        yield_ul=yield_ul, n_qed_bin=n_qed, sigma_m=sigma_m, z_local=z_local,
        converged=converged, orders=orders, fits=fits, hists=hists,
        resolution=res_models, convention=convention, n_toys=int(n_toys),
        luminosity_invnb=cands.luminosity_invnb, scaled=cands.scaled, global_p=gp,
        global_p_error=gpe, seconds=time.perf_counter() - t0, notes=notes, n_toys_failed=n_failed,
        fit_chi2_mc=chi2_mc, limit_toys=int(limit_toys) if convention in TOY_METHODS else 0,
        epsilon_obs_toy_error=eps_err)


def _toy_observed(echans: Sequence[Any], masses: np.ndarray, ypp: np.ndarray, *, method: str,
                  n_toys: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Toy-based observed limits at each mass: eps, yield limits per channel, convergence and
    the toy error of eps. Mass i uses the i-th child of ``SeedSequence(seed, spawn_key=(8,))``,
    so a limit does not depend on the other masses' pseudo-experiments."""
    from ..stats import toy_upper_limit

    seeds = np.random.SeedSequence(seed, spawn_key=(8,)).spawn(masses.size)
    eps2 = np.full(masses.size, np.nan)
    err2 = np.full(masses.size, np.nan)
    conv = np.zeros(masses.size, bool)
    for i, m in enumerate(masses):
        t = toy_upper_limit(echans, float(m), rng=np.random.Generator(np.random.PCG64(seeds[i])),
                            method=method, n_toys=n_toys)
        eps2[i], err2[i], conv[i] = t.upper_limit, t.toy_error, t.converged
    eps = np.sqrt(eps2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps_err = np.where(eps > 0, err2 / (2.0 * eps), np.nan)  # d sqrt(x) = dx / (2 sqrt(x))
    return eps, eps2[:, None] * ypp, conv, eps_err


def write_limit_csv(res: LimitResult, path: str | Path, *, comments: Sequence[str] = ()) -> Path:
    """CSV with one row per mass: mass, observed and expected epsilon (median, -2, -1, +1,
    +2 sigma), yield limits, N_QED(bin) and sigma(m) per channel, local Z, convergence."""
    chs = res.channels
    header = (["mass_GeV", "eps_obs", "eps_exp_median", "eps_exp_m2sigma", "eps_exp_m1sigma",
               "eps_exp_p1sigma", "eps_exp_p2sigma"]
              + [f"yield_ul_{c}" for c in chs] + [f"n_qed_bin_{c}" for c in chs]
              + [f"sigma_m_GeV_{c}" for c in chs] + ["z_local", "converged", "eps_obs_toy_error"])
    b = res.bands if res.bands is not None else np.full((5, res.mass.size), np.nan)
    err = (res.epsilon_obs_toy_error if res.epsilon_obs_toy_error is not None
           else np.full(res.mass.size, np.nan))
    rows = []
    for i, m in enumerate(res.mass):
        rows.append([m, res.epsilon_obs[i], b[2, i], b[0, i], b[1, i], b[3, i], b[4, i],
                     *res.yield_ul[i], *res.n_qed_bin[i], *res.sigma_m[i], res.z_local[i],
                     bool(res.converged[i]), err[i]])
    meta = [f"isrsim limit: convention {res.convention}, CL 90%, channels {'+'.join(chs)} combined "
            f"at likelihood level, orders {res.orders}, toys {res.n_toys}"
            + (f", {res.limit_toys} pseudo-experiments per tested eps^2 of the observed limit"
               if res.limit_toys else "")]
    if res.luminosity_invnb:
        meta.append(f"luminosity {res.luminosity_invnb:.6g}/nb")
    return write_csv_atomic(path, header, rows, comments=[*meta, *res.notes, *comments])


def plot_limits(res: LimitResult, path: str | Path, *,
                overlays: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
                title: str | None = None, observed_label: str = "observed 90% CL") -> Path:
    """Log-scale epsilon plot (observed, expected median and bands, overlays) as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..stats.plotting import plot_epsilon_limits

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    plot_epsilon_limits(res.mass, res.epsilon_obs, expected_bands=res.bands, overlays=overlays,
                        ax=ax, label=observed_label, title=title)
    fig.tight_layout()
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def run_limit(args: Any) -> dict[str, Any]:
    """``isrsim limit`` (arguments as parsed by :mod:`isrsim.cli`); returns a summary dict."""
    from ..io import check_distinct_paths, check_writable
    from ..stats.plotting import read_overlay_csv
    from ..units import parse_luminosity

    lumi = None
    if getattr(args, "luminosity", None) is not None:
        lumi = parse_luminosity(args.luminosity, field="--luminosity")
    if args.output is None or not str(args.output).strip():
        msg = "-o/--output is required (CSV of limits)"
        raise ConfigError(msg)
    toys = 50 if getattr(args, "toys", None) is None else args.toys
    if not isinstance(toys, int) or toys < 0:
        msg = f"--toys = {toys!r} must be an integer >= 0"
        raise ConfigError(msg)
    if getattr(args, "order", None) is not None and not 0 <= args.order <= 12:
        msg = f"--order = {args.order} must be in [0, 12]"
        raise ConfigError(msg)
    plot = getattr(args, "plot", None)
    overlay_paths = list(getattr(args, "overlay", None) or [])
    # the overlays are inputs too: -o or --plot must not replace a reference curve
    check_distinct_paths(list(args.inputs) + overlay_paths, [args.output, plot])
    if plot and Path(plot).resolve() == Path(args.output).resolve():
        msg = f"--plot = {str(plot)!r} is also -o/--output; allowed: two different paths"
        raise ConfigError(msg)
    for flag, path, suffix in (("-o/--output", args.output, ".csv"), ("--plot", plot, ".png")):
        if path is not None and Path(path).suffix.lower() != suffix:
            msg = f"{flag} = {str(path)!r} is invalid: allowed a path ending in {suffix}"
            raise ConfigError(msg)
    check_writable(args.output)
    if plot:  # before any output is written: a failing plot must not leave the CSV behind
        check_writable(plot)
    overlays = []
    for path in overlay_paths:
        om, oe = read_overlay_csv(path)
        overlays.append((Path(path).stem, om, oe))
    cands = read_candidate_tables(args.inputs, luminosity_invnb=lumi)
    res = analyse_candidates(cands, mass_range=args.mass, step=args.step, order=args.order,
                             convention=args.convention or "qtilde_asymptotic", n_toys=toys,
                             seed=args.seed if args.seed is not None else 1,
                             limit_toys=1000 if getattr(args, "limit_toys", None) is None
                             else args.limit_toys)
    if plot:  # the plot first: if it fails, no CSV is left either
        plot_path = plot_limits(res, plot, overlays=overlays,
                                observed_label="expected spectrum (scaled MC) 90% CL" if res.scaled
                                else "observed 90% CL")
    out = write_limit_csv(res, args.output)
    summary = {"output": str(out), **res.summary()}
    if plot:
        summary["plot"] = str(plot_path)
    return summary


# =======================================================================================
# MC-template background (analysis.background = "template")
#
# Binned likelihood (HistFactory-like; Cranmer et al., CERN-OPEN-2012-016; Barlow & Beeston,
# Comput. Phys. Commun. 77 (1993) 219, "lite" form with one factor per bin):
#
#   nu_i = mu S_i (1 + d_s theta_s) + gamma_i sum_k b_ki (1 + d_k theta_k)
#   -ln L = sum_i [nu_i - n_i ln nu_i] + sum_i (gamma_i - g_i)^2 / (2 tau_i^2)
#           + (theta_s - a_s)^2 / 2 + sum_k (theta_k - a_k)^2 / 2
#
# b_ki: expected background of component k in bin i from the (weighted) MC at the target
# luminosity; tau_i: relative MC statistical error of the total background in bin i
# (sqrt(sum w^2)/sum w), optionally (+) an uncorrelated per-bin shape uncertainty; d_k: the
# Gaussian normalisation uncertainty of component k; d_s: signal normalisation (efficiency,
# luminosity) uncertainty. The gamma_i are profiled in closed form (root of a quadratic), the
# thetas numerically (BFGS with the analytic gradient; envelope theorem for the profiled
# gammas). Aux values g_i = 1, a = 0 for the nominal data; toys draw them.


def _profile_gamma(s: np.ndarray, b: np.ndarray, n: np.ndarray, tau: np.ndarray,
                   g: np.ndarray) -> np.ndarray:
    """Closed-form argmin over gamma of nu - n ln nu + (gamma - g)^2/(2 tau^2), nu = s + b gamma.

    Stationarity times nu tau^2 gives b gamma^2 + (s + tau^2 b^2 - g b) gamma
    + (tau^2 b (s - n) - g s) = 0; the positive root is taken (floored at 1e-9)."""
    out = np.array(g, dtype=np.float64, copy=True)
    use = (tau > 0) & (b > 0)
    if not np.any(use):
        return out
    bb, ss, nn, tt, gg = b[use], s[use], n[use], tau[use] ** 2, g[use]
    qa = bb
    qb = ss + tt * bb * bb - gg * bb
    qc = tt * bb * (ss - nn) - gg * ss
    disc = np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))
    # numerically stable positive root
    root = np.where(qb > 0, -2.0 * qc / (qb + disc + 1e-300), (-qb + disc) / (2.0 * qa))
    out[use] = np.maximum(root, 1e-9)
    return out


#: Largest |log| of a normalisation factor the template model evaluates (beyond: nll = inf).
_MAX_LOG_FACTOR = 50.0


@dataclass
class TemplateModel:
    """Binned signal + MC-template background model in one mass window.

    Attributes
    ----------
    signal : ndarray (n_bins,)
        Expected signal per unit POI in each bin.
    backgrounds : ndarray (n_components, n_bins)
        Expected background per component (MC at the target luminosity).
    tau : ndarray (n_bins,)
        Relative per-bin uncertainty of the total background (MC statistics (+) shape).
    bkg_unc : ndarray (n_components,)
        Normalisation uncertainty per component (relative; log-normal: the component scales
        by ``exp(bkg_unc theta)`` with a unit Gaussian constraint on theta).
    signal_unc : float
        Normalisation uncertainty of the signal (relative; log-normal, ``exp(signal_unc
        theta)``: a linear ``1 + signal_unc theta`` could switch the signal off at a finite
        cost, so that the limit did not exist for ``signal_unc >~ 0.3``).
    """

    signal: np.ndarray
    backgrounds: np.ndarray
    tau: np.ndarray
    bkg_unc: np.ndarray
    signal_unc: float = 0.0

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal, dtype=np.float64)
        self.backgrounds = np.atleast_2d(np.asarray(self.backgrounds, dtype=np.float64))
        self.tau = np.broadcast_to(np.asarray(self.tau, dtype=np.float64), self.signal.shape).copy()
        self.bkg_unc = np.broadcast_to(np.asarray(self.bkg_unc, dtype=np.float64),
                                       (self.backgrounds.shape[0],)).copy()
        nb = self.signal.size
        if nb == 0 or self.backgrounds.shape[1] != nb:
            msg = (f"template model: signal has {nb} bins, backgrounds {self.backgrounds.shape[1]}: "
                   "they must match and be > 0")
            raise ConfigError(msg)
        if np.any(self.signal < 0) or not np.any(self.signal > 0):
            msg = "template model: the signal template must be >= 0 with at least one bin > 0"
            raise ConfigError(msg)
        if np.any(~np.isfinite(self.backgrounds)) or np.any(self.backgrounds < 0):
            msg = "template model: backgrounds must be finite and >= 0"
            raise ConfigError(msg)
        if np.any(self.backgrounds.sum(axis=0) <= 0):
            msg = "template model: every bin needs a background expectation > 0 (widen the bins or add MC)"
            raise ConfigError(msg)
        for name, v, hi in (("tau", self.tau, 10.0), ("bkg_unc", self.bkg_unc, 0.5),
                            ("signal_unc", np.atleast_1d(self.signal_unc), 0.5)):
            if np.any(~np.isfinite(v)) or np.any(v < 0) or np.any(v >= hi):
                msg = f"template model: {name} = {v} must be in [0, {hi})"
                raise ConfigError(msg)

    @property
    def n_components(self) -> int:
        """Number of background components."""
        return self.backgrounds.shape[0]

    def expected_background(self) -> np.ndarray:
        """Nominal background per bin (all nuisances at 0)."""
        return self.backgrounds.sum(axis=0)

    def _nll(self, mu: float, theta: np.ndarray, n: np.ndarray, aux: np.ndarray, g: np.ndarray,
             grad_mu: bool = False):
        """Profiled (over gamma) -ln L and its gradient wrt theta (and mu)."""
        ts, tk = theta[0], theta[1:]
        if abs(self.signal_unc * ts) > _MAX_LOG_FACTOR or np.any(np.abs(self.bkg_unc * tk) > _MAX_LOG_FACTOR):
            return np.inf, np.zeros(theta.size + int(grad_mu))  # a factor e^+-50: far outside
        fs = math.exp(self.signal_unc * ts)
        fk = np.exp(self.bkg_unc * tk)
        s = mu * self.signal * fs
        b = fk @ self.backgrounds
        gam = _profile_gamma(s, b, n, self.tau, g)
        nu = s + gam * b
        if np.any(nu <= 0):
            return np.inf, np.zeros(theta.size + int(grad_mu))
        pos = n > 0
        f = float(np.sum(nu - n) + np.sum(n[pos] * np.log(n[pos] / nu[pos])))
        t2 = np.where(self.tau > 0, self.tau, 1.0) ** 2
        f += float(np.sum(np.where(self.tau > 0, (gam - g) ** 2 / (2.0 * t2), 0.0)))
        f += 0.5 * float(np.sum((theta - aux) ** 2))
        r = 1.0 - n / nu
        grad = np.empty(theta.size + int(grad_mu))
        grad[0] = float(np.sum(r * mu * self.signal)) * self.signal_unc * fs + (ts - aux[0])
        grad[1:theta.size] = ((self.backgrounds * (r * gam)).sum(axis=1) * self.bkg_unc * fk
                              + (tk - aux[1:]))
        if grad_mu:
            grad[-1] = float(np.sum(r * self.signal * fs))
        return f, grad

    def profile(self, mu: float, n: np.ndarray, aux: np.ndarray | None = None,
                g: np.ndarray | None = None, start: np.ndarray | None = None):
        """min over the nuisances of -ln L at fixed ``mu``: returns (value, theta)."""
        from scipy import optimize

        aux = np.zeros(1 + self.n_components) if aux is None else aux
        g = np.ones(self.signal.size) if g is None else g
        x0 = aux.copy() if start is None else start.copy()
        res = optimize.minimize(lambda t: self._nll(mu, t, n, aux, g), x0, jac=True, method="BFGS",
                                options={"gtol": 1e-7, "maxiter": 200})
        return float(res.fun), res.x

    def fit(self, n: np.ndarray, aux: np.ndarray | None = None, g: np.ndarray | None = None):
        """Unconstrained best fit (mu may be negative): returns (value, mu_hat, theta, sigma_mu)."""
        from scipy import optimize

        aux = np.zeros(1 + self.n_components) if aux is None else aux
        g = np.ones(self.signal.size) if g is None else g
        nt = 1 + self.n_components
        # start: mu from the excess over the background in the signal-weighted bins
        b0 = self.expected_background()
        w = self.signal / b0
        mu0 = float(np.sum(w * (n - b0)) / max(np.sum(w * self.signal), 1e-300))

        def fun(x):
            f, gr = self._nll(x[-1], x[:-1], n, aux, g, grad_mu=True)
            return f, gr

        # mu is fitted in units of its Fisher error so that all parameters are O(1)
        sig = self.fisher_sigma()

        def fun_scaled(x):
            f, gr = fun(np.concatenate([x[:-1], [x[-1] * sig]]))
            gr[-1] *= sig
            return f, gr

        x0 = np.concatenate([aux, [mu0 / sig]])
        res = optimize.minimize(fun_scaled, x0, jac=True, method="BFGS",
                                options={"gtol": 1e-7, "maxiter": 400})
        mu_hat = float(res.x[-1]) * sig
        return float(res.fun), mu_hat, res.x[:nt], sig

    def fisher_sigma(self) -> float:
        """sigma(mu) at mu = 0 from the Fisher information of the Poisson terms with the
        per-bin and normalisation uncertainties added in quadrature (starting scale only)."""
        b = self.expected_background()
        var = b + (self.tau * b) ** 2 + ((self.bkg_unc[:, None] * self.backgrounds) ** 2).sum(axis=0)
        return float(1.0 / np.sqrt(np.sum(self.signal**2 / var)))


def _q_tilde(model: TemplateModel, n, aux, g, cache) -> Any:
    """q~_mu(mu) for data n (mu_hat clipped at 0, arXiv:1007.1727 eq. 16)."""
    f_hat, mu_hat, th_hat, sig = model.fit(n, aux, g)
    f0, th0 = model.profile(0.0, n, aux, g, start=th_hat)
    if mu_hat >= 0:
        f_ref, mu_ref, th_ref = f_hat, mu_hat, th_hat
    else:
        f_ref, mu_ref, th_ref = f0, 0.0, th0
    cache.update(mu_hat=mu_hat, sig=sig, f_hat=f_hat, f0=f0, th0=th0, th_hat=th_hat,
                 mu_ref=mu_ref, th=th_ref)

    def q(mu: float) -> float:
        if mu <= mu_ref:
            return 0.0
        f, th = model.profile(mu, n, aux, g, start=cache["th"])
        cache["th"] = th
        return max(2.0 * (f - f_ref), 0.0)

    return q


def _hesse_error(model: TemplateModel, n, aux, g, mu_hat: float, th_hat: np.ndarray,
                 scale: float) -> float:
    """sqrt of the inverse curvature of the profiled -ln L in mu at mu_hat (= the Hesse
    error (H^-1)_{mu mu}^1/2 of the full fit), from a central second difference with step
    0.1 ``scale``; nan if the curvature is not positive or a point is outside the domain."""
    h = 0.1 * scale
    fc, _ = model.profile(mu_hat, n, aux, g, start=th_hat)
    fp, _ = model.profile(mu_hat + h, n, aux, g, start=th_hat)
    fm, _ = model.profile(mu_hat - h, n, aux, g, start=th_hat)
    curv = (fp + fm - 2.0 * fc) / (h * h)
    return float(1.0 / np.sqrt(curv)) if np.isfinite(curv) and curv > 0 else float("nan")


def _cls_template(model: TemplateModel, n, g, q, cache, cl: float, step: float):
    """CLs limit (arXiv:1007.1727 eqs. 65-66) with q~ from the data and q_A from the Asimov
    background-only data of the conditional mu = 0 fit, whose fitted nuisances (theta, gamma)
    serve as its global observables (sec. 5; as in :mod:`isrsim.stats.limits`)."""
    from ..stats.limits import _cls_upper

    g = np.ones(model.signal.size) if g is None else g
    th0 = cache["th0"]
    b = np.exp(model.bkg_unc * th0[1:]) @ model.backgrounds  # the model's log-normal factors
    gam0 = _profile_gamma(np.zeros_like(b), b, n, model.tau, g)
    n_a = np.maximum(gam0 * b, 1e-12)
    fa0, tha0 = model.profile(0.0, n_a, th0, gam0, start=th0)
    cache_a = {"th": tha0}

    def qa(mu: float) -> float:
        f, th = model.profile(mu, n_a, th0, gam0, start=cache_a["th"])
        cache_a["th"] = th
        return max(2.0 * (f - fa0), 0.0)

    return _cls_upper(q, qa, cl, max(cache["mu_ref"], 0.0) + step)


def template_upper_limit(model: TemplateModel, n: np.ndarray | None = None, *,
                         convention: str = "qtilde_asymptotic", cl: float = 0.90,
                         aux: np.ndarray | None = None, g: np.ndarray | None = None,
                         hesse: bool = True):
    """Profile-likelihood upper limit on the POI of a :class:`TemplateModel` (physics.md 7.2).

    Parameters
    ----------
    model : TemplateModel
    n : ndarray, optional
        Observed counts per bin (default: the Asimov background-only data, i.e. the MC
        expectation; then the limit is the median expected limit).
    convention : {"qtilde_asymptotic", "rolke_chi2", "cls_asymptotic"}
        Threshold of -2 Delta ln L (1.6424 / 2.7055 at 90 % CL), or the asymptotic CLs with
        the Asimov data set of the conditional mu = 0 fit (arXiv:1007.1727 eqs. 65-66), as
        :func:`isrsim.stats.upper_limit`.
    aux, g : ndarray, optional
        Global observables of the normalisation nuisances and of the per-bin gammas (toys).
    hesse : bool
        Compute ``poi_hat_error`` (three profile fits); False leaves it nan, for callers that
        only use the limit (:func:`template_expected`, :func:`template_toys`).

    Returns
    -------
    isrsim.stats.UpperLimit
        ``upper_limit`` (POI), ``poi_hat``, ``poi_hat_error`` (Hesse error of mu_hat from the
        curvature of the profiled likelihood at mu_hat; nan where that is not positive),
        signed ``z_local``.
    """
    from ..stats import UpperLimit, threshold
    from ..stats.limits import _check_convention, _solve_upper

    _check_convention(convention, cl)
    n = model.expected_background() if n is None else np.asarray(n, dtype=np.float64)
    cache: dict[str, Any] = {}
    q = _q_tilde(model, n, aux, g, cache)
    scale = model.fisher_sigma()
    err = float("nan")
    if hesse:
        aux_ = np.zeros(1 + model.n_components) if aux is None else aux
        g_ = np.ones(model.signal.size) if g is None else g
        err = _hesse_error(model, n, aux_, g_, cache["mu_hat"], cache["th_hat"], scale)
    sig = err if np.isfinite(err) else scale  # bracketing scale only
    if convention == "cls_asymptotic":
        mu_up, ok = _cls_template(model, n, g, q, cache, cl, 1.5 * sig)
    else:
        thr = threshold(convention, cl)
        mu_up, ok = _solve_upper(lambda m: q(m) - thr, cache["mu_ref"], np.sqrt(thr) * sig)
    dq0 = max(2.0 * (cache["f0"] - cache["f_hat"]), 0.0)
    z = float(np.sign(cache["mu_hat"]) * np.sqrt(dq0))
    return UpperLimit(mass=float("nan"), convention=convention, cl=cl, upper_limit=float(mu_up),
                      poi_hat=cache["mu_hat"], poi_hat_error=err, z_local=z,
                      yield_per_poi=(float(model.signal.sum()),), converged=bool(ok))


def template_expected(model: TemplateModel, *, convention: str = "qtilde_asymptotic",
                      cl: float = 0.90) -> np.ndarray:
    """Expected limits (-2, -1, 0, +1, +2 sigma) from the Asimov data set (arXiv:1007.1727).

    The median mu_med solves q~_mu,A(mu) = threshold on the background-only Asimov data
    (the MC expectation); sigma_A = mu_med / sqrt(threshold). Bands for a best fit
    mu_hat = N sigma_A: q~ (and the chi2_1 rule, threshold t): mu_up = sigma_A (N + sqrt(t))
    for N >= 0 and sigma_A (N + sqrt(N^2 + t)) for N < 0 (mu_hat clipped at 0 in the
    reference); CLs: sigma_A (Phi^-1(1 - alpha Phi(N)) + N) (arXiv:1007.1727 eq. 89).
    """
    from scipy import special

    from ..stats import threshold

    if convention == "cls_asymptotic":
        ul = template_upper_limit(model, convention="qtilde_asymptotic", cl=cl, hesse=False)
        sig_a = ul.upper_limit / np.sqrt(threshold("qtilde_asymptotic", cl))
        alpha = 1.0 - cl
        ks = np.arange(-2, 3, dtype=np.float64)
        return sig_a * (special.ndtri(1.0 - alpha * special.ndtr(ks)) + ks)
    ul = template_upper_limit(model, convention=convention, cl=cl, hesse=False)
    t = threshold(convention, cl)
    sig_a = ul.upper_limit / np.sqrt(t)
    ks = np.arange(-2, 3, dtype=np.float64)
    return sig_a * np.where(ks >= 0, ks + np.sqrt(t), ks + np.sqrt(ks * ks + t))


def template_toys(model: TemplateModel, n_toys: int, rng: np.random.Generator, *,
                  convention: str = "qtilde_asymptotic", cl: float = 0.90) -> np.ndarray:
    """Limits of ``n_toys`` background-only pseudo-experiments around the MC expectation:
    n_i ~ Poisson(b_i), normalisation aux ~ N(0, 1), per-bin gamma aux ~ N(1, tau_i)
    (the MC statistical fluctuation of the template, unconditional ensemble), each computed
    in ``convention`` (any of :data:`isrsim.stats.CONVENTIONS`, see
    :func:`template_upper_limit`)."""
    if not isinstance(rng, np.random.Generator):
        msg = f"rng = {rng!r} must be a numpy.random.Generator"
        raise ConfigError(msg)
    if not isinstance(n_toys, (int, np.integer)) or n_toys < 1:
        msg = f"n_toys = {n_toys!r} must be an integer >= 1"
        raise ConfigError(msg)
    b = model.expected_background()
    out = np.empty(int(n_toys))
    for t in range(int(n_toys)):
        n = rng.poisson(b).astype(np.float64)
        aux = rng.standard_normal(1 + model.n_components)
        g = np.maximum(1.0 + model.tau * rng.standard_normal(b.size), 1e-3)
        out[t] = template_upper_limit(model, n, convention=convention, cl=cl, aux=aux, g=g,
                                      hesse=False).upper_limit
    return out


# ---------------------------------------------------------------------------------------
# signal model from simulated A' samples, and the template scan


@dataclass
class SignalTemplate:
    """A' signal from ``darkphoton`` samples simulated and reconstructed at a few masses.

    Attributes
    ----------
    masses : ndarray
        Simulated A' masses [GeV] (increasing).
    efficiency : ndarray
        Fraction of the generated A' -> e e events (photon in the generation band) selected,
        including the analysis cuts; linear interpolation in m between the samples.
    sigma : ndarray
        Core mass resolution (IQR / 1.349 of m_reco - m) [GeV]; linear interpolation.
    residuals : list of ndarray
        m_reco - m of the selected events of each sample [GeV] (the template shape: for a
        hypothesis m the residuals of the nearest sample, scaled by sigma(m) / sigma_j).
    xsec_per_eps2_nb : callable
        sigma(e+e- -> gamma A') x BR(A' -> e e) at eps = 1 inside the generation band [nb]
        (:func:`isrsim.physics.darkphoton.sigma_aprime_gamma_nb`, physics.md 6.1).
    epsilon : float
        eps of the samples (sets the decay length, physics.md 6.3).
    """

    masses: np.ndarray
    efficiency: np.ndarray
    sigma: np.ndarray
    residuals: list[np.ndarray]
    xsec_per_eps2_nb: Any
    epsilon: float

    def efficiency_at(self, m: float) -> float:
        """Selection efficiency at ``m`` (linear interpolation, constant beyond the ends)."""
        return float(np.interp(m, self.masses, self.efficiency))

    def sigma_at(self, m: float) -> float:
        """Core resolution at ``m`` [GeV]."""
        return float(np.interp(m, self.masses, self.sigma))

    def fractions(self, edges: np.ndarray, m: float) -> np.ndarray:
        """Fraction of all selected A' events of mass ``m`` in each bin of ``edges``."""
        j = int(np.argmin(np.abs(self.masses - m)))
        d = self.residuals[j] * (self.sigma_at(m) / self.sigma[j])
        h, _ = np.histogram(m + d, bins=edges)
        return h / max(self.residuals[j].size, 1)

    def yield_per_eps2(self, m: float, luminosity_invnb: float) -> float:
        """Selected A' events per eps^2 at ``m``: sigma x BR x efficiency x L."""
        return float(self.xsec_per_eps2_nb(m)) * self.efficiency_at(m) * luminosity_invnb


@dataclass
class TemplateLimitResult:
    """Expected eps limits of the MC-template analysis at one luminosity (arrays per mass)."""

    mass: np.ndarray
    luminosity_invnb: float
    convention: str
    bands: np.ndarray            # (5, n_mass) expected eps: -2, -1, median, +1, +2 sigma
    eps_no_mcstat: np.ndarray    # median with the MC statistical uncertainty switched off
    eps_toys: np.ndarray | None  # (5, n_mass) toy quantiles (NaN where not run)
    yield_per_eps2: np.ndarray   # direct: sigma x BR x eff x L
    yield_per_eps2_eq1: np.ndarray  # BESIII Eq. 1 with N_QED from the ISR e e component
    n_qed_bin: np.ndarray
    efficiency: np.ndarray
    sigma_m: np.ndarray
    bkg_peak: np.ndarray         # background in +-1 sigma(m) around m (MC expectation)
    bkg_components_peak: dict[str, np.ndarray]
    mc_rel_err_peak: np.ndarray  # relative MC error of the background in +-1 sigma(m)
    yield_ul: np.ndarray         # median expected limit on the selected A' yield
    converged: np.ndarray
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cl: float = 0.90             # confidence level of every limit in the result

    @property
    def median(self) -> np.ndarray:
        """Median expected eps limit."""
        return self.bands[2]

    @property
    def epsilon_obs(self) -> np.ndarray:
        """The 'observed' limit on the Asimov data (the MC expectation) = the median."""
        return self.bands[2]

    def at(self, m: float) -> dict[str, float]:
        """Row nearest to ``m`` as a dict (for reports)."""
        i = int(np.argmin(np.abs(self.mass - m)))
        return {"mass_GeV": float(self.mass[i]), "eps_median": float(self.bands[2, i]),
                "eps_m1sigma": float(self.bands[1, i]), "eps_p1sigma": float(self.bands[3, i]),
                "eps_m2sigma": float(self.bands[0, i]), "eps_p2sigma": float(self.bands[4, i]),
                "eps_median_no_mcstat": float(self.eps_no_mcstat[i]),
                "yield_per_eps2": float(self.yield_per_eps2[i]),
                "eq1_over_direct": float(self.yield_per_eps2_eq1[i] / self.yield_per_eps2[i]),
                "efficiency": float(self.efficiency[i]), "sigma_m_GeV": float(self.sigma_m[i]),
                "bkg_pm1sigma": float(self.bkg_peak[i]),
                "mc_rel_err_pm1sigma": float(self.mc_rel_err_peak[i])}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary."""
        ok = np.isfinite(self.bands[2])
        r = self.yield_per_eps2_eq1 / self.yield_per_eps2
        return {"method": "template", "n_masses": int(self.mass.size),
                "mass_range_GeV": [float(self.mass.min()), float(self.mass.max())],
                "convention": self.convention, "cl": self.cl,
                "epsilon_exp_median_range": [float(np.nanmin(self.bands[2])), float(np.nanmax(self.bands[2]))]
                if ok.any() else None,
                "epsilon_at_17MeV": self.at(0.017) if self.mass.min() <= 0.017 <= self.mass.max() else None,
                "eq1_over_direct_range": [float(np.nanmin(r)), float(np.nanmax(r))],
                "converged_fraction": float(np.mean(self.converged)),
                "luminosity_invnb": self.luminosity_invnb, "seconds": round(self.seconds, 2),
                "notes": list(self.notes)}


def _bin_sums(m: np.ndarray, w: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, _ = np.histogram(m, bins=edges, weights=w)
    v, _ = np.histogram(m, bins=edges, weights=w * w)
    return s, v


def analyse_template(components: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     signal: SignalTemplate, *, luminosity_invnb: float,
                     mass_range: Sequence[float], bin_width: float = 0.001,
                     step: float | None = None, window_nsigma: float = 5.0,
                     bkg_unc: Mapping[str, float] | None = None, bin_unc: float = 0.0,
                     signal_unc: float = 0.05, convention: str = "qtilde_asymptotic",
                     cl: float = 0.90, n_toys: int = 0, toy_masses: Sequence[float] = (),
                     seed: int = 1, qed_component: str | None = "isr_ee",
                     n_f: Any = None) -> TemplateLimitResult:
    """Expected eps limits with the background taken from the MC itself (see the
    MC-template likelihood above :func:`_profile_gamma`).

    Parameters
    ----------
    components : mapping name -> (mass [GeV], expected events per candidate at L[, truth mass])
        Selected background MC candidates per component (after all cuts); the optional truth
        mass of ``qed_component`` is used for N_QED(bin) in the Eq. 1 cross-check.
    signal : SignalTemplate
    luminosity_invnb : float
    mass_range : (lo, hi)
        Histogram range [GeV]; hypotheses at lo, lo + step, ..., hi.
    bin_width : float
        Bin width [GeV] (1 MeV default).
    window_nsigma : float
        The fit at m uses the bins within m +- window_nsigma sigma(m) (at least 3 bins each side).
    bkg_unc : mapping name -> relative normalisation uncertainty (Gaussian nuisance)
    bin_unc : float
        Uncorrelated relative per-bin shape uncertainty added in quadrature to the MC error.
    signal_unc : float
        Relative signal normalisation uncertainty (efficiency, luminosity).
    convention : {"qtilde_asymptotic", "rolke_chi2", "cls_asymptotic"}
    n_toys : int
        Background-only toys per mass in ``toy_masses`` (bands from the toys; 0 = none).
    qed_component : str or None
        Component used for N_QED(bin) in the BESIII Eq. 1 cross-check.
    n_f : float, callable or None
        N_f(m) for Eq. 1 (None: :func:`isrsim.physics.darkphoton.n_f`).
    """
    from ..stats import CONVENTIONS, resolve_n_f, yield_per_epsilon2
    from ..stats.toys import BAND_QUANTILES

    t0 = time.perf_counter()
    if convention not in CONVENTIONS:
        msg = f"convention = {convention!r} is invalid: allowed {', '.join(CONVENTIONS)}"
        raise ConfigError(msg)
    if not (np.isfinite(luminosity_invnb) and luminosity_invnb > 0):
        msg = f"luminosity = {luminosity_invnb} nb^-1 must be > 0"
        raise ConfigError(msg)
    if not (np.isfinite(window_nsigma) and window_nsigma >= 1):
        msg = f"window_nsigma = {window_nsigma} must be >= 1"
        raise ConfigError(msg)
    if not (np.isfinite(bin_unc) and 0 <= bin_unc < 1):
        msg = f"bin_unc = {bin_unc} must be in [0, 1)"
        raise ConfigError(msg)
    if not components:
        msg = "template analysis needs at least one background component"
        raise ConfigError(msg)
    lo, hi = (float(x) for x in mass_range)
    if not (np.isfinite(bin_width) and 0 < bin_width <= (hi - lo) / 10):
        msg = f"bin_width = {bin_width} GeV must be in (0, (MAX - MIN)/10 = {(hi - lo) / 10:.4g}]"
        raise ConfigError(msg)
    bkg_unc = dict(bkg_unc or {})
    unknown = set(bkg_unc) - set(components)
    if unknown:
        msg = f"bkg_unc names unknown components {sorted(unknown)}; components are {sorted(components)}"
        raise ConfigError(msg)
    nbins = max(1, round((hi - lo) / bin_width))
    edges = np.linspace(lo, hi, nbins + 1)
    names = list(components)
    sums, vars_ = [], []
    for name in names:
        m, w = (np.asarray(a, dtype=np.float64) for a in components[name][:2])
        s_, v_ = _bin_sums(m, w, edges)
        sums.append(s_)
        vars_.append(v_)
    b_k = np.array(sums)
    b_tot = b_k.sum(axis=0)
    if np.any(b_tot <= 0):
        k = int(np.flatnonzero(b_tot <= 0)[0])
        msg = (f"no background MC in the bin {edges[k]:.4g}-{edges[k + 1]:.4g} GeV: add MC events or "
               "widen analysis.bin_width")
        raise ConfigError(msg)
    mc_rel = np.sqrt(np.array(vars_).sum(axis=0)) / b_tot
    tau_full = np.sqrt(mc_rel**2 + bin_unc**2)
    d_k = np.array([float(bkg_unc.get(n, 0.0)) for n in names])
    step = bin_width if step is None else float(step)
    _check_step(step, lo, hi)
    # hypotheses on the grid lo, lo + step, ..., hi (17 MeV is a hypothesis for 1 MeV steps)
    masses = lo + step * np.arange(int(np.floor((hi - lo) / step + 1e-9)) + 1)
    nf = resolve_n_f(n_f)
    # Eq. 1 cross-check: N_QED(bin) of the QED component binned in the truth mass when known
    # (the reco-level spectrum of a steeply falling ISR distribution is biased by the
    # resolution migration; physics.md 6.2 pitfall i)
    qed_m = qed_w = None
    if qed_component in components:
        arrs = [np.asarray(a, dtype=np.float64) for a in components[qed_component]]
        qed_m, qed_w = arrs[0], arrs[1]
        if len(arrs) > 2 and np.any(np.isfinite(arrs[2])):
            okq = np.isfinite(arrs[2])
            qed_m, qed_w = arrs[2][okq], arrs[1][okq]
    centers = 0.5 * (edges[1:] + edges[:-1])
    nm = masses.size
    bands = np.full((5, nm), np.nan)
    no_mc = np.full(nm, np.nan)
    toys_q = np.full((5, nm), np.nan) if n_toys > 0 else None
    ypp = np.empty(nm)
    ypp1 = np.full(nm, np.nan)
    nqed = np.full(nm, np.nan)
    eff = np.empty(nm)
    sig_m = np.empty(nm)
    bpk = np.empty(nm)
    bpk_k = {n: np.empty(nm) for n in names}
    mcpk = np.empty(nm)
    yul = np.empty(nm)
    conv = np.zeros(nm, dtype=bool)
    toy_idx = {int(np.argmin(np.abs(masses - tm))) for tm in toy_masses} if n_toys > 0 else set()
    for i, m in enumerate(masses):
        sm = signal.sigma_at(m)
        half = max(window_nsigma * sm, 3.5 * bin_width)
        use = (edges[1:] > m - half) & (edges[:-1] < m + half)
        frac = signal.fractions(edges, m)
        y = signal.yield_per_eps2(m, luminosity_invnb)
        ypp[i], eff[i], sig_m[i] = y, signal.efficiency_at(m), sm
        pk = (centers > m - sm) & (centers < m + sm)
        if not pk.any():
            pk = np.abs(centers - m) <= 0.5 * bin_width + 1e-12
        bpk[i] = b_tot[pk].sum()
        for k, n in enumerate(names):
            bpk_k[n][i] = b_k[k, pk].sum()
        mcpk[i] = float(np.sqrt(np.array(vars_)[:, pk].sum()) / bpk[i])
        if qed_m is not None:
            nqed[i] = float(qed_w[np.abs(qed_m - m) < 0.5 * bin_width].sum())
            ypp1[i] = float(yield_per_epsilon2(m, nqed[i], float(nf(m)), bin_width))
        if not np.any(frac[use] > 0):
            continue
        # POI = selected A' yield (O(100) events): eps^2 = yield / y
        model = TemplateModel(frac[use], b_k[:, use], tau_full[use], d_k, signal_unc)
        try:
            yb = template_expected(model, convention=convention, cl=cl)
            ideal = TemplateModel(frac[use], b_k[:, use], np.full(use.sum(), bin_unc), d_k, signal_unc)
            no_mc[i] = np.sqrt(template_expected(ideal, convention=convention, cl=cl)[2] / y)
            conv[i] = bool(np.all(np.isfinite(yb)))
        except ConfigError:
            raise
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):  # pragma: no cover
            yb = np.full(5, np.nan)
        bands[:, i] = np.sqrt(np.maximum(yb, 0.0) / y)
        yul[i] = yb[2]
        if i in toy_idx and toys_q is not None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(11, i))))
            lims = template_toys(model, int(n_toys), rng, convention=convention, cl=cl)
            toys_q[:, i] = np.sqrt(np.maximum(np.nanquantile(lims, BAND_QUANTILES), 0.0) / y)
    notes = [f"background: MC templates {names} at L = {luminosity_invnb:.6g}/nb, per-bin MC statistical "
             f"uncertainty (Barlow-Beeston lite), normalisation nuisances {dict(zip(names, d_k.tolist()))}, "
             f"per-bin shape uncertainty {bin_unc}",
             f"signal: darkphoton samples at m = {[round(float(x), 4) for x in signal.masses]} GeV, "
             f"eps = {signal.epsilon:g}; yield/eps^2 = sigma(ee->gamma A')xBR(ee) x efficiency x L; "
             f"signal normalisation uncertainty {signal_unc}",
             f"expected {_cl_label(cl)} CL limits ({convention}) from the Asimov data set (the MC "
             "expectation), asymptotic bands (arXiv:1007.1727); the 'observed' column is that Asimov "
             "limit (= median)"]
    if toys_q is not None and toy_idx:
        notes.append(f"eps_toys_*: quantiles of {int(n_toys)} background-only pseudo-experiments per "
                     f"mass at {sorted(round(float(masses[j]), 6) for j in toy_idx)} GeV, each limit "
                     f"computed in the same convention ({convention}, CL {_cl_label(cl)})")
    return TemplateLimitResult(
        mass=masses, luminosity_invnb=float(luminosity_invnb), convention=convention, bands=bands,
        eps_no_mcstat=no_mc, eps_toys=toys_q, yield_per_eps2=ypp, yield_per_eps2_eq1=ypp1,
        n_qed_bin=nqed, efficiency=eff, sigma_m=sig_m, bkg_peak=bpk, bkg_components_peak=bpk_k,
        mc_rel_err_peak=mcpk, yield_ul=yul, converged=conv, notes=notes,
        seconds=time.perf_counter() - t0, cl=float(cl))


def _cl_label(cl: float) -> str:
    """'90%' for 0.90, '95.4%' for 0.954 (no spurious digits)."""
    return f"{100.0 * cl:.6g}%"


def write_template_csv(res: TemplateLimitResult, path: str | Path, *,
                       comments: Sequence[str] = ()) -> Path:
    """CSV of a :class:`TemplateLimitResult`: one row per mass hypothesis."""
    names = list(res.bkg_components_peak)
    header = (["mass_GeV", "eps_obs", "eps_exp_median", "eps_exp_m2sigma", "eps_exp_m1sigma",
               "eps_exp_p1sigma", "eps_exp_p2sigma", "eps_exp_median_no_mcstat",
               "eps_toys_median", "eps_toys_m1sigma", "eps_toys_p1sigma",
               "yield_ul_median", "yield_per_eps2", "yield_per_eps2_eq1", "n_qed_bin_isr_ee",
               "efficiency", "sigma_m_GeV", "bkg_pm1sigma"]
              + [f"bkg_pm1sigma_{n}" for n in names] + ["mc_rel_err_pm1sigma", "converged"])
    tq = res.eps_toys if res.eps_toys is not None else np.full((5, res.mass.size), np.nan)
    rows = []
    b = res.bands
    for i, m in enumerate(res.mass):
        rows.append([m, b[2, i], b[2, i], b[0, i], b[1, i], b[3, i], b[4, i], res.eps_no_mcstat[i],
                     tq[2, i], tq[1, i], tq[3, i], res.yield_ul[i], res.yield_per_eps2[i],
                     res.yield_per_eps2_eq1[i], res.n_qed_bin[i], res.efficiency[i], res.sigma_m[i],
                     res.bkg_peak[i], *[res.bkg_components_peak[n][i] for n in names],
                     res.mc_rel_err_peak[i], bool(res.converged[i])])
    meta = [f"isrsim limit (MC-template background): convention {res.convention}, CL {_cl_label(res.cl)}, "
            f"luminosity {res.luminosity_invnb:.6g}/nb"]
    return write_csv_atomic(path, header, rows, comments=[*meta, *res.notes, *comments])
