"""Issue 10 item 3: corrupt, truncated, foreign, newer-schema and wrong-process inputs give a
clear one-line InputFileError (exit status 2 through ``isrsim info`` / ``isrsim simulate``),
never a traceback or silently wrong events (data pages carry CRC checksums)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isrsim import SCHEMA_VERSION
from isrsim.exceptions import InputFileError
from isrsim.io import METADATA_KEY, content_hash, read_events, read_metadata, write_table_atomic

from .conftest import run_main


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _assert_cli_error(argv: list[str], *expected: str) -> None:
    status, out, err = run_main(argv)
    assert status == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("isrsim: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)


@pytest.fixture
def copy_file(small_file, tmp_path) -> Path:
    dst = tmp_path / "copy.parquet"
    shutil.copy(small_file, dst)
    return dst


@pytest.fixture
def copy_dataset(small_dataset, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(small_dataset, dst)
    return dst


@pytest.mark.parametrize("keep", [0.0, 0.003, 0.5, 0.999])
def test_truncated_file(copy_file, keep, tmp_path, monkeypatch):
    _truncate(copy_file, keep)
    with pytest.raises(InputFileError, match="corrupt or truncated") as exc:
        read_events(copy_file)
    assert "\n" not in str(exc.value)
    assert str(copy_file) in str(exc.value)
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["info", str(copy_file)], "corrupt or truncated", "copy.parquet")
    _assert_cli_error(["simulate", str(copy_file), "--detector", "besiii", "-o", "sim.parquet"],
                      "corrupt or truncated")
    assert not list(tmp_path.glob("*sim.parquet*"))


def test_truncated_dataset_part(copy_dataset, tmp_path, monkeypatch):
    """Issue 10 acceptance: truncate one part of a dataset; reading, info and simulate name it."""
    part = copy_dataset / "part-00001.parquet"
    _truncate(part, 0.6)
    for call in (read_metadata, read_events, content_hash):
        with pytest.raises(InputFileError, match="part-00001.parquet") as exc:
            call(copy_dataset)
        assert "corrupt or truncated" in str(exc.value)
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["info", str(copy_dataset)], "part-00001.parquet", "corrupt or truncated")
    _assert_cli_error(["simulate", str(copy_dataset), "--detector", "besiii", "-o", "sim.parquet"],
                      "part-00001.parquet")
    assert not list(tmp_path.glob("*sim.parquet*"))


def test_bit_rot_inside_a_page_is_detected(copy_file):
    """Random bytes in the middle of the file (footer intact): the page CRC catches it."""
    data = bytearray(copy_file.read_bytes())
    footer = pq.ParquetFile(copy_file).metadata.serialized_size + 8
    for start in (len(data) // 4, len(data) // 2):
        assert start + 64 < len(data) - footer
        bad = bytearray(data)
        bad[start:start + 64] = bytes(b ^ 0x5A for b in bad[start:start + 64])
        copy_file.write_bytes(bad)
        with pytest.raises(InputFileError, match="corrupt or truncated"):
            content_hash(copy_file)


def test_part_with_wrong_row_count(copy_dataset):
    """A part replaced by another file (different size) contradicts the manifest."""
    write_table_atomic(pa.table({"event_id": pa.array([0, 1], pa.int64())}),
                       copy_dataset / "part-00002.parquet", {"schema_version": SCHEMA_VERSION})
    with pytest.raises(InputFileError, match=r"part-00002.parquet.*2 events.*manifest lists 10000"):
        read_metadata(copy_dataset)


@pytest.mark.parametrize("text", ["{not json", '{"complete": true, "parts": [{"name": 1}]}',
                                  '{"complete": true, "parts": []}', '{"complete": false, "parts": []}'])
def test_corrupt_manifest(copy_dataset, text):
    (copy_dataset / "_manifest.json").write_text(text)
    with pytest.raises(InputFileError, match="_manifest.json|incomplete|no parts"):
        read_events(copy_dataset)


def test_missing_part(copy_dataset):
    (copy_dataset / "part-00000.parquet").unlink()
    with pytest.raises(InputFileError, match="part-00000.parquet"):
        read_events(copy_dataset)


@pytest.mark.parametrize("content", [b"", b"hello, not parquet\n", b"PAR1" + b"\0" * 100 + b"PAR1"])
def test_not_parquet(tmp_path, content, monkeypatch):
    f = tmp_path / "x.parquet"
    f.write_bytes(content)
    with pytest.raises(InputFileError, match="not a readable Parquet file"):
        read_events(f)
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["info", "x.parquet"], "x.parquet", "not a readable Parquet file")


def _rewrite_metadata(src: Path, dst: Path, edit) -> None:
    """Copy an event file with its isrsim metadata edited by ``edit(meta) -> meta``."""
    pf = pq.ParquetFile(src)
    meta = json.loads(pf.metadata.metadata[METADATA_KEY])
    write_table_atomic(pf.read(), dst, edit(meta))


@pytest.mark.parametrize("version", ["2.0", "17.3", str(int(SCHEMA_VERSION.split(".")[0]) + 1)])
def test_newer_schema_version(small_file, tmp_path, version, monkeypatch):
    newer = tmp_path / "newer.parquet"
    _rewrite_metadata(small_file, newer, lambda m: {**m, "schema_version": version})
    with pytest.raises(InputFileError, match=rf"event schema {version}, newer than .* upgrade isrsim"):
        read_events(newer)
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["info", "newer.parquet"], f"event schema {version}", "upgrade")
    _assert_cli_error(["simulate", "newer.parquet", "--detector", "besiii", "-o", "s.parquet"],
                      "upgrade")
    assert not (tmp_path / "s.parquet").exists()


def test_same_major_newer_minor_is_readable(small_file, tmp_path):
    """A minor bump only adds optional content: still readable, with identical events."""
    major = SCHEMA_VERSION.split(".")[0]
    f = tmp_path / "minor.parquet"
    _rewrite_metadata(small_file, f, lambda m: {**m, "schema_version": f"{major}.99"})
    assert content_hash(f) == content_hash(small_file)


@pytest.mark.parametrize("bad", ["one", None, 3.5, [1], ""])
def test_garbage_schema_version(small_file, tmp_path, bad):
    f = tmp_path / "g.parquet"
    _rewrite_metadata(small_file, f, lambda m: {**m, "schema_version": bad})
    with pytest.raises(InputFileError, match="schema"):
        read_metadata(f)


def test_foreign_parquet_without_isrsim_metadata(tmp_path, monkeypatch):
    f = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), f)
    with pytest.raises(InputFileError, match="no isrsim metadata"):
        read_events(f)
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["info", "foreign.parquet"], "no isrsim metadata")


def test_corrupt_isrsim_metadata(tmp_path):
    f = tmp_path / "c.parquet"
    table = pa.table({"a": [1]}).replace_schema_metadata({METADATA_KEY: b"{oops"})
    pq.write_table(table, f)
    with pytest.raises(InputFileError, match="metadata is corrupt"):
        read_metadata(f)


def test_require_process(small_file, small_dataset):
    """A file of another process where one is required: the error names both."""
    ev, meta = read_events(small_file, require_process="isr_mumu")
    assert meta["process"] == "isr_mumu" and len(ev) == 20_000
    read_metadata(small_dataset, require_process=("isr_ee", "isr_mumu"))
    with pytest.raises(InputFileError, match=r"holds process 'isr_mumu'; required: isr_ee"):
        read_events(small_file, require_process="isr_ee")
    with pytest.raises(InputFileError, match=r"required: darkphoton, diphoton"):
        read_events(small_dataset, require_process=("darkphoton", "diphoton"))


def test_simulate_refuses_already_simulated(tmp_path, monkeypatch):
    """``isrsim simulate`` of a file that already holds detector output: one-line error."""
    from isrsim.config import build_spec
    from isrsim.runner import run

    monkeypatch.chdir(tmp_path)
    run(build_spec({"run": {"process": "isr_mumu", "events": 500, "detector": "besiii",
                            "output": "det.parquet", "progress": False},
                    "process": {"mass_range": [1.5, 3.4]}}))
    _assert_cli_error(["simulate", "det.parquet", "--detector", "besiii", "-o", "again.parquet"],
                      "already simulated")
    assert not (tmp_path / "again.parquet").exists()
    # a candidate table is named as such (was: "already simulated with detector 'besiii'")
    assert run_main(["reconstruct", "det.parquet", "--selection", "besiii2017", "-o", "c.parquet"])[0] == 0
    _assert_cli_error(["simulate", "c.parquet", "--detector", "besiii", "-o", "again.parquet"],
                      "is a candidate table (isrsim reconstruct), not an event file")
    assert not (tmp_path / "again.parquet").exists()


def _edited_columns(src: Path, dst: Path, edit) -> Path:
    """Copy an isrsim file with its metadata kept and its table changed by ``edit(table)``."""
    pf = pq.ParquetFile(src)
    pq.write_table(edit(pf.read()).replace_schema_metadata(pf.metadata.metadata), dst)
    return dst


def _set(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values))


def test_edited_event_columns_are_input_errors(small_file, tmp_path, monkeypatch):
    """isrsim metadata but columns dropped or values made invalid: a one-line error naming the
    file (were KeyError / AttributeError internal errors, and NaN weights passed through)."""
    monkeypatch.chdir(tmp_path)
    w = pq.read_table(small_file).column("weight").to_numpy().copy()
    w[1] = float("nan")
    cases = {"no_truth.parquet": lambda t: t.drop(["truth"]),
             "float_truth.parquet": lambda t: _set(t, "truth", [0.0] * t.num_rows),
             "nan_weight.parquet": lambda t: _set(t, "weight", w)}
    for name, edit in cases.items():
        _edited_columns(small_file, tmp_path / name, edit)
        _assert_cli_error(["simulate", name, "--detector", "besiii", "--allow-other-beams",
                           "-o", "out.parquet"], name, "not isrsim's event schema")
        assert not (tmp_path / "out.parquet").exists()


def _simulated_and_candidates(small_file, tmp_path, *, reconstruct=True):
    """The small truth file simulated with BESIII (sim.parquet) and, optionally, its besiii2017
    candidate table (cand.parquet) in tmp_path."""
    sim = tmp_path / "sim.parquet"
    assert run_main(["simulate", str(small_file), "--detector", "besiii", "--allow-other-beams",
                     "-o", str(sim)])[0] == 0
    if not reconstruct:
        return sim, None
    cand = tmp_path / "cand.parquet"
    assert run_main(["reconstruct", str(sim), "--selection", "besiii2017", "-o", str(cand)])[0] == 0
    return sim, cand


def test_edited_candidate_columns_are_input_errors(small_file, tmp_path, monkeypatch):
    """Candidate tables with an unknown channel, a non-finite mass or a negative weight."""
    monkeypatch.chdir(tmp_path)
    sim, cand = _simulated_and_candidates(small_file, tmp_path)
    n = pq.read_metadata(cand).num_rows
    m = pq.read_table(cand).column("m_ll").to_numpy().copy()
    m[0] = float("nan")
    cases = {"tau.parquet": (lambda t: _set(t, "channel", ["tautau"] * n), "tautau"),
             "nan_m.parquet": (lambda t: _set(t, "m_ll", m), "m_ll"),
             "neg_w.parquet": (lambda t: _set(t, "weight", [-1.0] * n), "weight")}
    for name, (edit, needle) in cases.items():
        _edited_columns(cand, tmp_path / name, edit)
        _assert_cli_error(["limit", name, "--luminosity", "1/fb", "-o", "l.csv"], name, needle)
        assert not (tmp_path / "l.csv").exists()


def test_part_from_another_run_is_refused(copy_dataset, tmp_path):
    """A part of another run (other seed) copied over one of a dataset: the reader refuses the
    mixed dataset instead of returning events of two runs."""
    from isrsim.config import build_spec
    from isrsim.runner import run

    from .conftest import BASE_CARD

    other = tmp_path / "other"
    run(build_spec({**BASE_CARD, "run": {**BASE_CARD["run"], "events": 30_000, "seed": 8,
                                         "chunk_size": 10_000, "output": str(other)}}))
    shutil.copyfile(other / "part-00001.parquet", copy_dataset / "part-00001.parquet")
    with pytest.raises(InputFileError, match="another run"):
        read_metadata(copy_dataset)


def test_rows_removed_with_the_metadata_kept_are_refused_by_simulate(small_file, tmp_path, monkeypatch):
    """The first 1000 of 20000 rows kept by pyarrow with isrsim's metadata: ``simulate`` wrote
    n_events = 1000 next to the input's equivalent luminosity and sum of weights for 20000, and
    ``reconstruct`` and ``limit`` then took that luminosity (background 20x too low at a target
    luminosity; review 2026-11-22). ``reconstruct`` already refused such a file."""
    monkeypatch.chdir(tmp_path)
    _edited_columns(small_file, tmp_path / "sliced.parquet", lambda t: t.slice(0, 1000))
    _assert_cli_error(["simulate", "sliced.parquet", "--detector", "besiii", "--allow-other-beams",
                       "-o", "out.parquet"], "sliced.parquet", "holds 1000 events",
                      "n_events = 20000")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sliced.parquet"]


@pytest.mark.parametrize("output", ["out.pq", "outdir", "existing_dir"])
def test_single_file_commands_refuse_other_outputs_before_any_work(small_file, tmp_path, monkeypatch,
                                                                    output):
    """``simulate`` and ``reconstruct`` write one file: a path not ending in .parquet (the
    README's rule: such a path is a dataset directory for ``generate``) or an existing directory
    is refused up front (a directory failed at the final rename, as an internal error, after
    all the work)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_dir").mkdir()
    for argv in (["simulate", str(small_file), "--detector", "besiii", "--allow-other-beams", "-o", output],
                 ["reconstruct", str(small_file), "--selection", "besiii2017", "-o", output]):
        expected = "is a directory" if output == "existing_dir" else "allowed a path ending in .parquet"
        _assert_cli_error(argv, repr(output), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_dir"]
    assert list((tmp_path / "existing_dir").iterdir()) == []


def test_candidate_table_bit_rot_and_float_event_ids(small_file, tmp_path, monkeypatch):
    """A flipped byte inside the m_ll page of a candidate table: limit read it without the page
    checksums and gave other limits, exit 0 (review 2026-11-22); now one line, nothing written.
    A simulated file whose event_id column became float (a null, or an edit): reconstruct wrote
    INT64_MIN ids; now refused as simulate refuses it."""
    monkeypatch.chdir(tmp_path)
    sim, cand = _simulated_and_candidates(small_file, tmp_path)
    pf = pq.ParquetFile(cand)
    k = pf.schema_arrow.names.index("m_ll")
    col = pf.metadata.row_group(0).column(k)
    raw = bytearray(cand.read_bytes())
    raw[col.data_page_offset + col.total_compressed_size // 2] ^= 0x01
    rot = tmp_path / "rot.parquet"
    rot.write_bytes(bytes(raw))
    _assert_cli_error(["limit", "rot.parquet", "--luminosity", "1/fb", "--toys", "0", "-o", "l.csv"],
                      "rot.parquet", "corrupt or truncated")
    assert not (tmp_path / "l.csv").exists()
    ids = pq.read_table(sim).column("event_id").to_numpy().astype(float)
    _edited_columns(sim, tmp_path / "fid.parquet", lambda t: _set(t, "event_id", ids))
    _assert_cli_error(["reconstruct", "fid.parquet", "--selection", "besiii2017", "-o", "c2.parquet"],
                      "fid.parquet", "event_id has type float64")
    assert not (tmp_path / "c2.parquet").exists()


def test_output_inside_an_input_dataset_is_refused(copy_dataset, tmp_path, monkeypatch):
    """simulate -o DATASET/part-00001.parquet replaced a part of its own input (the dataset was
    corrupt afterwards, exit 0; review 2026-11-22)."""
    monkeypatch.chdir(tmp_path)
    before = content_hash(copy_dataset)
    _assert_cli_error(["simulate", str(copy_dataset), "--detector", "besiii", "--allow-other-beams",
                       "-o", str(copy_dataset / "part-00001.parquet")], "lies inside the input dataset")
    _assert_cli_error(["simulate", str(copy_dataset), "--detector", "besiii", "--allow-other-beams",
                       "-o", str(copy_dataset / "new.parquet")], "lies inside the input dataset")
    assert content_hash(copy_dataset) == before
    assert not (copy_dataset / "new.parquet").exists()


def test_resume_with_a_single_file_output_is_refused(tmp_path, monkeypatch):
    """--resume with a .parquet output was ignored: the file was silently replaced by another
    run's events."""
    monkeypatch.chdir(tmp_path)
    _assert_cli_error(["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1.5", "3.4",
                       "--events", "1000", "--resume", "-o", "f.parquet"],
                      "resume = True", "f.parquet", "dataset directory")
    assert list(tmp_path.iterdir()) == []


def test_csv_temporary_removed_on_interrupt(tmp_path, monkeypatch):
    """Ctrl-C while a CSV is written left '.NAME.csv.tmp-PID' behind (only OSError cleaned up)."""
    import isrsim.workflows._common as common

    def interrupted(v):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "_fmt", interrupted)
    with pytest.raises(KeyboardInterrupt):
        common.write_csv_atomic(tmp_path / "x.csv", ["a"], [[1.0]])
    assert list(tmp_path.iterdir()) == []


def _nan_d0(table: pa.Table) -> pa.Table:
    trk = table.column("tracks").combine_chunks()
    vals = trk.values
    names = [vals.type.field(i).name for i in range(vals.type.num_fields)]
    kids = [vals.field(i) for i in range(len(names))]
    d0 = kids[names.index("d0")].to_numpy().copy()
    d0[0] = float("nan")
    kids[names.index("d0")] = pa.array(d0)
    new = pa.ListArray.from_arrays(trk.offsets, pa.StructArray.from_arrays(kids, names=names))
    return table.set_column(table.column_names.index("tracks"), "tracks", new)


def test_reconstruct_refuses_edited_values(small_file, tmp_path, monkeypatch):
    """Edited simulated files gave candidates without an error (review 2026-11-22): a NaN d0
    dropped its event silently, a NaN or negative cross section made every weight_nb NaN or
    negative, an unknown process name was copied, a negative event weight passed."""
    monkeypatch.chdir(tmp_path)
    sim, _ = _simulated_and_candidates(small_file, tmp_path, reconstruct=False)
    w = pq.read_table(sim).column("weight").to_numpy().copy()
    w[3] = -1.0
    _edited_columns(sim, tmp_path / "nan_d0.parquet", _nan_d0)
    _edited_columns(sim, tmp_path / "neg_w.parquet", lambda t: _set(t, "weight", w))
    for name, key, value in (("xs_nan.parquet", "cross_section_nb", float("nan")),
                             ("xs_neg.parquet", "cross_section_nb", -1.0),
                             ("bogus.parquet", "process", "bogus")):
        _rewrite_metadata(sim, tmp_path / name, lambda m, k=key, v=value: {**m, k: v})
    cases = {"nan_d0.parquet": "non-finite", "neg_w.parquet": "column weight",
             "xs_nan.parquet": "cross_section_nb = nan", "xs_neg.parquet": "cross_section_nb = -1.0",
             "bogus.parquet": "process = 'bogus'"}
    for name, needle in cases.items():
        _assert_cli_error(["reconstruct", name, "--selection", "besiii2017", "-o", "c.parquet"],
                          name, needle)
        assert not (tmp_path / "c.parquet").exists()
