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
   global significance from the toys' maximum local significance.
"""

from __future__ import annotations

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

__all__ = ["LimitResult", "analyse_candidates", "choose_order", "mass_hypotheses", "plot_limits",
           "run_limit", "write_limit_csv"]

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
    orders : dict
        Polynomial order per channel.
    fits : dict
        :class:`~isrsim.stats.BackgroundFit` per channel.
    hists : dict
        :class:`~isrsim.stats.Histogram` per channel.
    resolution : dict
        :class:`~isrsim.workflows._common.Resolution` per channel.
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

    @property
    def median(self) -> np.ndarray:
        """Median expected epsilon limit (NaN without toys)."""
        return self.bands[2] if self.bands is not None else np.full(self.mass.size, np.nan)

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
            "max_local_z": float(zl.max()) if zl.size else None,
            "global_p_toys": self.global_p,
            "global_p_error": self.global_p_error,
            "orders": dict(self.orders),
            "background_fit_chi2_ndf": {c: f"{f.chi2:.1f}/{f.ndf}" for c, f in self.fits.items()},
            "resolution": {c: {"source": r.source, "sigma_at_lo_GeV": float(r(self.mass.min())),
                               "sigma_at_hi_GeV": float(r(self.mass.max()))}
                           for c, r in self.resolution.items()},
            "converged_fraction": float(np.mean(self.converged)),
            "luminosity_invnb": self.luminosity_invnb,
            "mc_scaled_to_luminosity": self.scaled,
            "seconds": round(self.seconds, 2),
            "notes": list(self.notes),
        }


def mass_hypotheses(lo: float, hi: float, step: float,
                    mask_windows: Sequence[Sequence[float]] = ()) -> np.ndarray:
    """Hypotheses lo + step/2, lo + 3 step/2, ... < hi, dropping those inside masked windows
    (physics.md 7.1 step 5: step <= sigma(m)/2 or one bin)."""
    if not (np.isfinite(step) and 0 < step <= hi - lo):
        msg = f"step = {step} GeV must be in (0, {hi - lo:.6g}]"
        raise ConfigError(msg)
    m = lo + step * (0.5 + np.arange(int(np.floor((hi - lo) / step + 1e-9))))
    m = m[m < hi]
    for a, b in mask_windows:
        m = m[(m < a) | (m > b)]
    if m.size == 0:
        msg = f"no mass hypotheses in {lo}-{hi} GeV outside the masked windows {list(mask_windows)}"
        raise ConfigError(msg)
    return m


def choose_order(hist: Any, orders: Sequence[int] = AUTO_ORDERS, p_min: float = 0.05):
    """Smallest polynomial order in ``orders`` whose background fit has p-value >= ``p_min``
    (the last order if none does). Returns (order, fit)."""
    from ..stats import fit_background

    fit = None
    for o in orders:
        fit = fit_background(hist, o)
        if fit.pvalue >= p_min:
            return o, fit
    return orders[-1], fit


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


def _default_range(m: np.ndarray, bin_width: float) -> tuple[float, float]:
    a, b = np.percentile(m, [0.1, 99.9])
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
                       mask_windows: Sequence[Sequence[float]] | None = None,
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
        Spectrum and scan range [GeV] (default: the candidates' 0.1-99.9 % range).
    step : float, optional
        Hypothesis step [GeV] (default ``bin_width``).
    bin_width : float
        delta_m [GeV] (10 MeV: BESIII 2017).
    order : int, mapping or None
        Background polynomial order (per channel with a mapping); None chooses per channel
        with :func:`choose_order`.
    convention : str
        One of :data:`isrsim.stats.CONVENTIONS`.
    n_toys : int
        Background-only pseudo-experiments for the expected bands (0: none).
    seed : int
        Seed of the toys.
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
    from ..stats import CONVENTIONS, JPSI_WINDOW, Channel, global_significance_toys, \
        pseudo_experiments, scan_epsilon

    t0 = time.perf_counter()
    if convention not in CONVENTIONS:
        msg = f"convention = {convention!r} is invalid: allowed {', '.join(CONVENTIONS)}"
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
        lo, hi = _default_range(cands.m_ll, bin_width)
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
    for c in chan_names:
        sel = cands.select(c)
        if not sel.any():
            msg = f"no candidates in channel {c!r}; tables hold {cands.channels}"
            raise InputFileError(msg)
        m, w = cands.m_ll[sel], cands.weight[sel]
        h = _histogram(m, w, lo=lo, hi=hi, bin_width=bin_width, mask_windows=mask_windows,
                       name=c, expectation=cands.scaled)
        _check_coverage(h, c)
        if order is None:
            o, fit = choose_order(h)
        else:
            o = int(order[c]) if isinstance(order, Mapping) else int(order)
            from ..stats import fit_background

            fit = fit_background(h, o)
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
        chans.append(Channel(h, sigma_m=r, norm_unc=norm_unc, res_unc=res_unc, order=o, name=c))

    scan = scan_epsilon(chans, masses, n_f=n_f, bhabha_correction=bhabha_correction,
                        convention=convention, luminosity=cands.luminosity_invnb)
    ypp = scan.limits.yield_per_poi  # (n_mass, n_chan): events per unit eps^2
    from ..stats import resolve_n_f, yield_per_epsilon2

    nf = resolve_n_f(n_f)
    nf_m = np.array([nf(float(x)) for x in masses])
    # N_QED(bin) per channel = ypp / (yield per eps^2 per unit N_QED)
    n_qed = ypp / yield_per_epsilon2(masses, 1.0, nf_m, bin_width)[:, None]
    sigma_m = np.array([[res_models[c](float(x)) for c in chan_names] for x in masses])
    bands = None
    gp = gpe = None
    if n_toys > 0:
        from ..stats import epsilon_channels

        echans = epsilon_channels(chans, n_f=n_f, bhabha_correction=bhabha_correction)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(7,))))
        exp = pseudo_experiments(echans, masses, n_toys=int(n_toys), rng=rng, convention=convention)
        bands = np.sqrt(np.maximum(exp.bands, 0.0))
        z_obs = float(np.nanmax(scan.limits.z_local))
        g = global_significance_toys(z_obs, exp.z_max)
        gp, gpe = g.p_global, g.p_global_error
    if cands.scaled:
        notes.append("Monte Carlo rescaled to the target luminosity: the 'observed' limit is that of "
                     "the expected spectrum (MC fluctuations scaled), the bands are Poisson toys at "
                     "the target luminosity")
    return LimitResult(
        mass=masses, channels=tuple(chan_names), epsilon_obs=scan.epsilon_ul, bands=bands,
        yield_ul=scan.yield_ul, n_qed_bin=n_qed, sigma_m=sigma_m, z_local=scan.limits.z_local,
        converged=scan.limits.converged, orders=orders, fits=fits, hists=hists,
        resolution=res_models, convention=convention, n_toys=int(n_toys),
        luminosity_invnb=cands.luminosity_invnb, scaled=cands.scaled, global_p=gp,
        global_p_error=gpe, seconds=time.perf_counter() - t0, notes=notes)


def write_limit_csv(res: LimitResult, path: str | Path, *, comments: Sequence[str] = ()) -> Path:
    """CSV with one row per mass: mass, observed and expected epsilon (median, -2, -1, +1,
    +2 sigma), yield limits, N_QED(bin) and sigma(m) per channel, local Z, convergence."""
    chs = res.channels
    header = (["mass_GeV", "eps_obs", "eps_exp_median", "eps_exp_m2sigma", "eps_exp_m1sigma",
               "eps_exp_p1sigma", "eps_exp_p2sigma"]
              + [f"yield_ul_{c}" for c in chs] + [f"n_qed_bin_{c}" for c in chs]
              + [f"sigma_m_GeV_{c}" for c in chs] + ["z_local", "converged"])
    b = res.bands if res.bands is not None else np.full((5, res.mass.size), np.nan)
    rows = []
    for i, m in enumerate(res.mass):
        rows.append([m, res.epsilon_obs[i], b[2, i], b[0, i], b[1, i], b[3, i], b[4, i],
                     *res.yield_ul[i], *res.n_qed_bin[i], *res.sigma_m[i], res.z_local[i],
                     bool(res.converged[i])])
    meta = [f"isrsim limit: convention {res.convention}, CL 90%, channels {'+'.join(chs)} combined "
            f"at likelihood level, orders {res.orders}, toys {res.n_toys}"]
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
    overlays = []
    for path in getattr(args, "overlay", None) or []:
        om, oe = read_overlay_csv(path)
        overlays.append((Path(path).stem, om, oe))
    cands = read_candidate_tables(args.inputs, luminosity_invnb=lumi)
    res = analyse_candidates(cands, mass_range=args.mass, step=args.step, order=args.order,
                             convention=args.convention or "qtilde_asymptotic", n_toys=toys,
                             seed=args.seed if args.seed is not None else 1)
    out = write_limit_csv(res, args.output)
    summary = {"output": str(out), **res.summary()}
    if getattr(args, "plot", None):
        summary["plot"] = str(plot_limits(res, args.plot, overlays=overlays))
    return summary
