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
        """Check every field (types and ranges) before any work; ConfigError naming the field.
        ``output`` given as a str is turned into a Path."""
        from .processes import PROCESS_NAMES

        def integer(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        if not isinstance(self.process, str) or self.process not in PROCESS_NAMES:
            msg = f"process = {self.process!r} is invalid: allowed {', '.join(PROCESS_NAMES)}"
            raise ConfigError(msg)
        if not isinstance(self.params, dict):
            msg = f"params = {self.params!r} is invalid: allowed a dict of process parameters"
            raise ConfigError(msg)
        if not isinstance(self.beam, Beam):
            msg = f"beam = {self.beam!r} is invalid: allowed an isrsim.beam.Beam"
            raise ConfigError(msg)
        if isinstance(self.output, (str, os.PathLike)) and str(self.output):
            self.output = Path(self.output)
        else:
            msg = (f"output = {self.output!r} is invalid: allowed a path (a .parquet file, or a dataset "
                   "directory)")
            raise ConfigError(msg)
        if self.output.suffix.lower() in _PARQUET_LIKE_SUFFIXES:
            msg = (f"output = {str(self.output)!r} is invalid: allowed a path ending in .parquet (one "
                   f"file) or a dataset directory name without a Parquet-like suffix "
                   f"({', '.join(_PARQUET_LIKE_SUFFIXES)})")
            raise ConfigError(msg)
        if (self.n_events is None) == (self.luminosity_invnb is None):
            msg = "give exactly one of events and luminosity"
            raise ConfigError(msg)
        if self.n_events is not None and (not integer(self.n_events) or not 1 <= self.n_events <= MAX_EVENTS):
            msg = f"events = {self.n_events!r} is invalid: allowed an integer 1 <= events <= {MAX_EVENTS:.0e}"
            raise ConfigError(msg)
        if self.luminosity_invnb is not None:
            from .processes.base import check_number

            check_number("luminosity_invnb", self.luminosity_invnb, lo=0.0, lo_open=True,
                         allowed="a finite number > 0 [nb^-1] (isrsim.units.parse_luminosity reads "
                                 "'2.93/fb')")
        if not integer(self.seed) or not 0 <= self.seed <= 2**63 - 1:
            msg = f"seed = {self.seed!r} is invalid: allowed an integer 0 <= seed <= {2**63 - 1}"
            raise ConfigError(msg)
        from .config import MAX_CHUNK_SIZE

        if (not integer(self.chunk_size) or not BLOCK_EVENTS <= self.chunk_size <= MAX_CHUNK_SIZE
                or self.chunk_size % BLOCK_EVENTS):
            msg = (f"chunk_size = {self.chunk_size!r} is invalid: allowed a multiple of the block size "
                   f"{BLOCK_EVENTS} in [{BLOCK_EVENTS}, {MAX_CHUNK_SIZE}]")
            raise ConfigError(msg)
        if not integer(self.workers) or not 1 <= self.workers <= 1024:
            msg = f"workers = {self.workers!r} is invalid: allowed an integer 1..1024"
            raise ConfigError(msg)
        if not isinstance(self.compression, str) or self.compression not in _COMPRESSIONS:
            msg = f"compression = {self.compression!r} is invalid: allowed {', '.join(_COMPRESSIONS)}"
            raise ConfigError(msg)
        for name in ("weighted", "progress", "resume"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                msg = f"{name} = {v!r} is invalid: allowed True or False"
                raise ConfigError(msg)
        if self.resume and not self.dataset_mode:
            msg = (f"resume = True with output = {str(self.output)!r}, one .parquet file, which is "
                   "written whole or not at all; allowed: --resume with a dataset directory output "
                   "(a path not ending in .parquet)")
            raise ConfigError(msg)
        if self.luminosity_invnb is not None and self.weighted:
            msg = "luminosity (Poisson pseudo-data) needs unweighted events: allowed weighted = False"
            raise ConfigError(msg)
        if self.detector is not None:
            from .detector.model import DetectorModel

            if not isinstance(self.detector, DetectorModel):
                msg = (f"detector = {self.detector!r} is invalid: allowed None or a DetectorModel "
                       "(isrsim.detector.load_detector('besiii'))")
                raise ConfigError(msg)
            diff = beam_differences(self.beam, self.detector.beam)
            if diff:
                msg = (f"beam = {describe_beam(self.beam)} differs from detector "
                       f"{self.detector.name!r}'s beams ({describe_beam(self.detector.beam)}) in "
                       f"{', '.join(diff)}: allowed beam = detector.beam")
                raise ConfigError(msg)
        if self.conversions is not None and not isinstance(self.conversions, dict):
            msg = f"conversions = {self.conversions!r} is invalid: allowed None or a dict"
            raise ConfigError(msg)
        if not isinstance(self.card, dict):
            msg = f"card = {self.card!r} is invalid: allowed a dict (the run card)"
            raise ConfigError(msg)

    @property
    def dataset_mode(self) -> bool:
        return Path(self.output).suffix.lower() != ".parquet"


#: Largest number of events of one run.
MAX_EVENTS = 10**13
_COMPRESSIONS = ("zstd", "snappy", "lz4", "gzip", "none")
#: Output suffixes that say "one Parquet file" but are not ``.parquet``: refused rather than
#: silently written as a dataset directory of that name.
_PARQUET_LIKE_SUFFIXES = (".pq", ".parq")


def describe_beam(beam: Beam) -> str:
    """One-line description of the beams that :func:`beam_differences` compares."""
    sm, sp = (r * e for r, e in zip(beam.energy_spreads_rel, (beam.e_minus_GeV, beam.e_plus_GeV)))
    return (f"e- {beam.e_minus_GeV:.6g} GeV, e+ {beam.e_plus_GeV:.6g} GeV, crossing half angle "
            f"{beam.crossing_half_angle_rad:.6g} rad, energy spreads {sm:.4g} / {sp:.4g} GeV")


def beam_differences(a: Beam, b: Beam) -> list[str]:
    """What differs between two beams beyond rounding: energies, crossing angle, each beam's
    energy spread (the luminous region is not compared: the primary vertex is drawn at
    simulation). Empty if they are the same beams."""
    out = []
    for name in ("e_minus_GeV", "e_plus_GeV", "crossing_half_angle_rad"):
        if not math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-9, abs_tol=1e-12):
            out.append(name)
    for label, x, y in zip(("e_minus_spread", "e_plus_spread"), a.energy_spreads_rel, b.energy_spreads_rel):
        if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12):
            out.append(label)
    return out


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
    if not tables:  # the one (empty) part of a dataset run with 0 events
        table = _empty_schema(state).empty_table()
    else:
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
def _run_identity(spec: RunSpec) -> dict[str, Any]:
    """What defines a run's events, normalised (defaults applied, the detector by its sha256):
    process and parameters, beams, detector, conversions, seed, events or luminosity, weighting
    and chunk size. Not the card's spelling, the output path, nor how the run executes (workers,
    progress, resume, scheduler, compression), so that ``--resume`` accepts ``-o ds/`` for
    ``-o ds`` or an explicit default ``--chunk-size``. Its hash is the metadata's
    ``run_card_sha256``."""
    det = spec.detector
    params = {k: (v.sha256 if hasattr(v, "sha256") else v) for k, v in spec.params.items()}
    ident = {"process": spec.process, "params": params, "beam": spec.beam.metadata(),
             "detector": None if det is None else det.sha256, "conversions": spec.conversions,
             "seed": int(spec.seed), "events": None if spec.n_events is None else int(spec.n_events),
             "luminosity_invnb": spec.luminosity_invnb, "weighted": bool(spec.weighted),
             "chunk_size": int(spec.chunk_size)}
    return json.loads(json.dumps(ident, sort_keys=True, default=str))


def _short(value: Any, limit: int = 60) -> str:
    r = json.dumps(value, sort_keys=True, default=str)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


#: What ``--resume`` must repeat, in the words of the CLI (for the error message).
_RESUME_FIELDS = ("process and its parameters, the beams (--sqrt-s, [beam]) or --detector, "
                  "[conversions], --events or --luminosity, --seed, --weighted and --chunk-size")


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
        "run_card_sha256": _identity_hash(_run_identity(spec)),
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
    # a dataset needs a part to be readable: with no events, one empty part with every column
    chunks = _Chunks(n_blocks, bpc, n_total, at_least_one=spec.dataset_mode)
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


class _Chunks:
    """The run's chunks ``(first block, blocks, n_total, chunk index)`` in order, made as they
    are iterated: a list of them took memory in proportion to the event count (10^8 tuples,
    ~15 GB, for the largest allowed run at the default chunk size) before any event was made.
    ``skip`` leaves out the chunks of these indices (parts already done when resuming);
    ``at_least_one`` makes a run of no blocks one empty chunk ``(0, 0, 0, 0)``."""

    def __init__(self, n_blocks: int, bpc: int, n_total: int, skip: frozenset[int] = frozenset(),
                 at_least_one: bool = False) -> None:
        self.n_blocks, self.bpc, self.n_total, self.skip = n_blocks, bpc, n_total, skip
        self.at_least_one = at_least_one
        self.n_all = max(-(-n_blocks // bpc), 1 if at_least_one else 0)

    def __len__(self) -> int:
        return self.n_all - sum(1 for i in self.skip if 0 <= i < self.n_all)

    def __iter__(self):
        if self.n_blocks == 0 and self.at_least_one and 0 not in self.skip:
            yield (0, 0, 0, 0)
        for i, b in enumerate(range(0, self.n_blocks, self.bpc)):
            if i not in self.skip:
                yield (b, min(self.bpc, self.n_blocks - b), self.n_total, i)

    def without(self, done: Any) -> _Chunks:
        return _Chunks(self.n_blocks, self.bpc, self.n_total, self.skip | frozenset(done),
                       self.at_least_one)


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


def _execute(spec: RunSpec, state: dict[str, Any], chunks: _Chunks):
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


def _part_intact(path: Path, n_events: Any, run_card_sha256: str) -> bool:
    """True if the dataset part is this run's (its metadata's ``run_card_sha256``), holds the
    number of events its manifest entry says and reads back whole with every page checksum
    verified (one row group at a time); a part that does not is removed (``--resume`` writes
    it again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io import METADATA_KEY

    if not path.is_file():
        return False
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        raw = (pf.metadata.metadata or {}).get(METADATA_KEY)
        ok = (pf.metadata.num_rows == n_events and raw is not None
              and json.loads(raw).get("run_card_sha256") == run_card_sha256)
        for i in range(pf.num_row_groups if ok else 0):
            pf.read_row_group(i)
    except (OSError, ValueError, AttributeError, pa.ArrowException):
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


def _run_dataset(spec: RunSpec, state: dict[str, Any], chunks, base: dict[str, Any], n_total: int,
                 bar: Any, extra: dict[str, Any]) -> RunResult:
    from ._numba import source_digest
    from .io import read_table

    out = spec.output
    manifest_path = out / _MANIFEST
    identity = _run_identity(spec)
    done: dict[int, dict[str, Any]] = {}
    if manifest_path.exists():
        if not spec.resume:
            msg = (f"output = {str(out)!r} already holds a dataset; choose a new path or pass "
                   "--resume to complete an interrupted run")
            raise OutputError(msg)
        try:
            old = json.loads(manifest_path.read_text())
            parts = [p for p in old.get("parts", []) if isinstance(p, dict)]
        except (ValueError, AttributeError, TypeError):
            msg = (f"--resume: {str(manifest_path)!r} is corrupt (not the JSON object isrsim wrote); "
                   "allowed: remove the directory and run again without --resume")
            raise InputFileError(msg) from None
        if old.get("source_sha256") != source_digest():
            msg = (f"--resume: {str(out)!r} was written by another isrsim build (source digest "
                   f"{str(old.get('source_sha256'))[:12]}, this one {source_digest()[:12]}): its parts "
                   "and the missing ones would come from different code; allowed: complete it with "
                   "the build that started it, or run again without --resume into a new path")
            raise InputFileError(msg)
        if old.get("run_card_sha256") != base["run_card_sha256"] or old.get("n_total") != n_total:
            theirs = old.get("run_identity")
            diff = ([f"{k}: there {_short(theirs.get(k))}, here {_short(v)}" for k, v in identity.items()
                     if theirs.get(k) != v] if isinstance(theirs, dict) else [])
            if old.get("n_total") != n_total:
                diff.append(f"events to generate: there {old.get('n_total')}, here {n_total}")
            detail = "; ".join(diff) or "run_card_sha256 differs"
            msg = (f"--resume: {str(out)!r} was written by a different run card or event count "
                   f"({detail}); allowed: the same {_RESUME_FIELDS} as the interrupted run (the "
                   "output path may be spelled differently; --workers and --compression may differ)")
            raise InputFileError(msg)
        # parts listed and intact are kept; a missing, corrupt or truncated one is redone
        done = {p["chunk"]: p for p in parts
                if _part_intact(out / str(p.get("file")), p.get("n_events"), base["run_card_sha256"])}
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".part-*.tmp-*"), *out.glob(f".{_MANIFEST}.tmp-*")]:
        stale.unlink(missing_ok=True)
    state = dict(state, part_dir=str(out), part_meta=base)
    todo = chunks.without(done)
    manifest = {"isrsim_version": __version__, "source_sha256": source_digest(),
                "schema_version": SCHEMA_VERSION,
                "run_card_sha256": base["run_card_sha256"], "run_identity": identity, "n_total": n_total,
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
    for i in sorted(done):
        stats += SampleStats.from_dict(done[i]["stats"])
        n += done[i]["n_events"]
        w = read_table(out / done[i]["file"], columns=["weight"]).column("weight").to_numpy()
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


#: Rows collected before ``simulate_file`` writes a row group (bounded memory, as a chunk).
_SIMULATE_ROWS_PER_GROUP = 100_000


def _truth_file_fields(inp: Any, meta: dict[str, Any]) -> tuple[int, int, str, Beam]:
    """(k_truth, seed_entropy, process, beam) from a truth file's metadata, each checked:
    an InputFileError naming the field for foreign or edited metadata."""
    from .processes import PROCESS_NAMES

    def bad(field: str, allowed: str) -> None:
        msg = (f"{str(inp)!r}: metadata {field} = {_short(meta.get(field))} is invalid: allowed "
               f"{allowed} (files written by isrsim generate, unmodified)")
        raise InputFileError(msg)

    def nonneg_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    entropy = meta.get("seed_entropy")
    if not nonneg_int(entropy) or entropy > 2**63 - 1:
        bad("seed_entropy", f"an integer 0 <= seed_entropy <= {2**63 - 1} (the run's seed)")
    k = meta.get("k_truth", 0)
    if not nonneg_int(k) or k > 1000:
        bad("k_truth", "an integer 0 <= k_truth <= 1000 (truth particles per event)")
    if meta.get("block_events", BLOCK_EVENTS) != BLOCK_EVENTS:
        bad("block_events", f"{BLOCK_EVENTS} (isrsim's block size: one random stream per block)")
    process = meta.get("process")
    if not isinstance(process, str) or process not in PROCESS_NAMES:
        bad("process", ", ".join(PROCESS_NAMES))
    try:
        beam = Beam.from_metadata(meta["beam"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        bad("beam", "the beams isrsim writes (e_minus_GeV, e_plus_GeV, crossing_half_angle_rad, ...)")
    if "sampling" in meta:
        try:
            SampleStats.from_dict(meta["sampling"])
        except (KeyError, TypeError, ValueError, OverflowError):
            bad("sampling", "the sampling statistics isrsim writes (n_trials, sum_w, ...)")
    return (k or 8), entropy, process, beam


def simulate_file(inp: str | os.PathLike[str], detector: Any, output: str | os.PathLike[str], *,
                  compression: str = "lz4", progress: bool = True,
                  allow_other_beams: bool = False) -> RunResult:
    """Run the detector simulation on a generator-level file, block by block.

    Uses the same per-block streams (``spawn_key=(1, j)``) as simulation in the generation pass,
    on whole blocks (rows of a block split over row groups or dataset parts are collected
    first), so ``generate`` + ``simulate`` gives the same events as ``generate --detector``
    whatever the input's row-group layout. ``event_id`` must increase strictly (each block is
    then contiguous); the file's beams must be the detector's (energies, crossing angle,
    energy spreads) unless ``allow_other_beams`` (recorded in the output metadata): the events
    would otherwise be in another frame than the detector's beams and luminous region assume.
    """
    import pyarrow as pa

    from .io import (
        EventWriter,
        check_distinct_paths,
        check_file_output,
        chunk_to_table,
        iter_tables,
        read_metadata,
        schema_guard,
        table_to_truth,
    )

    t0 = time.perf_counter()
    check_file_output(output)
    check_distinct_paths([inp], [output])
    meta = read_metadata(inp)
    if meta.get("kind") == "candidates":
        msg = (f"input = {str(inp)!r} is a candidate table (isrsim reconstruct), not an event file; "
               "allowed: a generator-level event file (isrsim generate without --detector)")
        raise InputFileError(msg)
    if meta.get("detector"):
        det_meta = meta["detector"]
        name = det_meta.get("name") if isinstance(det_meta, dict) else det_meta
        msg = f"input = {str(inp)!r} was already simulated with detector {name!r}"
        raise InputFileError(msg)
    if not isinstance(allow_other_beams, bool):
        msg = f"allow_other_beams = {allow_other_beams!r} is invalid: allowed True or False"
        raise ConfigError(msg)
    k, entropy, process, file_beam = _truth_file_fields(inp, meta)
    diff = beam_differences(file_beam, detector.beam)
    det_info = {"name": detector.name, "sha256": detector.sha256, "path": str(detector.path)}
    new_meta = dict(meta, detector=det_info, simulated_from=str(inp))
    if diff and not allow_other_beams:
        msg = (f"input = {str(inp)!r} was generated with other beams than detector "
               f"{detector.name!r} has ({', '.join(diff)} differ): file {describe_beam(file_beam)}; "
               f"detector {describe_beam(detector.beam)}; allowed: a file generated with the "
               f"detector's beams (`isrsim generate --beams-from {detector.name}` for truth only, "
               f"`isrsim generate --detector {detector.name}` simulates in the same pass), or "
               "--allow-other-beams to simulate these events in their own frame")
        raise InputFileError(msg)
    if diff:
        # the events keep the file's beams; the primary vertex is the detector's luminous region
        new_meta["beam"] = dict(meta["beam"], sigma_xyz_cm=[float(v) for v in detector.beam.sigma_xyz_cm])
        new_meta["allow_other_beams"] = {"detector_beam": detector.beam.metadata(), "differ": diff}
    else:
        new_meta["beam"] = detector.beam.metadata()
    from .detector.simulate import simulate

    def simulate_block(pieces: list[Any], block: int) -> Any:
        with schema_guard(inp):
            sub = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
            ids = sub.column("event_id").to_numpy()
            truth = table_to_truth(sub, k)
        rng1 = block_rng(entropy, 1, block)
        apply_primary_vertex(truth, detector.beam, rng1)
        reco = simulate(truth, detector, rng1)
        out = chunk_to_table(truth, int(ids[0]), process, reco)
        if int(ids[-1]) - int(ids[0]) + 1 != ids.size:  # ids with gaps (rows removed, n_events updated)
            out = out.set_column(0, out.schema.field(0), pa.array(ids, pa.int64()))
        return out

    n = 0
    empty = None
    last_id = -1
    pending: list[Any] = []      # rows of the block being collected (may continue in the next row group)
    pending_block = -1
    ready: list[Any] = []        # simulated blocks not yet written
    with _interrupt.handling(), EventWriter(output, compression=compression) as writer:

        def flush(force: bool = False) -> None:
            nonlocal ready, n
            rows = sum(t.num_rows for t in ready)
            if ready and (force or rows >= _SIMULATE_ROWS_PER_GROUP):
                writer.write(pa.concat_tables(ready) if len(ready) > 1 else ready[0])
                n += rows
                ready = []

        for table in iter_tables(inp):
            with schema_guard(inp):
                ids = table.column("event_id").to_numpy()
            if ids.size == 0:
                empty = table
                continue
            if not np.issubdtype(ids.dtype, np.integer):
                msg = (f"{str(inp)!r}: column event_id has type {ids.dtype}; allowed: int64 event ids "
                       "(files written by isrsim generate, unmodified)")
                raise InputFileError(msg)
            steps = np.diff(ids)
            if int(ids[0]) <= last_id or np.any(steps <= 0):
                i = 0 if int(ids[0]) <= last_id else int(np.argmax(steps <= 0)) + 1
                before = last_id if i == 0 else int(ids[i - 1])
                msg = (f"{str(inp)!r}: column event_id is not strictly increasing (event_id {int(ids[i])} "
                       f"follows {before}); allowed: the event order isrsim wrote (each block of "
                       f"{BLOCK_EVENTS} events has its own random stream, fixed by event_id)")
                raise InputFileError(msg)
            if int(ids[0]) < 0:
                msg = f"{str(inp)!r}: column event_id has negative values ({int(ids[0])}); allowed: ids >= 0"
                raise InputFileError(msg)
            last_id = int(ids[-1])
            blocks = ids // BLOCK_EVENTS
            cuts = [0, *(np.flatnonzero(np.diff(blocks)) + 1).tolist(), ids.size]
            for a, b in zip(cuts[:-1], cuts[1:]):
                block = int(blocks[a])
                if block != pending_block and pending:
                    ready.append(simulate_block(pending, pending_block))
                    pending = []
                    flush()
                    _interrupt.check()
                pending_block = block
                pending.append(table.slice(a, b - a))
            _interrupt.check()
        if pending:
            ready.append(simulate_block(pending, pending_block))
        flush(force=True)
        empty_schema = None
        if n == 0:  # a 0-event input: the output still has every column (of an empty block)
            with schema_guard(inp):
                truth = table_to_truth(empty, k) if empty is not None else TruthChunk.empty(0, k)
            reco = simulate(truth, detector, block_rng(0, 1, 0))  # no draws for 0 events
            empty_schema = chunk_to_table(truth, 0, process, reco).schema
        n_meta = meta.get("n_events")
        if n_meta is not None and n != n_meta:
            # the output's weights (sigma / n_events) and its equivalent luminosity, sum_weights
            # (copied from the input) would describe different event counts
            msg = (f"input = {str(inp)!r} holds {n} events but its metadata says n_events = "
                   f"{n_meta}; allowed: files written by isrsim generate, unmodified")
            raise InputFileError(msg)
        new_meta["n_events"] = n
        writer.close(new_meta, empty_schema=empty_schema)
    stats = SampleStats.from_dict(meta["sampling"]) if "sampling" in meta else SampleStats()
    return RunResult(Path(output), n, stats, new_meta, time.perf_counter() - t0)
