"""Run cards (TOML) -> validated :class:`isrsim.runner.RunSpec`.

A run card::

    [run]
    process = "isr_mumu"        # isr_mumu | isr_ee | isr_pipi | isr_bhabha | darkphoton | diphoton
    events = 1000000            # or: luminosity = "2.93/fb" (N ~ Poisson(sigma L), unweighted)
    seed = 1
    output = "out.parquet"      # a path ending in .parquet -> one file; otherwise a dataset directory
    chunk_size = 100000         # multiple of the 10000-event block
    workers = 1
    weighted = false
    detector = "besiii"         # optional: simulate in the same pass; beams from the detector file
    compression = "lz4"         # lz4 (default: fastest), zstd (10 % smaller), snappy, gzip, none

    # [beam]                    # only WITHOUT run.detector (the detector file gives the beams):
    # sqrt_s = 3.773            # sqrt_s, or e_minus/e_plus (+ crossing_half_angle), or
    #                           # detector = "besiii": that file's beams, truth only (simulate later)
    # sqrt_s_spread = 0.0014    # optional [GeV], equal relative spreads; or each beam's own:
    #                           # e_minus_spread = 0.00513, e_plus_spread = 0.002375 [GeV]

    [process]                   # process parameters, e.g. for isr_*:
    mass_range = [1.5, 3.4]
    photon_cut = { mode = "untagged", theta_max = 0.1 }
    radiator = "kf"
    fsr = false                 # final-state radiation (one photon off the X system; isr_*, darkphoton)

    [conversions]               # optional (needs run.detector): photon conversions in its material
    mode = "natural"            # or "forced" (+ forced_layers = ["beam pipe: gold coating", ...])
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigError

if TYPE_CHECKING:
    from .beam import Beam

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CARD_SECTIONS", "RUN_KEYS", "build_spec", "bundled_card", "load_card", "merge"]

CARD_SECTIONS = {"run", "beam", "process", "conversions", "project", "analysis"}
RUN_KEYS = {"process", "events", "luminosity", "seed", "output", "chunk_size", "workers",
            "weighted", "detector", "compression", "progress", "resume"}
BEAM_KEYS = {"sqrt_s", "e_minus", "e_plus", "crossing_half_angle", "sqrt_s_spread",
             "e_minus_spread", "e_plus_spread", "sigma_xyz_cm", "detector"}
#: largest accepted run.chunk_size (events held in memory per chunk and worker)
MAX_CHUNK_SIZE = 100_000_000


def load_card(path: str | Path) -> dict[str, Any]:
    """Read a TOML run card; ConfigError on a missing or malformed file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        msg = f"card = {str(p)!r} cannot be read: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        card = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"card = {str(p)!r} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
    return card


def bundled_card(name: str) -> dict[str, Any]:
    """A run card shipped with isrsim (``src/isrsim/cards/<name>.toml``)."""
    from importlib.resources import files

    res = files("isrsim") / "cards" / f"{name}.toml"
    if not res.is_file():
        msg = f"bundled card {name!r} does not exist"
        raise ConfigError(msg)
    return tomllib.loads(res.read_text())


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins (tables are merged key by key)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        msg = f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(allowed)}"
        raise ConfigError(msg)


def _int(field: str, v: Any, lo: int, hi: int | None = None) -> int:
    ok = isinstance(v, int) and not isinstance(v, bool)
    if isinstance(v, float) and v.is_integer():
        v, ok = int(v), True
    if not ok or v < lo or (hi is not None and v > hi):
        rng = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        msg = f"{field} = {v!r} is invalid: allowed {rng}"
        raise ConfigError(msg)
    return int(v)


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        msg = f"{field} = {v!r} is invalid: allowed true or false"
        raise ConfigError(msg)
    return v


def _string(field: str, v: Any, allowed: str) -> str:
    if not isinstance(v, str) or not v.strip():
        msg = f"{field} = {v!r} is invalid: allowed {allowed}"
        raise ConfigError(msg)
    return v


def _chunk_size(v: Any) -> int:
    from .runner import BLOCK_EVENTS

    ok = isinstance(v, int) and not isinstance(v, bool)
    if isinstance(v, float) and v.is_integer():
        v, ok = int(v), True
    if not ok or not BLOCK_EVENTS <= v <= MAX_CHUNK_SIZE or v % BLOCK_EVENTS:
        msg = (f"chunk_size = {v!r} is invalid: allowed a multiple of the block size {BLOCK_EVENTS} "
               f"in [{BLOCK_EVENTS}, {MAX_CHUNK_SIZE}]")
        raise ConfigError(msg)
    return int(v)


def _check_process_params(process: str, params: dict[str, Any]) -> None:
    """Missing required process parameters -> ConfigError (before the constructor's TypeError)."""
    import inspect

    from .processes import get_process

    cls = get_process(process)
    sig = inspect.signature(cls.__init__)
    names = [n for n, p in sig.parameters.items() if n not in ("self", "beam")
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [n for n in names if sig.parameters[n].default is inspect.Parameter.empty
               and n not in params]
    if missing:
        msg = (f"process.{missing[0]} is missing: required by process {process!r} (parameters: "
               f"{', '.join(names)})")
        raise ConfigError(msg)
    cut = params.get("photon_cut")
    if isinstance(cut, dict):  # angles that the chosen mode would silently ignore
        mode = cut.get("mode", "all")
        used = {"all": (), "untagged": ("theta_max",), "tagged": ("theta_min", "theta_max")}.get(
            mode if isinstance(mode, str) else "")
        for key in ("theta_min", "theta_max"):
            if used is not None and key in cut and key not in used:
                msg = (f"photon_cut.{key} = {cut[key]!r} is not used with photon_cut.mode = {mode!r}: "
                       "allowed mode = 'untagged' (theta_max) or 'tagged' (theta_min, theta_max)")
                raise ConfigError(msg)


def _check_conversions(conversions: dict[str, Any], detector: Any) -> None:
    """Validate [conversions] against the detector's material layers (before any work)."""
    mode = conversions.get("mode", "natural")
    if mode not in ("natural", "forced"):
        msg = f"conversions.mode = {mode!r} is invalid: allowed natural, forced"
        raise ConfigError(msg)
    photons = conversions.get("photons", "all")
    if photons != "all":
        msg = f"conversions.photons = {photons!r} is invalid: allowed 'all'"
        raise ConfigError(msg)
    layers = conversions.get("forced_layers")
    if layers is not None:
        if mode != "forced":
            msg = "conversions.forced_layers needs conversions.mode = 'forced'"
            raise ConfigError(msg)
        if not isinstance(layers, list) or not layers:
            msg = (f"conversions.forced_layers = {layers!r} is invalid: allowed a non-empty list of "
                   f"layer names or indices of {list(detector.material.names)}")
            raise ConfigError(msg)
        from .detector.conversion import resolve_layers

        resolve_layers(detector.material, layers, field="conversions.forced_layers")


def _beam(card: dict[str, Any], detector: Any) -> Any:
    from .beam import Beam

    beam_cfg = card.get("beam", {}) or {}
    _check_keys(beam_cfg, BEAM_KEYS, "[beam]")
    if detector is not None:
        if beam_cfg and set(beam_cfg) - {"sigma_xyz_cm"}:
            msg = ("[beam] (--sqrt-s, --sqrt-s-spread) and run.detector (--detector) both given; "
                   "allowed: one of them (the detector file defines the beams)")
            raise ConfigError(msg)
        return detector.beam
    if "detector" in beam_cfg:
        # the beams of a detector file without simulating: truth that `isrsim simulate` with
        # that detector accepts (and gives the events of `generate --detector` for the seed)
        if set(beam_cfg) - {"detector"}:
            msg = (f"beam.detector is given with {sorted(set(beam_cfg) - {'detector'})}; allowed: "
                   "beam.detector alone (the detector file defines the beams)")
            raise ConfigError(msg)
        from .detector import load_detector

        try:
            return load_detector(_string("beam.detector", beam_cfg["detector"],
                                         "a bundled detector name or a .toml path")).beam
        except ConfigError as exc:
            msg = f"beam.detector (--beams-from): {exc}"
            raise ConfigError(msg) from None
    from .processes.base import check_number

    # validated here with the card's own field names (Beam's messages name the detector file's)
    kw: dict[str, Any] = {}
    if "crossing_half_angle" in beam_cfg:
        kw["crossing_half_angle_rad"] = check_number(
            "beam.crossing_half_angle", beam_cfg["crossing_half_angle"], lo=0.0, hi=0.5,
            allowed="0 <= crossing_half_angle <= 0.5 rad")
    if "sigma_xyz_cm" in beam_cfg:
        sig = beam_cfg["sigma_xyz_cm"]
        allowed = "three numbers 0 <= sigma <= 100 [cm] (x, y, z)"
        if not isinstance(sig, list) or len(sig) != 3:
            msg = f"beam.sigma_xyz_cm = {sig!r} is invalid: allowed {allowed}"
            raise ConfigError(msg)
        kw["sigma_xyz_cm"] = tuple(check_number(f"beam.sigma_xyz_cm[{i}]", v, lo=0.0, hi=100.0,
                                                allowed=allowed) for i, v in enumerate(sig))
    if "sqrt_s" in beam_cfg:
        if "e_minus" in beam_cfg or "e_plus" in beam_cfg:
            msg = "[beam]: give sqrt_s or e_minus/e_plus, not both"
            raise ConfigError(msg)
        s = check_number("sqrt_s", beam_cfg["sqrt_s"], lo=0.0, hi=1000.0, lo_open=True,
                         allowed="0 < sqrt_s <= 1000 GeV")
        return _with_spread(Beam.symmetric(s, **kw), beam_cfg)
    if "e_minus" in beam_cfg and "e_plus" in beam_cfg:
        em = check_number("beam.e_minus", beam_cfg["e_minus"], lo=0.0, hi=1000.0, lo_open=True)
        ep = check_number("beam.e_plus", beam_cfg["e_plus"], lo=0.0, hi=1000.0, lo_open=True)
        return _with_spread(Beam(em, ep, **kw), beam_cfg)
    msg = "no beams: give run.detector, or [beam] sqrt_s (or e_minus and e_plus)"
    raise ConfigError(msg)


def _with_spread(beam: Beam, beam_cfg: dict[str, Any]) -> Beam:
    """The beam with the card's energy spread, validated: ``[beam] sqrt_s_spread`` [GeV] (equal
    relative spreads of the two beams), or ``e_minus_spread`` and ``e_plus_spread`` [GeV] (each
    beam's own, as accelerator parameter lists give them)."""
    from .beam import MAX_SPREAD_REL, max_sqrt_s_spread_GeV
    from .processes.base import check_number

    per_beam = [k for k in ("e_minus_spread", "e_plus_spread") if k in beam_cfg]
    if per_beam:
        given = [k for k in ("e_minus_spread", "e_plus_spread", "sqrt_s_spread") if k in beam_cfg]
        if len(given) != 2 or "sqrt_s_spread" in given:
            msg = (f"[beam] {', '.join(given)} is invalid: allowed sqrt_s_spread, or both "
                   "e_minus_spread and e_plus_spread")
            raise ConfigError(msg)
        sig = [check_number(f"beam.{k}", beam_cfg[k], lo=0.0, hi=MAX_SPREAD_REL * e,
                            allowed=f"0 <= {k} <= {MAX_SPREAD_REL * e:.6g} GeV (at most "
                                    f"{MAX_SPREAD_REL:g} of the beam energy {e:.6g} GeV)")
               for k, e in zip(("e_minus_spread", "e_plus_spread"), (beam.e_minus_GeV, beam.e_plus_GeV))]
        return beam.with_energy_spreads(*sig)
    if "sqrt_s_spread" not in beam_cfg:
        return beam
    hi = max_sqrt_s_spread_GeV(beam.sqrt_s)
    v = check_number("beam.sqrt_s_spread", beam_cfg["sqrt_s_spread"], lo=0.0, hi=hi,
                     allowed=f"0 <= sqrt_s_spread <= {hi:.6g} GeV (a beam-energy spread of at "
                             f"most {MAX_SPREAD_REL:g} at sqrt(s) = {beam.sqrt_s:.6g} GeV)")
    return dataclasses.replace(beam, sqrt_s_spread_GeV=v)


def build_spec(card: dict[str, Any]) -> Any:
    """Validate a whole run card and build a RunSpec (nothing is generated here)."""
    from .runner import RunSpec
    from .units import parse_luminosity

    if not isinstance(card, dict):
        msg = "run card must be a TOML table"
        raise ConfigError(msg)
    _check_keys(card, CARD_SECTIONS, "run card")
    for section, table in card.items():
        if not isinstance(table, dict):
            msg = f"[{section}] = {table!r} is invalid: allowed a table"
            raise ConfigError(msg)
    run_cfg = card.get("run", {})
    _check_keys(run_cfg, RUN_KEYS, "[run]")
    process = run_cfg.get("process")
    if process is None:
        from .processes import PROCESS_NAMES

        msg = "run.process is missing: allowed " + ", ".join(PROCESS_NAMES)
        raise ConfigError(msg)
    from .processes import get_process

    get_process(str(process))  # unknown process -> ConfigError
    detector = None
    if run_cfg.get("detector") is not None:
        from .detector import load_detector

        detector = load_detector(_string("detector", run_cfg["detector"],
                                         "a bundled detector name or a .toml path"))
    beam = _beam(card, detector)
    events = run_cfg.get("events")
    lumi = run_cfg.get("luminosity")
    if (events is None) == (lumi is None):
        msg = "give exactly one of run.events (an integer >= 1) and run.luminosity (e.g. '2.93/fb')"
        raise ConfigError(msg)
    if lumi is not None and (isinstance(lumi, bool) or not isinstance(lumi, (str, int, float))):
        msg = f"luminosity = {lumi!r} is invalid: allowed a luminosity > 0 such as '2.93/fb'"
        raise ConfigError(msg)
    n_events = _int("events", events, 1, 10**13) if events is not None else None
    lumi_invnb = parse_luminosity(lumi, field="luminosity") if lumi is not None else None
    output = run_cfg.get("output")
    if output is None or output == "":
        msg = "run.output is missing: give an output path (e.g. out.parquet)"
        raise ConfigError(msg)
    _string("output", output, "a path (file.parquet, or a dataset directory)")
    params = dict(card.get("process", {}) or {})
    if process == "diphoton" and detector is not None:
        given = params.get("detector")
        if given is not None and (getattr(given, "sha256", None) or str(given)) not in (
                detector.sha256, detector.name, str(detector.path)):
            msg = (f"process.detector = {given!r} differs from run.detector = {detector.name!r}: the "
                   "photons would convert in one detector's material and be measured in another; "
                   "allowed: the same detector, or process.detector left out")
            raise ConfigError(msg)
        params.setdefault("detector", detector)
    conversions = card.get("conversions")
    if conversions is not None:
        if not isinstance(conversions, dict):
            msg = "[conversions] must be a table"
            raise ConfigError(msg)
        _check_keys(conversions, {"mode", "forced_layers", "photons"}, "[conversions]")
        if detector is None:
            msg = "[conversions] needs run.detector (the material layers come from the detector file)"
            raise ConfigError(msg)
        if process == "diphoton":
            msg = "[conversions] does not apply to diphoton: use its conversion parameter in [process]"
            raise ConfigError(msg)
        _check_conversions(conversions, detector)
    weighted = run_cfg.get("weighted", False)
    if not isinstance(weighted, bool):
        msg = f"weighted = {weighted!r} is invalid: allowed true or false"
        raise ConfigError(msg)
    if conversions and conversions.get("mode") == "forced":
        weighted = True  # forced conversions carry the conversion probability in the weight
    if lumi_invnb is not None and weighted:
        msg = "luminosity (Poisson pseudo-data) needs unweighted events: drop weighted = true"
        raise ConfigError(msg)
    seed = _int("seed", run_cfg.get("seed", 1), 0, 2**63 - 1)
    spec = RunSpec(
        process=str(process), params=params, beam=beam, output=Path(str(output)), seed=seed,
        n_events=n_events, luminosity_invnb=lumi_invnb, detector=detector,
        chunk_size=_chunk_size(run_cfg.get("chunk_size", 100_000)),
        workers=_int("workers", run_cfg.get("workers", 1), 1, 1024),
        weighted=weighted, compression=str(run_cfg.get("compression", "lz4")),
        conversions=conversions, card=_jsonable(card),
        progress=_bool("progress", run_cfg.get("progress", True)),
        resume=_bool("resume", run_cfg.get("resume", False)),
    )
    spec.validate()
    # build the process once here so that every parameter error surfaces before any work
    from .processes import make_process

    _check_process_params(spec.process, spec.params)
    try:
        make_process(spec.process, spec.beam, **spec.params)
    except (TypeError, KeyError, IndexError, AttributeError) as exc:
        # a parameter of an unexpected type that the process's own checks let through
        shown = {k: v for k, v in spec.params.items() if k != "detector"}
        msg = (f"[process] = {shown!r} is invalid for process {spec.process!r} "
               f"({type(exc).__name__}: {exc}); see the process documentation for the allowed values")
        raise ConfigError(msg) from None
    return spec


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
