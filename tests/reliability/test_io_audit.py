"""Regressions of the I/O, CLI and runner audit: simulate's random streams across row groups,
its beam and metadata checks, RunSpec validation, workflow cards validated before any work,
integers beyond the float range, detector-file typos, 0-event datasets, --resume spelling,
flags overriding the card's alternative keys, tampered manifests, output suffixes, card field
names, bundled detector names, negative values on the command line. Every bad input: one line
``isrsim: error: ...`` naming the field and what is allowed, exit status 2, nothing written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isrsim.exceptions import ConfigError, InputFileError
from isrsim.io import METADATA_KEY, content_hash, read_events, read_metadata

from .conftest import run_main

#: the BESIII detector file's beams as a run card's [beam] (detectors/besiii.toml)
BESIII_BEAMS = ("[beam]\ne_minus = 1.8865\ne_plus = 1.8865\ncrossing_half_angle = 0.011\n"
                "sqrt_s_spread = 0.0014\n")
GEN = ["generate", "--process", "isr_mumu", "--mll", "1.5", "3.4", "--seed", "5", "--quiet"]
HUGE = "1" + "0" * 400  # an integer beyond the float range (TOML reads it as a Python int)


def _error(argv: list[str], *expected: str) -> str:
    status, out, err = run_main(argv)
    assert status == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("isrsim: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for text in expected:
        assert text in err, (text, err)
    return err


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def besiii_truth(tmp_path_factory) -> tuple[Path, Path]:
    """25000 truth-level isr_mumu events with the BESIII beams (3 blocks, the last partial), and
    the same run generated with the detector in one pass."""
    from isrsim.detector import load_detector
    from isrsim.runner import RunSpec, run

    d = tmp_path_factory.mktemp("besiii_truth")
    det = load_detector("besiii")
    common = dict(process="isr_mumu", params={"mass_range": [1.5, 3.4]}, beam=det.beam, seed=5,
                  n_events=25_000, progress=False)
    run(RunSpec(output=d / "truth.parquet", **common))
    run(RunSpec(output=d / "onepass.parquet", detector=det, **common))
    return d / "truth.parquet", d / "onepass.parquet"


def _rewrite(src: Path, dst: Path, edit=lambda t: t, *, row_group_size: int | None = None,
             meta_edit=None) -> Path:
    """Copy an isrsim file with pyarrow (its metadata kept, or edited by ``meta_edit``)."""
    pf = pq.ParquetFile(src)
    kv = dict(pf.metadata.metadata)
    if meta_edit is not None:
        kv[METADATA_KEY] = json.dumps(meta_edit(json.loads(kv[METADATA_KEY]))).encode()
    table = edit(pf.read()).replace_schema_metadata(kv)
    pq.write_table(table, dst, row_group_size=row_group_size)
    return dst


# ---------------------------------------------------------------------------------------
# finding 1: simulate and the row-group layout / event order


def test_simulate_same_events_for_any_row_group_layout(besiii_truth, tmp_path):
    """Blocks of 10000 events split over row groups of 3000 (a block continues in the next row
    group): the same events as the block-aligned file and as generate --detector (the block's
    stream was restarted per row group: vertices of events 3000-3002 repeated those of 0-2)."""
    from isrsim.detector import load_detector
    from isrsim.runner import simulate_file

    truth, onepass = besiii_truth
    det = load_detector("besiii")
    rg = _rewrite(truth, tmp_path / "rg3000.parquet", row_group_size=3000)
    assert pq.ParquetFile(rg).num_row_groups == 9
    simulate_file(truth, det, tmp_path / "aligned.parquet", progress=False)
    simulate_file(rg, det, tmp_path / "split.parquet", progress=False)
    ref = content_hash(onepass)
    assert content_hash(tmp_path / "aligned.parquet") == ref
    assert content_hash(tmp_path / "split.parquet") == ref
    vz = pq.read_table(tmp_path / "split.parquet", columns=["truth"]).column("truth").to_pylist()
    assert vz[3000][0]["vz"] != vz[0][0]["vz"]


@pytest.mark.parametrize("edit", ["reversed", "block twice", "negative"])
def test_simulate_refuses_event_ids_out_of_order(besiii_truth, tmp_path, monkeypatch, edit):
    truth, _ = besiii_truth
    edits = {"reversed": lambda t: t.take(pa.array(np.arange(t.num_rows)[::-1])),
             "block twice": lambda t: pa.concat_tables([t.slice(0, 12_000), t.slice(5_000, 10)]),
             "negative": lambda t: t.set_column(0, t.schema.field(0),
                                                pa.array(np.arange(t.num_rows) - 5, pa.int64()))}
    _rewrite(truth, tmp_path / "bad.parquet", edits[edit], row_group_size=3000)
    monkeypatch.chdir(tmp_path)
    _error(["simulate", "bad.parquet", "--detector", "besiii", "-o", "s.parquet"], "event_id", "allowed")
    assert not list(tmp_path.glob("*s.parquet*"))


# ---------------------------------------------------------------------------------------
# finding 3: simulate with other beams than the detector's


def test_simulate_refuses_other_beams_unless_allowed(small_file, tmp_path, monkeypatch):
    """A symmetric head-on 3.773 GeV file with Belle II (7 on 4 GeV, 41.5 mrad) and with BESIII
    (11 mrad, 1.4 MeV spread): an error naming both beams; --allow-other-beams simulates and
    records it."""
    monkeypatch.chdir(tmp_path)
    _error(["simulate", str(small_file), "--detector", "belle2", "-o", "s.parquet"],
           "other beams", "e- 1.8865 GeV", "e- 7.004 GeV", "crossing half angle 0.0415",
           "--allow-other-beams")
    _error(["simulate", str(small_file), "--detector", "besiii", "-o", "s.parquet"],
           "crossing_half_angle_rad", "crossing half angle 0 rad", "crossing half angle 0.011")
    assert list(tmp_path.iterdir()) == []
    status, _, err = run_main(["simulate", str(small_file), "--detector", "besiii",
                               "--allow-other-beams", "-o", "s.parquet", "--quiet"])
    assert status == 0, err
    meta = read_metadata("s.parquet")
    assert meta["allow_other_beams"]["detector_beam"]["crossing_half_angle_rad"] == 0.011
    assert meta["beam"]["crossing_half_angle_rad"] == 0.0  # the events' own frame


def test_simulate_other_beams_error_names_beams_from(small_file, tmp_path, monkeypatch):
    """The refusal names the README's way to make truth with the detector's beams,
    `isrsim generate --beams-from NAME` (it only named generate --detector and a hand-written
    [beam] table), besides --allow-other-beams."""
    monkeypatch.chdir(tmp_path)
    _error(["simulate", str(small_file), "--detector", "besiii", "-o", "s.parquet"],
           "`isrsim generate --beams-from besiii`", "`isrsim generate --detector besiii`",
           "--allow-other-beams")
    assert list(tmp_path.iterdir()) == []


def test_readme_tour_truth_then_simulate_equals_one_pass(tmp_path, monkeypatch):
    """README tour: truth generated with the detector file's beams (--beams-from, or a card
    with beam.detector or the beams written out), then simulate == generate --detector, and the
    output metadata has the detector's beams."""
    monkeypatch.chdir(tmp_path)
    Path("besiii_beams.toml").write_text(BESIII_BEAMS)
    Path("beams_of.toml").write_text('[beam]\ndetector = "besiii"\n')
    n = ["--events", "10000"]
    assert run_main([*GEN, *n, "--detector", "besiii", "-o", "sim.parquet"])[0] == 0
    for i, how in enumerate((["--beams-from", "besiii"], ["--card", "beams_of.toml"],
                             ["--card", "besiii_beams.toml"])):
        assert run_main([*GEN, *n, *how, "-o", f"truth{i}.parquet"])[0] == 0
        assert run_main(["simulate", f"truth{i}.parquet", "--detector", "besiii", "-o",
                         f"sim{i}.parquet", "--quiet"])[0] == 0
        assert content_hash(f"sim{i}.parquet") == content_hash("sim.parquet")
        assert read_metadata(f"sim{i}.parquet")["beam"] == read_metadata("sim.parquet")["beam"]
    # beam.detector alone: with other beam keys it is a one-line error naming the field
    rc, _, err = run_main([*GEN, *n, "--beams-from", "besiii", "--sqrt-s", "3.773", "-o", "x.parquet"])
    assert rc == 2 and "beam.detector is given with ['sqrt_s']" in err
    assert not Path("x.parquet").exists()


# ---------------------------------------------------------------------------------------
# finding 4: RunSpec.validate


def _spec(tmp_path: Path, **over):
    from isrsim.beam import Beam
    from isrsim.runner import RunSpec

    kw = dict(process="isr_mumu", params={"mass_range": [1.5, 3.4]}, beam=Beam.symmetric(3.773),
              output=tmp_path / "o.parquet", seed=1, n_events=1000, progress=False)
    kw.update(over)
    return RunSpec(**kw)


@pytest.mark.parametrize(("over", "expected"), [
    ({"n_events": None, "luminosity_invnb": -1.0}, ["luminosity_invnb = -1.0", "> 0"]),
    ({"n_events": None, "luminosity_invnb": float("nan")}, ["luminosity_invnb = nan", "> 0"]),
    ({"n_events": None, "luminosity_invnb": "1/fb"}, ["luminosity_invnb = '1/fb'", "parse_luminosity"]),
    ({"n_events": None, "luminosity_invnb": 10**400}, ["luminosity_invnb", "> 0"]),
    ({"weighted": "no"}, ["weighted = 'no'", "True or False"]),
    ({"progress": 1}, ["progress = 1", "True or False"]),
    ({"detector": "besiii"}, ["detector = 'besiii'", "DetectorModel"]),
    ({"output": 5}, ["output = 5", "allowed a path"]),
    ({"n_events": True}, ["events = True", "integer"]),
    ({"seed": -1}, ["seed = -1", "allowed"]),
    ({"process": "isr_tautau"}, ["process = 'isr_tautau'", "isr_mumu"]),
])
def test_runspec_validate_names_the_field(tmp_path, over, expected):
    from isrsim.runner import run

    with pytest.raises(ConfigError) as exc:
        run(_spec(tmp_path, **over))
    for text in expected:
        assert text in str(exc.value), (text, str(exc.value))
    assert list(tmp_path.iterdir()) == []


def test_runspec_output_as_str_and_detector_beams(tmp_path):
    """A str output works (was AttributeError); a detector with other beams than ``beam`` is
    refused (the events would be generated in one frame and simulated in another)."""
    from isrsim.detector import load_detector
    from isrsim.runner import run

    res = run(_spec(tmp_path, output=str(tmp_path / "s.parquet"), n_events=200))
    assert res.n_events == 200 and (tmp_path / "s.parquet").is_file()
    with pytest.raises(ConfigError, match="differs from detector 'besiii'"):
        run(_spec(tmp_path, output=tmp_path / "d.parquet", detector=load_detector("besiii")))
    assert not (tmp_path / "d.parquet").exists()


# ---------------------------------------------------------------------------------------
# finding 5 and 15: huge integers, strings for numbers, the card's own field names


@pytest.mark.parametrize(("card", "expected"), [
    (f"[beam]\nsqrt_s = {HUGE}\n", ["sqrt_s = 1000", "allowed"]),
    (f"[beam]\nsqrt_s = 3.773\nsigma_xyz_cm = [0, 0, {HUGE}]\n", ["beam.sigma_xyz_cm[2]", "allowed"]),
    (f"[beam]\nsqrt_s = 3.773\n[process]\ngrid_points = {HUGE}\n", ["grid_points", "allowed"]),
    (f"[beam]\nsqrt_s = 3.773\n[run]\nluminosity = {HUGE}\n", ["luminosity", "> 0"]),
    ("[beam]\nsqrt_s = '3.773'\n", ["sqrt_s = '3.773' is invalid", "allowed"]),
    ("[beam]\nsqrt_s = 3.773\nsigma_xyz_cm = [1, 'a', 3]\n", ["beam.sigma_xyz_cm[1] = 'a'", "allowed"]),
    ("[beam]\nsqrt_s = 3.773\ncrossing_half_angle = 'x'\n",
     ["beam.crossing_half_angle = 'x'", "0 <= crossing_half_angle <= 0.5"]),
    ("[beam]\nsqrt_s = 3.773\n[process]\nmass_range = [1.5, '3.4']\n", ["mass_range", "allowed"]),
])
def test_card_numbers_clean_errors(tmp_path, monkeypatch, card, expected):
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(card)
    argv = ["generate", "--card", "c.toml", "--process", "isr_mumu", "-o", "o.parquet", "--quiet"]
    if "mass_range" not in card:
        argv += ["--mll", "1.5", "3.4"]
    if "luminosity" not in card:
        argv += ["--events", "100"]
    err = _error(argv, *expected)
    assert "luminous_region" not in err and "crossing_half_angle_rad" not in err
    assert _listing(tmp_path) == ["c.toml"]


def test_huge_integers_on_the_command_line_and_in_detector_files(tmp_path, monkeypatch):
    from isrsim.detector import load_detector

    monkeypatch.chdir(tmp_path)
    _error([*GEN, "--sqrt-s", "3.773", "--events", "10", "--param", f"mass_range=[1.5, {HUGE}]",
            "-o", "o.parquet"], "mass_range", "allowed")
    text = load_detector("besiii").path and Path(load_detector("besiii").path).read_text()
    Path("det.toml").write_text(text.replace("sigma_z_cm = 0.97", f"sigma_z_cm = {HUGE}"))
    with pytest.raises(ConfigError, match=r"luminous_region.sigma_z_cm = 1000.*\(401 characters\) "
                                          r"is invalid; allowed: a finite number >= 0.0 and <= 100.0"):
        load_detector("det.toml")
    assert _listing(tmp_path) == ["det.toml"]


# ---------------------------------------------------------------------------------------
# finding 7: unknown keys in detector files


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[calorimeter]\n", "[calorimeter]\nbrem_clusters = true\n",
     ["'brem_clusters'", "[calorimeter]", "did you mean 'brems_clusters'"]),
    ("[[material]]\n", "[[material]]\nphi_fractoin = 0.5\n",
     ["'phi_fractoin'", "[material[", "did you mean 'phi_fraction'"]),
    ("[solenoid]\n", "[solenoid]\nbz = 1.0\n", ["'bz'", "[solenoid]", "did you mean 'bz_T'"]),
    ("[pid.electron]\n", "[pid.electron]\nefficency = 0.9\n", ["'efficency'", "[pid.electron]"]),
    ("[meta]\n", "[extras]\nx = 1\n[meta]\n", ["'extras'", "top level"]),
])
def test_detector_file_unknown_keys(tmp_path, old, new, expected):
    from isrsim.detector import load_detector

    text = Path(load_detector("besiii").path).read_text()
    assert old in text
    p = tmp_path / "typo.toml"
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_detector(p)
    for t in expected:
        assert t in str(exc.value), (t, str(exc.value))


def test_detector_files_meta_stays_free_form(tmp_path):
    from isrsim.detector import available_detectors, load_detector

    for name in available_detectors():  # the bundled files have no unknown key
        load_detector(name)
    text = Path(load_detector("belle2").path).read_text()
    p = tmp_path / "notes.toml"
    p.write_text(text.replace("[meta]\n", '[meta]\nauthor = "me"\nnotes = ["any", "thing"]\n', 1))
    assert load_detector(p).meta["author"] == "me"


# ---------------------------------------------------------------------------------------
# finding 8: a 0-event dataset


def test_zero_event_dataset_is_readable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lumi = ["--sqrt-s", "3.773", "--luminosity", "1e-9/nb"]
    assert run_main([*GEN, *lumi, "-o", "l0ds"])[0] == 0
    assert run_main([*GEN, *lumi, "-o", "l0.parquet"])[0] == 0
    status, out, err = run_main(["info", "l0ds"])
    assert status == 0, err
    assert json.loads(out)["n_events"] == 0
    ev, meta = read_events("l0ds")
    assert len(ev) == 0 and meta["n_events"] == 0
    assert (pq.read_schema(tmp_path / "l0ds" / "part-00000.parquet").names
            == pq.read_schema("l0.parquet").names == ["event_id", "process", "weight", "truth", "gen"])


# ---------------------------------------------------------------------------------------
# finding 9: --resume with the same run spelled differently


def _interrupted(ds: Path) -> None:
    """Make the complete dataset ``ds`` look interrupted before its last part."""
    man = json.loads((ds / "_manifest.json").read_text())
    last = man["parts"].pop()
    (ds / last["file"]).unlink()
    man["complete"] = False
    (ds / "_manifest.json").write_text(json.dumps(man))


def test_resume_accepts_the_same_run_spelled_differently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = [*GEN, "--sqrt-s", "3.773", "--events", "20000"]
    assert run_main([*run, "-o", "ds"])[0] == 0
    ref = content_hash("ds")
    for spelling in (["-o", "ds/"], ["-o", "./ds"], ["-o", str(tmp_path / "ds")],
                     ["-o", "ds", "--chunk-size", "100000", "--compression", "zstd", "--workers", "2"]):
        _interrupted(tmp_path / "ds")
        status, _, err = run_main([*run, *spelling, "--resume"])
        assert status == 0, (spelling, err)
        assert content_hash("ds") == ref
    _interrupted(tmp_path / "ds")
    _error([*GEN[:-3], "--seed", "6", "--quiet", "--sqrt-s", "3.773", "--events", "20000",
                  "-o", "ds", "--resume"], "different run card", "seed: there 5, here 6", "--chunk-size")


# ---------------------------------------------------------------------------------------
# finding 10: flags replace the card's alternative keys


def test_flags_override_the_cards_alternatives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("lumi.toml").write_text('[run]\nprocess = "isr_mumu"\nluminosity = "1/fb"\n[beam]\nsqrt_s = 3.773\n'
                                 "[process]\nmass_range = [1.5, 3.4]\n")
    assert run_main(["generate", "--card", "lumi.toml", "--events", "300", "-o", "e.parquet",
                     "--quiet"])[0] == 0
    assert read_metadata("e.parquet")["n_events"] == 300
    Path("ev.toml").write_text('[run]\nprocess = "isr_mumu"\nevents = 500\n[beam]\nsqrt_s = 3.773\n'
                               "[process]\nmass_range = [1.5, 3.4]\n")
    assert run_main(["generate", "--card", "ev.toml", "--luminosity", "0.5/nb", "-o", "l.parquet",
                     "--quiet"])[0] == 0
    assert read_metadata("l.parquet")["luminosity_invnb"] == 0.5
    assert run_main(["generate", "--card", "ev.toml", "--detector", "besiii", "--events", "100",
                     "-o", "d.parquet", "--quiet"])[0] == 0
    assert read_metadata("d.parquet")["beam"]["crossing_half_angle_rad"] == 0.011
    # flags that contradict each other stay an error
    _error(["generate", "--card", "ev.toml", "--detector", "besiii", "--sqrt-s", "3.773",
            "-o", "x.parquet"], "detector", "beam")


# ---------------------------------------------------------------------------------------
# finding 11: simulate checks the metadata it uses


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("seed_entropy", None, "seed_entropy = null"),
    ("seed_entropy", "abc", 'seed_entropy = "abc"'),
    ("seed_entropy", -5, "seed_entropy = -5"),
    ("k_truth", None, "k_truth = null"),
    ("block_events", 0, "block_events = 0"),
    ("process", "isr_tautau", 'process = "isr_tautau"'),
    ("beam", {"e_minus_GeV": "x"}, "beam = "),
])
def test_simulate_checks_the_metadata_fields(besiii_truth, tmp_path, monkeypatch, field, value,
                                             expected):
    truth, _ = besiii_truth

    def edit(meta):
        if value is None and field == "seed_entropy":
            meta.pop(field)
        else:
            meta[field] = value
        return meta

    _rewrite(truth, tmp_path / "m.parquet", meta_edit=edit)
    monkeypatch.chdir(tmp_path)
    _error(["simulate", "m.parquet", "--detector", "besiii", "-o", "s.parquet"], expected, "allowed")
    assert not list(tmp_path.glob("*s.parquet*"))


# ---------------------------------------------------------------------------------------
# finding 12: tampered manifests


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda m: [], "not the object isrsim writes"),
    (lambda m: {**m, "parts": [m["parts"][0], *m["parts"][:2]]}, "listed twice"),
    (lambda m: {**m, "parts": m["parts"][:2]}, "lists 2 parts but n_parts = 3"),
    (lambda m: {**m, "parts": m["parts"][:2], "n_parts": 2},
     "hold 20000 events but the dataset's n_events = 30000"),
])
def test_tampered_manifest(small_dataset, tmp_path, monkeypatch, edit, expected):
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    man = json.loads((ds / "_manifest.json").read_text())
    (ds / "_manifest.json").write_text(json.dumps(edit(man)))
    with pytest.raises(InputFileError, match="_manifest.json"):
        read_metadata(ds)
    monkeypatch.chdir(tmp_path)
    _error(["info", "ds"], expected)
    _error(["simulate", "ds", "--detector", "besiii", "--allow-other-beams", "-o", "s.parquet"], expected)
    assert not (tmp_path / "s.parquet").exists()


# ---------------------------------------------------------------------------------------
# finding 14: output suffixes


def test_output_suffix_case_and_parquet_like_suffixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main([*GEN, "--sqrt-s", "3.773", "--events", "100", "-o", "OUT.PARQUET"])[0] == 0
    assert Path("OUT.PARQUET").is_file() and read_metadata("OUT.PARQUET")["n_events"] == 100
    for name in ("out.pq", "out.PARQ"):
        _error([*GEN, "--sqrt-s", "3.773", "--events", "100", "-o", name], f"output = {name!r}",
               "allowed a path ending in .parquet")
    assert _listing(tmp_path) == ["OUT.PARQUET"]


# ---------------------------------------------------------------------------------------
# finding 16: bundled detector names win over files of that name


def test_bundled_detector_name_is_not_shadowed(tmp_path, monkeypatch):
    from isrsim.detector import load_detector

    monkeypatch.chdir(tmp_path)
    shutil.copy(load_detector("belle2").path, tmp_path / "besiii")
    det = load_detector("besiii")
    assert det.name == "besiii" and Path(det.path).parent.name == "detectors"
    assert load_detector("./besiii").name == "belle2"
    shutil.copy(load_detector("belle2").path, tmp_path / "mydet")
    assert load_detector("mydet").name == "belle2"  # not a bundled name: the file


# ---------------------------------------------------------------------------------------
# finding 17: negative values after an option


@pytest.mark.parametrize(("argv", "expected"), [
    ([*GEN, "--sqrt-s", "3.773", "--luminosity", "-1/fb", "-o", "o.parquet"], ["luminosity", "-1/fb", "> 0"]),
    (["generate", "--process", "darkphoton", "--sqrt-s", "10.58", "--mass", "0.017", "--epsilon", "-1e-3",
      "--events", "10", "-o", "o.parquet"], ["epsilon = -0.001", "allowed"]),
    ([*GEN, "--sqrt-s", "-3.773", "--events", "10", "-o", "o.parquet"], ["sqrt_s", "-3.773", "allowed"]),
    ([*GEN[:3], "--mll", "-1e-3", "3.4", "--sqrt-s", "3.773", "--events", "10", "-o", "o.parquet"],
     ["mass_range", "-0.001", "allowed"]),
])
def test_negative_values_reach_the_range_check(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    err = _error(argv, *expected)
    assert "expected one argument" not in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# finding 2: project / sideband / inject cards validated before any work or output


def _no_work(monkeypatch):
    """Any generation fails the test (validation must come first)."""
    import isrsim.workflows.inject as inject
    import isrsim.workflows.project as project
    import isrsim.workflows.sideband as sideband

    def boom(*a, **k):
        raise AssertionError("work started before the card was validated")

    monkeypatch.setattr(project, "background_candidates", boom)
    monkeypatch.setattr(inject, "candidates_in_memory", boom)
    monkeypatch.setattr(sideband, "_signal_sample", boom)


_PROJECT_EDITS = {
    "seed negative": ("seed = 1", "seed = -3", ["project.seed = -3", "allowed an integer >= 0"]),
    "seed string": ("seed = 1", 'seed = "abc"', ["project.seed = 'abc'", "allowed"]),
    "mass string": ("mass = [1.5, 3.4]", 'mass = ["a", 3.4]', ["project.mass[0] = 'a'", "allowed"]),
    "order words": ("order = 6", 'order = "six"', ["analysis.order = 'six'", "allowed an integer"]),
    "order fraction": ("order = 6", "order = 6.5", ["analysis.order = 6.5", "<= 12"]),
    "step string": ("step = 0.010", 'step = "x"', ["analysis.step = 'x'", "allowed"]),
    "norm_unc string": ("norm_unc = 0.05", 'norm_unc = "x"', ["analysis.norm_unc = 'x'", "< 0.5"]),
    "norm_unc nan": ("norm_unc = 0.05", "norm_unc = nan", ["analysis.norm_unc = nan", "< 0.5"]),
    "bin_width zero": ("bin_width = 0.010", "bin_width = 0", ["analysis.bin_width = 0", "<= bin_width <= 0.19 GeV"]),
    "inverted mask": ("mask_windows = [[2.95, 3.20]]", "mask_windows = [[3.20, 2.95]]",
                      ["analysis.mask_windows[0]", "inverted"]),
    "channels string": ('channels = ["mumu", "ee"]', 'channels = "mumu"',
                        ["analysis.channels = 'mumu'", "a non-empty list of channels"]),
    "unknown channel": ('channels = ["mumu", "ee"]', 'channels = ["tautau"]',
                        ["analysis.channels", "tautau"]),
    "unknown background": ("[project.backgrounds.isr_pipi]", "[project.backgrounds.isr_tautau]",
                           ["project.backgrounds.isr_tautau.process = 'isr_tautau'", "isr_pipi"]),
    "bad last background param": ('theta_max = 0.15 } }\n\n[analysis]',
                                  "theta_max = 0.15 }, radiator = 'nlo' }\n\n[analysis]",
                                  ["project.backgrounds.isr_pipi", "radiator"]),
    "selection": ('selection = "besiii2017"', "selection = 5", ["project.selection = 5", "besiii2017"]),
    "mc luminosity": ('mc_luminosity_max = "2.93/fb"', "mc_luminosity_max = 0",
                      ["mc_luminosity_max = 0", "> 0"]),
}


@pytest.mark.parametrize("case", list(_PROJECT_EDITS))
def test_project_card_validated_before_any_work(case, tmp_path, monkeypatch):
    from importlib.resources import files

    old, new, expected = _PROJECT_EDITS[case]
    text = (files("isrsim") / "cards" / "project_besiii.toml").read_text()
    assert old in text
    monkeypatch.chdir(tmp_path)
    Path("p.toml").write_text(text.replace(old, new, 1))
    _no_work(monkeypatch)
    _error(["project", "--card", "p.toml", "-o", "out", "--quiet"], *expected)
    assert _listing(tmp_path) == ["p.toml"]  # no output directory, no cache


@pytest.mark.parametrize(("command", "card", "expected"), [
    ("inject", "[analysis]\nmasses = []\n", ["masses = []", "allowed a list of at least 1"]),
    ("inject", "[run]\nseed = -1\n", ["seed = -1", "allowed an integer >= 0"]),
    ("inject", "[analysis]\nmasses = ['a']\n", ["masses[0] = 'a'", "allowed"]),
    ("inject", "[analysis]\nmasses = [2.0, 9.0]\n", ["masses: 9 GeV", "mass"]),
    ("inject", "[analysis]\ncl = 'x'\n", ["cl = 'x'", "allowed"]),
    ("sideband", "[run]\nseed = -1\n", ["seed = -1", "allowed an integer >= 0"]),
    ("sideband", "[analysis]\nmax_contamination = 'x'\n", ["max_contamination = 'x'", "0 < value < 1"]),
    ("sideband", "[analysis]\ngrid_r_sr = ['a']\n", ["grid_r_sr[0] = 'a'", "allowed"]),
    ("sideband", "[analysis]\nconversion_layers = ['Gold']\n", ["Gold", "allowed"]),
])
def test_inject_and_sideband_cards_validated_before_any_work(tmp_path, monkeypatch, command, card,
                                                             expected):
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(card)
    _no_work(monkeypatch)
    _error([command, "--card", "c.toml", "-o", "out", "--quiet"], *expected)
    assert _listing(tmp_path) == ["c.toml"]


def test_bundled_workflow_cards_pass_validation():
    from types import SimpleNamespace

    from isrsim.config import bundled_card
    from isrsim.workflows import inject, project, sideband

    for name in ("project_besiii", "project_belle2", "default"):
        project._check_card(bundled_card(name))
    args = SimpleNamespace(card=None, output=None, detector=None, luminosity=None, mass=None,
                           epsilon=None, events=None, toys=None, seed=None, workers=None, quiet=True)
    assert inject.load_config(args)["masses"] == [2.0]
    assert math.isclose(sideband.load_config(args)["mass"], 0.017)
