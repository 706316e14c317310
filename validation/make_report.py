"""Regenerate the whole isrsim validation report with one command.

Run: python validation/make_report.py [--only AREA ...] [--skip AREA ...] [--no-run]

Runs every ``validation/<area>/make_*.py`` (each writes its PNGs and README.md next to
itself), then writes ``validation/README.md`` linking every area's summary and plots, with
the run time and exit status of each script (a script not run this time, e.g. with ``--only``,
keeps the row of its last run). Uses only the installed isrsim package (plus
numpy/scipy/matplotlib inside the scripts). Set ``ISRSIM_CACHE`` to a directory to keep the
BESIII Monte Carlo samples between runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Areas whose results other areas quote, run first (belle2's README quotes x17_summary.json;
#: in alphabetical order it read the summary of the previous run).
RUN_FIRST = ("x17",)


def _areas(root: Path) -> list[Path]:
    """The area directories below ``root`` (not hidden, not ``_private``), alphabetical."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _scripts(root: Path, only: list[str], skip: list[str]) -> list[Path]:
    out = []
    for area in sorted(_areas(root), key=lambda p: (p.name not in RUN_FIRST, p.name)):
        if (only and area.name not in only) or area.name in skip:
            continue
        out.extend(sorted(area.glob("make_*.py")))
    return out


_ROW = re.compile(r"^\| `([^`]+)` \| (-?\d+) \| (\d+) \|$")


def previous_status(index: Path) -> dict[str, tuple[int, float]]:
    """The ``script -> (exit status, seconds)`` rows of an existing index (empty if none)."""
    if not index.is_file():
        return {}
    rows = (_ROW.match(line) for line in index.read_text().splitlines())
    return {m[1]: (int(m[2]), float(m[3])) for m in rows if m}


def write_index(root: Path, status: dict[str, tuple[int, float]]) -> str:
    """``root/README.md``: the status table (scripts that still exist) and, per area with a
    README.md or PNGs, its title, summary link and plots. Written atomically; returns the text."""
    lines = ["# isrsim validation report", "",
             "Regenerate everything with `python validation/make_report.py` (each area's "
             "`make_*.py` writes its plots and README.md; this index is rewritten at the end; "
             "a script not run this time keeps the row of its last run).", ""]
    status = {k: v for k, v in status.items() if (root / k).is_file()}
    if status:
        lines += ["| script | exit status | seconds |", "|---|---|---|"]
        lines += [f"| `{k}` | {rc} | {sec:.0f} |" for k, (rc, sec) in status.items()]
        lines.append("")
    for area in _areas(root):
        readme = area / "README.md"
        pngs = sorted(area.glob("*.png"))
        if not readme.exists() and not pngs:
            continue
        title = area.name
        if readme.exists():
            first = readme.read_text().splitlines()[:1]
            if first and first[0].startswith("#"):
                title = first[0].lstrip("# ").strip()
        lines.append(f"## {area.name}: {title}")
        lines.append("")
        if readme.exists():
            lines.append(f"Summary: [{area.name}/README.md]({area.name}/README.md)")
            lines.append("")
        for p in pngs:
            lines.append(f"- [{p.name}]({area.name}/{p.name})")
        lines.append("")
    text = "\n".join(lines)
    tmp = root / "README.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, root / "README.md")
    return text


def main(argv: list[str] | None = None, root: Path = HERE) -> int:
    """Run the scripts, rewrite the index; exit status 1 if a script run this time failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="areas to run (default: all)")
    ap.add_argument("--skip", nargs="*", default=[], help="areas not to run")
    ap.add_argument("--no-run", action="store_true", help="only rewrite validation/README.md")
    args = ap.parse_args(argv)
    old = previous_status(root / "README.md")
    status: dict[str, tuple[int, float]] = {}
    if not args.no_run:
        for script in _scripts(root, args.only, args.skip):
            rel = script.relative_to(root)
            print(f"== {rel}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, str(script)], cwd=root.parent).returncode
            status[str(rel)] = (rc, time.perf_counter() - t0)
            print(f"   exit {rc} after {status[str(rel)][1]:.0f} s", flush=True)
    write_index(root, {**old, **status})
    print(f"wrote {root / 'README.md'}")
    return 1 if any(rc != 0 for rc, _ in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
