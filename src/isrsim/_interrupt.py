"""SIGINT / SIGTERM as a ``KeyboardInterrupt`` that cannot be lost.

Python runs a signal handler, and raises its exception, wherever the main thread happens to be
between two bytecodes. Two places there are wrong:

* a finalizer (``__del__``, a weakref callback; llvmlite has many): the exception is printed as
  "Exception ignored in ..." and swallowed, and the run would go on to the end as if nothing had
  happened;
* ``multiprocessing``'s process start, while the parent writes the child's bootstrap data to a
  pipe: the child then dies with "pickle data was truncated".

So the handler installed here also records the signal; :func:`check` (called by the run loops
between chunks) re-raises an interrupt that a finalizer swallowed, :func:`deferred` holds the
exception back until the end of a section that must not be cut, a repeated signal does not
interrupt the clean-up of the first, and swallowed interrupts are not printed (:func:`handling`
installs an ``unraisablehook`` that drops them).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["check", "deferred", "handling", "quiet_unraisable", "requested"]

_pending: int | None = None   # number of the signal received, None if none
_defer_depth = 0
_installed = 0                # nesting depth of handling()


def _handler(signum: int, frame: Any) -> None:
    global _pending
    first = _pending is None
    _pending = signum
    if first and _defer_depth == 0:  # a repeated signal does not cut the clean-up short
        raise KeyboardInterrupt


def requested() -> bool:
    """True once an interrupt was received inside :func:`handling`."""
    return _pending is not None


def check() -> None:
    """Inside :func:`handling`: raise ``KeyboardInterrupt`` if an interrupt was received (e.g.
    one swallowed by a finalizer)."""
    if _installed and _pending is not None:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interrupt back until the end of the block, then raise it."""
    global _defer_depth
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
    if _defer_depth == 0:
        check()


def quiet_unraisable(hook: Any) -> Any:
    """``sys.unraisablehook`` that drops swallowed interrupts and passes the rest to ``hook``."""
    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)
    return unraisable


@contextlib.contextmanager
def handling(sigterm: bool = False) -> Iterator[None]:
    """Within the block, SIGINT (unless it is ignored, as in a background job) and, if
    ``sigterm``, SIGTERM raise a recorded ``KeyboardInterrupt``. A no-op outside the main thread
    (only the main thread can set handlers); nested use keeps the outer handlers."""
    global _installed, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [signal.SIGINT] + ([signal.SIGTERM] if sigterm else [])
    old: dict[int, Any] = {}
    for sig in wanted:  # Python's defaults only: an ignored SIGINT or a user's handler is kept
        if signal.getsignal(sig) is (signal.default_int_handler if sig == signal.SIGINT
                                     else signal.SIG_DFL):
            old[sig] = signal.signal(sig, _handler)
    old_hook = sys.unraisablehook
    if _installed == 0:
        _pending = None
        sys.unraisablehook = quiet_unraisable(old_hook)
    _installed += 1
    try:
        yield
    finally:
        _installed -= 1
        for sig, h in old.items():
            signal.signal(sig, h)
        if _installed == 0:
            sys.unraisablehook = old_hook
