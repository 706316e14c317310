"""Runner and CLI acceptance of issue 2: Parquet output readable by awkward, metadata,
identical events for any chunk size and worker count, Poisson pseudo-data at a luminosity."""

from __future__ import annotations

import json
import math

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import vector

from isrsim.cli import main
from isrsim.io import METADATA_KEY, content_hash, read_events

ARGS = ["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1.5", "3.4", "--seed", "1",
        "--quiet"]


def test_generate_million_identical_for_chunks_and_workers(tmp_path, capsys):
    # with a sqrt(s) spread, so that the per-event beam draws are part of what must not depend on
    # the chunking
    outs = []
    for chunk, workers in [(10_000, 1), (100_000, 1), (100_000, 2)]:
        out = tmp_path / f"c{chunk}_w{workers}.parquet"
        assert main([*ARGS, "--sqrt-s-spread", "0.0014", "--events", "1000000", "--chunk-size",
                     str(chunk), "--workers", str(workers), "-o", str(out)]) == 0
        outs.append(out)
    capsys.readouterr()
    hashes = {content_hash(o) for o in outs}
    assert len(hashes) == 1
    # awkward reads the file directly; metadata carries the cross section, seed and run card
    arr = ak.from_parquet(outs[0])
    assert len(arr) == 1_000_000
    assert set(arr.fields) >= {"event_id", "process", "weight", "truth", "gen"}
    # every block of 10^4 events has a stream of its own: no event repeats (a continuous mass;
    # streams reused every 4 blocks made 96 of the 100 blocks copies, unnoticed by the hashes)
    m_true = ak.to_numpy(arr.gen.m_true)
    assert np.unique(m_true).size == m_true.size
    meta = json.loads(pq.ParquetFile(outs[0]).metadata.metadata[METADATA_KEY])
    assert meta["seed_entropy"] == 1
    assert meta["run_card"]["process"]["mass_range"] == [1.5, 3.4]
    assert meta["cross_section_nb"] == pytest.approx(0.957, rel=1.5e-3)  # physics.md section 3
    assert meta["n_events"] == 1_000_000
    # vector views the truth records as Lorentz vectors
    vector.register_awkward()
    ev, _ = read_events(outs[1])
    mll = (ev.truth[:, 0] + ev.truth[:, 1]).mass
    np.testing.assert_allclose(ak.to_numpy(mll), ak.to_numpy(ev.gen.m_true), rtol=1e-9)


def test_different_seeds_differ(tmp_path, capsys):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    main([*ARGS, "--events", "10000", "-o", str(a)])
    args_b = [v if v != "1" or ARGS[i - 1] != "--seed" else "2" for i, v in enumerate(ARGS)]
    main([*args_b, "--events", "10000", "-o", str(b)])
    capsys.readouterr()
    assert content_hash(a) != content_hash(b)


def test_luminosity_poisson(tmp_path, capsys):
    out = tmp_path / "lumi.parquet"
    # 0.957 nb x 0.2/pb = 191.4 expected events
    assert main([*ARGS, "--luminosity", "0.2/pb", "-o", str(out)]) == 0
    capsys.readouterr()
    ev, meta = read_events(out)
    mean = meta["poisson_mean"]
    assert mean == pytest.approx(0.957 * 200, rel=2e-3)
    assert abs(len(ev) - mean) < 5 * math.sqrt(mean)
    assert np.all(ak.to_numpy(ev.weight) == 1.0)
    assert meta["luminosity_invnb"] == pytest.approx(200.0)


def test_card_equals_flags(tmp_path, capsys):
    card = tmp_path / "card.toml"
    out_card, out_flags = tmp_path / "card.parquet", tmp_path / "flags.parquet"
    card.write_text(f"""
[run]
process = "isr_mumu"
events = 20000
seed = 1
output = "{out_card}"
[beam]
sqrt_s = 3.773
[process]
mass_range = [1.5, 3.4]
""")
    assert main(["generate", "--card", str(card), "--quiet"]) == 0
    assert main([*ARGS, "--events", "20000", "-o", str(out_flags)]) == 0
    capsys.readouterr()
    assert content_hash(out_card) == content_hash(out_flags)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--process", "nope", "--sqrt-s", "3.773", "--events", "10"], "process"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "2", "2", "--events", "10"], "mass_range"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "3", "2", "--events", "10"], "mass_range"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1", "5", "--events", "10"], "mass_range"),
        (["--process", "isr_mumu", "--sqrt-s", "0", "--mll", "1", "2", "--events", "10"], "sqrt_s"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1", "2", "--events", "0"], "events"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1", "2", "--events", "-5"], "events"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1", "2", "--luminosity=-1/fb"],
         "luminosity"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--sqrt-s-spread", "0.5", "--mll", "1", "2",
          "--events", "10"], "sqrt_s_spread"),
        (["--process", "isr_mumu", "--sqrt-s", "3.773", "--sqrt-s-spread=-0.001", "--mll", "1", "2",
          "--events", "10"], "sqrt_s_spread"),
        (["--process", "isr_mumu", "--detector", "besiii", "--sqrt-s-spread", "0.001", "--mll", "1",
          "2", "--events", "10"], "--sqrt-s-spread"),
        (["--process", "isr_bhabha", "--sqrt-s", "3.773", "--mll", "1.5", "3.4", "--photon-cut",
          "tagged:0.5:2.5", "--events", "10"], "photon_cut"),
        (["--process", "isr_bhabha", "--sqrt-s", "3.773", "--mll", "1.5", "3.4", "--param",
          "cos_theta_max=1.5", "--events", "10"], "cos_theta_max"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, extra, field):
    out = tmp_path / "bad.parquet"
    assert main(["generate", *extra, "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("isrsim: error:") and "\n" not in err and field in err
    assert "allowed" in err or "must" in err
    assert list(tmp_path.iterdir()) == []


def test_malformed_card_and_unwritable_output(tmp_path, capsys):
    card = tmp_path / "bad.toml"
    card.write_text("[run\nprocess = 1")
    assert main(["generate", "--card", str(card)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main([*ARGS, "--events", "10", "-o", str(tmp_path / "missing_dir" / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "output" in err and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_zero_event_files_have_every_column(tmp_path):
    """A luminosity too small for one event gives a 0-event file with the columns of any other
    (it had only event_id), and generate + simulate gives the same schema as one pass."""
    gen = ["generate", "--process", "isr_mumu", "--mll", "1.5", "3.4", "--luminosity", "1e-10",
           "--quiet"]
    beams = tmp_path / "besiii_beams.toml"  # the detector file's beams (simulate requires them)
    beams.write_text("[beam]\ne_minus = 1.8865\ne_plus = 1.8865\ncrossing_half_angle = 0.011\n"
                     "sqrt_s_spread = 0.0014\n")
    assert main([*gen, "--card", str(beams), "-o", str(tmp_path / "g.parquet")]) == 0
    assert main([*gen, "--detector", "besiii", "-o", str(tmp_path / "gs.parquet")]) == 0
    assert main(["simulate", str(tmp_path / "g.parquet"), "--detector", "besiii", "--quiet",
                 "-o", str(tmp_path / "s.parquet")]) == 0
    assert pq.read_metadata(tmp_path / "g.parquet").num_rows == 0
    assert pq.read_schema(tmp_path / "g.parquet").names == ["event_id", "process", "weight", "truth", "gen"]
    assert pq.read_schema(tmp_path / "s.parquet").equals(pq.read_schema(tmp_path / "gs.parquet"))


def test_sqrt_s_spread_flag_reaches_the_events(tmp_path, capsys):
    # --sqrt-s-spread without a detector: recorded in the metadata and drawn per event (the
    # summed final state's invariant mass scatters by the given spread; 20k events, 4 sigma)
    out = tmp_path / "spread.parquet"
    assert main(["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--sqrt-s-spread", "0.002",
                 "--mll", "1.5", "3.4", "--events", "20000", "--seed", "3", "-o", str(out),
                 "--quiet"]) == 0
    ev, meta = read_events(out)
    assert meta["beam"]["sqrt_s_spread_GeV"] == 0.002
    tot = {k: ak.to_numpy(ak.sum(ev.truth[k], axis=1)) for k in ("px", "py", "pz", "E")}
    w = np.sqrt(tot["E"] ** 2 - tot["px"] ** 2 - tot["py"] ** 2 - tot["pz"] ** 2)
    assert abs(w.std() - 0.002) < 4 * 0.002 / math.sqrt(2 * w.size)
    assert abs(w.mean() - 3.773) < 4 * 0.002 / math.sqrt(w.size)


@pytest.mark.parametrize(("n_blocks", "bpc"), [(0, 10), (1, 10), (10, 10), (11, 10), (25, 7), (5, 1)])
def test_chunks_are_the_chunk_list_made_lazily(n_blocks, bpc):
    """The runner's chunks: (first block, blocks, n_total, index) as the list it used to build;
    ``without`` leaves out done parts (resume). Built lazily: the largest allowed run (10^13
    events, 10^8 chunks at the default size) took ~15 GB as a list before any event was made."""
    from isrsim.runner import _Chunks

    expected = [(b, min(bpc, n_blocks - b), 123, i) for i, b in enumerate(range(0, n_blocks, bpc))]
    c = _Chunks(n_blocks, bpc, 123)
    assert list(c) == expected and len(c) == len(expected) and bool(c) == bool(expected)
    done = {0, 2, 99}
    rest = c.without(done)
    assert list(rest) == [x for x in expected if x[3] not in done]
    assert len(rest) == len(list(rest))
    if n_blocks == 0:  # a dataset with no events still gets one (empty) part
        one = _Chunks(0, bpc, 0, at_least_one=True)
        assert list(one) == [(0, 0, 0, 0)] and len(one) == 1
        assert list(one.without({0})) == [] and len(one.without({0})) == 0
    huge = _Chunks(10**9, 10, 10**13)
    assert len(huge) == 10**8
    assert next(iter(huge.without({0}))) == (10, 10, 10**13, 1)
