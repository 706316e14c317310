"""Shared checks of the workflow commands' tests."""

from __future__ import annotations

import pytest


class _Stop(Exception):
    pass


@pytest.fixture
def progress_lines(monkeypatch, capsys):
    """``run(main, make_args)`` -> stderr of a workflow run stopped at its first sample
    (``candidates_in_memory`` raises), with and without ``--quiet``: checks that stdout stays
    empty (it is reserved for the JSON summary) and that ``--quiet`` silences stderr; returns the
    stderr of the run without it."""
    import isrsim.workflows.inject as inject

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(inject, "candidates_in_memory", stop)

    def run(main, make_args):
        err_loud = None
        for quiet in (False, True):
            with pytest.raises(_Stop):
                main(make_args(quiet))
            out, err = capsys.readouterr()
            assert out == ""
            if quiet:
                assert err == ""
            else:
                err_loud = err
        return err_loud

    return run
