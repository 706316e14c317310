"""isrsim throughput benchmark: events/s per stage and process, against the machine's limits.

    python benchmarks/run.py [--json FILE] [--events N] [--quick] [--besiii-reco-only]

Stages (Belle II beams, 7 on 4 GeV with crossing angle; detector ``belle2``):

* ``generate``     ``process.sample`` in memory (unweighted);
* ``simulate``     primary vertex + ``detector.simulate.simulate`` (full detector model);
  both in blocks of ``runner.BLOCK_EVENTS`` = 10^4 events, as the runner calls them (one
  call for 10^6 events costs ~10 % more per event: its output arrays are fresh pages);
* ``reconstruct``  ``reco.selection.reconstruct_chunk`` (``belle2_lowmass``), per input event;
  the same for BESIII (``besiii_reconstruct``): ``besiii2017`` (1C fit with a missing photon)
  on isr_mumu and isr_ee events simulated with the BESIII detector and beams, events/s and 1C
  fits/s (``--besiii-reco-only`` runs this measurement alone);
* ``write``        ``io.chunk_to_table`` + ``io.EventWriter`` (isrsim's Parquet settings);
* ``gen+sim``: generate, primary vertex and simulate per block in the runner's order, each
  timed (``in_sequence``; the stages share the cache there, which costs each ~5-15 % against
  the stage timed alone, whose input blocks are no longer in the cache either);
  ``gen+write`` and ``gen+sim+write``: the sums of the stage times (gen+sim from the sequence);
  for the processes with electron tracks (isr_ee, darkphoton) the sequence is repeated with
  every material layer moved outside the momentum-measurement radius (``no_brems``: the same
  simulation without the electrons' bremsstrahlung walk), which splits the simulation time
  into the walk (``brems_ns_per_event``) and everything else;
* ``all_cores``    the same generation in one thread per core (the kernels release the GIL) and
  the whole ``isrsim.runner.run`` (generate + simulate + write a dataset of 2x ``--events``)
  with one worker process per core, wall clock, marginal (minus a run of 4 blocks per worker,
  so that process start-up and the numba cache load cancel).

One-core rates use the CPU time of the calling thread (``time.thread_time``), best of
``--repeat``, so that other load on a shared machine does not count against isrsim; all-core
rates are wall clock. Every timed call follows an untimed warm-up call (JIT compilation).

The process uses the allocator setting of isrsim's command line and worker processes
(``isrsim._malloc.keep_freed_memory``: glibc keeps freed memory in the heap), for isrsim and
the NumPy baseline alike.

Limits measured in the same run: random numbers/s of ``Generator(PCG64).random()`` inside a
numba loop, memory copy bandwidth, pyarrow's raw Parquet write speed (no compression,
dictionary or statistics) for the same leaf columns as flat arrays.

NumPy baseline (``benchmarks/numpy_baseline.py``, same physics, plain vectorised NumPy):
isr_mumu generation alone, and generate + primary vertex + detector simulation (belle2) +
Arrow conversion (NumPy masks, ``numpy_chunk_to_table``) + pyarrow's Parquet writer
(``EventWriter(lean=False)``) in chunks of ``--block`` events, measured against the
same isrsim pipeline (isrsim's own Parquet writer) in the same run (thread CPU time, best of
``--repeat``, warm-up first;
JSON ``{"isr_mumu": {"gen_sim_write_vs_numpy": ratio}}``). Before it, the baseline's
equivalence with isrsim is printed and asserted (exact helix and covariances, acceptance
fractions, pulls, widths; :func:`numpy_baseline.check_equivalence`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROCESSES = {
    "isr_mumu": {"mass_range": [0.3, 10.0]},
    "isr_ee": {"mass_range": [0.3, 10.0]},
    "isr_pipi": {"mass_range": [0.3, 10.0]},
    "diphoton": {},
    "darkphoton": {"mass": 0.5, "epsilon": 1e-3},
}
#: Processes whose final state has electron tracks: their in-sequence measurement also times the
#: simulation without bremsstrahlung (:func:`without_bremsstrahlung`).
ELECTRONS = ("isr_ee", "darkphoton")


def best_rate(fn, n: int, repeat: int) -> tuple[float, object]:
    """Best events/s over ``repeat`` calls of ``fn()`` (thread CPU time); returns (rate, result)."""
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.thread_time()
        out = fn()
        best = min(best, time.thread_time() - t)
    return n / max(best, 1e-9), out


def best_rates_interleaved(fns: dict, n: int, repeat: int) -> dict[str, float]:
    """Best events/s of each ``fns[name]()`` over ``repeat`` rounds that call them in turn, so
    that a ratio of two of them sees the same machine load (thread CPU time)."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - t)
    return {name: n / max(b, 1e-9) for name, b in best.items()}


# ---------------------------------------------------------------------------------------
# machine limits
# ---------------------------------------------------------------------------------------
def rng_limit(n: int) -> float:
    """Uniform doubles/s of a Generator(PCG64) passed into a numba loop (one core)."""
    import numba

    @numba.njit(nogil=True)
    def draw(rng, k):
        acc = 0.0
        for _ in range(k):
            acc += rng.random()
        return acc

    rng = np.random.default_rng(1)
    draw(rng, 10)
    return best_rate(lambda: draw(rng, n), n, 3)[0]


def memory_bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Bytes/s of np.copyto between two large float64 arrays (one core; read + write counted
    once: the number of bytes copied per second)."""
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    return best_rate(lambda: np.copyto(b, a), nbytes, 5)[0]


def raw_parquet_rate(table, path: Path) -> float:
    """MB/s (Arrow bytes) of pyarrow writing the table's leaf columns as flat arrays with no
    compression, dictionary or statistics: the write-speed limit for these columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from isrsim.io import _leaves

    leaves: dict[str, list[np.ndarray]] = {}
    for name, col in zip(table.schema.names, table.columns):
        _leaves(col.combine_chunks(), name, leaves)
    flat = pa.table({k: pa.array(np.concatenate(v)) for k, v in leaves.items()
                     if not k.endswith("#len") and np.concatenate(v).dtype != object
                     and len(np.concatenate(v)) == table.num_rows})
    # list leaves have n_objects rows: write them as their own table of the same bytes
    lists = {k: np.concatenate(v) for k, v in leaves.items() if not k.endswith("#len")
             and np.concatenate(v).dtype != object and len(np.concatenate(v)) != table.num_rows}
    by_len: dict[int, dict[str, np.ndarray]] = {}
    for k, v in lists.items():
        by_len.setdefault(len(v), {})[k] = v
    tables = [flat] + [pa.table({k: pa.array(v) for k, v in d.items()}) for d in by_len.values()]
    nbytes = sum(t.nbytes for t in tables)

    def write():
        for i, t in enumerate(tables):
            pq.write_table(t, path.with_suffix(f".{i}.parquet"), compression="none",
                           use_dictionary=False, write_statistics=False,
                           row_group_size=max(t.num_rows, 1))

    write()
    return best_rate(write, nbytes, 3)[0] / 1e6


# ---------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------
def bench_process(name: str, params: dict, det, n: int, repeat: int, tmp: Path) -> dict:
    from isrsim.detector.simulate import simulate
    from isrsim.io import EventWriter, chunk_to_table
    from isrsim.processes import make_process
    from isrsim.reco.selection import reconstruct_chunk
    from isrsim.events import concatenate_reco, concatenate_truth
    from isrsim.runner import BLOCK_EVENTS, apply_primary_vertex

    proc = make_process(name, det.beam, **params)
    rng = np.random.default_rng(12345)
    proc.sample(rng, 1000, weighted=False)                       # warm-up (JIT / cache load)
    r: dict[str, float] = {}
    # Blocks of the runner's size, as in production, each dropped after use as the runner drops
    # it after conversion (keeping 10^6 events alive would make every block fresh memory)
    sizes = [min(BLOCK_EVENTS, n - s) for s in range(0, n, BLOCK_EVENTS)]

    def gen(keep=False):
        kept = []
        for nb in sizes:
            t = proc.sample(rng, nb, weighted=False)[0]
            if keep:
                kept.append(t)
        return kept

    def sim(keep=False):
        # the runner's simulate stage: primary vertex + detector simulation; each round first
        # restores the generator-level vertices (np.copyto, ~2-5 ns/event of scaffolding)
        kept = []
        for b, t in zip(blocks, work):
            np.copyto(t.vtx, b.vtx)
            apply_primary_vertex(t, det.beam, rng)
            reco = simulate(t, det, rng)
            if keep:
                kept.append((t, reco))
        return kept

    blocks = gen(keep=True)
    work = [b.slice(0, b.n) for b in blocks]
    for b, t in zip(blocks, work):
        t.vtx = b.vtx.copy()
    simulate(blocks[0].slice(0, 1000), det, rng)                  # warm-up
    # generation and simulation timed in alternation (the VM's load drifts by 10-40 %):
    # their ratio is issue 4's criterion, simulation time per event over generation's
    r.update(best_rates_interleaved({"generate": gen, "simulate": sim}, n, repeat))
    r["in_sequence"] = in_sequence_all(name, proc, det, rng, sizes, repeat)
    sim_blocks = sim(keep=True)
    truth = concatenate_truth(blocks)
    truth_v = concatenate_truth([t for t, _ in sim_blocks])
    reco = concatenate_reco([c for _, c in sim_blocks])
    selection = "belle2_lowmass"
    try:
        reconstruct_chunk(reco, truth_v, selection=selection, bz=det.bz_T, beam=det.beam)
        r["reconstruct"], _ = best_rate(lambda: reconstruct_chunk(
            reco, truth_v, selection=selection, bz=det.bz_T, beam=det.beam), n, max(1, repeat - 1))
    except Exception as exc:  # noqa: BLE001 - a selection may not apply to every process
        r["reconstruct"] = float("nan")
        print(f"  {name}: reconstruct skipped ({type(exc).__name__}: {exc})")
    table = chunk_to_table(truth_v, 0, name, reco)
    out = tmp / f"{name}.parquet"

    def write():
        tab = chunk_to_table(truth_v, 0, name, reco)
        w = EventWriter(out)
        w.write(tab)
        w.close({"bench": True})

    write()
    r["write"], _ = best_rate(write, n, repeat)
    r["write_MB_s"] = r["write"] * table.nbytes / n / 1e6
    r["bytes_per_event"] = table.nbytes / n
    r["raw_parquet_MB_s"] = raw_parquet_rate(table, tmp / f"{name}_raw.parquet")
    r["write_fraction_of_raw"] = r["write_MB_s"] / r["raw_parquet_MB_s"]
    # the same nested table written by pyarrow with its default settings (snappy, dictionary
    # on every column, statistics): what a plain `pq.write_table(table, path)` achieves
    import pyarrow.parquet as pq

    pq.write_table(table, tmp / "default.parquet")
    rate_def, _ = best_rate(lambda: pq.write_table(table, tmp / "default.parquet"), n, repeat)
    r["pyarrow_default_MB_s"] = rate_def * table.nbytes / n / 1e6
    r["write_fraction_of_pyarrow_default"] = r["write_MB_s"] / r["pyarrow_default_MB_s"]
    # truth-only write (what `isrsim generate` without --detector writes)
    tab_t = chunk_to_table(truth, 0, name)

    def write_truth():
        w = EventWriter(out)
        w.write(chunk_to_table(truth, 0, name))
        w.close({"bench": True})

    write_truth()
    r["write_truth_only"], _ = best_rate(write_truth, n, repeat)
    r["write_truth_only_MB_s"] = r["write_truth_only"] * tab_t.nbytes / n / 1e6

    def comb(*stages):
        return 1.0 / sum(1.0 / r[s] for s in stages)

    q = r["in_sequence"]
    r["gen+sim"] = 1e9 / (q["generate_ns_per_event"] + q["vertex_ns_per_event"]
                          + q["simulate_ns_per_event"])
    r["gen+write"] = comb("generate", "write_truth_only")
    r["gen+sim+write"] = comb("gen+sim", "write")
    return r


def without_bremsstrahlung(det):
    """The detector with every material layer moved outward by the momentum-measurement radius:
    identical tracking, calorimeter and PID, but no material in front of the momentum
    measurement, so electrons are not walked through it at all (no bremsstrahlung, and none of
    the walk's set-up or layer scan). Only for the cost decomposition of :func:`in_sequence`."""
    import dataclasses

    mat = det.material
    moved = dataclasses.replace(mat, r_cm=mat.r_cm + det.tracker.momentum_measurement_radius_cm)
    return dataclasses.replace(det, material=moved)


def in_sequence(proc, det, rng, sizes: list[int], repeat: int) -> dict:
    """Issue 4's criterion as the runner meets it: per block, generate, draw the primary vertex,
    simulate, each stage timed (thread CPU time, best of ``repeat`` passes per stage). The
    stages share the cache and the allocator here, which makes each ~5-15 % slower than timed
    alone; the ratio compares them under the same conditions."""
    from isrsim.detector.simulate import simulate
    from isrsim.runner import apply_primary_vertex

    best = dict.fromkeys(("generate", "vertex", "simulate"), math.inf)
    for _ in range(repeat):
        acc = dict.fromkeys(best, 0.0)
        for nb in sizes:
            t0 = time.thread_time()
            t = proc.sample(rng, nb, weighted=False)[0]
            t1 = time.thread_time()
            apply_primary_vertex(t, det.beam, rng)
            t2 = time.thread_time()
            simulate(t, det, rng)
            t3 = time.thread_time()
            acc["generate"] += t1 - t0
            acc["vertex"] += t2 - t1
            acc["simulate"] += t3 - t2
        best = {k: min(best[k], acc[k]) for k in best}
    n = sum(sizes)
    out = {f"{k}_ns_per_event": 1e9 * v / n for k, v in best.items()}
    out["simulate_over_generate"] = (best["vertex"] + best["simulate"]) / best["generate"]
    return out


def in_sequence_all(name: str, proc, det, rng, sizes: list[int], repeat: int) -> dict:
    """:func:`in_sequence`; for a process with electrons (:data:`ELECTRONS`) also the same
    sequence with :func:`without_bremsstrahlung` under ``"no_brems"``, and
    ``brems_ns_per_event``, the difference of the two simulation times: what the electrons'
    walk through the material costs per event."""
    q = in_sequence(proc, det, rng, sizes, repeat)
    if name in ELECTRONS:
        nb = in_sequence(proc, without_bremsstrahlung(det), rng, sizes, repeat)
        q["no_brems"] = nb
        q["brems_ns_per_event"] = q["simulate_ns_per_event"] - nb["simulate_ns_per_event"]
    return q


def besiii_in_sequence(procs: list[str], n: int, repeat: int) -> dict:
    """:func:`in_sequence` with the BESIII detector and beams (3.773 GeV, 1 T): issue 4's ratio
    for the second bundled detector (mass ranges clipped to below sqrt(s))."""
    from isrsim.detector import load_detector
    from isrsim.processes import make_process
    from isrsim.runner import BLOCK_EVENTS

    det = load_detector("besiii")
    out = {}
    for name in procs:
        params = dict(PROCESSES[name])
        if "mass_range" in params:
            params["mass_range"] = [params["mass_range"][0],
                                    min(params["mass_range"][1], 0.98 * det.beam.sqrt_s)]
        proc = make_process(name, det.beam, **params)
        rng = np.random.default_rng(54321)
        proc.sample(rng, 1000, weighted=False)  # warm-up
        sizes = [min(BLOCK_EVENTS, n - s) for s in range(0, n, BLOCK_EVENTS)]
        in_sequence_all(name, proc, det, rng, sizes[:1], 1)  # warm-up of the simulation
        out[name] = in_sequence_all(name, proc, det, rng, sizes, repeat)
    return out


#: Processes whose BESIII reconstruction (``besiii2017``) is timed, when they are benchmarked.
BESIII_RECO = ("isr_mumu", "isr_ee")


def besiii_reconstruct(procs: list[str], n: int, repeat: int) -> dict:
    """``reco.selection.reconstruct_chunk`` with ``besiii2017`` (two tracks, the 1C fit with a
    missing photon per candidate channel) on ``n`` events of each process of
    :data:`BESIII_RECO` generated and simulated with the BESIII detector and beams, the input
    the selection is made for. As the ``reconstruct`` column: per input event, thread CPU time,
    best of ``max(1, repeat - 1)`` after a warm-up; also 1C fits/s (the fits the selection
    runs, ``counts["fit_1c"]``, over the same time) and fits per event."""
    from isrsim.detector import load_detector
    from isrsim.detector.simulate import simulate
    from isrsim.events import concatenate_reco, concatenate_truth
    from isrsim.processes import make_process
    from isrsim.reco.selection import reconstruct_chunk
    from isrsim.runner import BLOCK_EVENTS, apply_primary_vertex

    det = load_detector("besiii")
    out = {}
    for name in (p for p in BESIII_RECO if p in procs):
        params = dict(PROCESSES[name])
        params["mass_range"] = [params["mass_range"][0],
                                min(params["mass_range"][1], 0.98 * det.beam.sqrt_s)]
        proc = make_process(name, det.beam, **params)
        rng = np.random.default_rng(271828)
        truths, recos = [], []
        for s in range(0, n, BLOCK_EVENTS):
            t = proc.sample(rng, min(BLOCK_EVENTS, n - s), weighted=False)[0]
            apply_primary_vertex(t, det.beam, rng)
            recos.append(simulate(t, det, rng))
            truths.append(t)
        truth, reco = concatenate_truth(truths), concatenate_reco(recos)
        counts: dict[str, int] = {}

        def reco_fn(reco=reco, truth=truth, counts=counts):
            counts.clear()
            return reconstruct_chunk(reco, truth, selection="besiii2017", bz=det.bz_T,
                                     beam=det.beam, counts=counts)

        reco_fn()                                                  # warm-up (JIT / cache load)
        rate, cols = best_rate(reco_fn, n, max(1, repeat - 1))
        fits = counts.get("fit_1c", 0)
        out[name] = {"events_per_s": rate, "fits_1c_per_s": rate * fits / n,
                     "fits_1c_per_event": fits / n, "ns_per_event": 1e9 / rate,
                     "candidates_per_event": cols["m_ll"].size / n}
    return out


def all_cores(name: str, params: dict, det, n: int, ncores: int, tmp: Path) -> dict:
    """Wall-clock rates with all cores: threads for generation, worker processes for a run."""
    from isrsim.processes import make_process
    from isrsim.runner import BLOCK_EVENTS, RunSpec, run

    proc = make_process(name, det.beam, **params)
    proc.sample(np.random.default_rng(0), 1000)
    per = max(n // ncores, 1000)
    with cf.ThreadPoolExecutor(ncores) as pool:
        t = time.perf_counter()
        list(pool.map(lambda i: proc.sample(np.random.default_rng(i), per), range(ncores)))
        gen = per * ncores / (time.perf_counter() - t)
    n_small = BLOCK_EVENTS * ncores * 2
    n_run = max(4 * n_small, (2 * n // BLOCK_EVENTS) * BLOCK_EVENTS)
    res = {}
    for label, workers in (("gen+sim+write_1worker", 1), ("gen+sim+write", ncores)):
        seconds = {}
        for n_ev in (n_small, n_run):
            chunk = max(BLOCK_EVENTS, (n_ev // (4 * workers)) // BLOCK_EVENTS * BLOCK_EVENTS)
            spec = RunSpec(process=name, params=params, beam=det.beam,
                           output=tmp / f"run_{name}_{workers}_{n_ev}", seed=1, n_events=n_ev,
                           detector=det, workers=workers, progress=False, chunk_size=chunk)
            t = time.perf_counter()
            run(spec)
            seconds[n_ev] = time.perf_counter() - t
        # marginal rate: worker start-up (imports, numba cache load ~1.3 s per process) cancels;
        # NaN when the difference is lost in the noise (--quick: a few blocks per worker)
        dt = seconds[n_run] - seconds[n_small]
        res[label] = (n_run - n_small) / dt if dt > 0.0 else math.nan
    return {"generate": gen, **res}


def numpy_baseline(det, n: int, repeat: int) -> dict:
    from numpy_baseline import NumpyIsrMuMu

    from isrsim.processes import make_process

    proc = make_process("isr_mumu", det.beam, **PROCESSES["isr_mumu"])
    base = NumpyIsrMuMu(proc)
    rng = np.random.default_rng(7)
    base.sample(rng, 1000)
    rate, p4 = best_rate(lambda: base.sample(rng, n), n, max(1, repeat - 1))
    truth, st = proc.sample(rng, n)
    # the two implementations sample the same distribution: compare the mean M(mu mu)

    def mass(p):
        q = p[:, 0] + p[:, 1]
        return np.sqrt(np.maximum(q[:, 3] ** 2 - (q[:, :3] ** 2).sum(1), 0.0))

    m_np, m_nb = mass(p4), mass(truth.p4)
    pull = (m_np.mean() - m_nb.mean()) / math.hypot(m_np.std() / math.sqrt(n), m_nb.std() / math.sqrt(n))
    return {"generate": rate, "mean_m_pull_vs_numba": float(pull), "trials_per_event": st.n_trials / n}


def gen_sim_write_vs_numpy(det, n: int, repeat: int, tmp: Path, block: int) -> dict:
    """isr_mumu generate + primary vertex + simulate + write, isrsim vs the NumPy baseline.

    Both pipelines process ``n`` events in chunks of ``block`` (the runner's default chunk
    size) and write every chunk as one row group of one file with ``io.EventWriter``; isrsim
    converts with ``io.chunk_to_table`` and writes with its own Parquet writer
    (:mod:`isrsim.parquet_writer`), the baseline converts with ``numpy_chunk_to_table``
    (boolean-mask copies: the same table, tested) and writes with pyarrow's
    ``ParquetWriter`` (``EventWriter(lean=False)``, same codec, dictionary, statistics and
    checksums): NumPy + pyarrow, nothing compiled. For transparency the baseline is also
    timed with isrsim's writer (``numpy_lean_writer``). One core: thread CPU time, best of
    ``repeat`` after an untimed warm-up; the pipelines alternate so that they see the same
    machine load. Process CPU time and wall time are recorded as cross-checks.
    """
    import pyarrow.parquet as pq
    from numpy_baseline import NumpyDetector, NumpyIsrMuMu, numpy_chunk_to_table

    from isrsim.detector.simulate import simulate
    from isrsim.io import EventWriter, chunk_to_table
    from isrsim.processes import make_process
    from isrsim.runner import apply_primary_vertex

    proc = make_process("isr_mumu", det.beam, **PROCESSES["isr_mumu"])
    base, nd = NumpyIsrMuMu(proc), NumpyDetector(det)

    def isrsim_chunk(rng, nb, start):
        truth, _ = proc.sample(rng, nb, weighted=False)
        apply_primary_vertex(truth, det.beam, rng)
        return chunk_to_table(truth, start, "isr_mumu", simulate(truth, det, rng))

    def numpy_chunk(rng, nb, start):
        truth = nd.add_primary_vertex(base.sample_truth(rng, nb), rng)
        return numpy_chunk_to_table(truth, start, "isr_mumu", nd.simulate(truth, rng))

    def pipeline(chunk_fn, path, n_ev, rng, lean):
        w = EventWriter(path, lean=lean)
        for start in range(0, n_ev, block):
            w.write(chunk_fn(rng, min(block, n_ev - start), start))
        w.close({"bench": True})

    paths = {"isrsim": tmp / "gsw_isrsim.parquet", "numpy": tmp / "gsw_numpy.parquet",
             "numpy_lean_writer": tmp / "gsw_numpy_lean.parquet"}
    fns = {"isrsim": isrsim_chunk, "numpy": numpy_chunk, "numpy_lean_writer": numpy_chunk}
    lean = {"isrsim": True, "numpy": False, "numpy_lean_writer": True}
    rngs = {"isrsim": np.random.default_rng(101), "numpy": np.random.default_rng(202),
            "numpy_lean_writer": np.random.default_rng(202)}
    for key in fns:                                               # warm-up (JIT / cache load)
        pipeline(fns[key], paths[key], min(n, 20_000), rngs[key], lean[key])
    best = {key: {"thread": math.inf, "process": math.inf, "wall": math.inf} for key in fns}
    for _ in range(repeat):
        for key in fns:
            t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            pipeline(fns[key], paths[key], n, rngs[key], lean[key])
            b = best[key]
            b["thread"] = min(b["thread"], time.thread_time() - t0)
            b["process"] = min(b["process"], time.process_time() - p0)
            b["wall"] = min(b["wall"], time.perf_counter() - w0)
    # stage breakdown of the baseline on one chunk (where the time goes)
    nb = min(block, n)
    rng = np.random.default_rng(303)
    r_gen, t_np = best_rate(lambda: base.sample_truth(rng, nb), nb, repeat)
    nd.add_primary_vertex(t_np, rng)
    r_sim, reco_np = best_rate(lambda: nd.simulate(t_np, rng), nb, repeat)
    r_tab, _ = best_rate(lambda: numpy_chunk_to_table(t_np, 0, "isr_mumu", reco_np), nb, repeat)
    # the same output: identical schema and row count
    sa, sb = pq.read_schema(paths["isrsim"]), pq.read_schema(paths["numpy"])
    same_schema = sa.remove_metadata().equals(sb.remove_metadata())
    rows = [pq.ParquetFile(p).metadata.num_rows for p in paths.values()]
    assert same_schema and rows == [n] * 3, f"output mismatch: schema equal {same_schema}, rows {rows}"
    return {
        "block": block,
        "isrsim_events_per_s": n / best["isrsim"]["thread"],
        "numpy_events_per_s": n / best["numpy"]["thread"],
        "ratio_thread_cpu": best["numpy"]["thread"] / best["isrsim"]["thread"],
        "ratio_process_cpu": best["numpy"]["process"] / best["isrsim"]["process"],
        "ratio_wall": best["numpy"]["wall"] / best["isrsim"]["wall"],
        "numpy_lean_writer_events_per_s": n / best["numpy_lean_writer"]["thread"],
        "ratio_vs_numpy_lean_writer": best["numpy_lean_writer"]["thread"] / best["isrsim"]["thread"],
        "bytes_isrsim": paths["isrsim"].stat().st_size, "bytes_numpy": paths["numpy"].stat().st_size,
        "numpy_stage_events_per_s": {"generate": r_gen, "simulate": r_sim, "chunk_to_table": r_tab},
    }


def baseline_equivalence(det, n: int) -> list[dict]:
    """Print and assert the equivalence of the NumPy baseline with isrsim
    (:func:`numpy_baseline.check_equivalence`)."""
    from numpy_baseline import check_equivalence

    from isrsim.processes import make_process

    proc = make_process("isr_mumu", det.beam, **PROCESSES["isr_mumu"])
    rows = check_equivalence(det, proc, n)
    print(f"\nNumPy baseline vs isrsim, isr_mumu + belle2, {n} events (z = difference / its "
          "statistical error; exact checks: max relative deviation):")
    bad = [r["check"] for r in rows if not r["ok"]]
    for r in rows:  # the exact checks, the key distributions, every failure (all rows: JSON)
        key = (r["check"].startswith(("helix", "cov", "numpy pull"))
               or (r["check"].startswith("same truth") and ("frac events with" in r["check"]
                                                            or "std " in r["check"])))
        if key or not r["ok"]:
            print(f"  {r['check']:58s} isrsim {r['isrsim']:+.5g}  numpy {r['numpy']:+.5g}  "
                  f"z {r['z']:+.2f}  {'ok' if r['ok'] else 'FAIL'}")
    worst = max(rows, key=lambda r: abs(r["z"]))
    n_stat = sum(1 for r in rows if not r["check"].startswith(("helix", "cov")))
    print(f"  {len(rows)} checks ({n_stat} statistical, same truth and whole gen+sim chain): "
          f"max |z| {abs(worst['z']):.2f} ({worst['check']}), "
          f"{sum(abs(r['z']) > 3 for r in rows)} with |z| > 3; {len(bad)} failed")
    assert not bad, f"NumPy baseline differs from isrsim: {bad}"
    return rows


def machine() -> dict:
    import numba
    import pyarrow

    import isrsim

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "pyarrow": pyarrow.__version__,
            "isrsim": isrsim.__version__, "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--events", type=int, default=1_000_000, help="events per stage measurement")
    ap.add_argument("--quick", action="store_true", help="100k events, 1 repeat, isr_mumu only")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--processes", nargs="*", default=list(PROCESSES))
    ap.add_argument("--besiii-reco-only", action="store_true",
                    help="only the BESIII besiii2017 reconstruction measurement")
    ap.add_argument("--block", type=int, default=100_000,
                    help="chunk size of the gen+sim+write comparison with the NumPy baseline")
    args = ap.parse_args(argv)
    from isrsim._malloc import keep_freed_memory

    keep_freed_memory()  # the allocator setting of the CLI and the worker processes (production)
    n, repeat, procs = args.events, args.repeat, args.processes
    if args.quick:
        n, repeat, procs = 100_000, 1, ["isr_mumu"]
    if args.besiii_reco_only:
        res = {"machine": machine(), "events": n,
               "besiii_reconstruct": besiii_reconstruct(procs, min(n, 300_000), repeat)}
        print_besiii_reconstruct(res["besiii_reconstruct"])
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=float))
        return 0
    from isrsim.detector import load_detector

    det = load_detector("belle2")
    info = machine()
    print(json.dumps(info))
    ncores = os.cpu_count() or 1
    limits = {"rng_draws_per_s": rng_limit(20_000_000 if not args.quick else 2_000_000),
              "memory_copy_GB_s": memory_bandwidth() / 1e9}
    print(f"limits: PCG64 in numba {limits['rng_draws_per_s'] / 1e6:.0f} M draws/s, "
          f"memory copy {limits['memory_copy_GB_s']:.1f} GB/s")
    results: dict = {"machine": info, "events": n, "limits": limits}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name in procs:
            r = bench_process(name, PROCESSES[name], det, n, repeat, tmp)
            r["all_cores"] = all_cores(name, PROCESSES[name], det, n, ncores, tmp)
            results[name] = r
            print(f"{name}: " + ", ".join(f"{k} {v / 1e6:.2f} M/s" for k, v in r.items()
                                         if k in ("generate", "simulate", "reconstruct", "write",
                                                  "gen+sim", "gen+write", "gen+sim+write")))
    if "isr_mumu" in results:
        rows = baseline_equivalence(det, min(n, 400_000))
        nb = numpy_baseline(det, n, repeat)
        r = results["isr_mumu"]
        r["numpy_baseline"] = nb
        r["ratio_to_numpy_generate"] = r["generate"] / nb["generate"]
        with tempfile.TemporaryDirectory() as td:
            gsw = gen_sim_write_vs_numpy(det, n, repeat, Path(td), min(args.block, n))
        nb["gen_sim_write"] = gsw
        nb["equivalence"] = {"n_checks": len(rows), "max_abs_z": max(abs(x["z"]) for x in rows),
                             "all_ok": all(x["ok"] for x in rows)}
        r["gen_sim_write_vs_numpy"] = gsw["ratio_thread_cpu"]
        # random-number budget: draws per event (structure of the sampler, measured trial rates
        # of the mass step; photon and decay acceptances from physics.md 1.6 / eq. 1.8 bounds)
        draws = 2.0 * nb["trials_per_event"] + 2.0 * 1.08 + 1.0 + 1.5 * (1.0 + 8.0 / math.pi)
        r["rng_draws_per_event_est"] = draws
        r["rng_fraction"] = r["generate"] * draws / limits["rng_draws_per_s"]
    limits["raw_parquet_write_MB_s"] = {p: results[p]["raw_parquet_MB_s"] for p in procs}
    results["besiii_reconstruct"] = besiii_reconstruct(procs, min(n, 300_000), repeat)
    if not args.quick:
        results["besiii_in_sequence"] = besiii_in_sequence(procs, min(n, 300_000), repeat)
    print_table(results, procs)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
        print(f"written {args.json}")
    return 0


def print_table(res: dict, procs: list[str]) -> None:
    cols = ["generate", "simulate", "reconstruct", "write", "gen+sim", "gen+write", "gen+sim+write"]
    print("\nevents/s [M/s], one core (thread CPU time):")
    print(f"| process | {' | '.join(cols)} | simulate/generate time | all cores: generate | "
          "all cores: gen+sim+write |")
    print("|---" * (len(cols) + 4) + "|")
    for p in procs:
        r = res[p]
        vals = " | ".join(f"{r[c] / 1e6:.2f}" for c in cols)
        ac = r["all_cores"]
        print(f"| {p} | {vals} | {r['in_sequence']['simulate_over_generate']:.2f} | "
              f"{ac['generate'] / 1e6:.2f} | {ac['gen+sim+write'] / 1e6:.2f} |")
    print("\nin sequence, per block as in the runner (generate, primary vertex, simulate), "
          "ns/event:")
    def seq_lines(rows):
        for p, q in rows:
            print(f"  {p}: generate {q['generate_ns_per_event']:.0f}, vertex "
                  f"{q['vertex_ns_per_event']:.0f}, simulate {q['simulate_ns_per_event']:.0f} -> "
                  f"(vertex + simulate) / generate = {q['simulate_over_generate']:.2f}")
            if "no_brems" in q:
                nb = q["no_brems"]
                print(f"    without material in front of the momentum measurement: generate "
                      f"{nb['generate_ns_per_event']:.0f}, simulate {nb['simulate_ns_per_event']:.0f}"
                      f" -> {nb['simulate_over_generate']:.2f} (electron walk "
                      f"{q['brems_ns_per_event']:.0f} ns/event)")

    seq_lines((p, res[p]["in_sequence"]) for p in procs)
    if "besiii_in_sequence" in res:
        print("the same with the BESIII detector and beams:")
        seq_lines(res["besiii_in_sequence"].items())
    if res.get("besiii_reconstruct"):
        print_besiii_reconstruct(res["besiii_reconstruct"])
    print("\nwrite vs pyarrow raw (flat leaves, no compression/dictionary/statistics):")
    for p in procs:
        r = res[p]
        print(f"  {p}: {r['bytes_per_event']:.0f} B/event, isrsim {r['write_MB_s']:.0f} MB/s, raw flat "
              f"{r['raw_parquet_MB_s']:.0f} MB/s -> {100 * r['write_fraction_of_raw']:.0f}%; pyarrow "
              f"defaults on the same nested table {r['pyarrow_default_MB_s']:.0f} MB/s -> "
              f"{100 * r['write_fraction_of_pyarrow_default']:.0f}%")
    if "isr_mumu" in res and "numpy_baseline" in res["isr_mumu"]:
        r = res["isr_mumu"]
        nb = r["numpy_baseline"]
        print(f"\nisr_mumu generate: numba {r['generate'] / 1e6:.2f} M/s vs NumPy baseline "
              f"{nb['generate'] / 1e6:.2f} M/s -> x{r['ratio_to_numpy_generate']:.2f} "
              f"(mean M pull {nb['mean_m_pull_vs_numba']:+.2f})")
        g = nb["gen_sim_write"]
        print(f"isr_mumu generate + simulate + write (chunks of {g['block']}): isrsim "
              f"{g['isrsim_events_per_s'] / 1e6:.2f} M/s vs NumPy baseline "
              f"{g['numpy_events_per_s'] / 1e6:.2f} M/s -> x{g['ratio_thread_cpu']:.2f} "
              f"(process CPU x{g['ratio_process_cpu']:.2f}, wall x{g['ratio_wall']:.2f}; "
              f"equivalence: {nb['equivalence']['n_checks']} checks, max |z| "
              f"{nb['equivalence']['max_abs_z']:.2f})")
        print(f"  the baseline with isrsim's Parquet writer instead of pyarrow's: "
              f"{g['numpy_lean_writer_events_per_s'] / 1e6:.2f} M/s -> "
              f"x{g['ratio_vs_numpy_lean_writer']:.2f}")
        st = g["numpy_stage_events_per_s"]
        print(f"  NumPy baseline stages [M/s]: generate {st['generate'] / 1e6:.2f}, simulate "
              f"{st['simulate'] / 1e6:.2f}, chunk_to_table {st['chunk_to_table'] / 1e6:.2f} "
              f"(isrsim: generate {r['generate'] / 1e6:.2f}, simulate {r['simulate'] / 1e6:.2f}, "
              f"write {r['write'] / 1e6:.2f})")
        print(f"random numbers: ~{r['rng_draws_per_event_est']:.1f} draws/event -> "
              f"{100 * r['rng_fraction']:.0f}% of the PCG64-in-numba limit")


def print_besiii_reconstruct(rows: dict) -> None:
    print("\nBESIII reconstruction (besiii2017: selection + 1C fits with a missing photon), "
          "BESIII-simulated events, one core (thread CPU time):")
    for p, q in rows.items():
        print(f"  {p}: {q['events_per_s'] / 1e6:.2f} M events/s ({q['ns_per_event']:.0f} "
              f"ns/event), {q['fits_1c_per_s'] / 1e6:.2f} M 1C fits/s "
              f"({q['fits_1c_per_event']:.2f} fits/event, {q['candidates_per_event']:.2f} "
              "candidates/event)")


if __name__ == "__main__":
    sys.exit(main())
