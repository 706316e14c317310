"""isrsim's lean Parquet writer against pyarrow (the reference reader and writer).

Every table written by :class:`ParquetTableWriter` must read back (pyarrow, with page CRC
verification, and awkward) equal to the table written, and equal to what pyarrow's own writer
produces for the same table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isrsim.parquet_writer as pw
from isrsim.beam import Beam
from isrsim.detector.model import load_detector
from isrsim.detector.simulate import simulate
from isrsim.io import EventWriter, chunk_to_table, read_metadata
from isrsim.parquet_writer import ParquetTableWriter, thrift_struct, unsupported
from isrsim.processes import make_process

F64 = pa.float64()


def _nn(name, t):
    return pa.field(name, t, nullable=False)


def _write(path, tables, **kw):
    with open(path, "wb") as fh:
        w = ParquetTableWriter(fh, tables[0].schema, **kw)
        for t in tables:
            w.write(t)
        w.close({"k": "v"})
    return path


def _event_table(process="isr_mumu", n=3000, seed=2, detector=None):
    proc = make_process(process, Beam.symmetric(3.773), mass_range=(1.5, 3.4))
    truth, _ = proc.sample(np.random.default_rng(seed), n)
    reco = None
    if detector is not None:
        reco = simulate(truth, load_detector(detector), np.random.default_rng(seed + 1))
    return chunk_to_table(truth, 0, process, reco)


def test_thrift_compact_encoding_by_hand():
    # field 1 i32 = 5: header (delta 1 << 4 | 5), zigzag(5) = 10, stop
    assert thrift_struct([(1, "i32", 5)]) == bytes([0x15, 0x0A, 0x00])
    # field 3 binary "ab" then field 20 i64 = -1 (long form header: type byte, zigzag field id)
    assert thrift_struct([(3, "bin", "ab"), (20, "i64", -1)]) == bytes(
        [0x38, 0x02, 0x61, 0x62, 0x06, 0x28, 0x01, 0x00])
    # bools live in the field header; a list of 2 i32
    assert thrift_struct([(1, "bool", True), (2, "list_i32", [1, 2])]) == bytes(
        [0x11, 0x19, 0x25, 0x02, 0x04, 0x00])


@pytest.mark.parametrize("detector", [None, "besiii", "belle2"])
@pytest.mark.parametrize("process", ["isr_mumu", "isr_ee"])
def test_event_tables_equal_pyarrow(tmp_path, process, detector):
    table = _event_table(process, detector=detector)
    ours = _write(tmp_path / "ours.parquet", [table.slice(0, 1000), table.slice(1000)])
    ref = tmp_path / "ref.parquet"
    pq.write_table(table, ref)
    back = pq.ParquetFile(ours, page_checksum_verification=True).read()
    assert back.schema.equals(table.schema)
    assert back.equals(table)
    assert back.equals(pq.read_table(ref))
    import awkward as ak

    assert ak.array_equal(ak.from_parquet(ours), ak.from_parquet(ref))
    md = pq.ParquetFile(ours).metadata
    assert md.num_row_groups == 2
    assert md.num_rows == table.num_rows
    assert md.metadata[b"k"] == b"v"


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd", "snappy", "gzip"])
def test_compressions_and_multi_page(tmp_path, monkeypatch, compression):
    monkeypatch.setattr(pw, "_PAGE_BYTES", 4096)  # many pages per column chunk
    table = _event_table(n=2000, detector="belle2")
    path = _write(tmp_path / "c.parquet", [table], compression=compression)
    pf = pq.ParquetFile(path, page_checksum_verification=True)
    assert pf.read().equals(table)
    col = pf.metadata.row_group(0).column(4)  # truth.px: > 1 page at 4 KiB
    assert col.total_uncompressed_size > 3 * 4096


def test_statistics_and_row_group_metadata(tmp_path):
    table = _event_table(n=2500)
    ids = pa.array(np.arange(7, 7 + 2500, dtype=np.int64))
    table = table.set_column(0, _nn("event_id", pa.int64()), ids)
    path = _write(tmp_path / "s.parquet", [table.slice(0, 500), table.slice(500)])
    md = pq.ParquetFile(path).metadata
    stats = [md.row_group(i).column(0).statistics for i in range(2)]
    assert (stats[0].min, stats[0].max, stats[1].min, stats[1].max) == (7, 506, 507, 2506)
    assert md.row_group(1).num_rows == 2000
    assert md.created_by.startswith("isrsim version")
    # predicate push-down through the statistics
    assert pq.read_table(path, filters=[("event_id", ">", 2500)]).num_rows == 6


def _jagged(rng, n, max_count, empty_frac):
    counts = rng.integers(1, max_count + 1, n)
    counts[rng.random(n) < empty_frac] = 0
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return counts, off


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 60), empty=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**31),
       cut=st.integers(0, 60))
def test_random_nested_tables_round_trip(tmp_path, n, empty, seed, cut):
    """Random list<struct<..., list<double>, fixed_size_list<float>[3]>> with empty lists at
    both depths, int8/int16/int32 leaves and a sliced (non-zero offset) row group."""
    rng = np.random.default_rng(seed)
    _, off = _jagged(rng, n, 4, empty)
    m = int(off[-1])
    _, ioff = _jagged(rng, m, 3, empty)
    inner = pa.ListArray.from_arrays(pa.array(ioff), pa.array(rng.normal(size=int(ioff[-1]))),
                                     type=pa.list_(_nn("element", F64)))
    fixed = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.normal(size=3 * m).astype(np.float32)),
        type=pa.list_(_nn("element", pa.float32()), 3))
    children = [pa.array(rng.integers(-100, 100, m).astype(np.int8)),
                pa.array(rng.integers(-3000, 3000, m).astype(np.int16)), inner, fixed]
    names = ["a", "b", "inner", "fixed"]
    struct = pa.StructArray.from_arrays(children, fields=[_nn(k, c.type) for k, c in zip(names, children, strict=True)])
    lst = pa.ListArray.from_arrays(pa.array(off), struct, type=pa.list_(_nn("element", struct.type)))
    top = pa.StructArray.from_arrays([pa.array(rng.normal(size=n)), pa.array(rng.integers(0, 9, n))],
                                     fields=[_nn("x", F64), _nn("k", pa.int64())])
    proc = pa.array([f"p{i % 3}" for i in range(n)]).dictionary_encode()
    schema = pa.schema([_nn("event_id", pa.int64()), _nn("process", proc.type), _nn("obj", lst.type),
                        _nn("top", top.type)])
    table = pa.table([pa.array(np.arange(n, dtype=np.int64)), proc, lst, top], schema=schema)
    k = min(cut, n)
    parts = [table.slice(0, k), table.slice(k)]
    path = _write(tmp_path / f"r{seed}.parquet", parts)
    back = pq.ParquetFile(path, page_checksum_verification=True).read()
    assert back.schema.equals(schema)
    assert back.to_pylist() == table.to_pylist()


def test_corrupt_page_detected(tmp_path):
    table = _event_table(n=2000)
    path = _write(tmp_path / "x.parquet", [table], compression="none")
    raw = bytearray(path.read_bytes())
    col = pq.ParquetFile(path).metadata.row_group(0).column(4)  # truth.px
    raw[col.data_page_offset + 200] ^= 0xFF  # inside the page body, past the header
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="CRC"):
        pq.ParquetFile(path, page_checksum_verification=True).read()


def test_unsupported_schemas_fall_back_to_pyarrow(tmp_path):
    nullable = pa.schema([pa.field("x", F64)])
    assert "nullable" in unsupported(nullable)
    assert "type" in unsupported(pa.schema([_nn("s", pa.string())]))
    with pytest.raises(ValueError, match="not supported"):
        ParquetTableWriter(open(tmp_path / "n.parquet", "wb"), nullable)  # noqa: SIM115
    # EventWriter writes such a table with pyarrow instead
    t = pa.table({"x": [1.0, None], "s": ["a", "b"]})
    with EventWriter(tmp_path / "fb.parquet") as w:
        w.write(t)
        w.close({"n": 2})
    assert pq.read_table(tmp_path / "fb.parquet").equals(t)
    assert read_metadata(tmp_path / "fb.parquet")["n"] == 2


def test_schema_mismatch_and_empty_file(tmp_path):
    table = _event_table(n=100)
    with open(tmp_path / "e.parquet", "wb") as fh:
        w = ParquetTableWriter(fh, table.schema)
        with pytest.raises(ValueError, match="schema"):
            w.write(table.drop_columns(["weight"]))
        w.write(table.slice(0, 0))  # no row group for an empty table
        w.close()
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.num_rows == 0
    assert back.schema.equals(table.schema)
    with pytest.raises(ValueError, match="compression"):
        ParquetTableWriter(open(tmp_path / "z.parquet", "wb"), table.schema, compression="brotli")  # noqa: SIM115
