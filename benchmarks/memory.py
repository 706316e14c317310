"""Bounded memory, start-up and compile cost of isrsim.

    python benchmarks/memory.py [--sizes 1e6 1e8] [--json FILE] [--quick]

* Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh subprocess per size) of
  ``isrsim.runner.run`` generating isr_mumu (Belle II beams, 0.3-10 GeV) into one Parquet file,
  with the allocator setting of the command line (``isrsim._malloc``);
  the ratio of the largest to the smallest size (target: within 20 %, issue 9).
* First-run compile time: generating 1000 events in a subprocess with an empty numba cache
  directory (``NUMBA_CACHE_DIR``), then again with the cache filled.
* ``isrsim --help`` wall time (median of 5; target < 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import resource, sys, time
from pathlib import Path
from isrsim._malloc import keep_freed_memory
from isrsim.beam import Beam
from isrsim.runner import RunSpec, run
keep_freed_memory()  # as the command line does
n, out = int(float(sys.argv[1])), Path(sys.argv[2])
spec = RunSpec(process="isr_mumu", params={"mass_range": [0.3, 10.0]},
               beam=Beam(7.0, 4.0, 0.0415), output=out, seed=1, n_events=n, progress=False)
t = time.perf_counter()
res = run(spec)
dt = time.perf_counter() - t
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, res.n_events, dt, out.stat().st_size)
"""

COMPILE = r"""
import time
t = time.perf_counter()
import numpy as np
from isrsim.beam import Beam
from isrsim.processes import make_process
p = make_process("isr_mumu", Beam(7.0, 4.0, 0.0415), mass_range=[0.3, 10.0])
p.sample(np.random.default_rng(1), 1000)
print(time.perf_counter() - t)
"""


def peak_rss(n: float, tmp: Path) -> dict:
    out = tmp / f"mem_{int(n)}.parquet"
    r = subprocess.run([sys.executable, "-c", CHILD, str(n), str(out)], capture_output=True,
                       text=True, check=True)
    rss, n_ev, dt, size = r.stdout.split()[-4:]
    out.unlink(missing_ok=True)
    return {"events": int(n_ev), "peak_rss_MB": int(rss) / 1e6, "seconds": float(dt),
            "file_MB": int(size) / 1e6}


def compile_times() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = float(subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                                    text=True, check=True).stdout.split()[-1])
        warm = float(subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                                    text=True, check=True).stdout.split()[-1])
    return {"first_run_s": cold, "cached_s": warm}


def help_time() -> float:
    exe = Path(sys.executable).with_name("isrsim")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "isrsim.cli", "--help"]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="peak RSS vs events, compile time, --help time")
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e8],
                    help="event counts (default 1e6 1e8; the 1e8 run writes ~12 GB and takes minutes)")
    ap.add_argument("--quick", action="store_true", help="sizes 1e6 and 1e7")
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--dir", help="scratch directory for the output files (default: a temp dir)")
    args = ap.parse_args(argv)
    sizes = [1e6, 1e7] if args.quick else args.sizes
    res: dict = {"help_s": help_time()}
    print(f"isrsim --help: {res['help_s']:.3f} s (target < 0.5 s)")
    res["compile"] = compile_times()
    print(f"first run (cold numba cache): {res['compile']['first_run_s']:.1f} s; "
          f"cached: {res['compile']['cached_s']:.2f} s")
    with tempfile.TemporaryDirectory(dir=args.dir) as td:
        res["rss"] = [peak_rss(n, Path(td)) for n in sizes]
    for r in res["rss"]:
        print(f"{r['events']:>12,d} events: peak RSS {r['peak_rss_MB']:.0f} MB, {r['seconds']:.1f} s, "
              f"file {r['file_MB']:.0f} MB")
    ratio = res["rss"][-1]["peak_rss_MB"] / res["rss"][0]["peak_rss_MB"]
    res["rss_ratio"] = ratio
    print(f"peak RSS ratio {res['rss'][-1]['events']:.0e} / {res['rss'][0]['events']:.0e} events: "
          f"{ratio:.3f} (target <= 1.20)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
