"""Shared helpers of the reliability suite (issue 10): hypothesis profiles, CLI runners,
small reference runs.

Hypothesis profile: ``HYPOTHESIS_PROFILE`` selects ``ci`` (default: few examples, derandomized so
CI is reproducible, no example database written into the work tree), ``dev`` or ``thorough``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: a small, valid ISR mu mu run card (BESIII psi(3770) energy, physics.md section 0)
BASE_CARD = {
    "run": {"process": "isr_mumu", "events": 2000, "seed": 1, "output": "out.parquet",
            "progress": False},
    "beam": {"sqrt_s": 3.773},
    "process": {"mass_range": [1.5, 3.4]},
}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``isrsim.cli.main(argv)`` in-process; returns (status, stdout, stderr)."""
    from isrsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse errors
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


def isrsim_cmd(*args: str) -> list[str]:
    """Command line of the CLI in a fresh interpreter (same python as the tests)."""
    return [sys.executable, "-m", "isrsim", *args]


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(isrsim_cmd(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def small_file(tmp_path_factory) -> Path:
    """20000 generator-level isr_mumu events (2 row groups), seed 7."""
    from isrsim.config import build_spec
    from isrsim.runner import run

    out = tmp_path_factory.mktemp("small") / "small.parquet"
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 20_000, "seed": 7,
                                 "chunk_size": 10_000, "output": str(out)}}
    run(build_spec(card))
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A 3-part dataset directory (30000 events, chunk 10000), seed 7."""
    from isrsim.config import build_spec
    from isrsim.runner import run

    out = tmp_path_factory.mktemp("ds") / "data"
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 30_000, "seed": 7,
                                 "chunk_size": 10_000, "output": str(out)}}
    run(build_spec(card))
    return out


def pytest_configure(config):
    # hypothesis' pytest plugin triggers this deprecation (from mypy_extensions) while it reports
    # a failing example; with filterwarnings = error it would hide the failure behind an
    # INTERNALERROR
    config.addinivalue_line("filterwarnings",
                            "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
