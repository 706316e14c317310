"""Issue 10 item 2: atomic output (temporary name + fsync + rename), manifests that list complete
parts only, SIGTERM/SIGINT mid-run leaving no partial output and no orphan processes, and
``--resume`` completing an interrupted dataset with exactly the events of an uninterrupted run
(acceptance test of issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from isrsim.exceptions import InputFileError
from isrsim.io import content_hash, read_events, read_metadata

from .conftest import BASE_CARD, isrsim_cmd

# 40 chunks of 10000 events with BESIII simulation: ~0.1 s per chunk on this machine, so the
# run is still going long after its first part appears (the trigger for the signal).
N_EVENTS, CHUNK, SEED = 400_000, 10_000, 3
BASE_ARGS = ["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1.5", "3.4",
             "--events", "2000", "--quiet"]
GEN = ["generate", "--process", "isr_mumu", "--detector", "besiii", "--mll", "1.5", "3.4",
       "--events", str(N_EVENTS), "--chunk-size", str(CHUNK), "--seed", str(SEED), "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, dict]:
    """Content hash and metadata of the same run, uninterrupted, in this process (one file)."""
    from isrsim.config import build_spec
    from isrsim.runner import run

    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    card = {"run": {"process": "isr_mumu", "detector": "besiii", "events": N_EVENTS,
                    "chunk_size": CHUNK, "seed": SEED, "output": str(out), "progress": False},
            "process": {"mass_range": [1.5, 3.4]}}
    run(build_spec(card))
    return content_hash(out), read_metadata(out)


def _stat_parts(out: Path, manifest: dict) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the parts a manifest lists."""
    return {p["file"]: ((out / p["file"]).stat().st_ino, (out / p["file"]).stat().st_mtime_ns)
            for p in manifest["parts"]}


def _check_resumed_run(out: Path, kept: dict[str, tuple[int, int]], reference: tuple[str, dict]) -> None:
    """The resumed dataset has the uninterrupted run's events and run metadata (cross section,
    its error, sampling statistics, sums of weights: the statistics of the parts kept from the
    interrupted run are counted), and --resume kept the complete parts instead of redoing them."""
    ref_hash, ref_meta = reference
    assert content_hash(out) == ref_hash
    meta = read_metadata(out)
    for key in set(ref_meta) | set(meta):
        if key != "run_card":  # output path, resume flag
            assert meta.get(key) == ref_meta.get(key), key
    assert _stat_parts(out, {"parts": [{"file": f} for f in kept]}) == kept


def _manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "_manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _children(pid: int) -> set[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _interrupt_when_first_part(out: Path, args: list[str], sig: int, tmp_path: Path):
    """Start the CLI, wait until the manifest lists >= 1 part, send ``sig``; returns
    (returncode, stderr, child pids seen just before the signal)."""
    proc = subprocess.Popen(isrsim_cmd(*args, "-o", str(out)), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            m = _manifest(out)
            if m is not None and len(m["parts"]) >= 1:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("no part appeared within 120 s")
        children = _children(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, children


def _check_interrupted_dataset(out: Path) -> int:
    """No temporary or partial part visible, manifest incomplete and listing complete parts."""
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if ".tmp" in n], names
    m = _manifest(out)
    assert m is not None
    assert m["complete"] is False
    assert 1 <= len(m["parts"]) < N_EVENTS // CHUNK
    import pyarrow.parquet as pq

    for part in m["parts"]:  # every listed part is complete and readable
        assert pq.ParquetFile(out / part["file"]).metadata.num_rows == part["n_events"] == CHUNK
    with pytest.raises(InputFileError, match="incomplete"):
        read_metadata(out)
    return len(m["parts"])


def test_sigterm_then_resume_gives_the_uninterrupted_events(tmp_path, reference):
    """Issue 10 acceptance: SIGTERM mid-run, --resume, identical content hash (and run
    metadata; the parts complete before the signal are kept)."""
    out = tmp_path / "run"
    status, err, _ = _interrupt_when_first_part(out, GEN, signal.SIGTERM, tmp_path)
    assert status == 130, (status, err)
    assert "interrupted" in err
    assert "Traceback" not in err
    _check_interrupted_dataset(out)
    kept = _stat_parts(out, _manifest(out))

    res = subprocess.run(isrsim_cmd(*GEN, "-o", str(out), "--resume"), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    m = _manifest(out)
    assert m["complete"] is True
    assert [p["chunk"] for p in m["parts"]] == list(range(N_EVENTS // CHUNK))
    assert read_metadata(out)["n_events"] == N_EVENTS
    _check_resumed_run(out, kept, reference)


def test_sigterm_with_worker_processes_cleans_up(tmp_path, reference):
    """--workers 2: the pool is shut down, workers do not survive the parent, no temporary part
    is left; resuming with another number of workers is accepted and gives the same events."""
    out = tmp_path / "run"
    status, err, children = _interrupt_when_first_part(out, [*GEN, "--workers", "2"],
                                                       signal.SIGTERM, tmp_path)
    assert status == 130, (status, err)
    assert "Traceback" not in err
    assert len(children) >= 2  # the two workers (plus multiprocessing's resource tracker)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in children if _alive(p)], "orphaned worker processes"
    _check_interrupted_dataset(out)
    kept = _stat_parts(out, _manifest(out))

    res = subprocess.run(isrsim_cmd(*GEN, "-o", str(out), "--resume", "--workers", "1"),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    _check_resumed_run(out, kept, reference)


def test_sigint_single_file_leaves_nothing(tmp_path):
    """Ctrl-C during a single-file run: no output file and no temporary file remain."""
    out = tmp_path / "one.parquet"
    # as from a terminal: a test runner started in the background has SIGINT ignored, which the
    # child would inherit (and Python honour), turning Ctrl-C into a no-op
    proc = subprocess.Popen(isrsim_cmd(*GEN, "-o", str(out)), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".one.parquet.tmp-*")):  # writing has started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert list(tmp_path.iterdir()) == []


def test_sigkill_temporary_is_removed_by_the_next_write(tmp_path):
    """SIGKILL leaves the temporary file (nothing can run); the next write of the same output
    removes it (its process is gone), and leaves a live process' temporary alone."""
    out = tmp_path / "one.parquet"
    proc = subprocess.Popen(isrsim_cmd(*GEN, "-o", str(out)), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".one.parquet.tmp-*")):
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert [p.name for p in tmp_path.iterdir()] == [f".one.parquet.tmp-{proc.pid}"]
    live = tmp_path / f".one.parquet.tmp-{os.getppid()}"  # pytest's parent: alive
    live.touch()
    res = subprocess.run(isrsim_cmd(*BASE_ARGS, "-o", str(out)), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "one.parquet"]


def test_resume_refuses_a_different_run(tmp_path, small_dataset):
    """--resume on a dataset written by another card is an error, not a silent mix."""
    import shutil

    from isrsim.config import build_spec
    from isrsim.exceptions import IsrsimError
    from isrsim.runner import run

    out = tmp_path / "data"
    shutil.copytree(small_dataset, out)
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 30_000, "seed": 8,
                                 "chunk_size": 10_000, "output": str(out), "resume": True}}
    with pytest.raises(IsrsimError, match="different run card"):
        run(build_spec(card))
    card["run"]["resume"] = False
    card["run"]["seed"] = 7
    with pytest.raises(IsrsimError, match="already holds a dataset"):
        run(build_spec(card))


def test_resume_redoes_a_corrupt_part_and_refuses_a_corrupt_manifest(tmp_path):
    """A truncated part is written again by --resume (same events as before the damage); a
    corrupt manifest is a one-line error naming it, not an internal error."""
    from isrsim.config import build_spec
    from isrsim.exceptions import InputFileError
    from isrsim.runner import run

    out = tmp_path / "data"
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 30_000, "seed": 7,
                                 "chunk_size": 10_000, "output": str(out)}}
    run(build_spec(card))
    intact = content_hash(out)
    part = out / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:1000])
    card["run"]["resume"] = True
    run(build_spec(card))
    assert _manifest(out)["complete"]
    assert content_hash(out) == intact
    # a flipped byte inside a data page (footer and row count intact: only the page CRC tells)
    # and a part of another run of the same size: both were kept, the dataset marked complete
    # and unreadable or mixed (review 2026-11-22); now both are written again
    import pyarrow.parquet as pq

    raw = bytearray(part.read_bytes())
    col = pq.ParquetFile(part).metadata.row_group(0).column(4)
    raw[col.data_page_offset + col.total_compressed_size // 2] ^= 0xFF
    part.write_bytes(bytes(raw))
    other = tmp_path / "other"
    run(build_spec({**card, "run": {**card["run"], "seed": 8, "output": str(other), "resume": False}}))
    (out / "part-00002.parquet").write_bytes((other / "part-00002.parquet").read_bytes())
    kept = _stat_parts(out, {"parts": [{"file": "part-00000.parquet"}]})
    run(build_spec(card))
    assert content_hash(out) == intact
    assert _stat_parts(out, {"parts": [{"file": "part-00000.parquet"}]}) == kept  # intact: kept
    # parts of another isrsim build: refused (its events and the missing ones would differ)
    m = _manifest(out)
    (out / "_manifest.json").write_text(json.dumps({**m, "source_sha256": "0" * 64}))
    with pytest.raises(InputFileError, match="another isrsim build"):
        run(build_spec(card))
    (out / "_manifest.json").write_text("{")
    with pytest.raises(InputFileError, match="_manifest.json' is corrupt"):
        run(build_spec(card))


def test_atomic_write_sequence(tmp_path, monkeypatch):
    """write_table_atomic: data go to a hidden temporary in the same directory, which is
    fsync'ed and then renamed over the final name (then the directory is fsync'ed)."""
    import pyarrow as pa

    import isrsim.io as iio

    calls: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst), Path(src).exists(), Path(dst).exists()))
        real_replace(src, dst)

    monkeypatch.setattr(iio.os, "fsync", fsync)
    monkeypatch.setattr(iio.os, "replace", replace)
    final = tmp_path / "t.parquet"
    iio.write_table_atomic(pa.table({"x": [1.0, 2.0]}), final, {"k": 1})
    fs = [c for c in calls if c[0] == "fsync"]
    rep = [c for c in calls if c[0] == "replace"]
    assert len(rep) == 1
    _, src, dst, src_existed, dst_existed = rep[0]
    assert dst == str(final) and not dst_existed and src_existed
    assert Path(src).parent == tmp_path and Path(src).name.startswith(".t.parquet.tmp-")
    assert calls.index(("fsync", src)) < calls.index(rep[0])  # data synced before the rename
    assert ("fsync", str(tmp_path)) in fs[1:]  # the directory entry synced after it
    assert not Path(src).exists()
    assert iio.read_metadata(final)["k"] == 1


def test_dataset_parts_and_manifest_are_atomic(tmp_path, monkeypatch):
    """Every part and every manifest version is renamed into place from a temporary, and a part
    appears in the manifest only after its rename."""
    import isrsim.io as iio
    import isrsim.runner as runner
    from isrsim.config import build_spec

    events: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        name = Path(dst).name
        if name == "_manifest.json":
            listed = [p["file"] for p in json.loads(Path(src).read_text())["parts"]]
            for f in listed:  # everything listed is already in place
                assert (Path(dst).parent / f).exists(), f
            events.append(("manifest", ",".join(listed)))
        else:
            events.append(("part", name))
        assert Path(src).name.startswith(f".{name}.tmp-")
        real_replace(src, dst)

    monkeypatch.setattr(iio.os, "replace", replace)
    monkeypatch.setattr(runner.os, "replace", replace)
    out = tmp_path / "data"
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 30_000, "chunk_size": 10_000,
                                 "output": str(out)}}
    runner.run(build_spec(card))
    parts = [e for e in events if e[0] == "part"]
    assert [p[1] for p in parts] == [f"part-{i:05d}.parquet" for i in range(3)]
    assert events[0] == ("manifest", "")  # the empty, incomplete manifest comes first
    ev, meta = read_events(out)
    assert len(ev) == 30_000 == meta["n_events"]
