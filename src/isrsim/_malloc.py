"""Keep freed memory in the process heap (glibc), for isrsim's own processes.

A run allocates the arrays of every block (10^4 events: a few MB per array), converts them and
frees them. glibc serves allocations above its mmap threshold (128 kB at start, adapted upwards
only after such a block is freed) with fresh ``mmap`` pages and returns the top of the heap to
the system above its trim threshold, so a block's arrays keep arriving as new zero pages whose
first touch is a page fault. Measured (2026-11-21, `isrsim generate --process isr_mumu
--detector belle2 --events 4e6 --workers 1`, 3 runs each, alternated): 8.85-9.19 CPU-s without,
8.17-8.38 with the settings below (-7 %, the same in wall time); generation of 2e5 events in 10^4
blocks in a fresh process, 344 -> 283 ns/event.

Applied by the command line and by the runner's worker processes, never on import: in a
user's interpreter the allocator's policy stays theirs. Memory stays bounded: the heap keeps at
most the peak of one chunk in flight, which the process has used anyway.
"""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc's maximum on 64-bit: 32 MB).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap is returned to the system only above this size.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (``mallopt``); True if both were accepted, False on
    other C libraries (nothing is changed there)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
