"""Packaging: bundled detector files and cards are inside the package (editable installs
included) and inside a built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_resources_visible():
    det = files("isrsim") / "detectors"
    names = {p.name for p in det.iterdir()}
    assert {"besiii.toml", "belle2.toml"} <= names
    # the package copy is the repository's detectors/ folder
    assert (det / "besiii.toml").read_text() == (ROOT / "detectors" / "besiii.toml").read_text()
    assert (files("isrsim") / "cards").is_dir()


def test_help_is_light():
    # `isrsim --help` must not import numba or compile anything
    code = "import sys, isrsim.cli; isrsim.cli.build_parser(); print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_wheel_contains_detectors(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
                          str(tmp_path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {res.stderr.strip()[-200:]}")
    wheel = next(tmp_path.glob("isrsim-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("isrsim/detectors/besiii.toml", "isrsim/detectors/belle2.toml"):
        assert f in names
