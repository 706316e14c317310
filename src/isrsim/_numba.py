"""The one place that sets isrsim's JIT policy.

``kernel`` compiles lazily (no explicit signatures, so importing isrsim stays cheap),
caches to disk, releases the GIL and uses NumPy's floating-point error model (division
by zero gives inf/NaN instead of raising: inputs are validated before kernels run).
``fastmath`` stays off: it changes NaN/inf semantics and results across CPUs.

``kernel_inline`` is the same, inlined into its callers at numba's IR level: for large helpers
that take arrays or a ``Generator`` and are called per particle. A compiled call to them
increfs and decrefs every array argument and the generator (NRT atomic operations, ~3 ns each;
measured: ~37 ns per call of the bremsstrahlung walk with five arrays) that inlining removes.
Inlining at numba's IR level still binds every argument to a new variable, i.e. increfs it on
entry and decrefs it on every exit; numba's reference-count pruning removes such pairs only in
simple control flow, not around the loops and early returns of the walk. A kernel therefore
passes :func:`borrowed` views of its arrays and generator to inlined helpers.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numba
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["borrowed", "drop_stale_caches", "kernel", "kernel_inline", "source_files"]

#: Name of the file, in the package's top ``__pycache__``, that records which sources the
#: cached kernels were compiled from (see :func:`drop_stale_caches`).
SOURCES_STAMP = "isrsim_numba_sources.stamp"


def source_files(package_dir: Path):
    """Every ``.py`` file below ``package_dir`` in a fixed order (``__pycache__`` and symbolic
    links to directories are not followed)."""
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(root, name)


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 (hex) of the contents of isrsim's Python sources.

    Cached results (candidate tables of ``isrsim project``, templates of ``isrsim inject``) are
    keyed by it as well as by their settings, so that any edit of the code, not only a new
    version number, gives new samples instead of reusing ones the old code produced; a dataset
    manifest records it, and ``--resume`` refuses to complete a dataset another build started.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in source_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _sources_stamp(package_dir: Path) -> str:
    """Hash of the relative path, size and modification time of every source file."""
    h = hashlib.sha256()
    for path in source_files(package_dir):
        st = path.stat()
        h.update(f"{path.relative_to(package_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def drop_stale_caches(package_dir: Path) -> bool:
    """Delete every cached kernel below ``package_dir`` if any of its sources changed since
    they were compiled; returns True if it did.

    numba checks only the source file of the cached function itself, not the files of the
    kernels it calls (numba/numba pull requests 8396 and 9563 proposed tracking them; not
    merged as of numba 0.68): after an edit of, say, ``helix.py``, kernels of other modules that
    call it would keep running the old code from their cache. With an editable install this
    happened here (the generator's tables differed by 1e-14 between a fresh clone and the
    development tree). So all of isrsim's caches are dropped together when any source file
    changes (the first run after an edit recompiles, ~8 s). Errors (e.g. a read-only
    installation, whose cache numba keeps in the user's cache directory) are ignored.
    """
    try:
        stamp = _sources_stamp(package_dir)
        stamp_file = package_dir / "__pycache__" / SOURCES_STAMP
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return False
        for root, dirs, files in os.walk(package_dir):
            if Path(root).name == "__pycache__":
                for name in files:
                    if name.endswith((".nbi", ".nbc")):
                        Path(root, name).unlink(missing_ok=True)
        stamp_file.parent.mkdir(exist_ok=True)
        tmp = stamp_file.with_name(f"{SOURCES_STAMP}.{os.getpid()}")
        tmp.write_text(stamp)
        os.replace(tmp, stamp_file)
        return True
    except OSError:
        return False


drop_stale_caches(Path(__file__).resolve().parent)

kernel = numba.njit(cache=True, nogil=True, error_model="numpy")
kernel_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")


@intrinsic
def borrowed(typingctx, x):
    """``borrowed(x)`` inside a kernel: the same array or ``numpy.random.Generator`` (same data,
    shape, strides, bit generator) without its reference-count owner, so that passing it to a
    :data:`kernel_inline` helper costs no atomic incref/decref pair (an NRT call with a null
    owner is a no-op). Measured (numba 0.68, 2026-11-22): an inlined helper taking a generator
    and five arrays, called in a loop, 27 ns per call with the kernel's own arguments, 4.6 ns
    with borrowed views, as fast as its body written out in the loop.

    The view does not keep ``x`` alive: use it only while the kernel holds ``x`` (e.g. ``x`` is
    one of its arguments) and never return or store it.
    """
    if not isinstance(x, (types.Array, types.NumPyRandomGeneratorType)):
        return None

    def codegen(context, builder, sig, args):
        src = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        out = cgutils.create_struct_proxy(sig.return_type)(context, builder,
                                                           value=src._getvalue())
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()

    return x(x), codegen
