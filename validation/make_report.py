"""Regenerate the whole isrsim validation report with one command.

Run: python validation/make_report.py [--only AREA ...] [--skip AREA ...] [--no-run]

Runs every ``validation/<area>/make_*.py`` (each writes its PNGs and README.md next to
itself), then writes ``validation/README.md`` linking every area's summary and plots, with
the run time and exit status of each script. Uses only the installed isrsim package (plus
numpy/scipy/matplotlib inside the scripts). Set ``ISRSIM_CACHE`` to a directory to keep the
BESIII Monte Carlo samples between runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Areas whose results other areas quote, run first (belle2's README quotes x17_summary.json;
#: in alphabetical order it read the summary of the previous run).
RUN_FIRST = ("x17",)


def _scripts(only: list[str], skip: list[str]) -> list[Path]:
    out = []
    areas = (p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for area in sorted(areas, key=lambda p: (p.name not in RUN_FIRST, p.name)):
        if (only and area.name not in only) or area.name in skip:
            continue
        out.extend(sorted(area.glob("make_*.py")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="areas to run (default: all)")
    ap.add_argument("--skip", nargs="*", default=[], help="areas not to run")
    ap.add_argument("--no-run", action="store_true", help="only rewrite validation/README.md")
    args = ap.parse_args(argv)
    status: dict[str, tuple[int, float]] = {}
    if not args.no_run:
        for script in _scripts(args.only, args.skip):
            rel = script.relative_to(HERE)
            print(f"== {rel}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
            status[str(rel)] = (rc, time.perf_counter() - t0)
            print(f"   exit {rc} after {status[str(rel)][1]:.0f} s", flush=True)
    lines = ["# isrsim validation report", "",
             "Regenerate everything with `python validation/make_report.py` (each area's "
             "`make_*.py` writes its plots and README.md; this index is rewritten at the end).", ""]
    if status:
        lines += ["| script | exit status | seconds |", "|---|---|---|"]
        lines += [f"| `{k}` | {rc} | {sec:.0f} |" for k, (rc, sec) in status.items()]
        lines.append("")
    for area in sorted(p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
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
    (HERE / "README.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'README.md'}")
    return 1 if any(rc != 0 for rc, _ in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
