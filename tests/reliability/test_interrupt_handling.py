"""Interrupts that Python would lose or misplace (isrsim._interrupt, issue 10 item 2).

A signal handler's KeyboardInterrupt raised inside a finalizer is printed and swallowed; these
tests raise the signal exactly there (``signal.raise_signal`` runs the handler before it
returns) and check that the interrupt still stops the run, that deferred sections finish first,
and that the handlers are put back.
"""

from __future__ import annotations

import signal

import pytest

from isrsim import _interrupt
from isrsim.config import build_spec

from .conftest import BASE_CARD


@pytest.fixture(autouse=True)
def _sigint_as_from_a_terminal():
    """A test runner started in the background (``cmd &``) has SIGINT ignored, and handling()
    rightly keeps an ignored SIGINT; these tests need Python's default handler."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class _SignalsWhenCollected:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def _swallowed_interrupt() -> None:
    """Deliver SIGINT inside a finalizer: Python prints and drops its exception."""
    _SignalsWhenCollected()


def test_interrupt_swallowed_by_a_finalizer_is_raised_at_the_next_check(capfd):
    with _interrupt.handling():
        _swallowed_interrupt()  # returns normally: the exception was swallowed
        assert _interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            _interrupt.check()
    assert "Exception ignored" not in capfd.readouterr().err


def test_deferred_section_finishes_before_the_interrupt():
    done = []
    with _interrupt.handling(), pytest.raises(KeyboardInterrupt):
        with _interrupt.deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("rest of the section")
    assert done == ["rest of the section"]


def test_repeated_signal_does_not_cut_the_cleanup():
    cleaned = []
    with _interrupt.handling(sigterm=True):
        with pytest.raises(KeyboardInterrupt):
            try:
                signal.raise_signal(signal.SIGTERM)
            finally:
                signal.raise_signal(signal.SIGINT)  # a second Ctrl-C during the clean-up
                cleaned.append(True)
    assert cleaned == [True]


def test_handlers_are_restored_and_an_ignored_sigint_stays_ignored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with _interrupt.handling(sigterm=True):
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not _interrupt.requested()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with _interrupt.handling():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_outside_handling_check_is_a_no_op():
    with _interrupt.handling():
        _swallowed_interrupt()
    _interrupt.check()  # a finished run's interrupt does not leak into the next call


@pytest.mark.parametrize("dataset", [False, True])
def test_run_stops_on_an_interrupt_swallowed_mid_run(tmp_path, monkeypatch, capfd, dataset):
    """Before the fix the run went on to the end and wrote a complete file."""
    import isrsim.runner as runner

    original = runner._run_chunk
    calls = []

    def chunk_then_finalizer(*args):
        res = original(*args)
        calls.append(1)
        if len(calls) == 1:
            _swallowed_interrupt()
        return res

    monkeypatch.setattr(runner, "_run_chunk", chunk_then_finalizer)
    out = tmp_path / ("data" if dataset else "out.parquet")  # a directory: a dataset of parts
    card = {**BASE_CARD, "run": {**BASE_CARD["run"], "events": 40_000, "chunk_size": 10_000,
                                 "output": str(out)}}
    with pytest.raises(KeyboardInterrupt):
        runner.run(build_spec(card))
    assert len(calls) < 4
    assert "Exception ignored" not in capfd.readouterr().err
    if dataset:
        assert not [p for p in out.iterdir() if ".tmp" in p.name]
    else:
        assert list(tmp_path.iterdir()) == []


def test_second_interrupt_while_the_first_is_reported_still_exits_130(tmp_path, monkeypatch):
    """A second Ctrl-C that arrives after the run's handlers were restored, while the CLI prints
    the first one's message, must not escape ``main`` (Python would then exit by SIGINT, -2,
    instead of 130)."""
    import sys

    from isrsim import cli

    def interrupted_run(args):
        raise KeyboardInterrupt

    class _SignalOnWrite:
        """stderr that receives the second signal while the message is written."""

        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> int:
            self.text += s
            signal.raise_signal(signal.SIGINT)  # default handler restored: KeyboardInterrupt
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setitem(cli._COMMANDS, "generate", interrupted_run)
    err = _SignalOnWrite()
    monkeypatch.setattr(sys, "stderr", err)
    out = tmp_path / "x.parquet"
    assert cli.main(["generate", "--process", "isr_mumu", "--events", "10", "-o", str(out)]) == 130
    assert "interrupted" in err.text
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
