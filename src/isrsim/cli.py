"""Command-line interface: ``isrsim <command> ...`` (see ``isrsim --help``).

Every command validates its input before doing any work; user errors print one line
``isrsim: error: ...`` and exit with status 2; internal errors print a short message (rerun with
``--debug`` for the traceback) and exit with status 1. Heavy imports happen inside commands so
that ``isrsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import json
import math
import re
import sys
from typing import Any

from . import __version__, _interrupt
from ._malloc import keep_freed_memory
from .exceptions import IsrsimError

__all__ = ["main"]


#: Option values that start with '-' but are values, not options: negative numbers in any
#: notation (-1e-3, -.5) and luminosities (-1/fb), so that ``--luminosity -1/fb`` reaches the
#: range check instead of argparse's "expected one argument".
_NEGATIVE_VALUE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\s*(/|inv)\s*[a-zA-Z]+)?$|^-(inf|nan)$",
                             re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own pattern only knows -1 and -1.5 (no option of isrsim looks like a number)
        if hasattr(self, "_negative_number_matcher"):
            self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"isrsim: error: {message}\n")


def _count(text: str) -> int:
    """argparse type of an event count: an integer, also written 4e6 or 1_000_000 (the range is
    checked where the value is used)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer():
        return int(value)
    msg = f"invalid value {text!r}: allowed a whole number, e.g. 1000000 or 1e6"
    raise argparse.ArgumentTypeError(msg)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run options (override the card)")
    g.add_argument("--card", help="TOML run card (flags override its values)")
    g.add_argument("-o", "--output", help="output .parquet file, or a dataset directory")
    g.add_argument("--events", type=_count, help="number of events (unweighted unless --weighted; "
                   "1000000 or 1e6)")
    g.add_argument("--luminosity", help="instead of --events: N ~ Poisson(sigma L), e.g. 2.93/fb, "
                   "1/ab (a bare number is in nb^-1)")
    g.add_argument("--seed", type=int, help="seed entropy, 0 <= seed < 2^63 (default 1)")
    g.add_argument("--chunk-size", type=int, help="events per chunk (multiple of 10000, at most 10^8)")
    g.add_argument("--workers", type=int, help="local worker processes, 1-1024 (default 1)")
    g.add_argument("--weighted", action="store_true", default=None, help="weighted events (nb/event)")
    g.add_argument("--detector", help="simulate with this detector (bundled name or TOML path)")
    g.add_argument("--compression", help="Parquet compression: lz4 (default, fastest), zstd (~10%% "
                   "smaller), snappy, gzip, none")
    g.add_argument("--resume", action="store_true", default=None, help="complete an interrupted dataset run")
    g.add_argument("--scheduler", help="Dask scheduler address: run chunks as Dask tasks")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate events (optionally simulate them)",
                       description="Generate e+e- -> X gamma events to Parquet.")
    p.add_argument("--process", help="isr_mumu, isr_ee, isr_pipi, isr_bhabha, darkphoton, diphoton")
    p.add_argument("--sqrt-s", type=float, help="CM energy [GeV] of symmetric head-on beams")
    p.add_argument("--beams-from", metavar="DETECTOR",
                   help="beams of this detector file without simulating (truth for a later "
                        "`isrsim simulate --detector DETECTOR`)")
    p.add_argument("--sqrt-s-spread", type=float, metavar="GEV",
                   help="Gaussian spread of sqrt(s) [GeV], drawn per event (with --sqrt-s; a "
                        "detector file gives its own)")
    p.add_argument("--mll", nargs=2, type=float, metavar=("MIN", "MAX"),
                   help="ISR processes: mass window of the X system [GeV]")
    p.add_argument("--photon-cut", metavar="SPEC",
                   help="ISR photon CM polar-angle cut: all | untagged:THETA_MAX | "
                        "tagged:THETA_MIN:THETA_MAX (rad)")
    p.add_argument("--radiator", choices=["kf", "lo"], help="ISR radiator (default kf)")
    p.add_argument("--fsr", action="store_true", default=None,
                   help="final-state radiation off the X system (photon in truth slot 3)")
    p.add_argument("--mass", type=float, help="darkphoton: A' mass [GeV], 2 m_l < mass < 10.5 and "
                   "below sqrt(s)")
    p.add_argument("--epsilon", type=float, help="darkphoton: kinetic mixing, 1e-12 <= epsilon < 1")
    p.add_argument("--decay", help="darkphoton: ee, mumu or ll (default ll: e e or mu mu by their "
                   "branching ratios)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any process parameter (VALUE in TOML syntax), repeatable")
    _add_run_options(p)


def _toml_value(text: str) -> Any:
    from .config import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:  # noqa: BLE001 - fall back to a plain string
        return text


def _photon_cut(spec: str) -> dict[str, Any]:
    from .exceptions import ConfigError

    parts = spec.split(":")
    try:
        if parts[0] == "all" and len(parts) == 1:
            return {"mode": "all"}
        if parts[0] == "untagged" and len(parts) == 2:
            return {"mode": "untagged", "theta_max": float(parts[1])}
        if parts[0] == "tagged" and len(parts) == 3:
            return {"mode": "tagged", "theta_min": float(parts[1]), "theta_max": float(parts[2])}
    except ValueError:
        pass
    msg = (f"--photon-cut = {spec!r} is invalid: allowed all, untagged:THETA_MAX or "
           "tagged:THETA_MIN:THETA_MAX (radians)")
    raise ConfigError(msg)


def _drop_overridden(card: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The card without the keys a flag replaces as a whole: ``--events`` replaces the card's
    ``run.luminosity`` and ``--luminosity`` its ``run.events``; ``--detector`` replaces the
    card's beam energies ([beam]) and ``--sqrt-s`` its ``run.detector`` and ``e_minus`` /
    ``e_plus``; ``--beams-from`` both the card's beams and ``run.detector``; ``--sqrt-s-spread``
    the per-beam spreads. (Flags that contradict each other,
    e.g. ``--sqrt-s`` with ``--detector``, stay errors.)"""
    run = card.get("run")
    beam = card.get("beam")
    run = dict(run) if isinstance(run, dict) else run
    beam = dict(beam) if isinstance(beam, dict) else beam
    if isinstance(run, dict):
        if getattr(args, "events", None) is not None:
            run.pop("luminosity", None)
        if getattr(args, "luminosity", None) is not None:
            run.pop("events", None)
        if ((getattr(args, "sqrt_s", None) is not None or getattr(args, "beams_from", None) is not None)
                and getattr(args, "detector", None) is None):
            run.pop("detector", None)
    if isinstance(beam, dict):
        if getattr(args, "detector", None) is not None or getattr(args, "beams_from", None) is not None:
            for key in ("sqrt_s", "e_minus", "e_plus", "crossing_half_angle", "sqrt_s_spread",
                        "e_minus_spread", "e_plus_spread", "detector"):
                beam.pop(key, None)
        if getattr(args, "sqrt_s", None) is not None:
            beam.pop("e_minus", None)
            beam.pop("e_plus", None)
        if getattr(args, "sqrt_s_spread", None) is not None:
            beam.pop("e_minus_spread", None)
            beam.pop("e_plus_spread", None)
    out = dict(card)
    if run is not None:
        out["run"] = run
    if beam is not None:
        out["beam"] = beam
    return out


def _card_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    from .config import load_card, merge

    card = load_card(args.card) if getattr(args, "card", None) else {}
    if base:
        card = merge(base, card)
    if isinstance(card, dict):
        card = _drop_overridden(card, args)
    run: dict[str, Any] = {}
    for key in ("process", "events", "luminosity", "seed", "chunk_size", "workers", "weighted",
                "detector", "compression", "resume", "output"):
        v = getattr(args, key, None)
        if v is not None:
            run[key] = v
    if getattr(args, "quiet", False):
        run["progress"] = False
    proc: dict[str, Any] = {}
    if getattr(args, "mll", None) is not None:
        proc["mass_range"] = list(args.mll)
    if getattr(args, "photon_cut", None):
        proc["photon_cut"] = _photon_cut(args.photon_cut)
    for key in ("radiator", "fsr", "mass", "epsilon", "decay"):
        v = getattr(args, key, None)
        if v is not None:
            proc[key] = v
    for item in getattr(args, "param", []) or []:
        if "=" not in item:
            from .exceptions import ConfigError

            msg = f"--param {item!r} is invalid: allowed KEY=VALUE"
            raise ConfigError(msg)
        k, v = item.split("=", 1)
        proc[k.strip()] = _toml_value(v.strip())
    over: dict[str, Any] = {"run": run}
    if proc:
        over["process"] = proc
    if getattr(args, "sqrt_s", None) is not None:
        over["beam"] = {"sqrt_s": args.sqrt_s}
    if getattr(args, "beams_from", None) is not None:
        over.setdefault("beam", {})["detector"] = args.beams_from
    if getattr(args, "sqrt_s_spread", None) is not None:
        over.setdefault("beam", {})["sqrt_s_spread"] = args.sqrt_s_spread
    merged = merge(card, over)
    if "photon_cut" in proc:  # the flag replaces the card's cut as a whole (no mixed angles)
        merged["process"]["photon_cut"] = proc["photon_cut"]
    return merged


def _print_summary(res: Any) -> None:
    m = res.metadata
    summary = {
        "output": str(res.output), "process": m.get("process"), "events": res.n_events,
        "cross_section_nb": m.get("cross_section_nb"), "cross_section_err_nb": m.get("cross_section_err_nb"),
        "unweighting_efficiency": m.get("unweighting_efficiency"), "seconds": round(res.seconds, 3),
        "events_per_second": round(res.n_events / res.seconds) if res.seconds else None,
    }
    print(json.dumps(summary, indent=1))


def cmd_generate(args: argparse.Namespace) -> int:
    from .config import build_spec
    from .runner import run

    spec = build_spec(_card_from_args(args))
    if args.scheduler:
        spec.scheduler = args.scheduler
    _print_summary(run(spec))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .detector import load_detector
    from .runner import simulate_file

    det = load_detector(args.detector)
    res = simulate_file(args.input, det, args.output, progress=not args.quiet,
                        allow_other_beams=args.allow_other_beams)
    print(json.dumps({"output": str(res.output), "events": res.n_events, "detector": det.name,
                      "seconds": round(res.seconds, 3)}, indent=1))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .io import read_metadata

    meta = read_metadata(args.file)
    if not args.full:
        meta = {k: v for k, v in meta.items() if k != "run_card"}
    print(json.dumps(meta, indent=1, sort_keys=True))
    return 0


def cmd_darkphoton(args: argparse.Namespace) -> int:
    from .physics.darkphoton import EPSILON_ALLOWED, EPSILON_MIN, M_MAX, M_MIN, describe
    from .processes.base import check_number

    m = check_number("--mass", args.mass, lo=M_MIN, hi=M_MAX, lo_open=True, hi_open=True,
                     allowed=f"{M_MIN:.9g} < mass < {M_MAX} GeV (2 m_e < m < 10.5 GeV)")
    eps = check_number("--epsilon", args.epsilon, lo=EPSILON_MIN, hi=1.0, hi_open=True,
                       allowed=EPSILON_ALLOWED)
    from .constants import SQRT_S_MAX

    sqrt_s = check_number("--sqrt-s", args.sqrt_s, lo=m, hi=SQRT_S_MAX, lo_open=True,
                          allowed=f"--mass = {m:g} < sqrt_s <= {SQRT_S_MAX:g} GeV")
    print(json.dumps(describe(m, eps, sqrt_s), indent=1))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .reco.files import reconstruct_files

    summary = reconstruct_files(args.inputs, selection=args.selection, output=args.output)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    from .workflows.limit import run_limit

    summary = run_limit(args)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_workflow(args: argparse.Namespace) -> int:
    import importlib

    mod = importlib.import_module(f"isrsim.workflows.{args.command}")
    summary = mod.main(args)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isrsim", description="Fast ISR / dark-photon toy MC and parameterised "
                "BESIII / Belle II detector simulation.")
    p.add_argument("--version", action="version", version=f"isrsim {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_generate(sub)

    s = sub.add_parser("simulate", help="detector simulation of a generated file")
    s.add_argument("input", help="generated (truth-only) .parquet file or dataset directory")
    s.add_argument("--detector", required=True, help="bundled name (besiii, belle2) or TOML path")
    s.add_argument("-o", "--output", required=True, help="output .parquet file (truth + reco)")
    s.add_argument("--allow-other-beams", action="store_true",
                   help="simulate a file generated with other beams (energies, crossing angle, "
                        "energy spread) than the detector's; refused otherwise (recorded in the "
                        "output metadata)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="print the run metadata of a file or dataset")
    i.add_argument("file", help=".parquet file or dataset directory")
    i.add_argument("--full", action="store_true", help="include the run card")

    d = sub.add_parser("darkphoton", help="A' widths, branching ratios, c tau and cross section",
                       description="Prints a JSON summary: R (the hadronic R ratio at sqrt(s) = m), "
                       "widths [GeV], branching ratios, n_f = Gamma_tot/Gamma_ee, c tau [cm], the "
                       "CM beta gamma and decay length, and sigma(e+e- -> gamma A') [nb] "
                       "(isrsim.physics.darkphoton.describe).")
    d.add_argument("--mass", type=float, required=True, help="A' mass [GeV], 2 m_e < mass < 10.5")
    d.add_argument("--epsilon", type=float, required=True, help="kinetic-mixing coupling, "
                   "1e-12 <= epsilon < 1")
    d.add_argument("--sqrt-s", type=float, default=10.58, help="CM energy [GeV] (default 10.58)")

    r = sub.add_parser("reconstruct", help="selection and fits -> flat candidate table")
    r.add_argument("inputs", nargs="+", help="simulated .parquet files (one detector file)")
    r.add_argument("--selection", required=True, choices=["besiii2017", "belle2_lowmass"],
                   help="besiii2017: 2 tracks, PID, 1C fit; belle2_lowmass: 2 electrons + photon, "
                        "vertex and energy-constrained fits")
    r.add_argument("-o", "--output", required=True, help="candidate table (.parquet)")

    lim = sub.add_parser("limit", help="background fits and 90%% CL limits on epsilon(m)")
    lim.add_argument("inputs", nargs="+", help="candidate tables")
    lim.add_argument("--luminosity", help="integrated luminosity to analyse at, e.g. 2.93/fb, 1/ab (a "
                     "bare number is in nb^-1): MC candidates are scaled to it (without it unweighted "
                     "candidates count as observed events; weighted MC needs it)")
    lim.add_argument("--mass", nargs=2, type=float, metavar=("MIN", "MAX"),
                     help="spectrum and scan range [GeV] (default: the candidates' 0.1-99.9 %% "
                          "range, kept 5 sigma_m inside the generated mass window); keep it inside "
                          "that window")
    lim.add_argument("--step", type=float, help="mass step [GeV] (default: the 0.010 GeV bin width)")
    lim.add_argument("--order", type=int, help="background polynomial order 0-12 (default: per channel "
                     "the smallest order 4-8 whose fit has p >= 0.05, else the highest that converges)")
    lim.add_argument("--convention", help="qtilde_asymptotic (default) | rolke_chi2 | cls_asymptotic | "
                     "qtilde_toys | cls_toys (observed limits from pseudo-experiments, for low counts "
                     "where the asymptotic formulae under-cover; 10-30 s per mass; the bands stay "
                     "asymptotic)")
    lim.add_argument("--limit-toys", type=int, help="pseudo-experiments per tested eps^2 of the "
                     "qtilde_toys / cls_toys observed limits (default 1000, at least 100)")
    lim.add_argument("--toys", type=int, help="background-only pseudo-experiments for the bands "
                     "(default 50; 0: none)")
    lim.add_argument("--seed", type=int, default=1, help="random seed of the toys (default 1)")
    lim.add_argument("-o", "--output", required=True, help="CSV of limits")
    lim.add_argument("--plot", help="PNG of epsilon vs mass")
    lim.add_argument("--overlay", action="append", default=[], help="CSV (mass, epsilon) to draw too")

    for name, text in (("project", "sensitivity projection: expected epsilon limits with bands"),
                       ("inject", "signal injection into pseudo-data: bias, pulls, coverage"),
                       ("sideband", "X17 2D sideband design (r_xy vs Delta M) at Belle II"),
                       ("run", "run the bundled default job (a BESIII-style projection)")):
        w = sub.add_parser(name, help=text, description=text + "; flags override the card")
        helps = _WORKFLOW_HELP[name]
        for flag, kw in (("--card", {}), ("--output", {}), ("--detector", {}), ("--luminosity", {}),
                         ("--mass", {"nargs": "+", "type": float}),
                         ("--epsilon", {"nargs": "+", "type": float}), ("--events", {"type": _count}),
                         ("--toys", {"type": int}), ("--seed", {"type": int}),
                         ("--workers", {"type": int}), ("--quiet", {"action": "store_true"})):
            # options the command does not use stay accepted (a clear error names them,
            # _check_common_args) but are hidden from its help
            flags = ("-o", flag) if flag == "--output" else (flag,)
            w.add_argument(*flags, help=helps.get(flag[2:], argparse.SUPPRESS), **kw)
    return p


_LUMI = "integrated luminosity, e.g. 2.93/fb, 1/ab (a bare number is in nb^-1)"
_QUIET = "no progress lines"
#: Help of the workflow commands' options; an option missing here is not used by the command.
_WORKFLOW_HELP: dict[str, dict[str, str]] = {
    "project": {
        "card": "TOML projection card (default: the bundled project_DETECTOR.toml)",
        "output": "output directory (default: isrsim_project_DETECTOR)",
        "detector": "besiii or belle2: the bundled projection card of that detector",
        "luminosity": _LUMI + "; a comma list gives one projection each, e.g. 314/fb,1/ab",
        "mass": "MIN MAX: A' mass scan range [GeV]",
        "events": ("MC events of each weighted background sample (cards with weighted = true "
                   "backgrounds, e.g. Belle II; the BESIII cards size theirs by mc_luminosity_max)"),
        "toys": ("background-only pseudo-experiments for the expected bands (0: none for a "
                 "polynomial background; template cards always give asymptotic bands)"),
        "seed": "random seed",
        "quiet": _QUIET,
    },
    "inject": {
        "card": "TOML card with [run] and [analysis] tables (default: the bundled inject_besiii.toml)",
        "output": "output directory (default: inject_DETECTOR)",
        "detector": "bundled detector name or detector file (default besiii)",
        "luminosity": _LUMI,
        "mass": "A' masses to inject at [GeV]",
        "epsilon": "injected couplings (0: background only, for coverage and bias)",
        "events": "background MC events per sample",
        "toys": "pseudo-experiments per (mass, epsilon)",
        "seed": "random seed",
        "quiet": _QUIET,
    },
    "sideband": {
        "card": "TOML card with [run] and [analysis] tables (default: the bundled sideband_belle2_x17.toml)",
        "output": "output directory (default: sideband_DETECTOR)",
        "detector": "bundled detector name or detector file (default belle2)",
        "luminosity": _LUMI + "; a comma list is allowed (regions optimised at the first)",
        "mass": "the one A' mass [GeV] (default 0.017)",
        "epsilon": "couplings of the signal samples (regions optimised at the card's optimise_epsilon)",
        "events": "background MC events per sample",
        "seed": "random seed",
        "quiet": _QUIET,
    },
    "run": {
        "card": "TOML projection card (default: the bundled default.toml, BESIII 2.93/fb, 1.5-3.4 GeV)",
        "output": "output directory (default: isrsim_output)",
        "detector": "must match the card's detector (else use `isrsim project --detector`)",
        "luminosity": _LUMI + "; a comma list gives one projection each",
        "mass": "MIN MAX: A' mass scan range [GeV]",
        "events": ("MC events of each weighted background sample (only for cards with weighted "
                   "= true backgrounds; the default card sizes its samples by mc_luminosity_max)"),
        "toys": "background-only pseudo-experiments for the expected bands (0: none)",
        "seed": "random seed",
        "quiet": _QUIET,
    },
}


#: Options a workflow command accepts on the command line but does not use.
_UNUSED_OPTIONS = {"project": ("epsilon", "workers"), "run": ("epsilon", "workers"),
                   "inject": ("workers",), "sideband": ("toys", "workers")}


def _check_common_args(args: argparse.Namespace) -> None:
    """Ranges of the options several commands share (seed, workers, toys, events), and options a
    command would silently ignore."""
    from .exceptions import ConfigError

    if args.command not in ("limit", "project", "inject", "sideband", "run"):
        return  # generate validates its own run options (isrsim.config)
    for name, lo, hi in (("seed", 0, 2**63 - 1), ("workers", 1, 1024), ("toys", 0, 10**7),
                         ("events", 1, 10**13)):
        v = getattr(args, name, None)
        if v is not None and not lo <= v <= hi:
            msg = f"--{name} = {v} is invalid: allowed an integer {lo} <= {name} <= {hi}"
            raise ConfigError(msg)
    for name in _UNUSED_OPTIONS.get(args.command, ()):
        if getattr(args, name, None) is not None:
            msg = (f"--{name} is not used by `isrsim {args.command}`; allowed: leave it out "
                   "(see `isrsim " + args.command + " --help` and the card)")
            raise ConfigError(msg)


_COMMANDS = {"generate": cmd_generate, "simulate": cmd_simulate, "info": cmd_info,
             "darkphoton": cmd_darkphoton, "reconstruct": cmd_reconstruct, "limit": cmd_limit,
             "project": cmd_workflow, "inject": cmd_workflow, "sideband": cmd_workflow,
             "run": cmd_workflow}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (130 after an interrupt, however late it comes)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # a second Ctrl-C while the first one's message is printed (the run's handlers are
        # already restored then, so it raises KeyboardInterrupt; seen once in a fresh-clone CI
        # run under load: exit by SIGINT, -2, after "interrupted; no partial output was left"),
        # or one before any output
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not faulthandler.is_enabled():  # a crash in native code prints where it happened
        faulthandler.enable()
    keep_freed_memory()  # blocks reuse the heap instead of faulting in new pages (-7 % CPU)
    try:
        _check_common_args(args)
        with _interrupt.handling(sigterm=True):  # SIGINT/SIGTERM -> clean unwinding (atomic output)
            status = _COMMANDS[args.command](args)
        if _interrupt.requested():  # swallowed by a finalizer after the last check: output complete
            print("isrsim: interrupted after the output was complete", file=sys.stderr)
            return 130
        return status
    except IsrsimError as exc:
        msg = str(exc).replace("\n", " ")
        print(f"isrsim: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `isrsim info FILE | head`: the reader went away
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return _interrupted()
    except UnicodeDecodeError as exc:  # a binary / UTF-16 file where a TOML or CSV text is read
        print(f"isrsim: error: an input text file (card, detector file or CSV) is not UTF-8 text "
              f"({exc.reason} at byte {exc.start}); allowed: UTF-8 TOML / CSV", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno in _ENVIRONMENT_ERRNOS:  # the machine, not isrsim: say what and where
            print(f"isrsim: error: {exc.strerror}: {exc.filename or '(output)'}; no partial output was "
                  "left", file=sys.stderr)
            return 1
        return _internal(args, exc)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        return _internal(args, exc)


#: errno values reported as a plain error, not an internal one: full disk / quota, read-only
#: file system, too many open files, out of memory
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENOMEM}


def _interrupted() -> int:
    print("isrsim: interrupted; no partial output was left (datasets: rerun with --resume)",
          file=sys.stderr)
    return 130


def _internal(args: argparse.Namespace, exc: Exception) -> int:
    if _interrupt.requested():  # an interrupt that surfaced as another exception (e.g. a
        return _interrupted()   # SystemError from a compiled callback inside scipy's brentq)
    if args.debug:
        raise exc
    print(f"isrsim: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
          "traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
