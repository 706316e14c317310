"""Dask execution (isrsim.distributed): identical events to the local run, bounded, errors."""

from __future__ import annotations

import json

import pytest

distributed = pytest.importorskip("distributed")

from isrsim.beam import Beam  # noqa: E402
from isrsim.exceptions import ConfigError  # noqa: E402
from isrsim.io import content_hash, read_metadata  # noqa: E402
from isrsim.runner import RunSpec, run  # noqa: E402


def _spec(output, **kw):
    base = dict(process="isr_mumu", params={"mass_range": [1.5, 3.4]},
                beam=Beam(1.8865, 1.8865), output=output, seed=20240917, n_events=45_000,
                chunk_size=10_000, progress=False)
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


def _chunk_workers(stream) -> dict[str, str]:
    """{task key: worker address} of isrsim's chunk tasks in a Dask task stream."""
    return {str(t["key"]): t["worker"] for t in stream.data if str(t["key"]).startswith("isrsim-chunk-")}


def test_dask_dataset_equals_local_run(tmp_path, client):
    """Same seed -> the same events, event for event, via 2 Dask worker processes (5 chunks,
    the last one partial) as in one local process with a different chunk size. The chunks ran
    as tasks on both workers (task stream), not in this process."""
    from distributed import get_task_stream

    local = run(_spec(tmp_path / "local.parquet", chunk_size=20_000))
    with get_task_stream(client) as stream:
        res = run(_spec(tmp_path / "dask_ds", scheduler=client))
    workers = _chunk_workers(stream)
    assert len(workers) == 5, workers
    assert set(workers.values()) == set(client.scheduler_info()["workers"])
    assert res.n_events == local.n_events == 45_000
    manifest = json.loads((tmp_path / "dask_ds" / "_manifest.json").read_text())
    assert manifest["complete"]
    assert [p["chunk"] for p in manifest["parts"]] == list(range(5))
    assert content_hash(tmp_path / "dask_ds") == content_hash(tmp_path / "local.parquet")
    m_local = read_metadata(tmp_path / "local.parquet")
    m_dask = read_metadata(tmp_path / "dask_ds")
    # identical events give identical sampling statistics, hence the same cross section (up to
    # the order of the floating-point sum over chunks: 2 vs 3 chunk partial sums)
    assert m_dask["sampling"]["n_trials"] == m_local["sampling"]["n_trials"]
    assert m_dask["cross_section_nb"] == pytest.approx(m_local["cross_section_nb"], rel=1e-12)


def test_dask_single_file_with_detector_equals_local(tmp_path, client):
    """A .parquet output with a scheduler: tasks return tables, the client writes them; the
    detector stream (spawn_key (1, block)) is reproduced on the workers as well."""
    from isrsim.detector import load_detector

    det = load_detector("besiii")
    kw = dict(detector=det, beam=det.beam, n_events=20_000)
    from distributed import get_task_stream

    run(_spec(tmp_path / "local.parquet", **kw))
    with get_task_stream(client) as stream:
        run(_spec(tmp_path / "dask.parquet", scheduler=client, **kw))
    assert len(_chunk_workers(stream)) == 2
    assert content_hash(tmp_path / "dask.parquet") == content_hash(tmp_path / "local.parquet")


def test_bad_scheduler_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="scheduler"):
        run(_spec(tmp_path / "x", scheduler=12345))
    assert not (tmp_path / "x" / "part-00000.parquet").exists()
