"""Run orchestration: chunks, seeds, workers, progress and output.

Reproducibility contract: events are produced in fixed **blocks** of ``BLOCK_EVENTS`` events.
Block j draws from ``Generator(PCG64(SeedSequence(seed, spawn_key=(0, j))))`` for generation and
from ``spawn_key=(1, j)`` for the primary vertex and the detector simulation, so the events do not
depend on the chunk size (a multiple of the block size), on the number of workers, on Dask, or on
whether a run was interrupted and resumed. The Poisson event count of a luminosity run uses
``spawn_key=(9,)`` and the cross-section pilot ``(8,)``.

Memory: a chunk is generated, converted and written before the next is accepted; at most
``2 * workers`` chunks are in flight, so memory does not grow with the number of events.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import SCHEMA_VERSION, __version__, _interrupt
from ._malloc import keep_freed_memory
from .beam import Beam
from .events import TruthChunk
from .exceptions import ConfigError, InputFileError, OutputError
from .processes.base import SampleStats

__all__ = ["BLOCK_EVENTS", "RunResult", "RunSpec", "block_rng", "run"]

#: Events per random-number block (the unit of reproducibility).
BLOCK_EVENTS = 10_000
_PILOT_EVENTS = 100_000
_MANIFEST = "_manifest.json"


def block_rng(entropy: int, stream: int, block: int | None = None) -> np.random.Generator:
    """The Generator of ``stream`` (0 generation, 1 vertex+detector, 8 pilot, 9 Poisson count)
    for block ``block``: independent of how the run is chunked or parallelised."""
    key = (stream,) if block is None else (stream, block)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


@dataclass
class RunSpec:
    """A validated run: what to generate, how many, where to write.

    Exactly one of ``n_events`` and ``luminosity_invnb`` is set. ``output`` ending in
    ``.parquet`` is written as one file; any other path as a dataset directory of parts with a
    manifest (needed for ``resume``).

    ``scheduler``: a Dask scheduler address or a ``dask.distributed.Client``; chunks then run
    as Dask tasks (:mod:`isrsim.distributed`) with results identical to a local run. With a
    dataset directory each task writes its own part (the directory must be reachable from the
    workers); with a ``.parquet`` file the client writes the tables the tasks return.
    """

    process: str
    params: dict[str, Any]
    beam: Beam
    output: Path
    seed: int
    n_events: int | None = None
    luminosity_invnb: float | None = None
    detector: Any = None              # a DetectorModel or None
    chunk_size: int = 100_000
    workers: int = 1
    weighted: bool = False
    compression: str = "lz4"
    conversions: dict[str, Any] | None = None
    card: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    resume: bool = False
    scheduler: Any = None             # dask address or Client

    def validate(self) -> None:
        if (self.n_events is None) == (self.luminosity_invnb is None):
            msg = "give exactly one of events and luminosity"
            raise ConfigError(msg)
        if self.n_events is not None and (not isinstance(self.n_events, (int, np.integer))
                                          or self.n_events <= 0):
            msg = f"events = {self.n_events!r} is invalid: allowed an integer >= 1"
            raise ConfigError(msg)
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            msg = f"seed = {self.seed!r} is invalid: allowed an integer >= 0"
            raise ConfigError(msg)
        if (not isinstance(self.chunk_size, (int, np.integer)) or self.chunk_size <= 0
                or self.chunk_size % BLOCK_EVENTS):
            msg = (f"chunk_size = {self.chunk_size!r} is invalid: allowed a positive multiple of the "
                   f"block size {BLOCK_EVENTS}")
            raise ConfigError(msg)
        if not isinstance(self.workers, (int, np.integer)) or not 1 <= self.workers <= 1024:
            msg = f"workers = {self.workers!r} is invalid: allowed an integer 1..1024"
            raise ConfigError(msg)
        if self.compression not in ("zstd", "snappy", "lz4", "gzip", "none"):
            msg = f"compression = {self.compression!r} is invalid: allowed zstd, snappy, lz4, gzip, none"
            raise ConfigError(msg)

    @property
    def dataset_mode(self) -> bool:
        return self.output.suffix != ".parquet"


@dataclass
class RunResult:
    output: Path
    n_events: int
    stats: SampleStats
    metadata: dict[str, Any]
    seconds: float


# ---------------------------------------------------------------------------------------
# the work of one chunk (runs in a worker process or in-process)
# ---------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _STATE.clear()
    _STATE.update(state)


def apply_primary_vertex(truth: TruthChunk, beam: Beam, rng: np.random.Generator) -> None:
    """Shift every production vertex by a primary vertex drawn from the luminous region."""
    from .detector.simulate import shift_primary_vertex

    shift_primary_vertex(truth, beam.sigma_xyz_cm, rng)


def _simulate_block(state: dict[str, Any], j: int, nb: int, n_total: int):
    proc = state["process"]
    entropy = state["entropy"]
    truth, stats = proc.sample(block_rng(entropy, 0, j), nb, weighted=state["weighted"])
    if state["weighted"]:
        truth.weight /= n_total
    reco = None
    det = state.get("detector")
    conv = state.get("conversions")
    if det is not None or conv:
        rng1 = block_rng(entropy, 1, j)
        beam = det.beam if det is not None else proc.beam
        apply_primary_vertex(truth, beam, rng1)
        if conv:
            from .detector.conversion import convert_photons

            truth = convert_photons(truth, det, rng1, **conv)
        if det is not None:
            from .detector.simulate import simulate

            reco = simulate(truth, det, rng1)
    return truth, reco, stats


def _empty_schema(state: dict[str, Any]) -> Any:
    """The event schema of a run that produced no events (e.g. a tiny luminosity): that of an
    empty block, so that a 0-event file has the same columns as any other."""
    from .io import chunk_to_table

    truth, reco, _ = _simulate_block(state, 0, 0, 1)
    return chunk_to_table(truth, 0, state["process"].name, reco).schema


def _run_chunk(first_block: int, n_blocks: int, n_total: int, chunk_index: int,
               state: dict[str, Any] | None = None):
    """Generate blocks [first_block, first_block + n_blocks); return an Arrow table or write a part.

    ``state`` defaults to this process's worker state (``_init_worker``); Dask tasks pass it.
    """
    import pyarrow as pa

    from .io import chunk_to_table, write_table_atomic

    state = _STATE if state is None else state
    tables = []
    stats = SampleStats()
    for j in range(first_block, first_block + n_blocks):
        nb = min(BLOCK_EVENTS, n_total - j * BLOCK_EVENTS)
        truth, reco, st = _simulate_block(state, j, nb, n_total)
        stats += st
        tables.append(chunk_to_table(truth, j * BLOCK_EVENTS, state["process"].name, reco))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    part_dir = state.get("part_dir")
    if part_dir is None:
        return table, stats.to_dict()
    name = f"part-{chunk_index:05d}.parquet"
    write_table_atomic(table, Path(part_dir) / name, state["part_meta"],
                       compression=state["compression"])
    return {"file": name, "chunk": chunk_index, "n_events": table.num_rows}, stats.to_dict()


# ---------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------
#: run-card keys that change how a run executes but not its events (ignored by the card hash,
#: so that ``--resume`` with other workers / progress settings is accepted)
_EXECUTION_KEYS = ("resume", "progress", "workers")


def _card_hash(card: dict[str, Any]) -> str:
    run_cfg = card.get("run")
    if isinstance(run_cfg, dict):
        card = dict(card, run={k: v for k, v in run_cfg.items() if k not in _EXECUTION_KEYS})
    return hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()


def _poisson_count(spec: RunSpec, proc: Any) -> tuple[int, float, float]:
    pilot, st = proc.sample(block_rng(spec.seed, 8), _PILOT_EVENTS, weighted=True)
    del pilot
    sigma = st.sigma_nb
    mean = sigma * spec.luminosity_invnb
    if mean > 1e12:
        msg = (f"luminosity = {spec.luminosity_invnb:g}/nb gives {mean:.3g} expected events "
               f"(sigma = {sigma:.4g} nb): allowed at most 1e12")
        raise ConfigError(msg)
    n = int(block_rng(spec.seed, 9).poisson(mean))
    return n, sigma, st.sigma_err_nb


def _base_metadata(spec: RunSpec, proc: Any) -> dict[str, Any]:
    det = spec.detector
    return {
        "isrsim_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "process": proc.name,
        "process_config": proc.config(),
        "k_truth": int(proc.k),
        "run_card": spec.card,
        "run_card_sha256": _card_hash(spec.card),
        "beam": spec.beam.metadata(),
        "detector": None if det is None else {"name": det.name, "sha256": det.sha256,
                                              "path": str(det.path)},
        "conversions": spec.conversions,
        "seed_entropy": int(spec.seed),
        "block_events": BLOCK_EVENTS,
        "weighted": bool(spec.weighted),
        "units": {"energy": "GeV", "length": "cm", "cross_section": "nb", "weight": "nb/event"
                  if spec.weighted else "1"},
    }


def _final_metadata(base: dict[str, Any], n: int, stats: SampleStats, spec: RunSpec,
                    sum_w: float, sum_w2: float, extra: dict[str, Any]) -> dict[str, Any]:
    meta = dict(base)
    sigma = stats.sigma_nb if stats.n_trials else float("nan")
    meta.update({
        "n_events": int(n),
        "cross_section_nb": sigma,
        "cross_section_err_nb": stats.sigma_err_nb if stats.n_trials else float("nan"),
        "sampling": stats.to_dict(),
        "unweighting_efficiency": stats.unweighting_efficiency if stats.n_trials else float("nan"),
        "sum_weights": sum_w,
        "sum_weights2": sum_w2,
        "equivalent_luminosity_invnb": (n / sigma) if (sigma and not spec.weighted and n) else None,
    })
    meta.update(extra)
    return json.loads(json.dumps(meta, default=float).replace("NaN", "null"))


def run(spec: RunSpec) -> RunResult:
    """Generate (and optionally simulate) a run and write it; returns a summary.

    Ctrl-C (SIGINT; and SIGTERM from the CLI) stops it cleanly: no partial file, a dataset's
    manifest lists the complete parts only (resume with ``spec.resume``)."""
    with _interrupt.handling():
        return _run(spec)


def _run(spec: RunSpec) -> RunResult:
    from .io import EventWriter, check_writable
    from .processes import make_process

    t0 = time.perf_counter()
    spec.validate()
    check_writable(spec.output)
    if spec.dataset_mode and spec.output.exists() and not spec.output.is_dir():
        msg = (f"output = {str(spec.output)!r} is an existing file: allowed a .parquet file path or a "
               "dataset directory")
        raise OutputError(msg)
    if spec.scheduler is not None:  # fail before any output exists
        from .distributed import check_scheduler

        check_scheduler(spec.scheduler)
    proc = make_process(spec.process, spec.beam, **spec.params)
    extra: dict[str, Any] = {}
    if spec.luminosity_invnb is not None:
        n_total, sigma_pilot, sigma_pilot_err = _poisson_count(spec, proc)
        extra = {"luminosity_invnb": spec.luminosity_invnb, "pilot_cross_section_nb": sigma_pilot,
                 "pilot_cross_section_err_nb": sigma_pilot_err, "poisson_mean": sigma_pilot
                 * spec.luminosity_invnb}
    else:
        n_total = int(spec.n_events)
    n_blocks = math.ceil(n_total / BLOCK_EVENTS)
    bpc = spec.chunk_size // BLOCK_EVENTS
    chunks = [(b, min(bpc, n_blocks - b), n_total, i) for i, b in enumerate(range(0, n_blocks, bpc))]
    base = _base_metadata(spec, proc)
    state = {"process": proc, "entropy": int(spec.seed), "weighted": spec.weighted,
             "detector": spec.detector, "conversions": spec.conversions,
             "compression": spec.compression}
    stats = SampleStats(sigma_prop_nb=getattr(proc, "sigma_prop_nb", 0.0))
    sum_w = sum_w2 = 0.0
    n_written = 0

    from tqdm.auto import tqdm

    bar = tqdm(total=n_total, unit="ev", unit_scale=True, disable=not (spec.progress and sys.stderr.isatty()),
               desc=proc.name)
    if spec.dataset_mode:
        result = _run_dataset(spec, state, chunks, base, n_total, bar, extra)
        bar.close()
        result.seconds = time.perf_counter() - t0
        return result

    writer = EventWriter(spec.output, compression=spec.compression)
    stack = contextlib.ExitStack()
    # Parquet encoding runs in a writer thread (pyarrow and the numba kernels release the GIL),
    # overlapping with the generation of the next chunk; at most one write is pending, so memory
    # stays bounded at ~2 chunks. Row groups keep the chunk order. The first chunk is written
    # here, before any overlap: the writer's numba kernels are then compiled or loaded from the
    # cache while no other compiled code runs (numba issues 10563 and 10614: compiling in one
    # thread while another runs compiled code can crash; seen once here, a SIGSEGV with the
    # generator kernel running in this thread and the writer thread in its first page write).
    io_thread = cf.ThreadPoolExecutor(1, thread_name_prefix="isrsim-writer")
    pending: cf.Future | None = None
    first = True
    try:
        for table, st in stack.enter_context(contextlib.closing(_execute(spec, state, chunks))):
            stats += SampleStats.from_dict(st)
            w = table.column("weight").to_numpy()
            sum_w += float(w.sum())
            sum_w2 += float((w * w).sum())
            if pending is not None:
                pending.result()
            if first:
                writer.write(table)
                first = False
            else:
                pending = io_thread.submit(writer.write, table)
            n_written += table.num_rows
            bar.update(table.num_rows)
            _interrupt.check()
        if pending is not None:
            pending.result()
            pending = None
        _interrupt.check()
        meta = _final_metadata(base, n_written, stats, spec, sum_w, sum_w2, extra)
        writer.close(meta, empty_schema=_empty_schema(state) if n_written == 0 else None)
    except BaseException:
        stack.close()  # stop the workers first (closes the chunk generator)
        if pending is not None:
            pending.cancel()
            cf.wait([pending])
        writer.abort()
        raise
    finally:
        stack.close()
        io_thread.shutdown(wait=True)
        bar.close()
    return RunResult(spec.output, n_written, stats, meta, time.perf_counter() - t0)


def _non_nullable_field(f: Any) -> Any:
    """The Arrow field ``f`` with it and every nested field non-nullable (isrsim's event schema)."""
    import pyarrow as pa

    return pa.field(f.name, _non_nullable(f.type), nullable=False, metadata=f.metadata)


def _non_nullable(t: Any) -> Any:
    """The Arrow type ``t`` with every nested field non-nullable."""
    import pyarrow as pa

    field = _non_nullable_field
    if pa.types.is_struct(t):
        return pa.struct([field(f) for f in t])
    if pa.types.is_fixed_size_list(t):
        return pa.list_(field(t.value_field), t.list_size)
    if pa.types.is_large_list(t):
        return pa.large_list(field(t.value_field))
    if pa.types.is_list(t):
        return pa.list_(field(t.value_field))
    return t


def _from_another_process(result: tuple[Any, Any]) -> tuple[Any, Any]:
    """A chunk result pickled by a worker process or a Dask worker: pickling an Arrow table loses
    the non-nullability of a fixed-size list's values (``tracks.cov``), which made the file's
    schema, and its writer, depend on the number of workers. Restores isrsim's schema."""
    import pyarrow as pa

    table, st = result
    if isinstance(table, pa.Table):
        schema = pa.schema([_non_nullable_field(f) for f in table.schema], metadata=table.schema.metadata)
        if not schema.equals(table.schema):
            table = table.cast(schema)
    return table, st


def _execute(spec: RunSpec, state: dict[str, Any], chunks: list[tuple[int, int, int, int]]):
    """Yield chunk results in order, with at most 2*workers chunks in flight."""
    if spec.scheduler is not None:
        from .distributed import execute_on_dask

        for r in execute_on_dask(spec.scheduler, state, chunks):
            yield _from_another_process(r)
        return
    if spec.workers == 1 or len(chunks) == 1:
        _init_worker(state)
        try:
            for c in chunks:
                yield _run_chunk(*c)
        finally:
            _STATE.clear()
        return
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=_init_pool_worker,
                                initargs=(state,)) as pool:
        pending: dict[int, cf.Future] = {}
        nxt = 0
        try:
            for i, c in enumerate(chunks):
                with _interrupt.deferred():  # may start a worker: its bootstrap data must be whole
                    pending[i] = pool.submit(_pool_chunk, *c)
                while len(pending) >= 2 * spec.workers or (i == len(chunks) - 1 and pending):
                    yield _from_another_process(pending.pop(nxt).result())
                    nxt += 1
        except BaseException:  # error, KeyboardInterrupt (SIGINT/SIGTERM) or generator closed
            for f in pending.values():
                f.cancel()
            _stop_workers(pool)
            raise


# Interrupt handling in pool workers: SIGTERM/SIGINT inside a chunk raise KeyboardInterrupt, so
# the atomic writer removes its temporary part, then the worker exits; an idle worker just exits.
# The parent stops its workers the same way when it is interrupted (no orphans, no partial parts).
# An interrupt swallowed by a finalizer (see _interrupt) lets the chunk finish: the worker exits
# after it instead of returning it (the complete part is not listed and is redone on resume).
_IN_CHUNK = False
_WORKER_INTERRUPTED = False


def _worker_signal(signum: int, frame: Any) -> None:
    global _WORKER_INTERRUPTED
    _WORKER_INTERRUPTED = True
    if _IN_CHUNK:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _init_pool_worker(state: dict[str, Any]) -> None:
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGINT, _worker_signal)
    sys.unraisablehook = _interrupt.quiet_unraisable(sys.unraisablehook)
    _init_worker(state)


def _pool_chunk(*chunk: Any):
    global _IN_CHUNK
    _IN_CHUNK = True
    try:
        result = _run_chunk(*chunk)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)  # temporary files are already removed by the writer
    finally:
        _IN_CHUNK = False
    if _WORKER_INTERRUPTED:
        os._exit(128 + signal.SIGTERM)
    return result


def _stop_workers(pool: cf.ProcessPoolExecutor, timeout: float = 30.0) -> None:
    """Terminate the pool's worker processes (SIGTERM, then SIGKILL after ``timeout`` s) and
    shut the pool down without waiting for queued chunks."""
    procs = [p for p in (getattr(pool, "_processes", None) or {}).values() if p is not None]
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5.0)
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------
# dataset directories: parts + manifest (resumable, Dask)
# ---------------------------------------------------------------------------------------
def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path / f".{_MANIFEST}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(manifest, sort_keys=True, indent=1, default=float))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path / _MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _part_intact(path: Path, n_events: Any) -> bool:
    """True if the dataset part opens as Parquet and holds the number of events its manifest
    entry says; a part that does not is removed (``--resume`` writes it again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        ok = pq.ParquetFile(path).metadata.num_rows == n_events
    except (OSError, pa.ArrowException):
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


def _run_dataset(spec: RunSpec, state: dict[str, Any], chunks, base: dict[str, Any], n_total: int,
                 bar: Any, extra: dict[str, Any]) -> RunResult:
    out = spec.output
    manifest_path = out / _MANIFEST
    done: dict[int, dict[str, Any]] = {}
    if manifest_path.exists():
        if not spec.resume:
            msg = (f"output = {str(out)!r} already holds a dataset; choose a new path or pass "
                   "--resume to complete an interrupted run")
            raise OutputError(msg)
        try:
            old = json.loads(manifest_path.read_text())
            parts = [p for p in old.get("parts", []) if isinstance(p, dict)]
        except (ValueError, AttributeError):
            msg = (f"--resume: {str(manifest_path)!r} is corrupt (not the JSON object isrsim wrote); "
                   "allowed: remove the directory and run again without --resume")
            raise InputFileError(msg) from None
        if old.get("run_card_sha256") != base["run_card_sha256"] or old.get("n_total") != n_total:
            msg = (f"--resume: {str(out)!r} was written by a different run card or event count "
                   f"(run_card_sha256 / n_total differ; n_total there {old.get('n_total')}, here "
                   f"{n_total}); allowed: the same card, --events/--luminosity, --seed and "
                   "--chunk-size as the interrupted run")
            raise InputFileError(msg)
        # parts listed and intact are kept; a missing, corrupt or truncated one is redone
        done = {p["chunk"]: p for p in parts if _part_intact(out / str(p.get("file")), p.get("n_events"))}
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".part-*.tmp-*"), *out.glob(f".{_MANIFEST}.tmp-*")]:
        stale.unlink(missing_ok=True)
    state = dict(state, part_dir=str(out), part_meta=base)
    todo = [c for c in chunks if c[3] not in done]
    manifest = {"isrsim_version": __version__, "schema_version": SCHEMA_VERSION,
                "run_card_sha256": base["run_card_sha256"], "n_total": n_total,
                "n_parts": len(chunks), "complete": False, "parts": [], "metadata": base}

    def flush() -> None:
        manifest["parts"] = [done[i] for i in sorted(done)]
        _write_manifest(out, manifest)

    flush()
    bar.update(sum(p["n_events"] for p in done.values()))
    with contextlib.closing(_execute_parts(spec, state, todo)) as results:
        for info, st in results:
            info["stats"] = st
            done[info["chunk"]] = info
            flush()
            bar.update(info["n_events"])
            _interrupt.check()
    stats = SampleStats(sigma_prop_nb=0.0)
    n = 0
    sum_w = sum_w2 = 0.0
    import pyarrow.parquet as pq

    for i in sorted(done):
        stats += SampleStats.from_dict(done[i]["stats"])
        n += done[i]["n_events"]
        w = pq.read_table(out / done[i]["file"], columns=["weight"]).column("weight").to_numpy()
        sum_w += float(w.sum())
        sum_w2 += float((w * w).sum())
    meta = _final_metadata(base, n, stats, spec, sum_w, sum_w2, extra)
    manifest["metadata"] = meta
    manifest["complete"] = True
    flush()
    return RunResult(out, n, stats, meta, 0.0)


def _execute_parts(spec: RunSpec, state: dict[str, Any], chunks):
    # Dask (spec.scheduler) or the local pool: both handled by _execute
    yield from _execute(spec, state, chunks)


def simulate_file(inp: str | os.PathLike[str], detector: Any, output: str | os.PathLike[str], *,
                  compression: str = "lz4", progress: bool = True) -> RunResult:
    """Run the detector simulation on a generator-level file, block by block.

    Uses the same per-block streams (``spawn_key=(1, j)``) as simulation in the generation pass,
    so ``generate`` + ``simulate`` gives the same events as ``generate --detector``.
    """
    import pyarrow as pa

    from .io import (EventWriter, check_distinct_paths, chunk_to_table, iter_tables, read_metadata,
                     schema_guard, table_to_truth)

    t0 = time.perf_counter()
    check_distinct_paths([inp], [output])
    meta = read_metadata(inp)
    if meta.get("detector"):
        msg = f"input = {str(inp)!r} was already simulated with detector {meta['detector']['name']!r}"
        raise InputFileError(msg)
    k = int(meta.get("k_truth", 0)) or 8
    entropy = int(meta["seed_entropy"])
    block = int(meta.get("block_events", BLOCK_EVENTS))
    process = str(meta["process"])
    from .detector.simulate import simulate

    new_meta = dict(meta, detector={"name": detector.name, "sha256": detector.sha256,
                                    "path": str(detector.path)}, simulated_from=str(inp))
    n = 0
    empty = None
    with _interrupt.handling(), EventWriter(output, compression=compression) as writer:
        for table in iter_tables(inp):
            with schema_guard(inp):
                ids = table.column("event_id").to_numpy()
            if ids.size == 0:
                empty = table
                continue
            pieces = []
            # split at block boundaries so every block uses its own stream
            bounds = np.flatnonzero(np.diff(ids // block)) + 1
            for sl in np.split(np.arange(ids.size), bounds):
                sub = table.slice(int(sl[0]), int(sl.size))
                with schema_guard(inp):
                    truth = table_to_truth(sub, k)
                rng1 = block_rng(entropy, 1, int(ids[sl[0]] // block))
                apply_primary_vertex(truth, detector.beam, rng1)
                reco = simulate(truth, detector, rng1)
                pieces.append(chunk_to_table(truth, int(ids[sl[0]]), process, reco))
            out = pa.concat_tables(pieces)
            writer.write(out)
            n += out.num_rows
            _interrupt.check()
        empty_schema = None
        if n == 0:  # a 0-event input: the output still has every column (of an empty block)
            with schema_guard(inp):
                truth = table_to_truth(empty, k) if empty is not None else TruthChunk.empty(0, k)
            reco = simulate(truth, detector, block_rng(0, 1, 0))  # no draws for 0 events
            empty_schema = chunk_to_table(truth, 0, process, reco).schema
        writer.close(new_meta, empty_schema=empty_schema)
    stats = SampleStats.from_dict(meta["sampling"]) if "sampling" in meta else SampleStats()
    return RunResult(Path(output), n, stats, new_meta, time.perf_counter() - t0)
