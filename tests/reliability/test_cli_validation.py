"""Issue 10 item 1 and issue 2 "Bad input": every CLI flag and run-card field is checked before
any work; a user error gives one line ``isrsim: error: <field> = <value> ... allowed ...``, exit
status 2, no traceback and no output left behind; an internal error gives a short message with a
``--debug`` hint and exit status 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import isrsim

from .conftest import run_cli, run_main

CARDS_DIR = Path(isrsim.__file__).parent / "cards"

GEN = ["generate", "--process", "isr_mumu", "--sqrt-s", "3.773", "--mll", "1.5", "3.4",
       "--events", "2000", "--quiet"]


def _gen(**over: list[str] | None) -> list[str]:
    """GEN with flags replaced (value None drops the flag); ``-o out.parquet`` unless given."""
    args = list(GEN)
    flags = {"--process": 1, "--sqrt-s": 1, "--mll": 2, "--events": 1}
    for flag, vals in over.items():
        flag = "--" + flag.replace("_", "-")
        if flag in flags:
            i = args.index(flag)
            del args[i:i + 1 + flags[flag]]
        if vals is not None:
            args += [flag, *vals]
    if "-o" not in over and "--o" not in args and "--output" not in args:
        args += ["-o", "out.parquet"]
    return args


BAD_CLI = {
    # issue 2 "Bad input" list
    "unknown process": (_gen(process=["nope"]), ["process", "'nope'", "allowed", "isr_mumu"]),
    "inverted window": (_gen(mll=["3.4", "1.5"]), ["mass_range", "3.4", "inverted", "allowed"]),
    "empty window": (_gen(mll=["1.5", "1.5"]), ["mass_range", "1.5", "empty", "allowed"]),
    "window above sqrt(s)": (_gen(mll=["1.5", "5"]), ["mass_range", "5", "kinematic", "allowed"]),
    "window below threshold": (_gen(mll=["0.1", "1"]), ["mass_range", "0.1", "kinematic", "allowed"]),
    "nan window": (_gen(mll=["nan", "3"]), ["mass_range", "nan", "allowed"]),
    "sqrt-s zero": (_gen(sqrt_s=["0"]), ["sqrt_s", "0", "allowed", "0 < sqrt_s"]),
    "sqrt-s negative": (_gen(sqrt_s=["-1"]), ["sqrt_s", "-1", "allowed"]),
    "sqrt-s inf": (_gen(sqrt_s=["inf"]), ["sqrt_s", "inf", "allowed"]),
    "events zero": (_gen(events=["0"]), ["events", "0", "allowed", ">= 1"]),
    "events negative": (_gen(events=["-5"]), ["events", "-5", "allowed"]),
    "events not int": (_gen(events=["1e3x"]), ["--events", "1e3x"]),
    "no output": (GEN, ["output", "missing"]),
    "output dir missing": (_gen(o=["nodir/out.parquet"]), ["output", "nodir", "does not exist"]),
    "output under a file": (_gen(o=["afile/out.parquet"]), ["output", "afile"]),
    "output is a dir": (_gen(o=["adir.parquet"]), ["output", "adir.parquet", "directory", "allowed"]),
    "dataset output is a file": (_gen(o=["afile"]), ["output", "afile", "existing file", "allowed"]),
    # issue 10 additions
    "negative luminosity": (_gen(events=None, luminosity=None) + ["--luminosity=-1/fb"],
                            ["luminosity", "-1/fb", "> 0"]),
    "zero luminosity": (_gen(events=None, luminosity=["0/fb"]), ["luminosity", "0/fb", "> 0"]),
    "malformed luminosity": (_gen(events=None, luminosity=["lots"]), ["luminosity", "lots", "2.93/fb"]),
    "events and luminosity": (_gen(luminosity=["1/fb"]), ["events", "luminosity", "exactly one"]),
    "detector path missing": (_gen(sqrt_s=None, detector=["nodir/det.toml"]), ["detector", "nodir/det.toml"]),
    "detector name unknown": (_gen(sqrt_s=None, detector=["lep3"]), ["detector", "'lep3'", "allowed", "besiii"]),
    "detector and sqrt-s": (_gen(detector=["besiii"]), ["detector", "beam"]),
    "photon-cut syntax": (_gen(photon_cut=["sideways"]), ["--photon-cut", "'sideways'", "allowed", "untagged"]),
    "photon-cut number": (_gen(photon_cut=["untagged:abc"]), ["--photon-cut", "untagged:abc", "allowed"]),
    "photon-cut range": (_gen(photon_cut=["untagged:-1"]), ["photon_cut.theta_max", "-1", "allowed"]),
    "photon-cut inverted": (_gen(photon_cut=["tagged:2:1"]), ["photon_cut.theta_max", "1", "allowed"]),
    "photon-cut without solid angle": (_gen(photon_cut=["untagged:1e-12"]),
                                       ["mass_range", "photon_cut", "1e-12", "widen"]),
    "chunk not multiple": (_gen(chunk_size=["15000"]), ["chunk_size", "15000", "multiple", "10000"]),
    "chunk zero": (_gen(chunk_size=["0"]), ["chunk_size", "0", "multiple", "10000"]),
    "chunk too large": (_gen(chunk_size=["1000000000"]), ["chunk_size", "1000000000", "allowed"]),
    "workers zero": (_gen(workers=["0"]), ["workers", "0", "allowed"]),
    "seed negative": (_gen(seed=["-1"]), ["seed", "-1", "allowed", ">= 0"]),
    "compression": (_gen(compression=["rar"]), ["compression", "'rar'", "allowed", "zstd"]),
    "radiator": (_gen(radiator=["nlo"]), ["--radiator", "nlo", "kf"]),
    "unknown param": (_gen(param=["colour=1"]), ["colour", "allowed", "mass_range"]),
    "param syntax": (_gen(param=["colour"]), ["--param", "'colour'", "KEY=VALUE"]),
    "bad param value": (_gen(param=["grid_points=10"]), ["grid_points", "10", "allowed"]),
    "card missing": (_gen(card=["nocard.toml"]), ["card", "nocard.toml", "cannot be read"]),
    "card not TOML": (_gen(card=["bad.toml"]), ["card", "bad.toml", "not valid TOML"]),
    "card unknown key": (_gen(card=["unknown_key.toml"]), ["[run]", "unknown", "colour", "allowed"]),
    "card unknown section": (_gen(card=["unknown_section.toml"]), ["run card", "unknown", "extras", "allowed"]),
    "card wrong type": (_gen(card=["wrong_type.toml"]), ["weighted", "'yes'", "allowed", "true or false"]),
    "card beam not a table": (_gen(sqrt_s=None, card=["beam_scalar.toml"]), ["[beam]", "3.773", "a table"]),
    "card missing process param": (_gen(mll=None, process=None, card=["no_window.toml"]),
                                   ["process.mass_range", "missing", "isr_ee"]),
    "card forced layer unknown": (_gen(sqrt_s=None, detector=["besiii"], card=["forced.toml"]),
                                  ["conversions.forced_layers entry 'Gold' matches no layer", "allowed"]),
}

CARDS = {
    "bad.toml": "[run\nprocess = 'isr_mumu'\n",
    "unknown_key.toml": "[run]\ncolour = 'red'\n",
    "unknown_section.toml": "[extras]\na = 1\n",
    "wrong_type.toml": "[run]\nweighted = 'yes'\n",
    "beam_scalar.toml": "beam = 3.773\n",
    "no_window.toml": "[run]\nprocess = 'isr_ee'\n",
    "forced.toml": "[conversions]\nmode = 'forced'\nforced_layers = ['Gold']\n",
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name, text in CARDS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir.parquet").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_bad_input_one_line_exit_2_nothing_written(case, workdir):
    argv, expected = BAD_CLI[case]
    before = _listing(workdir)
    status, out, err = run_main(argv)
    assert status == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("isrsim: error: ")
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert _listing(workdir) == before  # no output file, directory or temporary left behind


def test_bad_input_in_a_real_process(tmp_path):
    """The installed entry point: exit status 2, one stderr line, nothing on stdout."""
    res = run_cli(_gen(mll=["3.4", "1.5"]), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("isrsim: error: mass_range = [3.4, 1.5]")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory(tmp_path, monkeypatch):
    """A directory the user cannot write to (chmod; as root, a failing write probe)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.chdir(tmp_path)
    if os.geteuid() == 0:  # root ignores the mode bits: make the write probe fail instead
        import tempfile

        def denied(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    try:
        status, _, err = run_main(_gen(o=["ro/out.parquet"]))
        assert status == 2
        assert "output = 'ro/out.parquet'" in err
        assert "not writable" in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def _boom(*args, **kwargs):
    msg = "simulated internal failure"
    raise RuntimeError(msg)


@pytest.mark.parametrize("output", ["out.parquet", "data"])
def test_internal_error_short_message_exit_1(output, tmp_path, monkeypatch):
    import isrsim.runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(isrsim.runner, "_run_chunk", _boom)
    status, _, err = run_main(_gen(o=[output]))
    assert status == 1
    assert err.count("\n") == 1
    assert "internal error" in err
    assert "simulated internal failure" in err
    assert "--debug" in err
    assert "Traceback" not in err
    if output.endswith(".parquet"):
        assert list(tmp_path.iterdir()) == []  # the temporary file was removed
    else:  # a dataset keeps its (empty, incomplete) manifest for --resume, and no part
        files = sorted(p.name for p in (tmp_path / output).iterdir())
        assert files == ["_manifest.json"]


def test_internal_error_debug_shows_traceback(tmp_path, monkeypatch):
    import isrsim.runner
    from isrsim.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(isrsim.runner, "_run_chunk", _boom)
    with pytest.raises(RuntimeError, match="simulated internal failure"):
        main(["--debug", *_gen()])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["darkphoton", "--mass", "-1", "--epsilon", "1e-3"], ["--mass", "-1", "allowed"]),
    (["darkphoton", "--mass", "0.0001", "--epsilon", "1e-3"], ["--mass", "0.0001", "2 m_e < m < 10.5"]),
    (["darkphoton", "--mass", "1", "--epsilon", "2"], ["--epsilon", "2", "1e-12 <= epsilon < 1"]),
    (["darkphoton", "--mass", "0.017", "--epsilon", "1e-160"], ["--epsilon", "1e-12 <= epsilon"]),
    (["project", "--detector", "besiii", "--seed=-1"], ["--seed", "-1", "0 <= seed"]),
    (["run", "--workers", "0"], ["--workers", "1 <= workers"]),
    (["inject", "--mass", "0.1"], ["masses: 0.1 GeV", "reaches below 0.3 GeV", "allowed masses > 0.45"]),
    # was "project.backgrounds.isr_mumu: mass_range = [0.001, 3.565] is invalid", a derived window
    (["run", "--mass", "0.1", "3.4"], ["project.mass (--mass) = [0.1, ...]", "isr_mumu",
                                       "threshold 2 m = 0.211317 GeV"]),
    # was "allowed 0.279141 < min < max < 0.19999 GeV", an empty range
    (["generate", "--process", "isr_pipi", "--sqrt-s", "0.2", "--mll", "0.1", "0.15", "--events", "10",
      "-o", "p.parquet"], ["sqrt_s = 0.2 GeV is below the isr_pipi threshold", "2 m = 0.279"]),
    # the default card has no weighted background: --events was silently ignored
    (["run", "--events", "1000"], ["--events = 1000", "mc_luminosity_max (here '2.93/fb')"]),
    (["sideband", "--toys=-1"], ["--toys", "0 <= toys"]),
    # s overflowed: exit 0 with NaN and Infinity in the JSON
    (["darkphoton", "--mass", "0.017", "--epsilon", "1e-3", "--sqrt-s", "1e300"],
     ["--sqrt-s", "1e+300", "sqrt_s <= 1000 GeV"]),
    # '' fell back to the default directory and started the projection
    (["project", "--detector", "besiii", "-o", ""], ["output = ''", "a directory path"]),
    (["run", "-o", ""], ["output = ''", "a directory path"]),
    # named 'detector', which the user did not give
    (["generate", "--process", "isr_mumu", "--beams-from", "bogus", "--mll", "1.5", "3", "--events", "10",
      "-o", "b.parquet"], ["beam.detector (--beams-from)", "'bogus' is unknown"]),
    # CSV text was written into a .parquet file
    (["limit", "c.parquet", "-o", "l.parquet"], ["-o/--output = 'l.parquet'", "ending in .csv"]),
    (["limit", "c.parquet", "-o", "l.csv", "--plot", "l.pdf"], ["--plot = 'l.pdf'", "ending in .png"]),
    # the selection's beam check ran after the output directory was made (an empty one was left)
    (["project", "--detector", "besiii", "--card", str(CARDS_DIR / "project_belle2.toml")],
     ["photon_e_cms_min", "use selection besiii2017"]),
    (["project", "--detector", "besiii", "--epsilon", "1e-3"], ["--epsilon", "not used"]),
    (["sideband", "--toys", "5"], ["--toys", "not used"]),
    (["darkphoton", "--mass", "1", "--epsilon", "1e-3", "--sqrt-s", "0"], ["--sqrt-s", "0", "allowed"]),
    (["generate", "--process", "diphoton", "--detector", "belle2", "--param", 'detector="besiii"',
      "--events", "100", "-o", "d.parquet"], ["process.detector", "differs", "allowed"]),
    (["simulate", "x.parquet", "--detector", "/dev/null", "-o", "s.parquet"],
     ["/dev/null", "not a regular file", "allowed"]),
    (["simulate", "missing.parquet", "--detector", "besiii", "-o", "s.parquet"],
     ["missing.parquet", "does not exist"]),
    (["info", "missing.parquet"], ["missing.parquet", "does not exist"]),
    (["nosuchcommand"], ["invalid choice"]),
])
def test_other_commands_bad_input(argv, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(argv)
    assert status == 2
    assert err.count("\n") == 1
    for text in expected:
        assert text in err
    assert list(tmp_path.iterdir()) == []


def test_wrong_kind_of_file_one_line(tmp_path, monkeypatch):
    """A UTF-16 detector file, and a generate card given to `isrsim project`: one-line errors
    naming what is expected (were internal errors: UnicodeDecodeError, KeyError)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "det.toml").write_text('[meta]\nname = "x"\n', encoding="utf-16")
    (tmp_path / "gen.toml").write_text('[run]\nprocess = "isr_mumu"\n')
    for argv, want in ((_gen(detector=["det.toml"]), "not UTF-8"),
                       (["project", "--card", "gen.toml"], "[project]")):
        status, _, err = run_main(argv)
        assert status == 2, err
        assert err.count("\n") == 1
        assert want in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.toml", "gen.toml"]


@pytest.mark.parametrize("command", ["project", "inject", "sideband", "run"])
def test_workflow_help_describes_the_options_the_command_uses(command):
    from isrsim.cli import _UNUSED_OPTIONS, _WORKFLOW_HELP

    status, out, _ = run_main([command, "--help"])
    assert status == 0
    text = " ".join(out.split())  # argparse wraps the help lines
    helps = _WORKFLOW_HELP[command]
    for opt, help_text in helps.items():
        assert f"--{opt}" in text
        assert " ".join(help_text.split()) in text
    all_opts = {"card", "output", "detector", "luminosity", "mass", "epsilon", "events", "toys", "seed",
                "workers", "quiet"}
    # every option is either described or rejected as unused (never silently ignored)
    assert set(helps) | set(_UNUSED_OPTIONS.get(command, ())) == all_opts
    for opt in _UNUSED_OPTIONS.get(command, ()):
        assert f"--{opt}" not in text


def test_event_counts_in_exponent_notation(workdir):
    """``--events 2e3`` (how benchmarks/README.md and physicists write counts) is the integer
    2000 for generate and the workflow commands; a count that is not a whole number is a
    one-line error naming --events (argparse's int() refused '4e6' before)."""
    from isrsim.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(_gen(events=["2e3"])).events == 2000
    assert parser.parse_args(_gen(events=["1_000"])).events == 1000
    for command in ("project", "inject", "sideband", "run"):
        assert parser.parse_args([command, "--events", "4e5"]).events == 400_000
    status, out, err = run_main(_gen(events=["2e3"]))
    assert status == 0, err
    assert '"events": 2000' in out
    for bad in ("2.5e3x", "1500.5", "nan"):
        status, _, err = run_main(_gen(events=[bad], o=["bad.parquet"]))
        assert status == 2
        assert err.count("\n") == 1
        assert "--events" in err and bad in err and "whole number" in err
    assert not (workdir / "bad.parquet").exists()


def test_inject_rejects_workers_it_does_not_use(tmp_path, monkeypatch):
    """`isrsim inject --workers N` was documented ("worker processes") but ignored: it is now
    refused like the other unused workflow options, before any work, and not in the help."""
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(["inject", "--workers", "2"])
    assert status == 2
    assert err.count("\n") == 1
    assert "--workers" in err and "not used" in err
    assert list(tmp_path.iterdir()) == []
    status, out, _ = run_main(["inject", "--help"])
    assert status == 0
    assert "--workers" not in out


def test_limit_help_states_the_real_defaults():
    """`isrsim limit --help` claimed "(default 4)" for --order, but without --order the order is
    chosen per channel among AUTO_ORDERS; the help also gives the defaults of --toys and
    --convention that run_limit / analyse_candidates use."""
    import inspect

    from isrsim.workflows.limit import AUTO_ORDERS, analyse_candidates

    status, out, _ = run_main(["limit", "--help"])
    assert status == 0
    text = " ".join(out.split())
    assert "(default 4)" not in text
    assert f"smallest order {AUTO_ORDERS[0]}-{AUTO_ORDERS[-1]}" in text
    params = inspect.signature(analyse_candidates).parameters
    assert f"(default {params['n_toys'].default};" in text
    assert f"{params['convention'].default} (default)" in text


def test_config_docstring_card_is_valid(tmp_path, monkeypatch):
    """The annotated run card in the docstring of isrsim.config, copied as it stands, is a valid
    card (it gave both [beam] sqrt_s and run.detector, a one-line error)."""
    import isrsim.config as config
    from isrsim.config import build_spec, tomllib

    monkeypatch.chdir(tmp_path)
    text = config.__doc__.split("A run card::")[1]
    card = tomllib.loads("\n".join(line[4:] for line in text.splitlines()))
    spec = build_spec(card)
    assert spec.detector is not None and spec.detector.name == "besiii"
    # the forced-conversion example in its comment names a layer of that detector
    from isrsim.detector.conversion import resolve_layers

    example = text.split("forced_layers = [")[1].split("]")[0]
    name = example.split(",")[0].strip().strip('"')
    assert resolve_layers(spec.detector.material, [name]).sum() == 1


@pytest.mark.parametrize(("old", "new", "expected"), [
    # 1e-9 for 1e-2: 1.9e9 bins, MemoryError (or the OOM killer) after the whole generation
    ("bin_width = 0.010", "bin_width = 1e-9", ["analysis.bin_width", "1e-09", "100000 bins"]),
    # a mask over the whole scan range: refused only after generating 4.6 M events
    ("mask_windows = [[2.95, 3.20]]", "mask_windows = [[1.0, 4.0]]",
     ["analysis.mask_windows", "no mass hypotheses"]),
])
def test_project_card_errors_before_any_work(old, new, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (CARDS_DIR / "project_besiii.toml").read_text()
    assert text.count(old) == 1
    (tmp_path / "c.toml").write_text(text.replace(old, new))
    status, _, err = run_main(["project", "--card", "c.toml", "-o", "out"])
    assert status == 2 and err.count("\n") == 1, err
    for t in expected:
        assert t in err, (t, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
