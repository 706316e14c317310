"""``isrsim project``: expected epsilon limits (sensitivity projection) for a detector and
luminosity.

What to use when
----------------
* :func:`main` is the CLI entry point (``isrsim project --detector besiii --luminosity
  2.93/fb --mass 1.5 3.4``; ``--luminosity`` may be a comma list such as ``314/fb,1/ab``).
* :func:`run_projection` does the work from a card dictionary (bundled cards
  ``cards/project_<detector>.toml``); :func:`background_candidates` generates, simulates and
  reconstructs one background in memory and caches its candidate table.

Method
------
For every background of the card (BESIII: ``isr_mumu``, ``isr_ee`` and ``isr_pipi`` whose
pions pass the muon selection; Belle II low mass: ``isr_ee`` and the ``diphoton`` conversion
background with forced conversions and the M_PCA preselection), events are generated block
by block (10 000 events; independent random streams per sample, stream and block, a sample
being named by its background label in the card or by its signal mass), the primary vertex
is drawn, the detector is simulated and the selection of the card is
applied (:func:`isrsim.reco.selection.reconstruct_chunk`). Unweighted processes are generated
at an MC luminosity L_MC = min(L_target, ``mc_luminosity_max``), N ~ Poisson(sigma L_MC);
weighted processes with a fixed number of events. The candidate tables are cached in
``<cache>/<sha256 of the background's card>.parquet``; a rerun with the same card and the same
isrsim sources (:func:`isrsim.workflows._common.source_digest`) reads them.

The pseudo-data at each target luminosity L are the candidates weighted to L (weighted MC:
w [nb] x L; unweighted MC: L / L_MC). When L_MC = L the spectrum is a genuine Poisson
pseudo-data set; otherwise it is the expected spectrum and the output says so. Limits follow
:func:`isrsim.workflows.limit.analyse_candidates` (polynomial background per channel,
resolution from the candidates' truth, Eq. 1 with N_f, ee + mumu combined, expected bands from
background-only Poisson toys at L).

Radiative Bhabha (``isr_bhabha``) in the e e channel: with the background ``isr_bhabha`` (the
whole e e gamma final state), the ``isr_ee`` background marked ``reference = true`` (generated
and selected, but not added to the spectrum: it is the annihilation part of ``isr_bhabha``) and
``analysis.bhabha_correction = { ee = "mc" }``, the correction N_ann / N_all of the epsilon
conversion (BESIII 2017, 2-8 %) is measured from the two candidate tables
(:func:`mc_bhabha_correction`) instead of being a number in the card.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import _check_keys
from ..exceptions import ConfigError
from ._common import (
    card_hash,
    parse_luminosities,
    read_candidate_tables,
    save_figure_atomic,
    source_digest,
    stream_rng,
)

__all__ = ["background_candidates", "default_card", "main", "mc_bhabha_correction", "run_projection"]

_PROJECT_KEYS = {"detector", "luminosity", "mass", "selection", "seed", "toys", "cache_dir",
                 "mc_luminosity_max", "backgrounds", "output", "title", "signal"}
_ANALYSIS_KEYS = {"bin_width", "order", "step", "convention", "norm_unc", "res_unc",
                  "mask_windows", "bhabha_correction", "channels", "background", "cuts",
                  "mass_variable", "window_nsigma", "bkg_unc", "bin_unc", "signal_unc",
                  "toy_masses"}
#: analysis.background choices: full-range polynomial fit (BESIII 2017) or MC templates.
BACKGROUND_METHODS = ("polynomial", "template")
_SIGNAL_KEYS = {"masses", "epsilon", "events", "photon_cut"}
_CUT_KEYS = {"r_xy_max_cm", "delta_m_min_GeV"}
_MASS_VARIABLES = ("m_ll", "m_after", "m_before")
_BKG_KEYS = {"process", "params", "weighted", "events", "conversions", "reference"}


def default_card(detector: str) -> dict[str, Any]:
    """The bundled projection card ``cards/project_<detector>.toml``."""
    from ..config import bundled_card

    try:
        return bundled_card(f"project_{detector}")
    except ConfigError:
        msg = (f"--detector = {detector!r} has no bundled projection card; allowed besiii, belle2 "
               "(or give --card)")
        raise ConfigError(msg) from None


# ---------------------------------------------------------------------------------------
# backgrounds: generation + simulation + selection in memory, cached candidate tables


def _pilot_sigma(proc: Any, seed: int, label: str) -> tuple[float, float]:
    _, st = proc.sample(stream_rng(seed, label, 8), 100_000, weighted=True)
    return st.sigma_nb, st.sigma_err_nb


def _generate(proc: Any, det: Any, selection: str, n_events: int, *, weighted: bool, seed: int,
              label: str, conversions: dict[str, Any] | None, progress: bool):
    from ..reco.selection import COLUMNS, reconstruct_chunk
    from ..runner import BLOCK_EVENTS, apply_primary_vertex

    parts: list[dict[str, np.ndarray]] = []
    from ..processes.base import SampleStats

    stats = SampleStats(sigma_prop_nb=getattr(proc, "sigma_prop_nb", 0.0))
    n_blocks = (n_events + BLOCK_EVENTS - 1) // BLOCK_EVENTS
    for j in range(n_blocks):
        nb = min(BLOCK_EVENTS, n_events - j * BLOCK_EVENTS)
        truth, st = proc.sample(stream_rng(seed, label, 0, j), nb, weighted=weighted)
        stats += st
        if weighted:
            truth.weight /= n_events
        rng1 = stream_rng(seed, label, 1, j)
        apply_primary_vertex(truth, det.beam, rng1)
        if conversions:
            from ..detector.conversion import convert_photons

            truth = convert_photons(truth, det, rng1, **conversions)
        from ..detector.simulate import simulate

        reco = simulate(truth, det, rng1)
        cols = reconstruct_chunk(reco, truth, selection=selection, bz=det.bz_T, beam=det.beam,
                                 event_id=np.arange(nb, dtype=np.int64) + j * BLOCK_EVENTS,
                                 calorimeter=getattr(det, "calorimeter", None)
                                 if selection == "belle2_lowmass" else None)
        parts.append(cols)
        if progress and (j + 1) % 50 == 0:
            print(f"  {label}: {(j + 1) * BLOCK_EVENTS:,} / {n_events:,} events", file=sys.stderr, flush=True)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS} if parts else {}
    return cols, stats


def background_candidates(bkg: dict[str, Any], det: Any, *, selection: str, seed: int,
                          mc_luminosity_invnb: float | None, cache_dir: Path | None,
                          progress: bool = False, label: str | None = None
                          ) -> tuple[Path | None, dict[str, Any]]:
    """Candidate table of one background (generated, or read from the cache).

    Parameters
    ----------
    bkg : dict
        ``process`` (name), ``params`` (process parameters), ``weighted`` (bool), ``events``
        (for weighted processes), ``conversions`` (optional, passed to
        :func:`isrsim.detector.conversion.convert_photons`).
    det : DetectorModel
    selection : str
        ``besiii2017`` or ``belle2_lowmass``.
    seed : int
    mc_luminosity_invnb : float or None
        MC luminosity of unweighted processes [nb^-1].
    cache_dir : Path or None
        Cache directory (None: write into a temporary directory that is not reused).
    label : str, optional
        Name of the sample's random streams (:func:`isrsim.workflows._common.stream_rng`;
        default the process name). Every sample of a run needs its own: the projection passes
        the card's background label, and one label per signal mass, so that two samples of one
        process (two masses, two background tables) never share random numbers.

    Returns
    -------
    (path, info)
        Path of the candidate table and a dict with ``cached`` (bool), ``seconds``,
        ``n_events``, ``n_candidates``, ``cross_section_nb``.
    """
    import pyarrow as pa

    from ..io import write_table_atomic
    from ..processes import make_process

    _check_keys(bkg, _BKG_KEYS, "[project.backgrounds]")
    bkg = {k: v for k, v in bkg.items() if k != "reference"}  # not part of the sample's identity
    name = str(bkg.get("process", ""))
    params = dict(bkg.get("params", {}) or {})
    weighted = bool(bkg.get("weighted", False))
    conversions = bkg.get("conversions")
    if name == "diphoton":
        params.setdefault("detector", det)
    stream = name if label is None else str(label)
    key_card = {"isrsim": __version__, "source": source_digest(), "process": name, "streams": stream,
                "params": {k: v for k, v in params.items() if k != "detector"},
                "weighted": weighted, "events": bkg.get("events"), "conversions": conversions,
                "detector": det.sha256, "selection": selection, "seed": int(seed),
                "mc_luminosity_invnb": None if weighted else mc_luminosity_invnb}
    digest = card_hash(key_card)
    path = None if cache_dir is None else Path(cache_dir) / f"{name}-{digest[:16]}.parquet"
    if path is not None and path.exists():
        from ..io import read_metadata

        meta = read_metadata(path)
        return path, {"process": name, "cached": True, "seconds": 0.0,
                      "n_events": meta.get("n_events"), "n_candidates": meta.get("n_candidates"),
                      "cross_section_nb": meta.get("cross_section_nb")}
    t0 = time.perf_counter()
    proc = make_process(name, det.beam, **params)
    if weighted:
        n = bkg.get("events")
        if not isinstance(n, int) or n < 1:
            msg = f"backgrounds.{name}.events = {n!r}: weighted backgrounds need an integer >= 1"
            raise ConfigError(msg)
        l_mc = None
    else:
        if mc_luminosity_invnb is None:
            msg = f"backgrounds.{name}: unweighted background needs a luminosity"
            raise ConfigError(msg)
        sigma, _ = _pilot_sigma(proc, seed, stream)
        mean = sigma * mc_luminosity_invnb
        if mean > 5e8:
            msg = (f"backgrounds.{name}: {mean:.3g} events at {mc_luminosity_invnb:.4g}/nb is too many; "
                   "lower project.mc_luminosity_max")
            raise ConfigError(msg)
        n = int(stream_rng(seed, stream, 9).poisson(mean))
        l_mc = mc_luminosity_invnb
    cols, stats = _generate(proc, det, selection, n, weighted=weighted, seed=seed, label=stream,
                            conversions=conversions, progress=progress)
    meta = {"isrsim_version": __version__, "kind": "candidates", "process": name,
            "process_config": proc.config(), "selection": selection,
            "detector": {"name": det.name, "sha256": det.sha256},
            "beam": {"sqrt_s_GeV": det.beam.sqrt_s}, "weighted": weighted, "n_events": int(n),
            "n_candidates": int(len(cols.get("m_ll", []))), "cross_section_nb": stats.sigma_nb,
            "cross_section_err_nb": stats.sigma_err_nb, "luminosity_invnb": l_mc,
            "seed": int(seed), "cache_key": key_card, "cache_sha256": digest}
    meta = json.loads(json.dumps(meta, default=str).replace("NaN", "null"))
    if meta["n_candidates"] == 0:
        msg = f"backgrounds.{name}: no candidates passed the {selection} selection ({n} events)"
        raise ConfigError(msg)
    # compact table: drop the columns this selection leaves all-NaN (e.g. vertex columns
    # for besiii2017), dictionary-encode the channel
    arrays = {}
    for k, v in cols.items():
        if v.dtype == object:
            arrays[k] = pa.array(v.astype(str)).dictionary_encode()
        elif v.dtype.kind == "f" and not np.any(np.isfinite(v)):
            continue
        else:
            arrays[k] = pa.array(v)
    table = pa.table(arrays)
    if path is None:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="isrsim-project-")) / f"{name}.parquet"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(table, path, meta)
    return path, {"process": name, "cached": False, "seconds": round(time.perf_counter() - t0, 2),
                  "n_events": int(n), "n_candidates": meta["n_candidates"],
                  "cross_section_nb": stats.sigma_nb}


# ---------------------------------------------------------------------------------------
# the projection


#: Largest background polynomial order (as ``isrsim limit --order``) and number of toys.
MAX_ORDER = 12
MAX_TOYS = 10**7


def _check_card(card: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate the whole projection card before any work (every field: types and ranges,
    background process names, [analysis] values); ConfigError naming the field. What needs the
    detector (process parameters, conversion layers) is checked by :func:`_check_backgrounds`."""
    from ..units import parse_luminosity
    from ._common import check_choice, check_float, check_int

    if not isinstance(card, dict):
        msg = "projection card must be a TOML table"
        raise ConfigError(msg)
    proj = card.get("project")
    if not isinstance(proj, dict):
        msg = "projection card has no [project] table"
        raise ConfigError(msg)
    _check_keys(proj, _PROJECT_KEYS, "[project]")
    ana = card.get("analysis", {}) or {}
    if not isinstance(ana, dict):
        msg = f"[analysis] = {ana!r} is invalid: allowed a table"
        raise ConfigError(msg)
    _check_keys(ana, _ANALYSIS_KEYS, "[analysis]")
    for k in ("detector", "luminosity", "mass", "selection", "backgrounds"):
        if k not in proj:
            msg = f"project.{k} is missing"
            raise ConfigError(msg)
    det = proj["detector"]
    if not isinstance(det, str) or not det.strip():
        msg = f"project.detector = {det!r} is invalid: allowed a bundled detector name or a .toml path"
        raise ConfigError(msg)
    from ..reco.selection import SELECTIONS

    check_choice("project.selection", proj["selection"], SELECTIONS)
    parse_luminosities(proj["luminosity"], field="project.luminosity")
    if proj.get("mc_luminosity_max") is not None:
        parse_luminosity(proj["mc_luminosity_max"], field="project.mc_luminosity_max")
    mass = proj["mass"]
    if not (isinstance(mass, (list, tuple)) and len(mass) == 2):
        msg = f"project.mass = {mass!r} is invalid: allowed [MIN, MAX] in GeV with 0 <= MIN < MAX"
        raise ConfigError(msg)
    lo, hi = (check_float(f"project.mass[{i}]", x, lo=0.0,
                          allowed="[MIN, MAX] in GeV with 0 <= MIN < MAX") for i, x in enumerate(mass))
    if not lo < hi:
        msg = f"project.mass = [{lo}, {hi}] is invalid: allowed [MIN, MAX] in GeV with 0 <= MIN < MAX"
        raise ConfigError(msg)
    check_int("project.seed", proj.get("seed", 1), 0, 2**63 - 1)
    check_int("project.toys", proj.get("toys", 50), 0, MAX_TOYS)
    for key in ("cache_dir", "title"):
        v = proj.get(key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            msg = f"project.{key} = {v!r} is invalid: allowed a non-empty string"
            raise ConfigError(msg)
    method = ana.get("background", "polynomial")
    if method not in BACKGROUND_METHODS:
        msg = f"analysis.background = {method!r} is invalid: allowed {', '.join(BACKGROUND_METHODS)}"
        raise ConfigError(msg)
    processes = _check_background_tables(proj)
    _check_bhabha(proj, ana)
    _check_analysis(ana, lo, hi, method, processes)
    if method == "template":
        _check_cuts(ana)
        _check_signal(proj)
    return proj, ana


def _check_background_tables(proj: dict[str, Any]) -> list[str]:
    """``[project.backgrounds.*]``: tables with known keys, registered process names, types;
    returns the process names of the backgrounds added to the spectrum."""
    from ._common import check_int, check_process_name

    bks = proj["backgrounds"]
    if not isinstance(bks, dict) or not bks:
        msg = "project.backgrounds must be a non-empty table of backgrounds"
        raise ConfigError(msg)
    names = []
    for label, bkg in bks.items():
        where = f"project.backgrounds.{label}"
        if not isinstance(bkg, dict):
            msg = f"{where} = {bkg!r} is invalid: allowed a table"
            raise ConfigError(msg)
        _check_keys(bkg, _BKG_KEYS, f"[{where}]")
        name = check_process_name(f"{where}.process", bkg.get("process", label))
        params = bkg.get("params", {})
        if params is not None and not isinstance(params, dict):
            msg = f"{where}.params = {params!r} is invalid: allowed a table of process parameters"
            raise ConfigError(msg)
        weighted = bkg.get("weighted", False)
        if not isinstance(weighted, bool):
            msg = f"{where}.weighted = {weighted!r} is invalid: allowed true or false"
            raise ConfigError(msg)
        if weighted:
            if "events" not in bkg:
                msg = f"{where}.events is missing: weighted backgrounds need an integer >= 1"
                raise ConfigError(msg)
            check_int(f"{where}.events", bkg["events"], 1, 10**13)
        elif "events" in bkg:
            msg = (f"{where}.events = {bkg['events']!r} is not used: an unweighted background is "
                   "generated at the MC luminosity; allowed: weighted = true with events, or no events")
            raise ConfigError(msg)
        conv = bkg.get("conversions")
        if conv is not None and not isinstance(conv, dict):
            msg = f"{where}.conversions = {conv!r} is invalid: allowed a table (mode, forced_layers)"
            raise ConfigError(msg)
        if not bkg.get("reference", False):
            names.append(name)
    return names


def _check_analysis(ana: dict[str, Any], lo: float, hi: float, method: str,
                    processes: list[str]) -> None:
    """Every ``[analysis]`` value: types and allowed ranges (those of the limit code)."""
    from ..stats import CONVENTIONS
    from ..stats.limits import RES_UNC_MAX
    from ._common import (
        CANDIDATE_CHANNELS,
        check_channels,
        check_choice,
        check_float,
        check_int,
        check_mass_windows,
        check_number_list,
    )
    from .limit import MAX_HYPOTHESES

    span = hi - lo
    from ..stats.histogram import MAX_BINS

    check_float("analysis.bin_width", ana.get("bin_width", 0.010 if method == "polynomial" else 0.001),
                lo=span / MAX_BINS, hi=span / 10,
                allowed=f"{span / MAX_BINS:.6g} <= bin_width <= {span / 10:.6g} GeV (10 to {MAX_BINS} "
                        "bins in project.mass)")
    if ana.get("step") is not None:
        smallest = span / MAX_HYPOTHESES
        check_float("analysis.step", ana["step"], lo=smallest, hi=span,
                    allowed=f"{smallest:.6g} <= step <= {span:.6g} GeV (at most {MAX_HYPOTHESES} "
                            "mass hypotheses in project.mass)")
    order = ana.get("order")
    if isinstance(order, dict):
        for c, o in order.items():
            if c not in CANDIDATE_CHANNELS:
                msg = (f"analysis.order.{c} = {o!r} is invalid: allowed one order per channel of "
                       f"{list(CANDIDATE_CHANNELS)}")
                raise ConfigError(msg)
            check_int(f"analysis.order.{c}", o, 0, MAX_ORDER)
    elif order is not None:
        check_int("analysis.order", order, 0, MAX_ORDER)
    check_choice("analysis.convention", ana.get("convention", "qtilde_asymptotic"), CONVENTIONS)
    for key, default in (("norm_unc", 0.05), ("signal_unc", 0.05)):
        check_float(f"analysis.{key}", ana.get(key, default), lo=0.0, hi=0.5, hi_open=True)
    check_float("analysis.res_unc", ana.get("res_unc", 0.02), lo=0.0, hi=RES_UNC_MAX)
    check_float("analysis.bin_unc", ana.get("bin_unc", 0.0), lo=0.0, hi=1.0, hi_open=True)
    check_float("analysis.window_nsigma", ana.get("window_nsigma", 5.0), lo=1.0, hi=100.0)
    if ana.get("mask_windows") is not None:
        check_mass_windows("analysis.mask_windows", ana["mask_windows"])
        from .limit import mass_hypotheses

        step = ana.get("step") or ana.get("bin_width", 0.010 if method == "polynomial" else 0.001)
        try:
            mass_hypotheses(lo, hi, float(step), ana["mask_windows"])
        except ConfigError as exc:
            msg = f"analysis.mask_windows = {ana['mask_windows']!r}: {exc}"
            raise ConfigError(msg) from None
    if ana.get("channels") is not None:
        check_channels("analysis.channels", ana["channels"])
    corr = ana.get("bhabha_correction") or {}
    for c, v in corr.items():  # a table (checked by _check_bhabha); "mc" values there too
        if c not in CANDIDATE_CHANNELS:
            msg = (f"analysis.bhabha_correction.{c} = {v!r} is invalid: allowed one value per channel of "
                   f"{list(CANDIDATE_CHANNELS)}")
            raise ConfigError(msg)
        if not isinstance(v, str):
            check_float(f"analysis.bhabha_correction.{c}", v, lo=0.0, lo_open=True, hi=1.0)
    unc = ana.get("bkg_unc", {}) or {}
    if not isinstance(unc, dict):
        msg = f"analysis.bkg_unc = {unc!r} is invalid: allowed a table {{ process = uncertainty }}"
        raise ConfigError(msg)
    for name, v in unc.items():
        if name not in processes:
            msg = (f"analysis.bkg_unc.{name} = {v!r} is invalid: allowed one value per background "
                   f"process {processes}")
            raise ConfigError(msg)
        check_float(f"analysis.bkg_unc.{name}", v, lo=0.0, hi=0.5, hi_open=True)
    if ana.get("toy_masses") is not None:
        check_number_list("analysis.toy_masses", ana["toy_masses"], lo=0.0, lo_open=True, min_len=0,
                          what="masses [GeV]")


def _check_signal(proj: dict[str, Any]) -> None:
    """``[project.signal]`` of the template method (dark-photon samples)."""
    from ..constants import M_E
    from ..physics.darkphoton import EPSILON_ALLOWED, EPSILON_MIN
    from ..processes.isr import PhotonCut
    from ._common import check_float, check_int, check_number_list

    cfg = proj.get("signal")
    if not isinstance(cfg, dict):
        msg = "analysis.background = 'template' needs a [project.signal] table (masses, epsilon, events)"
        raise ConfigError(msg)
    _check_keys(cfg, _SIGNAL_KEYS, "[project.signal]")
    check_number_list("project.signal.masses", cfg.get("masses"), lo=2 * M_E, lo_open=True,
                      min_len=2, what="A' masses > 2 m_e [GeV]")
    check_float("project.signal.epsilon", cfg.get("epsilon", 1e-3), lo=EPSILON_MIN, hi=1.0,
                hi_open=True, allowed=EPSILON_ALLOWED)
    check_int("project.signal.events", cfg.get("events", 20000), 100, 10**9)
    PhotonCut.from_config(cfg.get("photon_cut") or {"mode": "all"})


def _background_tables(proj: dict[str, Any], ana: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, background table) with the defaults the projection applies: the process name,
    and for ISR processes a generator mass window a little beyond the scan range."""
    lo, hi = (float(x) for x in proj["mass"])
    margin = max(0.05 * (hi - lo), 5 * float(ana.get("bin_width", 0.010)))
    out = []
    for label, bkg in proj["backgrounds"].items():
        bkg = dict(bkg)
        bkg.setdefault("process", label)
        if str(bkg["process"]).startswith("isr_"):
            # generate the ISR spectrum a little beyond the scan range (resolution, edges)
            params = dict(bkg.get("params", {}) or {})
            if "mass_range" not in params:
                _check_above_threshold(label, str(bkg["process"]), lo, margin)
                params["mass_range"] = [max(lo - margin, 1e-3), hi + margin]
            bkg["params"] = params
        out.append((label, bkg))
    return out


def _check_above_threshold(label: str, process: str, lo: float, margin: float) -> None:
    """The generator window of an ISR background starts ``margin`` below the scan range: refuse
    a scan range whose lower end leaves no room above the process threshold 2 m, naming
    ``project.mass`` (the error otherwise named the derived window, which the user never gave)."""
    from ..processes import get_process
    from ..processes.isr import FINAL_STATES

    fs = getattr(get_process(process), "final_state", None)
    if fs not in FINAL_STATES:
        return  # not a known ISR final state: the process's own check applies
    m2 = 2.0 * FINAL_STATES[fs][1]
    if lo - margin <= m2:
        what = label if label == process else f"{label} ({process})"
        msg = (f"project.mass (--mass) = [{lo:g}, ...]: the generator window of background {what} "
               f"starts {margin:g} GeV below it, under its threshold 2 m = {m2:.6g} GeV; "
               f"allowed project.mass min > {m2 + margin:.6g} GeV (or "
               f"project.backgrounds.{label}.params.mass_range)")
        raise ConfigError(msg)


def _check_backgrounds(backgrounds: list[tuple[str, dict[str, Any]]], det: Any) -> None:
    """Build every background process with its parameters and the detector's beams, and check
    its conversion layers, before any is generated (a bad parameter of the last background
    must not cost the generation of the others)."""
    from ..config import _check_conversions
    from ..processes import make_process

    for label, bkg in backgrounds:
        where = f"project.backgrounds.{label}"
        params = dict(bkg.get("params", {}) or {})
        if bkg["process"] == "diphoton":
            params.setdefault("detector", det)
        try:
            make_process(bkg["process"], det.beam, **params)
            conv = bkg.get("conversions")
            if conv is not None:
                _check_keys(conv, {"mode", "forced_layers", "photons"}, f"[{where}.conversions]")
                _check_conversions(conv, det)
        except ConfigError as exc:
            msg = f"{where}: {exc}"
            raise ConfigError(msg) from None
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            shown = {k: v for k, v in params.items() if k != "detector"}
            msg = (f"{where}.params = {shown!r} is invalid for process {bkg['process']!r} "
                   f"({type(exc).__name__}: {exc}); see the process documentation for the allowed values")
            raise ConfigError(msg) from None


def _lumi_label(lumi: float) -> str:
    from ..units import format_luminosity

    return format_luminosity(lumi).replace("/", "inv")


def run_projection(card: dict[str, Any], *, output: str | Path, progress: bool = True
                   ) -> dict[str, Any]:
    """Run a projection card; write CSV + PNG per luminosity and a combined PNG.

    Returns a JSON-able summary (output paths, limit ranges, MC bookkeeping).
    """
    from ..detector import load_detector
    from ..units import parse_luminosity
    from ._common import check_output_dir
    from .limit import analyse_candidates, plot_limits, write_limit_csv

    t0 = time.perf_counter()
    # everything is checked before any work or output: the card, the detector file, every
    # background's process parameters, the output path
    proj, ana = _check_card(card)
    lumis = parse_luminosities(proj["luminosity"], field="luminosity")
    det = load_detector(proj["detector"])
    seed = int(proj.get("seed", 1))
    backgrounds = _background_tables(proj, ana)
    _check_backgrounds(backgrounds, det)
    bhabha = _check_bhabha(proj, ana)
    cap = proj.get("mc_luminosity_max")
    cap_invnb = parse_luminosity(cap, field="mc_luminosity_max") if cap is not None else None
    l_mc = max(lumis) if cap_invnb is None else min(max(lumis), cap_invnb)
    lo, hi = (float(x) for x in proj["mass"])
    from ..reco.selection import check_cuts

    check_cuts(str(proj["selection"]), None, det.beam)  # e.g. belle2_lowmass at BESIII beams
    out = check_output_dir(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..exceptions import OutputError

        msg = f"output = {str(out)!r} cannot be created ({exc.strerror or exc})"
        raise OutputError(msg) from None
    cache = proj.get("cache_dir")
    cache_dir = Path(cache) if cache else out / "cache"
    paths, infos, processes = [], [], {}
    for label, bkg in backgrounds:
        # random streams named by the card's (unique) background label: two backgrounds of one
        # process are independent samples
        p, info = background_candidates(bkg, det, selection=str(proj["selection"]), seed=seed,
                                        mc_luminosity_invnb=l_mc, cache_dir=cache_dir,
                                        progress=progress, label=label)
        if progress:
            state = "cached" if info["cached"] else f"generated in {info['seconds']} s"
            print(f"isrsim project: {info['process']}: {info['n_events']} events, "
                  f"{info['n_candidates']} candidates ({state})", file=sys.stderr, flush=True)
        info["reference"] = bool(bkg.get("reference", False))
        processes[str(bkg["process"])] = p
        if not info["reference"]:
            paths.append(p)
        infos.append(info)
    correction = ana.get("bhabha_correction")
    bh_info = None
    if bhabha:
        correction = dict(correction)
        correction["ee"], bh_info = mc_bhabha_correction(
            processes["isr_ee"], processes["isr_bhabha"], mass_range=(lo, hi),
            luminosity_invnb=l_mc)
        if progress:
            print(f"isrsim project: Bhabha correction (MC) {bh_info['summary']}", file=sys.stderr, flush=True)
    if ana.get("background", "polynomial") == "template":
        return _run_template(card, proj, ana, det, lumis, paths, infos, out, seed=seed,
                             cache_dir=cache_dir, l_mc=l_mc, progress=progress, t0=t0)
    results = []
    for lumi in lumis:
        cands = read_candidate_tables(paths, luminosity_invnb=lumi,
                                      channels=ana.get("channels"))
        res = analyse_candidates(
            cands, mass_range=proj["mass"], step=ana.get("step"),
            bin_width=float(ana.get("bin_width", 0.010)), order=ana.get("order"),
            convention=str(ana.get("convention", "qtilde_asymptotic")),
            n_toys=int(proj.get("toys", 50)), seed=seed, mask_windows=ana.get("mask_windows"),
            norm_unc=float(ana.get("norm_unc", 0.05)), res_unc=float(ana.get("res_unc", 0.02)),
            bhabha_correction=correction)
        tag = f"projection_{det.name}_{_lumi_label(lumi)}"
        title = proj.get("title") or f"isrsim projection: {det.name}, {_fmt_lumi(lumi)}"
        comments = [f"detector {det.name} (sha256 {det.sha256[:12]}), selection {proj['selection']}, "
                    f"MC luminosity {l_mc:.6g}/nb, card sha256 {card_hash(card)[:12]}"]
        csv = write_limit_csv(res, out / f"{tag}.csv", comments=comments)
        png = plot_limits(res, out / f"{tag}.png", title=title,
                          observed_label="pseudo-data 90% CL" if not res.scaled
                          else "expected spectrum (scaled MC) 90% CL")
        results.append((lumi, res, csv, png))
    combined = _plot_combined(results, out / f"projection_{det.name}.png", det.name) \
        if len(results) > 1 else results[0][3]
    return {
        "detector": det.name, "selection": proj["selection"], "output_dir": str(out),
        "csv": [str(r[2]) for r in results], "png": [str(r[3]) for r in results],
        "combined_png": str(combined), "mc_luminosity_invnb": l_mc, "backgrounds": infos,
        "projections": [{"luminosity": _fmt_lumi(lumi), **res.summary()} for lumi, res, _, _ in results],
        **({"bhabha_correction_mc": bh_info} if bh_info else {}),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _check_bhabha(proj: dict[str, Any], ana: dict[str, Any]) -> bool:
    """Check the backgrounds' ``reference`` flags and ``analysis.bhabha_correction``; True if the
    e e correction is to be measured from the MC (``{ ee = "mc" }``)."""
    refs, procs = [], {}
    for label, bkg in proj["backgrounds"].items():
        if not isinstance(bkg, dict):
            msg = f"project.backgrounds.{label} must be a table"
            raise ConfigError(msg)
        ref = bkg.get("reference", False)
        if not isinstance(ref, bool):
            msg = f"project.backgrounds.{label}.reference = {ref!r} must be true or false"
            raise ConfigError(msg)
        process = str(bkg.get("process", label))
        procs.setdefault(process, []).append(ref)
        if ref:
            refs.append(process)
    corr = ana.get("bhabha_correction")
    if corr is not None and not isinstance(corr, dict):
        msg = (f"analysis.bhabha_correction = {corr!r} must be a table, e.g. {{ ee = 0.05 }} or "
               '{ ee = "mc" }')
        raise ConfigError(msg)
    mc = [k for k, v in (corr or {}).items() if isinstance(v, str)]
    for k in mc:
        if k != "ee" or corr[k] != "mc":
            msg = (f"analysis.bhabha_correction.{k} = {corr[k]!r} is invalid: allowed a number in "
                   "(0, 1], or \"mc\" for the ee channel")
            raise ConfigError(msg)
    if not mc:
        if refs:
            msg = (f"project.backgrounds: {refs} marked reference = true, but nothing uses them; "
                   "allowed only with analysis.bhabha_correction = { ee = \"mc\" }")
            raise ConfigError(msg)
        return False
    if ana.get("background", "polynomial") != "polynomial":
        msg = ('analysis.bhabha_correction.ee = "mc" is only allowed with '
               'analysis.background = "polynomial"')
        raise ConfigError(msg)
    if procs.get("isr_ee") != [True] or procs.get("isr_bhabha") != [False] or refs != ["isr_ee"]:
        msg = ("analysis.bhabha_correction.ee = \"mc\" needs exactly one isr_bhabha background (the "
               "whole e e gamma final state) and one isr_ee background with reference = true (its "
               "annihilation part, not added to the spectrum); the card has "
               f"{ {k: v for k, v in procs.items() if k in ('isr_ee', 'isr_bhabha')} }")
        raise ConfigError(msg)
    return True


def mc_bhabha_correction(path_annihilation: str | Path, path_all: str | Path, *,
                         mass_range: tuple[float, float], luminosity_invnb: float,
                         n_bins: int = 19, order: int = 5, channel: str = "ee"):
    """The Bhabha correction ``c(m) = N_ann / N_all`` of the e e channel from MC candidate tables.

    ``path_annihilation``: candidates of ``isr_ee`` (annihilation only); ``path_all``: of
    ``isr_bhabha`` (annihilation and Bhabha scattering). Both are weighted to
    ``luminosity_invnb``; the ratio of their ``channel`` yields in ``n_bins`` equal bins of
    ``mass_range`` is fitted with a polynomial of degree ``order`` in m (weights from the
    binned MC errors; degree 5 because at 0.2/fb of BESIII MC degrees 3 / 4 leave chi2/ndf =
    37.8/15 / 27.4/14 against 13.1/13, although the collinear Born fraction alone is a cubic to
    0.3 %). Returns ``(c, info)``: ``c(m)`` clipped to [1e-6, 1], and a JSON-able
    ``info`` with the binned ratios, the fit's chi2/ndf and a one-line ``summary``.
    """
    lo, hi = mass_range
    edges = np.linspace(lo, hi, n_bins + 1)
    sums = []
    for path in (path_annihilation, path_all):
        cs = read_candidate_tables([path], luminosity_invnb=luminosity_invnb)
        sel = cs.channel == channel
        w, m = cs.weight[sel], cs.m_ll[sel]
        sums.append((np.histogram(m, edges, weights=w)[0], np.histogram(m, edges, weights=w * w)[0]))
    (a, a2), (b, b2) = sums
    if np.any(a <= 0) or np.any(b <= 0):
        msg = (f"Bhabha correction from MC: an empty {channel} bin in {list(mass_range)} GeV "
               f"({n_bins} bins); raise project.mc_luminosity_max")
        raise ConfigError(msg)
    r = a / b
    err = r * np.sqrt(a2 / a**2 + b2 / b**2)
    x = 0.5 * (edges[1:] + edges[:-1])
    mid = 0.5 * (lo + hi)
    coef = np.polyfit(x - mid, r, order, w=1.0 / err)
    fit = np.polyval(coef, x - mid)
    chi2 = float(np.sum(((r - fit) / err) ** 2))
    ndf = n_bins - order - 1

    def correction(m: float) -> float:
        return float(np.clip(np.polyval(coef, m - mid), 1e-6, 1.0))

    summary = (f"{100 * r.min():.2f}-{100 * r.max():.2f} % over {lo:g}-{hi:g} GeV "
               f"(poly{order} fit chi2/ndf = {chi2:.1f}/{ndf})")
    info = {"mass_GeV": x.tolist(), "ratio": r.tolist(), "ratio_err": err.tolist(),
            "fit": fit.tolist(), "chi2": chi2, "ndf": ndf, "summary": summary}
    return correction, info


def _fmt_lumi(lumi: float) -> str:
    from ..units import format_luminosity

    return format_luminosity(lumi)


def _plot_combined(results, path: Path, det_name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, (lumi, res, _, _) in enumerate(results):
        col = f"C{k}"
        if res.bands is not None:
            ax.fill_between(res.mass, res.bands[1], res.bands[3], color=col, alpha=0.25,
                            label=rf"{_fmt_lumi(lumi)}: expected $\pm1\sigma$")
            ax.plot(res.mass, res.bands[2], "--", color=col, lw=1.2,
                    label=f"{_fmt_lumi(lumi)}: expected median")
        else:
            ax.plot(res.mass, res.epsilon_obs, color=col, label=f"{_fmt_lumi(lumi)}")
    ax.set_yscale("log")
    ax.set_xlabel(r"$m_{A'}$ [GeV]")
    ax.set_ylabel(r"$\varepsilon$ upper limit (90% CL)")
    ax.set_title(f"isrsim projection: {det_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def card_from_args(args: Any, card: dict[str, Any]) -> dict[str, Any]:
    """Apply the CLI overrides (``--luminosity``, ``--mass``, ``--toys``, ``--seed``,
    ``--events``) to a projection card."""
    from ..config import merge

    if not isinstance(card.get("project"), dict) or not isinstance(card["project"].get("backgrounds"), dict):
        msg = ("the card has no [project] table with [project.backgrounds]: allowed a projection "
               "card (e.g. the bundled project_besiii.toml, `isrsim project --detector besiii`)")
        raise ConfigError(msg)
    over: dict[str, Any] = {}
    if getattr(args, "luminosity", None):
        over["luminosity"] = args.luminosity
    mass = getattr(args, "mass", None)
    if mass is not None:
        if len(mass) != 2:
            msg = f"--mass = {mass} must be two numbers MIN MAX (GeV)"
            raise ConfigError(msg)
        over["mass"] = [float(mass[0]), float(mass[1])]
    for k in ("toys", "seed"):
        v = getattr(args, k, None)
        if v is not None:
            over[k] = v
    if getattr(args, "events", None) is not None:
        if args.events < 1:
            msg = f"--events = {args.events} must be >= 1"
            raise ConfigError(msg)
        bk = {n: {"events": int(args.events)} for n, b in card["project"]["backgrounds"].items()
              if isinstance(b, dict) and b.get("weighted")}
        if not bk:
            mc = card["project"].get("mc_luminosity_max")
            msg = (f"--events = {args.events} sets the event count of weighted backgrounds "
                   "(project.backgrounds.NAME.weighted = true) and this card has none: its "
                   "unweighted samples are sized by project.mc_luminosity_max"
                   + (f" (here {mc!r})" if mc is not None else "")
                   + "; allowed: --events with such a card, or a card with a smaller "
                   "mc_luminosity_max (--card)")
            raise ConfigError(msg)
        over["backgrounds"] = bk
    return merge(card, {"project": over})


def main(args: Any) -> dict[str, Any]:
    """``isrsim project`` (arguments as parsed by :mod:`isrsim.cli`)."""
    from ..config import load_card

    if getattr(args, "card", None):
        card = load_card(args.card)
    else:
        if not getattr(args, "detector", None):
            msg = "--detector is required (besiii or belle2) unless --card is given"
            raise ConfigError(msg)
        card = default_card(args.detector)
    if not isinstance(card.get("project"), dict):
        card_from_args(args, card)  # the error for a card without [project]
    if getattr(args, "detector", None) and card["project"].get("detector") != args.detector:
        card = json.loads(json.dumps(card))
        card.setdefault("project", {})["detector"] = args.detector
    card = card_from_args(args, card)
    output = args.output if args.output is not None else f"isrsim_project_{card['project']['detector']}"
    quiet = bool(getattr(args, "quiet", False))
    summary = run_projection(card, output=output, progress=not quiet)
    lines = result_lines(summary)
    if lines and not quiet:
        print("\n".join(["isrsim project: results"] + lines), file=sys.stderr, flush=True)
    return summary


def result_lines(summary: dict[str, Any]) -> list[str]:
    """What a reader of a projection wants first, one line per luminosity (the rest is in the
    JSON summary and the CSV): the ranges over the mass scan of the expected (median) and the
    pseudo-data 90 % CL upper limits on epsilon, the largest local significance with its
    global p-value, and for a template projection the expected limit and its 68 % band at the
    scanned mass nearest to 17 MeV."""
    lines = []
    for p in summary.get("projections", []):
        lo, hi = p["mass_range_GeV"]
        parts = []
        if p.get("epsilon_exp_median_range"):
            parts.append("expected (median) {:.2e} - {:.2e}".format(*p["epsilon_exp_median_range"]))
        if p.get("epsilon_obs_range"):
            what = "scaled-MC spectrum" if p.get("mc_scaled_to_luminosity") else "pseudo-data"
            parts.append("{} {:.2e} - {:.2e}".format(what, *p["epsilon_obs_range"]))
        if p.get("epsilon_at_17MeV") is not None:  # the scan's mass nearest to 17 MeV
            x = p["epsilon_at_17MeV"]
            parts.append(f"expected at {x['mass_GeV'] * 1e3:.3g} MeV {x['eps_median']:.2e} "
                         f"(68 %: {x['eps_m1sigma']:.2e} - {x['eps_p1sigma']:.2e})")
        if p.get("max_local_z") is not None:
            z = f"max local Z {p['max_local_z']:.2f}"
            if p.get("global_p_toys") is not None:
                z += f" (global p {p['global_p_toys']:.2g}"
                z += f" +- {p['global_p_error']:.1g})" if p.get("global_p_error") is not None else ")"
            parts.append(z)
        lines.append(f"  {p['luminosity']}, {lo:.4g}-{hi:.4g} GeV: epsilon 90% CL upper limit: "
                     + "; ".join(parts))
    return lines


# ---------------------------------------------------------------------------------------
# MC-template projection (analysis.background = "template")


def _check_cuts(ana: dict[str, Any]) -> tuple[dict[str, float], str]:
    cuts = dict(ana.get("cuts", {}) or {})
    _check_keys(cuts, _CUT_KEYS, "analysis.cuts")
    for k, v in cuts.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            msg = f"analysis.cuts.{k} = {v!r} must be a finite number"
            raise ConfigError(msg)
    if cuts.get("r_xy_max_cm", 1.0) <= 0:
        msg = f"analysis.cuts.r_xy_max_cm = {cuts['r_xy_max_cm']} must be > 0"
        raise ConfigError(msg)
    var = ana.get("mass_variable", "m_ll")
    if var not in _MASS_VARIABLES:
        msg = f"analysis.mass_variable = {var!r} is invalid: allowed {', '.join(_MASS_VARIABLES)}"
        raise ConfigError(msg)
    return {k: float(v) for k, v in cuts.items()}, var


def _read_selected(path: Path, cuts: dict[str, float], var: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mass, weight column, metadata) of the candidates of a table passing ``cuts``."""
    from ..io import read_metadata, read_table

    meta = read_metadata(path)
    t = read_table(path)
    names = set(t.column_names)

    def col(k: str) -> np.ndarray:
        if k not in names:
            msg = f"{path}: column {k!r} missing (selection {meta.get('selection')!r} has no vertex fit?)"
            raise ConfigError(msg)
        return t.column(k).to_numpy(zero_copy_only=False).astype(np.float64)

    m = col(var)
    keep = np.isfinite(m)
    if "r_xy_max_cm" in cuts:
        keep &= col("r_xy_cm") < cuts["r_xy_max_cm"]
    if "delta_m_min_GeV" in cuts:
        keep &= col("delta_m") > cuts["delta_m_min_GeV"]
    return m[keep], col("weight")[keep], meta


def _read_truth(path: Path, cuts: dict[str, float], var: str) -> np.ndarray:
    """Truth pair mass of the candidates selected by :func:`_read_selected` (NaN if absent)."""
    from ..io import read_table

    m, _, _ = _read_selected(path, cuts, var)
    t = read_table(path)
    if "truth_m" not in t.column_names:
        return np.full(m.size, np.nan)
    tm = t.column("truth_m").to_numpy(zero_copy_only=False).astype(np.float64)
    mm = t.column(var).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = np.isfinite(mm)
    if "r_xy_max_cm" in cuts:
        keep &= t.column("r_xy_cm").to_numpy(zero_copy_only=False) < cuts["r_xy_max_cm"]
    if "delta_m_min_GeV" in cuts:
        keep &= t.column("delta_m").to_numpy(zero_copy_only=False) > cuts["delta_m_min_GeV"]
    return tm[keep]


def _signal_template(proj: dict[str, Any], det: Any, *, seed: int, cache_dir: Path,
                     cuts: dict[str, float], var: str, progress: bool):
    """Simulate + reconstruct ``darkphoton`` (A' -> e e) samples and build the
    :class:`~isrsim.workflows.limit.SignalTemplate` (efficiency, resolution, shape)."""
    from ..constants import M_E
    from ..physics import darkphoton as dp
    from ..processes.isr import PhotonCut
    from .limit import SignalTemplate

    cfg = proj.get("signal")
    if not isinstance(cfg, dict):
        msg = "analysis.background = 'template' needs a [project.signal] table (masses, epsilon, events)"
        raise ConfigError(msg)
    _check_keys(cfg, _SIGNAL_KEYS, "[project.signal]")
    masses = sorted(float(x) for x in cfg.get("masses", []))
    if len(masses) < 2 or masses[0] <= 2 * M_E:
        msg = f"project.signal.masses = {cfg.get('masses')!r}: give >= 2 masses > 2 m_e (GeV)"
        raise ConfigError(msg)
    eps = float(cfg.get("epsilon", 1e-3))
    n = cfg.get("events", 20000)
    if not isinstance(n, int) or isinstance(n, bool) or n < 100:
        msg = f"project.signal.events = {n!r} must be an integer >= 100"
        raise ConfigError(msg)
    photon_cut = cfg.get("photon_cut") or {"mode": "all"}
    intervals = PhotonCut.from_config(photon_cut).intervals
    eff, sig, res, infos = [], [], [], []
    for m in masses:
        bkg = {"process": "darkphoton", "weighted": True, "events": n,
               "params": {"mass": m, "epsilon": eps, "decay": "ee", "photon_cut": photon_cut}}
        # one random-stream label per mass: independent samples, so that the efficiencies and
        # resolutions interpolated between the masses do not share MC fluctuations
        p, info = background_candidates(bkg, det, selection=str(proj["selection"]), seed=seed,
                                        mc_luminosity_invnb=None, cache_dir=cache_dir,
                                        label=f"signal-darkphoton-{m:.9g}")
        mm, w, meta = _read_selected(p, cuts, var)
        sigma_tot = float(meta["cross_section_nb"])
        e = float(w.sum()) / sigma_tot
        d = mm - m
        if d.size < 50:
            msg = f"darkphoton at m = {m} GeV: only {d.size} selected events; raise project.signal.events"
            raise ConfigError(msg)
        q1, q3 = np.percentile(d, [25.0, 75.0])
        eff.append(e)
        sig.append(float((q3 - q1) / 1.3489795))
        res.append(d)
        infos.append({**info, "mass": m, "efficiency": e, "sigma_m_GeV": sig[-1]})
        if progress:
            print(f"isrsim project: darkphoton m = {m * 1e3:.1f} MeV: efficiency {e:.3f}, "
                  f"sigma_m {sig[-1] * 1e3:.2f} MeV ({'cached' if info['cached'] else 'generated'})",
                  file=sys.stderr, flush=True)
    sqrt_s = det.beam.sqrt_s
    eps_ref = 1e-3  # sigma is exactly proportional to eps^2 (physics.md 6.1)

    def xsec(m: float) -> float:
        br = float(dp.branching_ratios(m)["ee"])
        return sum(dp.sigma_aprime_gamma_nb(m, eps_ref, sqrt_s, cos_theta_range=(a, b))
                   for a, b in intervals) * br / eps_ref**2

    return SignalTemplate(np.array(masses), np.array(eff), np.array(sig), res, xsec, eps), infos


def _run_template(card, proj, ana, det, lumis, paths, infos, out: Path, *, seed, cache_dir,
                  l_mc, progress, t0) -> dict[str, Any]:
    from .limit import analyse_template, write_template_csv

    cuts, var = _check_cuts(ana)
    signal, sig_infos = _signal_template(proj, det, seed=seed, cache_dir=cache_dir, cuts=cuts,
                                         var=var, progress=progress)
    bkg_unc = dict(ana.get("bkg_unc", {}) or {})
    results = []
    for lumi in lumis:
        comps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for p in paths:
            m, w, meta = _read_selected(p, cuts, var)
            if meta.get("weighted"):
                scale = lumi
            else:
                scale = lumi / float(meta["luminosity_invnb"])
            comp = (m, w * scale, _read_truth(p, cuts, var))
            name = str(meta.get("process"))
            if name in comps:
                # two background tables of one process (e.g. split by conversion layer or by
                # mass range) add up, as in the polynomial method; analysis.bkg_unc is per
                # process, so they share one normalisation nuisance
                comp = tuple(np.concatenate([a, b]) for a, b in zip(comps[name], comp))
            comps[name] = comp
        res = analyse_template(
            comps, signal, luminosity_invnb=lumi, mass_range=proj["mass"],
            bin_width=float(ana.get("bin_width", 0.001)), step=ana.get("step"),
            window_nsigma=float(ana.get("window_nsigma", 5.0)), bkg_unc=bkg_unc,
            bin_unc=float(ana.get("bin_unc", 0.0)), signal_unc=float(ana.get("signal_unc", 0.05)),
            convention=str(ana.get("convention", "qtilde_asymptotic")),
            n_toys=int(proj.get("toys", 0)), toy_masses=ana.get("toy_masses", [0.017]), seed=seed)
        res.notes.append(f"selection {proj['selection']} + cuts {cuts}; mass variable {var}")
        tag = f"projection_{det.name}_{_lumi_label(lumi)}"
        comments = [f"detector {det.name} (sha256 {det.sha256[:12]}), selection {proj['selection']}, "
                    f"ISR MC luminosity {l_mc:.6g}/nb, card sha256 {card_hash(card)[:12]}"]
        csv = write_template_csv(res, out / f"{tag}.csv", comments=comments)
        results.append((lumi, res, csv))
    title = proj.get("title") or f"isrsim projection: {det.name} (MC-template background)"
    png = plot_template_limits([(lumi, r) for lumi, r, _ in results],
                               out / f"projection_{det.name}.png", title=title)
    return {
        "detector": det.name, "selection": proj["selection"], "method": "template",
        "output_dir": str(out), "csv": [str(r[2]) for r in results], "png": [str(png)],
        "combined_png": str(png), "mc_luminosity_invnb": l_mc, "backgrounds": infos,
        "signal_samples": sig_infos, "cuts": cuts, "mass_variable": var,
        "projections": [{"luminosity": _fmt_lumi(lumi), **r.summary()} for lumi, r, _ in results],
        "seconds": round(time.perf_counter() - t0, 1),
    }


#: The open X17 window in eps (physics.md 6.4) and the X17 mass [GeV].
X17_WINDOW = (6.8e-4, 1.4e-3)
X17_MASS = 0.017


def plot_template_limits(results, path: Path, *, title: str | None = None,
                         mark_x17: bool = True) -> Path:
    """Log-scale eps vs mass: median and +-1/2 sigma bands per luminosity, the median
    without MC statistical uncertainty (thin dotted), and the open X17 window at 17 MeV."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for k, (lumi, res) in enumerate(results):
        c = f"C{k}"
        mm = res.mass * 1e3
        ax.fill_between(mm, res.bands[0], res.bands[4], color=c, alpha=0.12, lw=0)
        ax.fill_between(mm, res.bands[1], res.bands[3], color=c, alpha=0.3, lw=0,
                        label=rf"{_fmt_lumi(lumi)}: expected $\pm1\sigma$, $\pm2\sigma$")
        ax.plot(mm, res.bands[2], "-", color=c, lw=1.5, label=f"{_fmt_lumi(lumi)}: expected median")
        ax.plot(mm, res.eps_no_mcstat, ":", color=c, lw=1.0,
                label=f"{_fmt_lumi(lumi)}: median, MC statistics neglected")
    if mark_x17:
        ax.vlines(X17_MASS * 1e3, *X17_WINDOW, color="red", lw=5, alpha=0.7,
                  label=r"open X17 window $6.8\times10^{-4}$-$1.4\times10^{-3}$")
    ax.set_yscale("log")
    ax.set_xlabel(r"$m_{A'}$ [MeV]")
    ax.set_ylabel(r"$\varepsilon$ upper limit (90% CL)")
    ax.set_title(title or "isrsim projection")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)
