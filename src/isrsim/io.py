"""Parquet I/O: the event schema, atomic writers and readers.

Event schema (one row per event; everything lab frame, GeV / cm):

* ``event_id`` int64, ``process`` string (dictionary-encoded), ``weight`` float64
  (nb per event for weighted runs, 1 for unweighted runs: the cross section is in the metadata);
* ``truth``: list of {pdg int32, px, py, pz, E, vx, vy, vz float64, parent int16};
* ``gen``: struct of process-specific event-level truth (float64), e.g. ``x_cms``, ``m_true``;
* after detector simulation, ``tracks``: list of {charge int8, d0, phi0, omega, z0, tanl float64,
  cov (list of 15 float64: upper triangle of the 5x5 helix covariance, row-major), truth int16,
  plus PID fields} and ``photons``: list of {E, theta, phi float64, truth int16, ...}.

Run metadata (JSON under the key ``isrsim`` of the Parquet key-value metadata): isrsim and schema
version, run card, process configuration, beam, detector name and sha256, seed entropy, block size,
events, cross section and MC error, sum of weights and of squared weights, equivalent luminosity.

A dataset is either one file or a directory of ``part-NNNNN.parquet`` files with a
``_manifest.json`` listing the complete parts (Dask and resumable runs).

Event tables are written by :mod:`isrsim.parquet_writer` (standard Parquet, ~2x faster than
pyarrow's writer on this schema); every file is read with pyarrow, page checksums verified.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import SCHEMA_VERSION
from .events import RecoChunk, TruthChunk
from .exceptions import ConfigError, InputFileError, OutputError
from .parquet_writer import ParquetTableWriter, unsupported

__all__ = [
    "METADATA_KEY",
    "EventWriter",
    "chunk_to_table",
    "content_hash",
    "read_events",
    "read_metadata",
    "table_to_truth",
    "write_table_atomic",
]

METADATA_KEY = b"isrsim"
_MANIFEST = "_manifest.json"


# ---------------------------------------------------------------------------------------
# flat kernel arrays -> Arrow
# ---------------------------------------------------------------------------------------
def _gather_kernel():
    """Compiled on first use (keeps ``import isrsim.io`` light)."""
    from ._numba import kernel

    @kernel
    def gather(counts, src, out):
        # slots [i, :counts[i]] of a (possibly strided) [n, k, m] array -> out[c, j] for the j-th
        # written slot and component c: out is [m, total] (one row per field, e.g. px, py, pz, E
        # of p4 in one pass) or the transposed view of a [total, m] array (rows, e.g. cov[15]).
        # Returns the number of non-finite values copied (v - v is 0 for every finite value
        # and for integers, NaN for NaN and +-inf), so the writer's NaN check costs no extra pass.
        j = 0
        bad = 0
        for i in range(src.shape[0]):
            for s in range(counts[i]):
                for c in range(src.shape[2]):
                    v = src[i, s, c]
                    out[c, j] = v
                    if v - v != 0:
                        bad += 1
                j += 1
        return bad

    return gather


_GATHER: list = []


def _run_gather(counts: np.ndarray, src: np.ndarray, out: np.ndarray) -> int:
    if not _GATHER:
        _GATHER.append(_gather_kernel())
    return int(_GATHER[0](counts, src, out))


def _gather(counts: np.ndarray, arr: np.ndarray, total: int) -> tuple[np.ndarray, int]:
    """Contiguous copy of the valid slots of ``arr`` ([n, k] or [n, k, m]) in one pass, and the
    number of non-finite values among them."""
    src = arr if arr.ndim == 3 else arr[:, :, None]
    out = np.empty((total, src.shape[2]), dtype=arr.dtype)
    bad = _run_gather(counts, src, out.T)
    return (out if arr.ndim == 3 else out[:, 0]), bad


def _gather_split(counts: np.ndarray, arr: np.ndarray, total: int) -> tuple[np.ndarray, int]:
    """The valid slots of ``arr`` [n, k, m] as m contiguous rows [m, total], in one pass, and
    the number of non-finite values among them."""
    out = np.empty((arr.shape[2], total), dtype=arr.dtype)
    return out, _run_gather(counts, arr, out)


def _field(name: str, arr: pa.Array) -> pa.Field:
    return pa.field(name, arr.type, nullable=False)


#: one entry of a list<struct> column: a field name with an [n, k] array (or [n, k, m]: a
#: fixed-size list per object, e.g. cov[15]), or a tuple of m names with an [n, k, m] array
#: whose last axis is split into m fields (e.g. px, py, pz, E of p4)
Columns = list[tuple[str | tuple[str, ...], np.ndarray]]


#: how the writer's error message names non-finite values of a list<struct> entry
_LABELS = {("truth", ("px", "py", "pz", "E")): "truth momenta",
           ("truth", ("vx", "vy", "vz")): "truth vertices",
           ("tracks", ("d0", "phi0", "omega", "z0", "tanl")): "track helices",
           ("tracks", "cov"): "track covariances", ("photons", ("E", "theta", "phi")): "photons"}


def _list_of_struct(counts: np.ndarray, columns: Columns, prefix: str, bad: list[str]) -> pa.Array:
    """Jagged, non-nullable list<struct> from [n, k, ...] slot arrays and per-event counts; the
    labels of entries with non-finite values (in written slots) are appended to ``bad``.

    Non-nullable types spare Parquet the definition levels (~30 % faster writes)."""
    counts = counts.astype(np.int32, copy=False)
    offsets = np.zeros(counts.shape[0] + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    names: list[str] = []
    children: list[pa.Array] = []
    for name, arr in columns:
        if isinstance(name, tuple):  # split the last axis into len(name) fields
            rows, n_bad = _gather_split(counts, arr, total)
            names.extend(name)
            children.extend(pa.array(r) for r in rows)
        else:
            flat, n_bad = _gather(counts, arr, total)
            if arr.ndim == 3:  # fixed-size vector per object (e.g. cov[15])
                value_field = pa.field("item", pa.from_numpy_dtype(flat.dtype), nullable=False)
                children.append(pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.ravel()), type=pa.list_(value_field, arr.shape[2])))
            else:
                children.append(pa.array(flat))
            names.append(name)
        if n_bad:
            bad.append(_LABELS.get((prefix, name), f"{prefix}.{name}"))
    struct = pa.StructArray.from_arrays(children, fields=[_field(n, c) for n, c in zip(names, children)])
    list_type = pa.list_(pa.field("item", struct.type, nullable=False))
    return pa.ListArray.from_arrays(pa.array(offsets), struct, type=list_type)


def chunk_to_table(truth: TruthChunk, event_id_start: int, process: str,
                   reco: RecoChunk | None = None) -> pa.Table:
    """Convert one chunk to an Arrow table with the isrsim event schema."""
    n = truth.n
    bad = _check_event_level(truth)
    cols: dict[str, pa.Array] = {
        "event_id": pa.array(np.arange(event_id_start, event_id_start + n, dtype=np.int64)),
        "process": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([process])),
        "weight": pa.array(truth.weight),
    }
    cols["truth"] = _list_of_struct(truth.npart, [
        ("pdg", truth.pdg), (("px", "py", "pz", "E"), truth.p4), (("vx", "vy", "vz"), truth.vtx),
        ("parent", truth.parent)], "truth", bad)
    if truth.extra:
        gen = [pa.array(v) for v in truth.extra.values()]
        cols["gen"] = pa.StructArray.from_arrays(gen, fields=[_field(n, c) for n, c in zip(truth.extra, gen)])
    if reco is not None:
        tcols: Columns = [("charge", reco.charge), (("d0", "phi0", "omega", "z0", "tanl"), reco.helix),
                          ("cov", reco.cov), ("truth", reco.trk_truth), *reco.track_extra.items()]
        cols["tracks"] = _list_of_struct(reco.ntrk, tcols, "tracks", bad)
        pcols: Columns = [(("E", "theta", "phi"), reco.phot), ("truth", reco.phot_truth),
                          *reco.photon_extra.items()]
        cols["photons"] = _list_of_struct(reco.nphot, pcols, "photons", bad)
    if bad:
        msg = f"internal error: non-finite values in {', '.join(bad)}; nothing was written"
        raise RuntimeError(msg)
    return pa.table(cols, schema=pa.schema([_field(name, col) for name, col in cols.items()]))


def table_to_truth(table: pa.Table, k: int) -> TruthChunk:
    """Inverse of :func:`chunk_to_table` for the truth part (arrays [n, k'] with k' = max(k, longest
    truth list))."""
    n = table.num_rows
    truth_col = table.column("truth").combine_chunks()
    counts = truth_col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int16)
    k = max(k, int(counts.max(initial=0)))  # e.g. conversions appended pairs
    flat = truth_col.flatten()
    out = TruthChunk.empty(n, k)
    out.npart[:] = counts
    mask = np.arange(k)[None, :] < counts[:, None]

    def col(name: str) -> np.ndarray:
        return flat.field(name).to_numpy(zero_copy_only=False)

    out.pdg[mask] = col("pdg")
    out.parent[mask] = col("parent")
    for i, name in enumerate(("px", "py", "pz", "E")):
        out.p4[..., i][mask] = col(name)
    for i, name in enumerate(("vx", "vy", "vz")):
        out.vtx[..., i][mask] = col(name)
    out.weight[:] = table.column("weight").to_numpy()
    if not np.all(np.isfinite(out.weight)):
        msg = "column 'weight' has non-finite values; allowed: finite event weights"
        raise ValueError(msg)
    if "gen" in table.column_names:
        gen = table.column("gen").combine_chunks()
        for field, child in zip(gen.type, gen.flatten()):
            out.extra[field.name] = child.to_numpy(zero_copy_only=False).astype(np.float64)
    return out


def _check_event_level(truth: TruthChunk) -> list[str]:
    """Labels of the event-level fields with NaN/inf values or negative weights (the particle
    lists are checked while they are gathered, :func:`_list_of_struct`)."""
    bad = []
    w = truth.weight
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        bad.append("weights (must be finite and >= 0)")
    bad.extend(f"gen.{key}" for key, v in truth.extra.items() if not np.all(np.isfinite(v)))
    return bad


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    """The temporary file an output is written to before its atomic rename; temporaries of the
    same output left by a killed process (SIGKILL, power loss: no clean-up ran) are removed."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def schema_guard(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failure to read isrsim's event columns from ``path`` (a column missing, renamed
    or of another type in a file that carries isrsim metadata) into an InputFileError naming
    the file. Only around the conversion of input columns, where such errors mean bad input."""
    try:
        yield
    except (KeyError, AttributeError, TypeError, ValueError, IndexError, pa.ArrowException) as exc:
        msg = (f"{str(path)!r}: its columns are not isrsim's event schema ({type(exc).__name__}: "
               f"{exc}); allowed: files written by isrsim generate / simulate, unmodified")
        raise InputFileError(msg) from None


def check_distinct_paths(inputs: Iterable[str | os.PathLike[str]],
                         outputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """ConfigError if an input is given twice (its events would count twice) or an output is
    also an input (it would replace the data it is made from)."""
    seen: dict[Path, str] = {}
    for inp in inputs:
        key = Path(inp).resolve()
        if key in seen:
            msg = (f"input {str(inp)!r} is given twice (also as {seen[key]!r}); allowed: each file or "
                   "dataset once")
            raise ConfigError(msg)
        seen[key] = str(inp)
    for out in outputs:
        if out is None:
            continue
        key = Path(out).resolve()
        if key in seen:
            msg = f"output = {str(out)!r} is also an input; allowed: a new path"
            raise ConfigError(msg)
        inside = [s for k, s in seen.items() if k.is_dir() and key.is_relative_to(k)]
        if inside:
            msg = (f"output = {str(out)!r} lies inside the input dataset {inside[0]!r} (it would "
                   "replace or add to its parts); allowed: a path outside every input")
            raise ConfigError(msg)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early (OutputError) if ``path`` cannot be created; returns it as a Path."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path()
    if not parent.is_dir():
        msg = f"output = {str(p)!r}: directory {str(parent)!r} does not exist"
        raise OutputError(msg)
    if not os.access(parent, os.W_OK | os.X_OK):
        msg = f"output = {str(p)!r}: directory {str(parent)!r} is not writable"
        raise OutputError(msg)
    try:  # a real probe: read-only file systems, ACLs and quotas are invisible to os.access
        fd, probe = tempfile.mkstemp(prefix=".isrsim-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        msg = f"output = {str(p)!r}: directory {str(parent)!r} is not writable ({exc.strerror or exc})"
        raise OutputError(msg) from None
    if p.is_dir() and p.suffix.lower() == ".parquet":
        msg = (f"output = {str(p)!r} is a directory: allowed a .parquet file path (or a dataset "
               "directory name)")
        raise OutputError(msg)
    if p.is_dir() and not (p / _MANIFEST).exists() and any(p.iterdir()):
        msg = f"output = {str(p)!r} is a non-empty directory that is not an isrsim dataset"
        raise OutputError(msg)
    return p


def check_file_output(path: str | os.PathLike[str]) -> Path:
    """:func:`check_writable` for a command that writes one Parquet file (``simulate``,
    ``reconstruct``): the path must end in ``.parquet`` and must not be an existing directory."""
    p = check_writable(path)
    if p.is_dir():
        msg = (f"output = {str(p)!r} is a directory: allowed a .parquet file path (this command "
               "writes one file)")
        raise OutputError(msg)
    if p.suffix.lower() != ".parquet":
        msg = (f"output = {str(p)!r} is invalid: allowed a path ending in .parquet (this command "
               "writes one file)")
        raise OutputError(msg)
    return p


class EventWriter:
    """Streams row groups into ``path`` atomically: a hidden temporary file is written,
    fsync'ed and renamed on :meth:`close`; :meth:`abort` (or an exception inside a ``with``
    block) removes it, so a failed or interrupted run never leaves a file that looks complete.
    Data pages carry CRC32 checksums, verified by the readers of this module.

    Event tables (non-nullable, at most two lists deep) are written by isrsim's own
    :class:`~isrsim.parquet_writer.ParquetTableWriter` (~2x faster than pyarrow's writer for
    this schema, same file content); any other table, or ``lean=False``, goes through
    ``pyarrow.parquet.ParquetWriter``.
    """

    def __init__(self, path: str | os.PathLike[str], *, compression: str = "lz4",
                 compression_level: int | None = 1, lean: bool = True) -> None:
        self.path = check_writable(path)
        if self.path.is_dir():  # the final rename would fail after all the work
            msg = f"output = {str(self.path)!r} is a directory: allowed a file path"
            raise OutputError(msg)
        self.tmp = _tmp_name(self.path)
        self.compression = compression
        self.compression_level = compression_level if compression == "zstd" else None
        self.lean = lean
        self._writer: pq.ParquetWriter | ParquetTableWriter | None = None
        self._fh: Any = None
        self.n_rows = 0

    def _open(self, schema: pa.Schema) -> None:
        if self.lean and unsupported(schema) is None:
            self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
            self._writer = ParquetTableWriter(self._fh, schema, compression=self.compression,
                                              compression_level=self.compression_level)
        else:
            self._writer = pq.ParquetWriter(
                self.tmp, schema, compression=self.compression,
                compression_level=self.compression_level, use_dictionary=["process"],
                write_statistics=["event_id"], write_page_checksum=True,
            )

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._open(table.schema)
        if isinstance(self._writer, ParquetTableWriter):
            self._writer.write(table)
        else:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.n_rows += table.num_rows

    def close(self, metadata: dict[str, Any], *, empty_schema: pa.Schema | None = None) -> Path:
        if self._writer is None:
            self._open(empty_schema or pa.schema([pa.field("event_id", pa.int64(), nullable=False)]))
        meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
        if isinstance(self._writer, ParquetTableWriter):
            self._writer.close(meta)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        else:
            self._writer.add_key_value_metadata(meta)
            self._writer.close()
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        try:
            if self._fh is not None:
                self._fh.close()
            elif self._writer is not None:
                self._writer.close()
        except Exception:  # noqa: BLE001 - best effort clean-up of a failed run
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type: Any, *args: Any) -> None:
        if exc_type is not None:
            self.abort()


def write_table_atomic(table: pa.Table, path: str | os.PathLike[str], metadata: dict[str, Any],
                       *, compression: str = "lz4") -> Path:
    """Write one Arrow table (e.g. a candidate table) atomically with isrsim metadata."""
    with EventWriter(path, compression=compression) as w:
        if table.num_rows:  # an empty table: the schema and no row group
            w.write(table)
        return w.close(metadata, empty_schema=table.schema)


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _parts(path: Path) -> list[Path]:
    if path.is_dir():
        manifest = path / _MANIFEST
        if not manifest.exists():
            msg = f"{str(path)!r} is a directory without {_MANIFEST}: not an isrsim dataset"
            raise InputFileError(msg)
        info = _read_manifest(manifest)
        parts = info.get("parts", [])
        if not info.get("complete", False):
            n_done = len(parts) if isinstance(parts, list) else "?"
            msg = (f"dataset {str(path)!r} is incomplete ({n_done} of "
                   f"{info.get('n_parts', '?')} parts); finish it with --resume")
            raise InputFileError(msg)
        try:
            files = [path / str(p["file"]) for p in parts]
        except (KeyError, TypeError) as exc:
            msg = f"{str(manifest)!r} is corrupt (bad parts list: {exc!r})"
            raise InputFileError(msg) from None
        if not files:
            msg = f"dataset {str(path)!r} lists no parts"
            raise InputFileError(msg)
        _check_part_list(manifest, info)
        return files
    if not path.exists():
        msg = f"input file {str(path)!r} does not exist"
        raise InputFileError(msg)
    return [path]


def _read_manifest(manifest: Path) -> dict[str, Any]:
    """A dataset's manifest: the JSON object isrsim wrote (InputFileError otherwise)."""
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        msg = f"{str(manifest)!r} is corrupt ({exc})"
        raise InputFileError(msg) from None
    if not isinstance(info, dict):
        msg = (f"{str(manifest)!r} is corrupt (a JSON {type(info).__name__}, not the object isrsim "
               "writes); allowed: the manifest isrsim wrote")
        raise InputFileError(msg)
    return info


def _check_part_list(manifest: Path, info: dict[str, Any]) -> None:
    """A complete manifest lists each part once: chunks 0 .. n_parts - 1, no duplicate, none
    missing, and their events add up to the dataset's ``n_events`` (a part listed twice or
    dropped would silently duplicate or lose events)."""
    parts = info["parts"]
    n_parts = info.get("n_parts")
    chunks = [p.get("chunk") for p in parts]
    if not isinstance(n_parts, int) or isinstance(n_parts, bool) or len(parts) != n_parts:
        msg = (f"{str(manifest)!r} is corrupt: it lists {len(parts)} parts but n_parts = {n_parts!r}; "
               "allowed: the manifest isrsim wrote (each part once)")
        raise InputFileError(msg)
    if sorted(c if isinstance(c, int) else -1 for c in chunks) != list(range(n_parts)):
        dup = sorted({c for c in chunks if chunks.count(c) > 1}, key=str)
        what = f"chunk(s) {dup} listed twice" if dup else f"chunks {chunks} are not 0..{n_parts - 1}"
        msg = f"{str(manifest)!r} is corrupt: {what}; allowed: the manifest isrsim wrote (each part once)"
        raise InputFileError(msg)
    n_listed = [p.get("n_events") for p in parts]
    meta = info.get("metadata")
    total = meta.get("n_events") if isinstance(meta, dict) else None
    if (total is not None and all(isinstance(x, int) for x in n_listed)
            and sum(n_listed) != total):
        msg = (f"{str(manifest)!r} is corrupt: its parts hold {sum(n_listed)} events but the dataset's "
               f"n_events = {total!r}; allowed: the manifest isrsim wrote (each part once)")
        raise InputFileError(msg)


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (or ``columns`` of it) with every page checksum verified;
    InputFileError naming the file if it is corrupt or truncated."""
    pf = _open(Path(path))
    try:
        return pf.read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        msg = f"{str(path)!r} is not a readable Parquet file (corrupt or truncated: {exc})"
        raise InputFileError(msg) from None


def _open(path: Path) -> pq.ParquetFile:
    try:
        # page CRCs (written by EventWriter) turn silent bit rot into a clear error
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        msg = f"{str(path)!r} is not a readable Parquet file (corrupt or truncated: {exc})"
        raise InputFileError(msg) from None


def read_metadata(path: str | os.PathLike[str], *, require_process: str | tuple[str, ...] | None = None
                  ) -> dict[str, Any]:
    """The isrsim run metadata of a file or dataset, validated (schema version, process)."""
    p = Path(path)
    parts = _parts(p)
    pf = _open(parts[0])
    kv = pf.metadata.metadata or {}
    if METADATA_KEY not in kv:
        msg = f"{str(parts[0])!r} has no isrsim metadata: not written by isrsim"
        raise InputFileError(msg)
    try:
        meta = json.loads(kv[METADATA_KEY])
    except ValueError as exc:
        msg = f"{str(parts[0])!r}: isrsim metadata is corrupt ({exc})"
        raise InputFileError(msg) from None
    if p.is_dir():
        manifest = _read_manifest(p / _MANIFEST)
        meta = manifest.get("metadata", meta)
        # every listed part must open (footer intact), hold the rows the manifest says and come
        # from the same run (a part copied in from another run or seed is not silently mixed in)
        card_sha = manifest.get("run_card_sha256")
        for info, part in zip(manifest["parts"], parts):
            fmd = (pf if part == parts[0] else _open(part)).metadata
            n_rows = fmd.num_rows
            if "n_events" in info and n_rows != info["n_events"]:
                msg = (f"{str(part)!r} holds {n_rows} events but the manifest lists "
                       f"{info['n_events']}: the dataset is corrupt")
                raise InputFileError(msg)
            try:
                part_meta = json.loads((fmd.metadata or {}).get(METADATA_KEY, b"{}"))
                part_sha = part_meta.get("run_card_sha256")
            except (ValueError, AttributeError):
                part_sha = None
            if card_sha is not None and part_sha != card_sha:
                msg = (f"{str(part)!r} was written by another run (run_card_sha256 "
                       f"{str(part_sha)[:12]}... instead of the manifest's {card_sha[:12]}...): the "
                       "dataset is mixed")
                raise InputFileError(msg)
    if not isinstance(meta, dict):
        msg = f"{str(parts[0])!r}: isrsim metadata is corrupt (not a JSON object)"
        raise InputFileError(msg)
    try:
        file_major = int(str(meta.get("schema_version", "0")).split(".")[0])
    except ValueError:
        msg = (f"{str(path)!r}: schema_version = {meta.get('schema_version')!r} is invalid: "
               f"allowed MAJOR.MINOR with MAJOR <= {SCHEMA_VERSION.split('.')[0]}")
        raise InputFileError(msg) from None
    if file_major > int(SCHEMA_VERSION.split(".")[0]):
        msg = (f"{str(path)!r} has event schema {meta.get('schema_version')}, newer than this "
               f"isrsim's {SCHEMA_VERSION}: upgrade isrsim to read it")
        raise InputFileError(msg)
    if require_process is not None:
        wanted = (require_process,) if isinstance(require_process, str) else require_process
        if meta.get("process") not in wanted:
            msg = (f"{str(path)!r} holds process {meta.get('process')!r}; required: "
                   f"{', '.join(wanted)}")
            raise InputFileError(msg)
    return meta


def iter_tables(path: str | os.PathLike[str], columns: list[str] | None = None) -> Iterable[pa.Table]:
    """Row groups of a file or dataset, in order, as Arrow tables (bounded memory); a file
    without row groups (0 events) gives one empty table with its columns."""
    for part in _parts(Path(path)):
        pf = _open(part)
        if pf.num_row_groups == 0:
            empty = pf.schema_arrow.empty_table()
            yield empty.select(columns) if columns is not None else empty
        for i in range(pf.num_row_groups):
            try:
                yield pf.read_row_group(i, columns=columns)
            except (OSError, pa.ArrowException) as exc:
                msg = f"{str(part)!r}: row group {i} is unreadable (corrupt or truncated: {exc})"
                raise InputFileError(msg) from None


def read_events(path: str | os.PathLike[str], *, columns: list[str] | None = None,
                require_process: str | tuple[str, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """Read a file or dataset as an awkward Array plus its run metadata.

    ``truth`` records are named ``Momentum4D``: after ``vector.register_awkward()`` they behave
    as Lorentz vectors (``events.truth.mass``, sums of particles, boosts).
    """
    import awkward as ak

    meta = read_metadata(path, require_process=require_process)
    tables = list(iter_tables(path, columns))
    table = pa.concat_tables(tables) if tables else pa.table({})
    events = ak.from_arrow(table)
    if "truth" in events.fields:
        events = ak.with_field(events, ak.with_name(events.truth, "Momentum4D"), "truth")
    return events, meta


def _leaves(arr: pa.Array, path: str, out: dict[str, list[np.ndarray]]) -> None:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_struct(arr.type):
        for field, child in zip(arr.type, arr.flatten()):
            _leaves(child, f"{path}.{field.name}", out)
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        out.setdefault(path + "#len", []).append(arr.value_lengths().to_numpy(zero_copy_only=False))
        _leaves(arr.flatten(), path + "[]", out)
    elif pa.types.is_fixed_size_list(arr.type):
        _leaves(arr.flatten(), path + "[]", out)
    elif pa.types.is_string(arr.type):
        out.setdefault(path, []).append(np.array(arr.to_pylist(), dtype=object).astype(str))
    else:
        out.setdefault(path, []).append(arr.to_numpy(zero_copy_only=False))


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the event content (every leaf column, every row, in order), independent of
    row-group layout, compression and metadata: two runs are identical iff their hashes agree."""
    import hashlib

    hashers: dict[str, Any] = {}
    for table in iter_tables(path):
        for batch in table.to_batches():
            leaves: dict[str, list[np.ndarray]] = {}
            for name, col in zip(batch.schema.names, batch.columns):
                _leaves(col, name, leaves)
            for key, arrays in leaves.items():
                h = hashers.setdefault(key, hashlib.sha256())
                for a in arrays:
                    h.update(np.ascontiguousarray(a).tobytes() if a.dtype != object else
                             "\x00".join(a).encode())
    total = hashlib.sha256()
    for key in sorted(hashers):
        total.update(key.encode() + hashers[key].digest())
    return total.hexdigest()
