"""Issue 10 items 4 and 5: the reproducibility matrix (seeds x chunk sizes x workers, file or
dataset) and the writer's refusal of NaN/inf values and of negative or non-finite weights."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest

from isrsim.config import build_spec
from isrsim.io import chunk_to_table, content_hash
from isrsim.runner import run

# 60000 events = 6 blocks of 10000: chunk 30000 gives 2 chunks, chunk 10000 gives 6, so block
# boundaries inside and between chunks are both exercised; BESIII simulation exercises the
# second (vertex + detector) random stream.
N_EVENTS = 60_000


def _card(out, seed, chunk, workers):
    return {"run": {"process": "isr_mumu", "detector": "besiii", "events": N_EVENTS, "seed": seed,
                    "chunk_size": chunk, "workers": workers, "output": str(out), "progress": False},
            "process": {"mass_range": [1.5, 3.4], "photon_cut": {"mode": "untagged", "theta_max": 0.3}}}


def _hash(tmp_path, seed, chunk, workers, dataset=False):
    name = f"s{seed}_c{chunk}_w{workers}" + ("" if dataset else ".parquet")
    out = tmp_path / name
    run(build_spec(_card(out, seed, chunk, workers)))
    return content_hash(out)


def test_reproducibility_matrix_fast(tmp_path):
    """2 seeds x {10000, 30000} in-process, plus 2 workers and a dataset directory for seed 1:
    identical hashes per seed, different hashes between seeds."""
    hashes = {(s, c): _hash(tmp_path, s, c, 1) for s, c in itertools.product((1, 2), (10_000, 30_000))}
    assert hashes[1, 10_000] == hashes[1, 30_000]
    assert hashes[2, 10_000] == hashes[2, 30_000]
    assert hashes[1, 10_000] != hashes[2, 10_000]
    assert _hash(tmp_path, 1, 10_000, 2) == hashes[1, 10_000]
    assert _hash(tmp_path, 1, 30_000, 1, dataset=True) == hashes[1, 10_000]
    # ... and the same file schema (pickled worker tables had lost the non-nullability of
    # tracks.cov, so the file was written by another writer)
    schema = pq.read_schema(tmp_path / "s1_c10000_w1.parquet")
    assert pq.read_schema(tmp_path / "s1_c10000_w2.parquet").equals(schema)


@pytest.mark.slow
def test_reproducibility_matrix_full(tmp_path):
    """The full product 2 seeds x {10000, 30000} x {1, 2} workers."""
    hashes = {k: _hash(tmp_path, *k) for k in itertools.product((1, 2), (10_000, 30_000), (1, 2))}
    for seed in (1, 2):
        assert len({h for k, h in hashes.items() if k[0] == seed}) == 1
    assert hashes[1, 10_000, 1] != hashes[2, 10_000, 1]


def test_content_hash_sees_every_event(tmp_path):
    """The hash is a real check: a faithful rewrite keeps it, one ulp in one momentum
    component of one particle changes it."""
    import pyarrow.parquet as pq

    from isrsim.io import read_metadata, table_to_truth, write_table_atomic

    out = tmp_path / "a.parquet"
    run(build_spec({"run": {"process": "isr_mumu", "events": 3000, "output": str(out),
                            "progress": False}, "beam": {"sqrt_s": 3.773},
                    "process": {"mass_range": [1.5, 3.4]}}))
    meta = read_metadata(out)
    truth = table_to_truth(pq.read_table(out), int(meta["k_truth"]))
    same = tmp_path / "same.parquet"
    write_table_atomic(chunk_to_table(truth, 0, "isr_mumu"), same, meta)
    assert content_hash(same) == content_hash(out)
    truth.p4[1234, 1, 0] = np.nextafter(truth.p4[1234, 1, 0], np.inf)
    changed = tmp_path / "changed.parquet"
    write_table_atomic(chunk_to_table(truth, 0, "isr_mumu"), changed, meta)
    assert content_hash(changed) != content_hash(out)


@pytest.fixture(scope="module")
def chunks():
    """A small generator-level chunk and its BESIII detector-level chunk."""
    from isrsim.detector import load_detector
    from isrsim.detector.simulate import simulate
    from isrsim.processes import make_process

    det = load_detector("besiii")
    proc = make_process("isr_mumu", det.beam, mass_range=[1.5, 3.4])
    truth, _ = proc.sample(np.random.default_rng(11), 200, weighted=False)
    reco = simulate(truth, det, np.random.default_rng(12))
    return truth, reco


def _copy(truth, reco):
    import copy

    return copy.deepcopy(truth), copy.deepcopy(reco)


BAD_TRUTH = {
    "nan momentum": (lambda t: t.p4.__setitem__((3, 0, 2), np.nan), "truth momenta"),
    "inf energy": (lambda t: t.p4.__setitem__((5, 1, 3), np.inf), "truth momenta"),
    "nan vertex": (lambda t: t.vtx.__setitem__((7, 0, 0), np.nan), "truth vertices"),
    "negative weight": (lambda t: t.weight.__setitem__(9, -1e-3), "weights"),
    "nan weight": (lambda t: t.weight.__setitem__(9, np.nan), "weights"),
    "inf weight": (lambda t: t.weight.__setitem__(9, np.inf), "weights"),
    "nan gen field": (lambda t: next(iter(t.extra.values())).__setitem__(4, np.nan), "gen."),
}
def _written(counts, slot):
    """An event whose object ``slot`` is written (only written slots reach the file)."""
    return int(np.flatnonzero(counts > slot)[0])


BAD_RECO = {
    "nan helix": (lambda r: r.helix.__setitem__((_written(r.ntrk, 0), 0, 2), np.nan), "track helices"),
    "inf covariance": (lambda r: r.cov.__setitem__((_written(r.ntrk, 0), 0, 0), np.inf),
                       "track covariances"),
    "nan photon": (lambda r: r.phot.__setitem__((_written(r.nphot, 0), 0, 0), np.nan), "photons"),
    "nan PID": (lambda r: r.track_extra["prob_mu"].__setitem__((_written(r.ntrk, 0), 0), np.nan),
                "tracks.prob_mu"),
    "inf p_lab": (lambda r: r.track_extra["p_lab"].__setitem__((_written(r.ntrk, 1), 1), np.inf),
                  "tracks.p_lab"),
}


def test_clean_chunks_are_written(chunks):
    truth, reco = chunks
    assert chunk_to_table(truth, 0, "isr_mumu").num_rows == 200
    assert chunk_to_table(truth, 0, "isr_mumu", reco).num_rows == 200
    t, _ = _copy(truth, reco)
    t.weight[:] = 0.0  # zero weights are allowed (e.g. forced conversions that miss)
    assert chunk_to_table(t, 0, "isr_mumu").num_rows == 200
    # slots beyond an event's count are never written, so whatever they hold does not matter
    _, r = _copy(truth, reco)
    assert (r.ntrk == 0).any(), "the chunk must have an event without tracks for this test"
    r.helix[int(np.flatnonzero(r.ntrk == 0)[0]), 0, 0] = np.nan
    assert chunk_to_table(truth, 0, "isr_mumu", r).num_rows == 200


@pytest.mark.parametrize("case", list(BAD_TRUTH))
def test_writer_refuses_bad_truth(chunks, case):
    assert chunks[0].extra, "the process must have gen fields for this test"
    t, _ = _copy(*chunks)
    spoil, what = BAD_TRUTH[case]
    spoil(t)
    with pytest.raises(RuntimeError, match=f"non-finite values in .*{what}") as exc:
        chunk_to_table(t, 0, "isr_mumu")
    assert "nothing was written" in str(exc.value)


@pytest.mark.parametrize("case", list(BAD_RECO))
def test_writer_refuses_bad_reco(chunks, case):
    t, r = _copy(*chunks)
    assert (r.ntrk >= 2).any() and (r.nphot >= 1).any(), "the chunk must have tracks and photons"
    spoil, what = BAD_RECO[case]
    spoil(r)
    with pytest.raises(RuntimeError, match=f"non-finite values in .*{what}"):
        chunk_to_table(t, 0, "isr_mumu", r)


def test_non_finite_output_aborts_the_run(tmp_path, monkeypatch):
    """A process bug producing NaN: internal error (exit 1), no file left behind."""
    from isrsim.processes.isr import IsrMuMu

    from .conftest import run_main

    real = IsrMuMu.sample

    def sample(self, rng, n, *, weighted=False):
        truth, stats = real(self, rng, n, weighted=weighted)
        truth.p4[n // 2, 0, 0] = np.nan
        return truth, stats

    monkeypatch.setattr(IsrMuMu, "sample", sample)
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--mll",
                               "1.5", "3.4", "--events", "1000", "-o", "x.parquet", "--quiet"])
    assert status == 1
    assert "non-finite values in truth momenta" in err and "--debug" in err
    assert list(tmp_path.iterdir()) == []
