"""``isrsim run``: the bundled default job, a complete BESIII-style projection.

:func:`main` runs the card ``cards/default.toml`` (same content as
``cards/project_besiii.toml``: ISR mu mu, e e and pi pi (mu misID) backgrounds at 2.93/fb,
BESIII detector, BESIII 2017 selection, expected epsilon limits 1.5-3.4 GeV with bands; see
:mod:`isrsim.workflows.project` for the method) and writes
``projection_besiii_2.93invfb.csv`` and ``.png`` into the output directory (default
``./isrsim_output``). The background candidates are cached in ``<output>/cache``, so a second
run only redoes the statistics. Cold (numba compilation included) it takes about 1-3 minutes on
2 cores.
"""

from __future__ import annotations

import sys
from typing import Any

from ..exceptions import ConfigError

__all__ = ["DEFAULT_OUTPUT", "main"]

#: Output directory when ``-o`` is not given.
DEFAULT_OUTPUT = "isrsim_output"


def main(args: Any) -> dict[str, Any]:
    """``isrsim run [--card FILE] [-o DIR] [--luminosity L] [--mass MIN MAX] [--toys N]
    [--seed S]``: run the default (or given) projection card; returns the summary and prints
    where the CSV and PNG are and the ranges of the limits (:func:`.project.result_lines`)."""
    from ..config import bundled_card, load_card
    from .project import card_from_args, result_lines, run_projection

    card = load_card(args.card) if getattr(args, "card", None) else bundled_card("default")
    card = card_from_args(args, card)  # ConfigError for a card without [project]
    if getattr(args, "detector", None) and args.detector != card["project"].get("detector"):
        msg = (f"--detector = {args.detector!r}: 'isrsim run' runs the card's detector "
               f"({card['project'].get('detector')!r}); use 'isrsim project --detector "
               f"{args.detector}' instead")
        raise ConfigError(msg)
    output = getattr(args, "output", None)
    output = DEFAULT_OUTPUT if output is None else output
    quiet = bool(getattr(args, "quiet", False))
    summary = run_projection(card, output=output, progress=not quiet)
    if not quiet:
        print(f"isrsim run: projection written to {summary['output_dir']}/", file=sys.stderr, flush=True)
        for c, p in zip(summary["csv"], summary["png"]):
            print(f"  CSV: {c}\n  PNG: {p}", file=sys.stderr, flush=True)
        lines = result_lines(summary)
        if lines:
            print("\n".join(lines), file=sys.stderr, flush=True)
    return summary
