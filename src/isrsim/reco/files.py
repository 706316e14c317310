"""File-level reconstruction: simulated event files -> one flat candidate table.

:func:`reconstruct_files` is what ``isrsim reconstruct IN... --selection S -o CANDS.parquet``
runs. Every input (a ``.parquet`` file or a dataset directory written by ``isrsim generate
--detector`` / ``isrsim simulate``) is read row group by row group (bounded memory), the
Arrow ``tracks``/``photons`` lists are turned back into the flat kernel arrays
(:func:`table_to_reco`, the inverse of :func:`isrsim.io.chunk_to_table`), the selection runs
on each chunk (:func:`isrsim.reco.selection.reconstruct_chunk`) and the candidates are
streamed into one atomically written Parquet file (:class:`isrsim.io.EventWriter`: nothing
is left behind if anything fails).

Candidate table = the columns of :data:`isrsim.reco.selection.COLUMNS` plus

* ``process`` (string): the generator process of the input the candidate comes from;
* ``input`` (int16): index of that input in the metadata list ``inputs``;
* ``weight_nb`` (float64): the candidate's cross-section weight [nb], so that the expected
  number of candidates in a luminosity ``L`` [nb^-1] is ``L * sum(weight_nb)``. Unweighted
  runs: ``sigma / N`` (cross section and event count of the input; several inputs of the
  same process and generator configuration are one sample, ``sigma / sum N``; the same
  process with other configurations, e.g. another mass window, is a separate sample with its
  own ``sigma / N``); weighted runs: the event weight itself (already nb per event,
  runner.py), divided among the inputs of a sample.

Run metadata (``isrsim.io.read_metadata``): ``kind = "candidates"``, ``selection``, the cuts,
``detector`` (name, sha256, path), ``beam`` (the lab beam the fit used, with the sqrt(s)
spread whose beam covariance the fits took), ``inputs`` (per input: path, process,
process_config, n_events, cross_section_nb and its error, luminosity_invnb,
equivalent_luminosity_invnb, weighted, sum_weights, sum_weights2,
seed_entropy, n_candidates per channel, ``sample``), ``processes`` (the same per sample,
keyed by the process name, or ``process[k]`` when a process comes with k = 0, 1, ... different
configurations; with ``process`` and ``process_config``) and, when all inputs are one sample,
the input fields ``process``,
``n_events``, ``cross_section_nb``, ``cross_section_err_nb``, ``luminosity_invnb``,
``equivalent_luminosity_invnb`` at top level, as in an event file.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import SCHEMA_VERSION, __version__
from ..beam import Beam
from ..events import RecoChunk
from ..exceptions import ConfigError, InputFileError
from .selection import COLUMNS, SELECTIONS, check_cuts, reconstruct_chunk

__all__ = ["CANDIDATE_SCHEMA", "reconstruct_files", "table_to_reco"]

_TRACK_CORE = ("charge", "d0", "phi0", "omega", "z0", "tanl", "cov", "truth")
_PHOTON_CORE = ("E", "theta", "phi", "truth")


def _arrow_type(dtype: Any) -> pa.DataType:
    if dtype is object:
        return pa.string()
    return pa.from_numpy_dtype(np.dtype(dtype))


#: Arrow schema of the candidate table (selection columns + process, input, weight_nb).
CANDIDATE_SCHEMA = pa.schema(
    [(name, _arrow_type(dt)) for name, dt in COLUMNS.items()]
    + [("process", pa.string()), ("input", pa.int16()), ("weight_nb", pa.float64())]
)


# ---------------------------------------------------------------------------------------
# Arrow -> flat arrays
# ---------------------------------------------------------------------------------------
def _lengths(col: pa.Array) -> np.ndarray:
    return col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def _struct_children(lst: pa.Array, what: str) -> dict[str, pa.Array]:
    flat = lst.flatten()  # honours the list offsets of a sliced array
    if not pa.types.is_struct(flat.type):
        msg = f"{what} list holds {flat.type}, not records: wrong schema (not written by isrsim)"
        raise InputFileError(msg)
    return {f.name: child for f, child in zip(flat.type, flat.flatten())}


def _values(idx: np.ndarray, child: pa.Array, name: str) -> np.ndarray:
    """The flat values of one list field, checked against the number of objects."""
    values = child.to_numpy(zero_copy_only=False)
    if values.shape[0] != idx.size:
        msg = f"field {name!r} has {values.shape[0]} entries for {idx.size} objects: corrupt file"
        raise InputFileError(msg)
    return values


def _fill(out: np.ndarray, idx: np.ndarray, child: pa.Array, name: str) -> None:
    """Scatter the flat values of one list field into the slots ``idx`` of ``out`` [n, k]
    (``idx`` = flat indices of the occupied slots, in list order)."""
    out.reshape(-1)[idx] = _values(idx, child, name)


def _scattered(shape: tuple[int, int], idx: np.ndarray, child: pa.Array, name: str) -> np.ndarray:
    """A new zero [n, k] array of the field's own dtype with its values in the slots ``idx``
    (dtype from the data: ``DataType.to_pandas_dtype`` needs pandas on some pyarrow versions)."""
    values = _values(idx, child, name)
    out = np.zeros(shape, values.dtype)
    out.reshape(-1)[idx] = values
    return out


def _slots(counts: np.ndarray, k: int) -> np.ndarray:
    """Flat indices ``row * k + slot`` of the occupied slots, row-major (the list order)."""
    return np.flatnonzero((np.arange(k)[None, :] < counts[:, None]).ravel())


def table_to_reco(table: pa.Table, k: int | None = None) -> RecoChunk:
    """Inverse of :func:`isrsim.io.chunk_to_table` for the detector part (arrays ``[n, k]``).

    Parameters
    ----------
    table : pyarrow.Table
        Rows of the isrsim event schema with ``tracks`` and ``photons`` list columns
        (io.py module docstring).
    k : int, optional
        Slots per event, the same for tracks and photons (``kt = kg = k``;
        :func:`isrsim.detector.simulate.simulate` sizes each to the chunk instead). Default:
        the longest list in ``table`` (at least 2).

    Returns
    -------
    RecoChunk
        Helices, packed covariances, truth indices; ``track_extra``/``photon_extra`` hold
        every further list field (``prob_e``, ``prob_mu``, ``prob_pi``, ``e_over_p``,
        ``p_lab``, ...) with the dtype stored in the file. Padding slots are zero (truth -1).

    Raises
    ------
    InputFileError
        No ``tracks``/``photons`` columns (a generator-level file), missing core fields,
        or lists longer than ``k``.
    """
    missing = [c for c in ("tracks", "photons") if c not in table.column_names]
    if missing:
        msg = (f"no {'/'.join(missing)} column: the events were not simulated (run "
               "'isrsim simulate IN --detector NAME -o OUT' first)")
        raise InputFileError(msg)
    n = table.num_rows
    trk = table.column("tracks").combine_chunks()
    pho = table.column("photons").combine_chunks()
    nt, ng = _lengths(trk), _lengths(pho)
    longest = int(max(nt.max(initial=0), ng.max(initial=0)))
    if k is None:
        k = max(longest, 2)
    elif longest > k:
        msg = f"track/photon list longer ({longest}) than k = {k}"
        raise InputFileError(msg)
    tch = _struct_children(trk, "tracks")
    pch = _struct_children(pho, "photons")
    for what, have, need in (("tracks", tch, _TRACK_CORE), ("photons", pch, _PHOTON_CORE)):
        lack = [f for f in need if f not in have]
        if lack:
            msg = f"{what} records lack field(s) {', '.join(lack)}: wrong schema (not written by isrsim)"
            raise InputFileError(msg)
    reco = RecoChunk(
        ntrk=nt.astype(np.int16), charge=np.zeros((n, k), np.int8), helix=np.zeros((n, k, 5)),
        cov=np.zeros((n, k, 15)), trk_truth=np.full((n, k), -1, np.int16),
        nphot=ng.astype(np.int16), phot=np.zeros((n, k, 3)),
        phot_truth=np.full((n, k), -1, np.int16),
    )
    tidx, pidx = _slots(nt, k), _slots(ng, k)
    _fill(reco.charge, tidx, tch["charge"], "tracks.charge")
    _fill(reco.trk_truth, tidx, tch["truth"], "tracks.truth")
    for i, name in enumerate(("d0", "phi0", "omega", "z0", "tanl")):
        col = np.zeros((n, k))
        _fill(col, tidx, tch[name], f"tracks.{name}")
        reco.helix[..., i] = col
    cov = tch["cov"]
    if not (pa.types.is_fixed_size_list(cov.type) and cov.type.list_size == 15):
        msg = f"tracks.cov has type {cov.type}; expected 15 packed covariance elements"
        raise InputFileError(msg)
    cflat = cov.flatten().to_numpy(zero_copy_only=False)
    if cflat.size != 15 * tidx.size:
        msg = "tracks.cov has the wrong number of elements: corrupt file"
        raise InputFileError(msg)
    reco.cov.reshape(-1, 15)[tidx] = cflat.reshape(-1, 15)
    for name, child in tch.items():
        if name not in _TRACK_CORE:
            reco.track_extra[name] = _scattered((n, k), tidx, child, f"tracks.{name}")
    _fill(reco.phot_truth, pidx, pch["truth"], "photons.truth")
    for i, name in enumerate(("E", "theta", "phi")):
        col = np.zeros((n, k))
        _fill(col, pidx, pch[name], f"photons.{name}")
        reco.phot[..., i] = col
    for name, child in pch.items():
        if name not in _PHOTON_CORE:
            reco.photon_extra[name] = _scattered((n, k), pidx, child, f"photons.{name}")
    return reco


# ---------------------------------------------------------------------------------------
# inputs: metadata, detector, beam
# ---------------------------------------------------------------------------------------
def _load_input_detector(path: str, meta: dict[str, Any]):
    """The DetectorModel an input was simulated with; its file must be unchanged."""
    from ..detector import load_detector

    info = meta.get("detector")
    if not info:
        msg = (f"input {path!r} was not simulated (no detector in its metadata): run "
               "'isrsim simulate IN --detector NAME -o OUT' first")
        raise InputFileError(msg)
    dpath, name, sha = info.get("path"), info.get("name"), info.get("sha256")
    source = dpath if dpath and Path(dpath).is_file() else name
    if not source:
        msg = f"input {path!r}: detector metadata {info!r} names no file"
        raise InputFileError(msg)
    try:
        det = load_detector(source)
    except ConfigError as exc:
        msg = f"input {path!r}: cannot load its detector {source!r} ({exc})"
        raise InputFileError(msg) from None
    if sha and det.sha256 != sha:
        msg = (f"input {path!r}: detector file {det.path!r} changed since the events were "
               f"simulated (sha256 {det.sha256[:12]}... != {sha[:12]}... in the metadata); "
               "restore it or re-simulate")
        raise InputFileError(msg)
    return det


def _beam_from_meta(path: str, meta: dict[str, Any]) -> Beam:
    """The beam the events were generated with (run metadata ``beam``)."""
    b = meta.get("beam") or {}
    try:
        return Beam.from_metadata(b)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        msg = f"input {path!r}: beam metadata {b!r} is missing or invalid ({exc})"
        raise InputFileError(msg) from None


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _input_record(path: str, meta: dict[str, Any]) -> dict[str, Any]:
    from ..processes import PROCESS_NAMES

    proc = meta.get("process")
    if proc not in PROCESS_NAMES:
        msg = (f"input {path!r}: metadata process = {proc!r}; allowed one of {', '.join(PROCESS_NAMES)} "
               "(files written by isrsim, unmodified)")
        raise InputFileError(msg)
    for key in ("cross_section_nb", "cross_section_err_nb"):
        v = meta.get(key)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)
                                  and (v > 0 if key == "cross_section_nb" else v >= 0)):
            msg = (f"input {path!r}: metadata {key} = {v!r}; allowed a finite number "
                   f"{'> 0' if key == 'cross_section_nb' else '>= 0'} [nb] (files written by isrsim, "
                   "unmodified)")
            raise InputFileError(msg)
    return {
        "path": path,
        "process": str(meta.get("process")),
        "process_config": meta.get("process_config"),
        "n_events": int(meta.get("n_events", 0)),
        "cross_section_nb": _num(meta.get("cross_section_nb")),
        "cross_section_err_nb": _num(meta.get("cross_section_err_nb")),
        "luminosity_invnb": _num(meta.get("luminosity_invnb")),
        "equivalent_luminosity_invnb": _num(meta.get("equivalent_luminosity_invnb")),
        "weighted": bool(meta.get("weighted", False)),
        "sum_weights": _num(meta.get("sum_weights")),
        "sum_weights2": _num(meta.get("sum_weights2")),
        "seed_entropy": meta.get("seed_entropy"),
        "detector": meta.get("detector"),
    }


def _config_key(cfg: Any) -> str:
    import json

    return json.dumps(cfg, sort_keys=True, default=str)


def _check_windows(proc: str, cfgs: list[Any]) -> None:
    """Refuse configurations of one process that differ only in their mass window when the
    windows overlap: as separate samples the overlap would be counted once per sample, and
    pooled the weights would be wrong everywhere (no per-event combination is attempted)."""
    for i, a in enumerate(cfgs):
        for b in cfgs[:i]:
            if not (isinstance(a, dict) and isinstance(b, dict)):
                continue
            ra, rb = a.get("mass_range"), b.get("mass_range")
            if ra is None or rb is None:
                continue
            rest_a = {k: v for k, v in a.items() if k != "mass_range"}
            rest_b = {k: v for k, v in b.items() if k != "mass_range"}
            if _config_key(rest_a) == _config_key(rest_b) and max(ra[0], rb[0]) < min(ra[1], rb[1]):
                msg = (f"inputs of process {proc!r} have overlapping mass windows {list(rb)} and "
                       f"{list(ra)} GeV; allowed: identical windows (one sample, different seeds) "
                       "or disjoint windows (separate samples whose expected counts add)")
                raise InputFileError(msg)


def _check_seeds(key: str, rs: list[dict[str, Any]]) -> None:
    """Inputs of one sample must come from different seeds: two runs of one configuration and
    seed share their events (block j of both draws from the same stream), so pooling them would
    count those events twice and double the sample's luminosity."""
    seen: dict[int, str] = {}
    for r in rs:
        seed = r.get("seed_entropy")
        if seed is None:
            continue
        if seed in seen:
            msg = (f"inputs {seen[seed]!r} and {r['path']!r} of sample {key!r} were generated with "
                   f"the same seed ({seed}) and configuration, so they share their events; "
                   "allowed: one sample's inputs from different seeds (isrsim generate --seed)")
            raise InputFileError(msg)
        seen[seed] = r["path"]


def _combine_processes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Combine the inputs into samples; sets ``records[i]["sample"]`` to its sample's key.

    Inputs of the same process *and* the same generator configuration (``process_config``: mass
    window, photon cut, A' mass, ...) are one sample that differs only in its seeds: events and
    luminosities add, the cross section is the event-weighted mean of the inputs' estimates and
    every event weighs ``sigma / sum N``. Inputs of one process with different configurations
    (e.g. two ``--mll`` windows, two A' masses) are separate samples, each normalised to its own
    cross section, so that their expected counts add, as for different processes: right for
    disjoint phase spaces; configurations that differ only in overlapping mass windows are
    refused (:func:`_check_windows`). Keys: the process name, or ``process[k]`` (k = 0, 1, ...
    in input order) when the process has several configurations."""
    by_proc: dict[str, dict[str, list[int]]] = {}
    for i, r in enumerate(records):
        by_proc.setdefault(r["process"], {}).setdefault(_config_key(r["process_config"]), []).append(i)
    combined: dict[str, dict[str, Any]] = {}
    for proc, groups in by_proc.items():
        _check_windows(proc, [records[idx[0]]["process_config"] for idx in groups.values()])
        for k, idx in enumerate(groups.values()):
            key = proc if len(groups) == 1 else f"{proc}[{k}]"
            rs = [records[i] for i in idx]
            for r in rs:
                r["sample"] = key
            _check_seeds(key, rs)
            kinds = {r["weighted"] for r in rs}
            if len(kinds) > 1:
                msg = f"sample {key!r} has both weighted and unweighted inputs; allowed: one kind"
                raise InputFileError(msg)
            n = sum(r["n_events"] for r in rs)
            ok = n > 0 and all(r["cross_section_nb"] is not None for r in rs)
            sigma = err = None
            if ok:
                sigma = sum(r["n_events"] * r["cross_section_nb"] for r in rs) / n
                err = math.sqrt(sum((r["n_events"] * (r["cross_section_err_nb"] or 0.0)) ** 2
                                    for r in rs)) / n
            lum = [r["luminosity_invnb"] for r in rs]
            eq = [r["equivalent_luminosity_invnb"] for r in rs]
            combined[key] = {
                "process": proc, "process_config": rs[0]["process_config"],
                "inputs": idx, "n_events": n, "cross_section_nb": sigma, "cross_section_err_nb": err,
                "luminosity_invnb": sum(lum) if all(v is not None for v in lum) else None,
                "equivalent_luminosity_invnb": sum(eq) if all(v is not None for v in eq) else None,
                "weighted": kinds.pop(),
            }
    return combined


def _check_inputs(inputs: list[str | os.PathLike[str]], output: Path):
    from ..io import check_distinct_paths, read_metadata

    if not inputs:
        msg = "inputs = []; allowed: at least one simulated event file or dataset"
        raise ConfigError(msg)
    check_distinct_paths(inputs, [output])
    metas, dets, beams = [], [], []
    for inp in inputs:
        p = str(inp)
        meta = read_metadata(p)
        if meta.get("kind") == "candidates":
            msg = f"input {p!r} is a candidate table, not an event file"
            raise InputFileError(msg)
        dets.append(_load_input_detector(p, meta))
        beams.append(_beam_from_meta(p, meta))
        metas.append(meta)
    d0, b0 = dets[0], beams[0]
    for p, d, b in zip(inputs[1:], dets[1:], beams[1:]):
        if d.sha256 != d0.sha256:
            msg = (f"input {str(p)!r} was simulated with detector {d.name!r} ({d.sha256[:12]}...), "
                   f"{str(inputs[0])!r} with {d0.name!r} ({d0.sha256[:12]}...); allowed: one detector")
            raise InputFileError(msg)
        if not np.allclose(b.p4_total_lab(), b0.p4_total_lab(), rtol=0.0, atol=1e-9):
            msg = (f"input {str(p)!r} has beam 4-vector {b.p4_total_lab().tolist()}, "
                   f"{str(inputs[0])!r} {b0.p4_total_lab().tolist()}; allowed: one beam")
            raise InputFileError(msg)
    return metas, d0, b0


def _check_values(path: str, table: pa.Table, reco: RecoChunk) -> None:
    """Track helices, covariances and photons finite, event weights finite and >= 0: what
    isrsim writes (an edited file's NaN helix dropped its event silently)."""
    checks = (("tracks (d0, phi0, omega, z0, tanl)", reco.helix), ("tracks.cov", reco.cov),
              ("photons (E, theta, phi)", reco.phot))
    for what, arr in checks:
        bad = ~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
        if bad.any():
            msg = (f"input {path!r}: {what} of event {int(np.argmax(bad))} (row) contain non-finite "
                   "values; allowed: finite values (files written by isrsim, unmodified)")
            raise InputFileError(msg)
    if "weight" in table.column_names:
        w = table.column("weight").to_numpy(zero_copy_only=False)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            msg = (f"input {path!r}: column weight has non-finite or negative values; allowed: "
                   "finite weights >= 0 (files written by isrsim, unmodified)")
            raise InputFileError(msg)


def _k_of(table: pa.Table, column: str) -> int:
    if column not in table.column_names:
        return 0
    return int(_lengths(table.column(column).combine_chunks()).max(initial=0))


# ---------------------------------------------------------------------------------------
# the file-level driver
# ---------------------------------------------------------------------------------------
def reconstruct_files(inputs: list[str | os.PathLike[str]], *, selection: str,
                      output: str | os.PathLike[str], cuts=None,
                      compression: str = "zstd") -> dict[str, Any]:
    """Run a selection on simulated event files and write one flat candidate table.

    Parameters
    ----------
    inputs : list of str or Path
        Simulated event files or dataset directories (``isrsim generate --detector`` or
        ``isrsim simulate``), all with the same detector file (sha256) and beam; different
        processes (e.g. mu mu, e e, pi pi) go into one table with a ``process`` column.
    selection : {"besiii2017", "belle2_lowmass"}
        See :mod:`isrsim.reco.selection` (BESIII: arXiv:1705.04265, physics.md 10).
    output : str or Path
        The candidate ``.parquet`` file (written atomically).
    cuts : Besiii2017Cuts or Belle2LowMassCuts, optional
        Non-default cut values (recorded in the metadata).
    compression : str
        Parquet compression of the output.

    Returns
    -------
    dict
        JSON-able summary: output, selection, events read, candidates per process and
        channel, fits run, wall and CPU time of the whole call and of the selection + fits
        alone (``*_reconstruction``: excluding reading, Arrow conversion and writing), events
        and fits per (wall or CPU) second. Wall times include loading the numba cache on the
        first call in a process.

    Raises
    ------
    ConfigError
        Unknown selection, no inputs, output equal to an input.
    InputFileError
        Missing, corrupt or truncated input; an input that was not simulated; an input whose
        number of events differs from its metadata's ``n_events`` (rows removed or added after
        writing: the weights would be wrong); a detector file that changed since simulation;
        inputs with different detectors or beams. No output file is left behind.
    """
    from ..io import EventWriter, check_file_output, iter_tables, schema_guard, table_to_truth

    t_start, c_start = time.perf_counter(), time.process_time()
    if selection not in SELECTIONS:
        msg = f"selection = {selection!r}; allowed: {', '.join(SELECTIONS)}"
        raise ConfigError(msg)
    out = check_file_output(output)
    inputs = [str(p) for p in inputs]
    metas, det, beam = _check_inputs(inputs, out)
    cuts = check_cuts(selection, cuts, beam)
    records = [_input_record(p, m) for p, m in zip(inputs, metas)]
    processes = _combine_processes(records)

    counts: dict[str, int] = {}
    n_events = 0
    t_reco = c_reco = 0.0
    n_cand: dict[str, dict[str, int]] = {}
    with EventWriter(out, compression=compression) as writer:
        for idx, (path, meta, rec) in enumerate(zip(inputs, metas, records)):
            proc = rec["process"]
            pinfo = processes[rec["sample"]]
            per_event_nb = (pinfo["cross_section_nb"] / pinfo["n_events"]
                            if not rec["weighted"] and pinfo["cross_section_nb"] is not None
                            and pinfo["n_events"] else float("nan"))
            cand_here: dict[str, int] = {}
            n_here = 0
            for table in iter_tables(path):
                n = table.num_rows
                n_here += n
                if n == 0:
                    continue
                with schema_guard(path):
                    reco = table_to_reco(table)
                    k_truth = max(_k_of(table, "truth"), 1)
                    truth = table_to_truth(table, k_truth) if "truth" in table.column_names else None
                    eid = table.column("event_id").to_numpy()
                if not np.issubdtype(eid.dtype, np.integer):
                    msg = (f"input {path!r}: column event_id has type {eid.dtype}; allowed: int64 "
                           "event ids (files written by isrsim, unmodified)")
                    raise InputFileError(msg)
                _check_values(path, table, reco)
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    cols = reconstruct_chunk(reco, truth, selection=selection, bz=det.bz_T,
                                             beam=beam, event_id=eid, cuts=cuts,
                                             calorimeter=det.calorimeter, counts=counts)
                except ConfigError as exc:  # invalid values read from the file
                    msg = f"input {path!r}: {exc}"
                    raise InputFileError(msg) from None
                t_reco += time.perf_counter() - t0
                c_reco += time.process_time() - c0
                n_events += n
                m = cols["event_id"].size
                for ch in np.unique(cols["channel"]).tolist() if m else []:
                    cand_here[ch] = cand_here.get(ch, 0) + int(np.sum(cols["channel"] == ch))
                if m == 0:
                    continue
                if rec["weighted"]:  # nb/event of this input; inputs of a sample share it
                    w_nb = cols["weight"] * (rec["n_events"] / pinfo["n_events"])
                else:
                    w_nb = np.full(m, per_event_nb)
                arrays = [pa.array(cols[name], type=CANDIDATE_SCHEMA.field(name).type)
                          for name in COLUMNS]
                arrays += [pa.array(np.full(m, proc, dtype=object), type=pa.string()),
                           pa.array(np.full(m, idx, np.int16)),
                           pa.array(np.asarray(w_nb, np.float64))]
                writer.write(pa.Table.from_arrays(arrays, schema=CANDIDATE_SCHEMA))
            if n_here != rec["n_events"]:
                # the weights (sigma / n_events) and the metadata would describe other events
                msg = (f"input {path!r} holds {n_here} events but its metadata says n_events = "
                       f"{rec['n_events']}; allowed: files written by isrsim generate / simulate, "
                       "unmodified")
                raise InputFileError(msg)
            rec["n_candidates"] = cand_here
            for ch, c in cand_here.items():
                n_cand.setdefault(proc, {}).setdefault(ch, 0)
                n_cand[proc][ch] += c
        meta_out = _output_metadata(records, processes, selection, cuts, det, beam, metas)
        meta_out["n_events_read"] = n_events
        meta_out["n_candidates"] = n_cand
        writer.close(meta_out, empty_schema=CANDIDATE_SCHEMA)
    t_total = time.perf_counter() - t_start
    c_total = time.process_time() - c_start
    n_fits = sum(counts.values())
    return {
        "output": str(out), "selection": selection, "inputs": inputs, "events": n_events,
        "candidates": n_cand, "candidates_total": int(writer.n_rows), "fits": counts,
        "seconds_total": round(t_total, 4), "seconds_reconstruction": round(t_reco, 4),
        "events_per_second": n_events / t_total if t_total > 0 else None,
        "fits_per_second_excluding_io": n_fits / t_reco if t_reco > 0 else None,
        "fits_per_second_including_io": n_fits / t_total if t_total > 0 else None,
        "cpu_seconds_total": round(c_total, 4), "cpu_seconds_reconstruction": round(c_reco, 4),
        "fits_per_cpu_second_excluding_io": n_fits / c_reco if c_reco > 0 else None,
        "fits_per_cpu_second_including_io": n_fits / c_total if c_total > 0 else None,
    }


def _output_metadata(records, processes, selection, cuts, det, beam, metas) -> dict[str, Any]:
    import json

    meta: dict[str, Any] = {
        "isrsim_version": __version__, "schema_version": SCHEMA_VERSION, "kind": "candidates",
        "selection": selection, "cuts": asdict(cuts),
        "detector": {"name": det.name, "sha256": det.sha256, "path": str(det.path)},
        "beam": beam.metadata(),
        "bz_T": det.bz_T, "inputs": records, "processes": processes,
        "weight_nb": "cross-section weight per candidate [nb]: expected count = L[1/nb] * sum",
        "units": {"energy": "GeV", "length": "cm", "cross_section": "nb", "weight_nb": "nb"},
    }
    if len(processes) == 1:
        (proc, info), = processes.items()
        meta.update({"process": proc, "process_config": metas[0].get("process_config"),
                     "n_events": info["n_events"], "cross_section_nb": info["cross_section_nb"],
                     "cross_section_err_nb": info["cross_section_err_nb"],
                     "luminosity_invnb": info["luminosity_invnb"],
                     "equivalent_luminosity_invnb": info["equivalent_luminosity_invnb"],
                     "weighted": info["weighted"],
                     "sum_weights": sum(r["sum_weights"] or 0.0 for r in records),
                     "sum_weights2": sum(r["sum_weights2"] or 0.0 for r in records)})
    else:
        names = {info["process"] for info in processes.values()}
        meta["process"] = next(iter(names)) if len(names) == 1 else "mixed"
        meta["n_events"] = sum(r["n_events"] for r in records)
        sig = [info["cross_section_nb"] for info in processes.values()]
        if len(names) == 1 and all(v is not None for v in sig):
            # one process in separate samples (disjoint configurations): their cross sections add
            meta["cross_section_nb"] = sum(sig)
            meta["cross_section_err_nb"] = math.sqrt(sum(
                (info["cross_section_err_nb"] or 0.0) ** 2 for info in processes.values()))
    return json.loads(json.dumps(meta, default=float).replace("NaN", "null"))

