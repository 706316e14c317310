"""``isrsim inject``: signal injection into pseudo-data (bias, pulls, coverage, discovery rate).

Recipe (issue 8 item 2)
-----------------------
1. **Templates, generated once and cached** (``<output>/cache/*.npz``, keyed by the SHA-256
   of the template settings and of isrsim's sources): the QED ISR background (``isr_mumu`` or
   ``isr_ee``, unweighted, in a generator mass window wider than the fit window by
   ``generator_margin``) and one dark-photon sample per mass
   (``isrsim.processes.darkphoton:DarkPhoton``), both simulated with the detector and
   reconstructed with the selection (default ``besiii2017``, arXiv:1705.04265) in memory.
2. **Expected background** at the luminosity: the candidate histogram of the background MC
   scaled by sigma L / N_gen, smoothed by the polynomial fit the analysis itself uses
   (:func:`isrsim.stats.fit_background`, order ``order``) so that the fit model contains the
   truth.
3. **Expected signal**: N_sig = eps^2 N_QED(bin) 3 pi m / (2 N_f alpha delta_m) (BESIII 2017
   Eq. 1, physics.md eq. 6.2; :func:`isrsim.stats.yield_per_epsilon2`), N_QED from the
   expected background at m, N_f = Gamma_tot / Gamma_ll (physics.md 6.3). Its shape is the
   simulated resolution: the reconstructed m_ll - m_true of the signal MC (empirical CDF; the
   same template is used to draw and to fit, and its IQR width sets ``sigma_m``; the summary
   also gives the width the per-event errors of the kinematic fit predict,
   ``signal_sigma_expected_GeV``, :func:`mixture_iqr_sigma`).
4. **Toys**: Poisson(b_i + N_sig f_i) per bin; each is fitted with the stats module
   (:func:`isrsim.stats.upper_limit`, yield POI, profiled polynomial, ``convention``) giving
   the fitted yield, its Hesse error, the signed local significance and the upper limit.
5. **Summary** per (m, eps): bias (mean fitted - injected yield, absolute and relative),
   fitted-yield pulls (mean, width and their errors), coverage of the upper limit
   (fraction of toys with UL >= injected yield; eps: the limit converted with the toy's own
   fitted N_QED), discovery rates (Z_local >= each of ``discovery_z``), and the best-fit mass
   from a local scan (``mass_scan_toys`` toys).

Outputs in ``--output`` (default ``inject_<detector>``): ``inject_summary.csv``,
``inject_toys.csv`` (one row per toy), ``inject_summary.json``, ``inject_<m>.png`` (bias,
pulls, coverage and discovery rate vs injected eps) and ``inject_pulls_<m>.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, OutputError
from ..physics.darkphoton import EPSILON_ALLOWED, EPSILON_MIN

__all__ = ["DEFAULTS", "SignalTemplate", "candidates_in_memory", "load_config", "main", "mixture_iqr_sigma",
           "run_toys", "signal_template"]

#: Settings of ``[analysis]`` (and ``[run]``) with their defaults (bundled card
#: ``cards/inject_besiii.toml`` holds the same values).
DEFAULTS: dict[str, Any] = {
    "detector": "besiii",
    "luminosity": "2.93/fb",
    "seed": 1,
    "masses": [2.0],
    "epsilon": [0.0, 5e-4, 1e-3, 1.5e-3, 2e-3],
    "toys": 200,
    "channel": "mumu",
    "selection": "besiii2017",
    "half_window": 0.15,
    "bin_width": 0.005,
    "order": 3,
    "convention": "qtilde_asymptotic",
    "cl": 0.90,
    "discovery_z": [3.0, 5.0],
    "background_events": 300_000,
    "signal_events": 20_000,
    "generator_margin": 0.05,
    "photon_cut": {"mode": "untagged", "theta_max": 0.15},
    "mass_scan_toys": 30,
}

_PROCESS_OF_CHANNEL = {"mumu": ("isr_mumu", "mumu", "mu"), "ee": ("isr_ee", "ee", "e")}
_BLOCK = 10_000
#: Fewest expected background events per background-polynomial coefficient: below it the
#: pseudo-experiments' fits are undetermined (a toy with no event at all has probability
#: e^-N, e^-25 for order 4).
MIN_EVENTS_PER_PARAMETER = 5


# ---------------------------------------------------------------------------------------
# configuration


def _check_positive(name: str, v: Any, *, integer: bool = False, lo: float = 0.0) -> Any:
    """A finite number > ``lo`` (an integer with ``integer``); strings and booleans are not
    numbers. ConfigError ``name = v is invalid: allowed ...``."""
    from ._common import check_float, check_int

    if integer:
        return check_int(name, v, math.floor(lo) + 1)
    return check_float(name, v, lo=lo, lo_open=True)


def _as_list(v: Any) -> Any:
    """A card value given as one number where a list is expected (``masses = 2.0``)."""
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def load_config(args: Any) -> dict[str, Any]:
    """Merge defaults, the card (``--card``, default bundled ``inject_besiii``) and the flags.

    Returns a validated flat dict (keys of :data:`DEFAULTS` plus ``output``,
    ``luminosity_invnb``, ``quiet``). Every value is checked here, before any
    work or output.
    """
    from ..processes.isr import PhotonCut
    from ..reco.selection import SELECTIONS
    from ..stats import CONVENTIONS
    from ._common import (
        check_choice,
        check_float,
        check_int,
        check_number_list,
        check_output_dir,
        merge_workflow_card,
    )

    cfg = merge_workflow_card(args, DEFAULTS, "inject_besiii", "inject", (
        ("detector", "detector"), ("luminosity", "luminosity"), ("mass", "masses"),
        ("epsilon", "epsilon"), ("toys", "toys"), ("seed", "seed"),
        ("events", "background_events"), ("output", "output")))
    cfg["quiet"] = bool(getattr(args, "quiet", False))
    from ..units import parse_luminosity

    if not isinstance(cfg["detector"], str) or not cfg["detector"].strip():
        msg = f"detector = {cfg['detector']!r} is invalid: allowed a bundled detector name or a .toml path"
        raise ConfigError(msg)
    cfg["luminosity_invnb"] = parse_luminosity(str(cfg["luminosity"]), field="luminosity")
    cfg["masses"] = check_number_list("masses", _as_list(cfg["masses"]), lo=0.0, lo_open=True,
                                      what="A' masses > 0 [GeV]")
    cfg["epsilon"] = check_number_list("epsilon", _as_list(cfg["epsilon"]), lo=0.0, hi=1.0,
                                       hi_open=True, what="couplings")
    for e in cfg["epsilon"]:
        if not (e == 0.0 or EPSILON_MIN <= e < 1.0):
            msg = f"epsilon = {e!r} is invalid: allowed 0 (no signal) or {EPSILON_ALLOWED}"
            raise ConfigError(msg)
    if cfg["channel"] not in _PROCESS_OF_CHANNEL:
        msg = f"channel = {cfg['channel']!r} is invalid: allowed {', '.join(_PROCESS_OF_CHANNEL)}"
        raise ConfigError(msg)
    check_choice("selection", cfg["selection"], SELECTIONS)
    cfg["toys"] = check_int("toys", cfg["toys"], 1, 10**7)
    cfg["seed"] = check_int("seed", cfg["seed"], 0, 2**63 - 1)
    for k in ("background_events", "signal_events"):
        cfg[k] = check_int(k, cfg[k], 1000, 10**10)
    for k in ("half_window", "bin_width", "generator_margin"):
        cfg[k] = _check_positive(k, cfg[k])
    from ..stats.histogram import MAX_BINS

    if cfg["bin_width"] * MAX_BINS < 2 * cfg["half_window"]:
        msg = (f"bin_width = {cfg['bin_width']} GeV is invalid: allowed >= 2 half_window / {MAX_BINS} "
               f"= {2 * cfg['half_window'] / MAX_BINS:.6g} GeV (at most {MAX_BINS} bins)")
        raise ConfigError(msg)
    if cfg["bin_width"] * 8 > 2 * cfg["half_window"]:
        msg = (f"bin_width = {cfg['bin_width']} GeV is invalid: allowed <= 2 half_window / 8 = "
               f"{cfg['half_window'] / 4:g} GeV (at least 8 bins)")
        raise ConfigError(msg)
    cfg["order"] = check_int("order", cfg["order"], 0, 12)
    cfg["mass_scan_toys"] = check_int("mass_scan_toys", cfg["mass_scan_toys"], 0, 10**7)
    cfg["discovery_z"] = check_number_list("discovery_z", _as_list(cfg["discovery_z"]), lo=0.0,
                                           lo_open=True, min_len=0, what="significances > 0")
    cfg["cl"] = check_float("cl", cfg["cl"], lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    check_choice("convention", cfg["convention"], CONVENTIONS)
    PhotonCut.from_config(cfg["photon_cut"])
    if cfg.get("output") is None:
        cfg["output"] = f"inject_{cfg['detector']}"
    check_output_dir(cfg["output"])
    return cfg


#: Lowest generated ISR mass [GeV] of the background samples (above the mu mu threshold).
_GENERATOR_FLOOR = 0.3


def _check_processes(cfg: dict[str, Any], det: Any) -> None:
    """Build the background and signal processes of every mass with the detector's beams
    before any is generated (a mass outside the kinematic range fails here, not after the
    templates of the masses before it)."""
    from ..processes import make_process

    proc_name, chan, _ = _PROCESS_OF_CHANNEL[cfg["channel"]]
    for mass in cfg["masses"]:
        lo, hi = mass - cfg["half_window"], mass + cfg["half_window"]
        if lo <= _GENERATOR_FLOOR:
            msg = (f"masses: {mass:g} GeV: its fit window {lo:g}-{hi:g} GeV (half_window "
                   f"{cfg['half_window']:g}) reaches below {_GENERATOR_FLOOR} GeV, where the "
                   f"{proc_name} background is not generated; allowed masses > "
                   f"{_GENERATOR_FLOOR + cfg['half_window']:g} GeV")
            raise ConfigError(msg)
        try:
            make_process(proc_name, det.beam, photon_cut=cfg["photon_cut"],
                         mass_range=[max(lo - cfg["generator_margin"], _GENERATOR_FLOOR),
                                     hi + cfg["generator_margin"]])
            make_process("darkphoton", det.beam, mass=mass, epsilon=1e-3, decay=chan,
                         photon_cut=cfg["photon_cut"])
        except ConfigError as exc:
            msg = f"masses: {mass:g} GeV (fit window {lo:g}-{hi:g} GeV, channel {chan}): {exc}"
            raise ConfigError(msg) from None


# ---------------------------------------------------------------------------------------
# in-memory simulation chain


def candidates_in_memory(process: Any, det: Any, n_events: int, *, seed: int, label: str,
                         selection: str, weighted: bool = False,
                         truth_extra: tuple[str, ...] = (), cuts: Any = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Generate, simulate and reconstruct ``n_events`` of ``process`` in memory.

    Blocks of 10 000 events, each with its own generators
    (:func:`isrsim.workflows._common.stream_rng` with ``label``; stream 0 generation, 1
    primary vertex + detector), so results do not depend on anything but (seed, label, n).
    ``cuts`` are passed to :func:`~isrsim.reco.selection.reconstruct_chunk` (None: defaults).

    Returns
    -------
    cols : dict of ndarray
        Candidate columns of :func:`isrsim.reco.selection.reconstruct_chunk` (``event_id`` is
        the global event index) plus ``xs_weight_nb``: expected events per nb^-1 per candidate
        (sigma/N for unweighted samples, w/N for weighted ones), and the requested truth
        extras as ``truth_<name>``.
    info : dict
        ``cross_section_nb``, ``cross_section_err_nb``, ``n_events``, ``seconds``.
    """
    from ..detector.simulate import simulate
    from ..reco.selection import reconstruct_chunk
    from ..runner import apply_primary_vertex
    from ._common import stream_rng

    t0 = time.perf_counter()
    parts: list[dict[str, np.ndarray]] = []
    n_trials = 0
    sum_w = sum_w2 = 0.0
    sigma_prop = 0.0
    done = 0
    block = 0
    while done < n_events:
        nb = min(_BLOCK, n_events - done)
        truth, st = process.sample(stream_rng(seed, label, 0, block), nb, weighted=weighted)
        n_trials += st.n_trials
        sum_w += st.sum_w
        sum_w2 += st.sum_w2
        sigma_prop = st.sigma_prop_nb
        rng1 = stream_rng(seed, label, 1, block)
        apply_primary_vertex(truth, det.beam, rng1)
        reco = simulate(truth, det, rng1)
        cols = reconstruct_chunk(reco, truth, selection=selection, bz=det.bz_T, beam=det.beam,
                                 event_id=np.arange(done, done + nb, dtype=np.int64),
                                 weight=truth.weight, calorimeter=det.calorimeter, cuts=cuts)
        local = cols["event_id"] - done
        for name in truth_extra:
            cols[f"truth_{name}"] = np.asarray(truth.extra[name], dtype=np.float64)[local]
        parts.append(cols)
        done += nb
        block += 1
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sigma = sigma_prop * sum_w / n_trials
    err = sigma_prop * math.sqrt(max(sum_w2 / n_trials - (sum_w / n_trials) ** 2, 0.0) / n_trials)
    if weighted:
        cols["xs_weight_nb"] = cols["weight"] / n_events
    else:
        cols["xs_weight_nb"] = np.full(cols["m_ll"].size, sigma / n_events)
    return cols, {"cross_section_nb": float(sigma), "cross_section_err_nb": float(err),
                  "n_events": int(n_events), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------
# templates


class SignalTemplate:
    """Simulated signal line shape: the empirical distribution of m_ll - m_true.

    ``fractions(lo, hi, mass, sigma)`` is the fraction of the template, shifted to ``mass``
    and scaled by ``sigma / sigma0`` (so that the stats module's resolution nuisance can morph
    it), in each bin [lo, hi); it has the signature of ``Channel.signal_shape``.

    Parameters
    ----------
    residuals : ndarray
        m_ll - m_true [GeV] of the selected signal candidates.
    errors : ndarray, optional
        The same candidates' per-event mass errors [GeV] (candidate column ``sigma_m_ll``):
        sets :attr:`sigma_expected`.
    """

    def __init__(self, residuals: np.ndarray, errors: np.ndarray | None = None) -> None:
        r = np.sort(np.asarray(residuals, dtype=np.float64))
        r = r[np.isfinite(r)]
        if r.size < 50:
            msg = f"signal template has {r.size} selected candidates; allowed >= 50 (raise signal_events)"
            raise ConfigError(msg)
        self.residuals = r
        q1, q3 = np.percentile(r, [25.0, 75.0])
        #: core width [GeV] from the interquartile range (IQR/1.349)
        self.sigma0 = float((q3 - q1) / 1.3489795)
        #: median shift [GeV]
        self.shift = float(np.median(r))
        #: the IQR/1.349 width [GeV] that the per-event fit errors predict (Gaussian residuals
        #: with those errors; None without ``errors``): compare with :attr:`sigma0`
        self.sigma_expected = None if errors is None else mixture_iqr_sigma(errors)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.residuals, x, side="right") / self.residuals.size

    def fractions(self, lo: np.ndarray, hi: np.ndarray, mass: float, sigma: float) -> np.ndarray:
        k = self.sigma0 / sigma
        return self.cdf((np.asarray(hi) - mass) * k) - self.cdf((np.asarray(lo) - mass) * k)


def mixture_iqr_sigma(errors: np.ndarray) -> float:
    """IQR/1.349 [GeV] of the mixture of centred Gaussians with the standard deviations
    ``errors`` (finite, positive ones), in equal shares: ``2 x75 / 1.349`` with
    ``mean_i Phi(x75/sigma_i) = 3/4``. For equal errors it is that error."""
    from scipy import optimize, special

    s = np.asarray(errors, dtype=np.float64)
    s = s[np.isfinite(s) & (s > 0.0)]
    if s.size == 0:
        msg = "mass errors: none finite and positive; allowed: at least one > 0"
        raise ConfigError(msg)

    def excess(x: float) -> float:
        return float(np.mean(special.ndtr(x / s))) - 0.75

    x75 = optimize.brentq(excess, 0.0, 10.0 * float(s.max()), xtol=1e-12 * float(s.max()))
    return 2.0 * x75 / 1.3489795


def signal_template(cols: dict[str, np.ndarray], channel: str) -> SignalTemplate:
    """Template from candidate columns of a signal sample (truth-matched ``channel`` rows)."""
    sel = (cols["channel"] == channel) & np.isfinite(cols["truth_m"])
    return SignalTemplate(cols["m_ll"][sel] - cols["truth_m"][sel], cols["sigma_m_ll"][sel])


def _cache_load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def _cache_save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        msg = f"cache = {str(path)!r} cannot be written ({exc.strerror or exc})"
        raise OutputError(msg) from None


def _say(cfg: dict[str, Any], text: str) -> None:
    from ._common import progress

    progress(cfg, "inject", text)


def _templates(cfg: dict[str, Any], det: Any, mass: float, cache_dir: Path) -> dict[str, Any]:
    """Background histogram at the luminosity and the signal template at ``mass`` (cached)."""
    from ..processes import make_process
    from ._common import card_hash, source_digest

    proc_name, chan, _ = _PROCESS_OF_CHANNEL[cfg["channel"]]
    lo, hi = mass - cfg["half_window"], mass + cfg["half_window"]
    # the background sample of each mass window draws its own random streams (a label shared
    # by all masses made their samples reuse the same random numbers)
    label_b = f"inject-bkg-{proc_name}-{mass:.6f}"
    key_b = {"what": "background", "process": proc_name, "detector": det.name, "det": det.sha256,
             "lo": lo, "hi": hi, "margin": cfg["generator_margin"], "n": cfg["background_events"],
             "seed": cfg["seed"], "selection": cfg["selection"], "photon_cut": cfg["photon_cut"],
             "streams": label_b, "version": 2, "source": source_digest()}
    key_s = {"what": "signal", "mass": mass, "detector": det.name, "det": det.sha256,
             "n": cfg["signal_events"], "seed": cfg["seed"], "selection": cfg["selection"],
             "photon_cut": cfg["photon_cut"], "decay": chan, "version": 2, "source": source_digest()}
    path_b = cache_dir / f"bkg_{card_hash(key_b)[:16]}.npz"
    path_s = cache_dir / f"sig_{card_hash(key_s)[:16]}.npz"
    bkg = _cache_load(path_b)
    cached = bkg is not None
    if bkg is None:
        proc = make_process(proc_name, det.beam, photon_cut=cfg["photon_cut"],
                            mass_range=[max(lo - cfg["generator_margin"], _GENERATOR_FLOOR),
                                        hi + cfg["generator_margin"]])
        _say(cfg, f"m = {mass:g} GeV: background {proc_name}, generating, simulating and "
                  f"reconstructing {cfg['background_events']} events")
        cols, info = candidates_in_memory(proc, det, cfg["background_events"], seed=cfg["seed"],
                                          label=label_b, selection=cfg["selection"])
        sel = cols["channel"] == chan
        bkg = {"m_ll": cols["m_ll"][sel], "xs_weight_nb": cols["xs_weight_nb"][sel],
               "cross_section_nb": np.array(info["cross_section_nb"])}
        _cache_save(path_b, bkg)
    sig = _cache_load(path_s)
    cached = cached and sig is not None
    if sig is None:
        proc = make_process("darkphoton", det.beam, mass=mass, epsilon=1e-3, decay=chan,
                            photon_cut=cfg["photon_cut"])
        _say(cfg, f"m = {mass:g} GeV: signal, generating, simulating and reconstructing "
                  f"{cfg['signal_events']} events")
        cols, info = candidates_in_memory(proc, det, cfg["signal_events"], seed=cfg["seed"],
                                          label=f"inject-sig-{mass:.6f}", selection=cfg["selection"])
        sel = (cols["channel"] == chan) & np.isfinite(cols["truth_m"])
        sig = {"residual": cols["m_ll"][sel] - cols["truth_m"][sel],
               "sigma_m_ll": cols["sigma_m_ll"][sel],
               "efficiency": np.array(sel.sum() / cfg["signal_events"])}
        _cache_save(path_s, sig)
    return {"bkg": bkg, "sig": sig, "cached": cached, "lo": lo, "hi": hi}


def _expected_background(tpl: dict[str, Any], cfg: dict[str, Any], channel: str):
    """Smooth expected background histogram at the luminosity (polynomial fit to the MC)."""
    from ..stats import fit_background, make_histogram

    lumi = cfg["luminosity_invnb"]
    b = tpl["bkg"]
    h_mc = make_histogram(b["m_ll"], b["xs_weight_nb"] * lumi, lo=tpl["lo"], hi=tpl["hi"],
                          bin_width=cfg["bin_width"], mask_windows=None, name=channel)
    n_bkg = float(h_mc.counts.sum())
    n_min = MIN_EVENTS_PER_PARAMETER * (cfg["order"] + 1)
    if not n_bkg >= n_min:
        msg = (f"luminosity = {cfg['luminosity']!r} gives {n_bkg:.3g} expected {channel} background "
               f"events in {tpl['lo']:g}-{tpl['hi']:g} GeV; the order-{cfg['order']} background fit "
               f"of the pseudo-experiments needs at least {n_min:g}: allowed luminosity >= "
               f"{lumi * n_min / n_bkg if n_bkg > 0 else float('inf'):.3g}/nb")
        raise ConfigError(msg)
    fit = fit_background(h_mc, cfg["order"])
    expected = np.maximum(fit.expected(), 0.0)
    return h_mc, fit, expected


# ---------------------------------------------------------------------------------------
# toys


def run_toys(hist_template: Any, b_expected: np.ndarray, template: SignalTemplate, mass: float,
             yields: np.ndarray, *, n_toys: int, rng: np.random.Generator, order: int,
             convention: str = "qtilde_asymptotic", cl: float = 0.90, n_f: float = 1.0,
             n_scan: int = 0) -> dict[str, np.ndarray]:
    """Injection toys at one mass for each expected signal yield in ``yields``.

    Parameters
    ----------
    hist_template : Histogram
        Binning (edges, mask) of the spectrum.
    b_expected : ndarray
        Expected background per bin.
    template : SignalTemplate
        Signal line shape (used both to draw and to fit).
    mass : float
        Injected and tested mass [GeV].
    yields : ndarray
        Expected signal events (total, before binning) per injection point.
    n_toys : int
        Pseudo-experiments per injection point.
    rng : numpy.random.Generator
        The only source of randomness.
    order : int
        Background polynomial order of the fit.
    convention, cl
        Limit convention of :func:`isrsim.stats.upper_limit`.
    n_f : float
        N_f = Gamma_tot/Gamma_ll at ``mass`` (for the eps conversion with the toy's own
        fitted N_QED, BESIII 2017 Eq. 1).
    n_scan : int
        For the first ``n_scan`` toys of each point, the best-fit mass of a local scan over
        mass +- 5 sigma in steps of sigma/2.

    Returns
    -------
    dict of ndarray, shape (n_points, n_toys)
        ``yield_hat``, ``yield_err``, ``z``, ``ul`` (yield), ``eps2_per_yield`` (1 / the
        toy's own N_sig per eps^2), ``converged``, ``m_best`` (NaN where not scanned).
    """
    from ..stats import Channel, fit_background, fit_signal, upper_limit, yield_per_epsilon2

    edges = hist_template.edges
    lo, hi = edges[:-1], edges[1:]
    f_sig = template.fractions(lo, hi, mass, template.sigma0)
    sigma = template.sigma0
    npt = len(yields)
    out = {k: np.full((npt, n_toys), np.nan) for k in ("yield_hat", "yield_err", "z", "ul",
                                                        "eps2_per_yield", "m_best")}
    out["converged"] = np.zeros((npt, n_toys), bool)
    bw = float(np.mean(np.diff(edges)))
    scan = np.arange(-10, 11) * 0.5 * sigma + mass
    scan = scan[(scan > edges[0] + 3 * sigma) & (scan < edges[-1] - 3 * sigma)]
    for i, s in enumerate(yields):
        mu = b_expected + s * f_sig
        for t in range(n_toys):
            counts = rng.poisson(mu).astype(np.float64)
            h = hist_template.with_counts(counts)
            ch = Channel(h, sigma_m=sigma, order=order, signal_shape=template.fractions,
                         name=h.name)
            ul = upper_limit(ch, mass, convention=convention, cl=cl)
            out["yield_hat"][i, t] = ul.poi_hat
            out["yield_err"][i, t] = ul.poi_hat_error
            out["z"][i, t] = ul.z_local
            out["ul"][i, t] = ul.upper_limit
            out["converged"][i, t] = ul.converged
            n_qed = float(fit_background(h, order).density(mass)) * bw
            if n_qed > 0:
                out["eps2_per_yield"][i, t] = 1.0 / float(yield_per_epsilon2(mass, n_qed, n_f, bw))
            if t < n_scan and scan.size:
                zs = [fit_signal(ch, float(m)).z_local for m in scan]
                out["m_best"][i, t] = float(scan[int(np.argmax(zs))])
    return out


def _mean_err(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    return float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(x.size))


def _width_err(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    s = float(np.std(x, ddof=1))
    return s, s / math.sqrt(2.0 * (x.size - 1))


def _summarise(res: dict[str, np.ndarray], eps: list[float], s_true: np.ndarray,
               cfg: dict[str, Any], mass: float) -> list[dict[str, Any]]:
    rows = []
    for i, e in enumerate(eps):
        s = float(s_true[i])
        yh, err, z, ul = res["yield_hat"][i], res["yield_err"][i], res["z"][i], res["ul"][i]
        pull = (yh - s) / err
        pm, pme = _mean_err(pull)
        pw, pwe = _width_err(pull)
        bias, bias_e = _mean_err(yh - s)
        n = np.isfinite(ul).sum()
        cov = float(np.mean(ul[np.isfinite(ul)] >= s)) if n else float("nan")
        eps_ul = np.sqrt(ul * res["eps2_per_yield"][i])
        cov_eps = float(np.mean(eps_ul[np.isfinite(eps_ul)] >= e)) if n else float("nan")
        mb = res["m_best"][i]
        row = {"mass_GeV": mass, "epsilon": e, "n_signal_expected": s, "n_toys": int(yh.size),
               "converged_fraction": float(np.mean(res["converged"][i])),
               "bias_yield": bias, "bias_yield_err": bias_e,
               "bias_relative": bias / s if s > 0 else float("nan"),
               "pull_mean": pm, "pull_mean_err": pme, "pull_width": pw, "pull_width_err": pwe,
               "coverage": cov, "coverage_err": math.sqrt(max(cov * (1 - cov), 1e-12) / max(n, 1)),
               "coverage_epsilon": cov_eps,
               "median_ul_yield": float(np.nanmedian(ul)),
               "median_ul_epsilon": float(np.nanmedian(eps_ul)),
               "m_best_mean_GeV": _mean_err(mb)[0], "m_best_rms_GeV": _width_err(mb)[0],
               "n_mass_scan": int(np.isfinite(mb).sum())}
        for zc in cfg["discovery_z"]:
            row[f"discovery_rate_z{zc:g}"] = float(np.mean(z >= zc))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# plots


def _plot(rows: list[dict[str, Any]], res: dict[str, np.ndarray], s_true: np.ndarray,
          cfg: dict[str, Any], mass: float, out: Path, h_example: Any, b_expected: np.ndarray,
          template: SignalTemplate) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._common import save_figure_atomic

    eps = np.array([r["epsilon"] for r in rows])
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    a = ax[0, 0]
    a.errorbar(eps, [r["bias_yield"] for r in rows], [r["bias_yield_err"] for r in rows], fmt="o")
    a.axhline(0, color="k", lw=0.8)
    a.set(xlabel="injected epsilon", ylabel="<N_fit - N_inj> [events]", title="bias")
    a = ax[0, 1]
    a.errorbar(eps, [r["pull_mean"] for r in rows], [r["pull_mean_err"] for r in rows], fmt="o",
               label="pull mean")
    a.errorbar(eps, [r["pull_width"] for r in rows], [r["pull_width_err"] for r in rows], fmt="s",
               label="pull width")
    a.axhline(0, color="k", lw=0.8)
    a.axhline(1, color="k", lw=0.8, ls="--")
    a.set(xlabel="injected epsilon", ylabel="pull", title="fitted-yield pulls")
    a.legend()
    a = ax[1, 0]
    a.errorbar(eps, [r["coverage"] for r in rows], [r["coverage_err"] for r in rows], fmt="o",
               label="yield UL >= injected")
    a.plot(eps, [r["coverage_epsilon"] for r in rows], "s", mfc="none", label="eps UL >= injected")
    a.axhline(cfg["cl"], color="r", ls="--", label=f"CL = {cfg['cl']:g}")
    a.set(xlabel="injected epsilon", ylabel="coverage", ylim=(0, 1.05),
          title=f"coverage ({cfg['convention']})")
    a.legend(loc="lower left")
    a = ax[1, 1]
    for zc in cfg["discovery_z"]:
        a.plot(eps, [r[f"discovery_rate_z{zc:g}"] for r in rows], "o-", label=f"Z_local >= {zc:g}")
    a.set(xlabel="injected epsilon", ylabel="fraction of toys", ylim=(0, 1.05), title="discovery rate")
    a.legend()
    fig.suptitle(f"isrsim inject: {cfg['detector']} {cfg['channel']}, m = {mass:g} GeV, "
                 f"L = {cfg['luminosity']}, {cfg['toys']} toys/point")
    fig.tight_layout()
    p1 = save_figure_atomic(fig, out / f"inject_{mass:g}.png")
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    i = int(np.argmax(s_true))
    pull = (res["yield_hat"][i] - s_true[i]) / res["yield_err"][i]
    pull = pull[np.isfinite(pull)]
    x = np.linspace(-4, 4, 200)
    ax[0].hist(pull, bins=np.linspace(-4, 4, 33), density=True, histtype="step", label="toys")
    ax[0].plot(x, np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi), "r-", label="N(0, 1)")
    ax[0].set(xlabel="(N_fit - N_inj) / sigma", title=f"pulls at eps = {eps[i]:g}")
    ax[0].legend()
    c = h_example.centers
    ax[1].step(c, h_example.counts, where="mid", label="one toy (pseudo-data)")
    ax[1].plot(c, b_expected, "k--", label="expected background")
    f = template.fractions(h_example.edges[:-1], h_example.edges[1:], mass, template.sigma0)
    ax[1].plot(c, b_expected + s_true[i] * f, "r-", label=f"+ signal (eps = {eps[i]:g})")
    ax[1].set(xlabel="M_ll [GeV]", ylabel=f"events / {cfg['bin_width'] * 1e3:g} MeV")
    ax[1].legend()
    fig.tight_layout()
    p2 = save_figure_atomic(fig, out / f"inject_pulls_{mass:g}.png")
    plt.close(fig)
    return [p1, p2]


# ---------------------------------------------------------------------------------------
# entry point


def main(args: Any) -> dict[str, Any]:
    """Run the injection study (``isrsim inject``); returns a JSON-able summary.

    ``args`` attributes (cli.py): card, output, detector, luminosity, mass (list), epsilon
    (list), events (background MC events), toys, seed, quiet.
    """
    from ..detector import load_detector
    from ..physics.darkphoton import n_f_ll
    from ..stats import make_histogram, yield_per_epsilon2
    from ._common import stream_rng, write_csv_atomic

    cfg = load_config(args)
    det = load_detector(cfg["detector"])
    _check_processes(cfg, det)
    out = Path(cfg["output"])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"output = {str(out)!r} cannot be created ({exc.strerror or exc})"
        raise OutputError(msg) from None
    cache_dir = out / "cache"
    _, chan, flavour = _PROCESS_OF_CHANNEL[cfg["channel"]]
    t0 = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    toy_rows: list[list[Any]] = []
    plots: list[str] = []
    template_info = {}
    for im, mass in enumerate(cfg["masses"]):
        tpl = _templates(cfg, det, mass, cache_dir)
        h_mc, fit, b_exp = _expected_background(tpl, cfg, chan)
        template = SignalTemplate(tpl["sig"]["residual"], tpl["sig"]["sigma_m_ll"])
        bw = cfg["bin_width"]
        n_qed = float(fit.density(mass)) * bw
        nf = float(n_f_ll(mass, flavour))
        s_per_eps2 = float(yield_per_epsilon2(mass, n_qed, nf, bw))
        s_true = np.array([e * e * s_per_eps2 for e in cfg["epsilon"]])
        rng = stream_rng(cfg["seed"], f"inject-toys-{mass:.6f}", 0)
        h0 = make_histogram(np.array([mass]), lo=tpl["lo"], hi=tpl["hi"], bin_width=bw,
                            mask_windows=None, name=chan)
        _say(cfg, f"m = {mass:g} GeV: {cfg['toys']} pseudo-experiments x {len(cfg['epsilon'])} "
                  "couplings" + (" (templates from the cache)" if tpl["cached"] else ""))
        res = run_toys(h0, b_exp, template, mass, s_true, n_toys=cfg["toys"], rng=rng,
                       order=cfg["order"], convention=cfg["convention"], cl=cfg["cl"], n_f=nf,
                       n_scan=cfg["mass_scan_toys"])
        rows = _summarise(res, cfg["epsilon"], s_true, cfg, mass)
        all_rows += rows
        for i, e in enumerate(cfg["epsilon"]):
            for t in range(cfg["toys"]):
                toy_rows.append([mass, e, t, s_true[i], res["yield_hat"][i, t], res["yield_err"][i, t],
                                 res["z"][i, t], res["ul"][i, t],
                                 math.sqrt(max(res["ul"][i, t] * res["eps2_per_yield"][i, t], 0.0)),
                                 res["m_best"][i, t], int(res["converged"][i, t])])
        h_ex = h0.with_counts(rng.poisson(b_exp + s_true.max() * template.fractions(
            h0.edges[:-1], h0.edges[1:], mass, template.sigma0)).astype(float))
        plots += [str(p) for p in _plot(rows, res, s_true, cfg, mass, out, h_ex, b_exp, template)]
        template_info[f"{mass:g}"] = {
            "n_qed_per_bin": n_qed, "bin_width_GeV": bw, "n_f": nf, "signal_per_epsilon2": s_per_eps2,
            "signal_sigma_GeV": template.sigma0, "signal_sigma_expected_GeV": template.sigma_expected,
            "signal_candidates": int(template.residuals.size), "signal_shift_GeV": template.shift,
            "signal_efficiency": float(tpl["sig"]["efficiency"]),
            "background_mc_candidates": int(tpl["bkg"]["m_ll"].size),
            "background_cross_section_nb": float(tpl["bkg"]["cross_section_nb"]),
            "background_events_expected": float(h_mc.counts.sum()),
            "background_fit_chi2_ndf": float(fit.chi2_ndf), "cached": bool(tpl["cached"])}
    header = list(all_rows[0])
    comments = [f"isrsim inject: {cfg['detector']} {cfg['channel']} L = {cfg['luminosity']}",
                f"convention {cfg['convention']} CL {cfg['cl']}, order {cfg['order']}"]
    p_sum = write_csv_atomic(out / "inject_summary.csv", header, [[r[k] for k in header] for r in all_rows],
                             comments=comments)
    p_toys = write_csv_atomic(out / "inject_toys.csv",
                              ["mass_GeV", "epsilon", "toy", "n_signal_expected", "yield_hat", "yield_err",
                               "z_local", "ul_yield", "ul_epsilon", "m_best_GeV", "converged"], toy_rows)
    summary = {"workflow": "inject", "detector": cfg["detector"], "channel": cfg["channel"],
               "luminosity": cfg["luminosity"], "luminosity_invnb": cfg["luminosity_invnb"],
               "convention": cfg["convention"], "cl": cfg["cl"], "order": cfg["order"],
               "toys": cfg["toys"], "seed": cfg["seed"], "templates": template_info,
               "points": all_rows, "outputs": [str(p_sum), str(p_toys), *plots],
               "seconds": round(time.perf_counter() - t0, 2)}
    tmp = out / f".inject_summary.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    os.replace(tmp, out / "inject_summary.json")
    summary["outputs"].append(str(out / "inject_summary.json"))
    return summary
