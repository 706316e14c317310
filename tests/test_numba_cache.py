"""isrsim drops all of its cached kernels when any of its sources changes (isrsim._numba)."""

from __future__ import annotations

import os

from isrsim._numba import SOURCES_STAMP, drop_stale_caches


def _package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "__pycache__").mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    return pkg


def _caches(pkg):
    for d in (pkg / "__pycache__", pkg / "sub" / "__pycache__"):
        (d / "f-1.py311.nbi").write_bytes(b"index")
        (d / "f-1.py311.1.nbc").write_bytes(b"code")
        (d / "a.cpython-311.pyc").write_bytes(b"pyc")


def _n_cached(pkg):
    return sum(1 for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_caches_dropped_only_when_a_source_changes(tmp_path):
    pkg = _package(tmp_path)
    _caches(pkg)
    assert drop_stale_caches(pkg)  # no stamp yet: the caches' sources are unknown
    assert _n_cached(pkg) == 0
    assert (pkg / "__pycache__" / "a.cpython-311.pyc").exists()  # Python's own cache stays
    assert (pkg / "__pycache__" / SOURCES_STAMP).is_file()
    _caches(pkg)
    assert not drop_stale_caches(pkg)  # unchanged sources: caches kept
    assert _n_cached(pkg) == 4
    b = pkg / "sub" / "b.py"  # an edit in another module than the cached kernel's
    st = b.stat()
    b.write_text("y = 3\n")
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert drop_stale_caches(pkg)
    assert _n_cached(pkg) == 0
    _caches(pkg)
    (pkg / "c.py").write_text("")  # a new module changes the stamp too
    assert drop_stale_caches(pkg)
    assert _n_cached(pkg) == 0


def test_an_unwritable_cache_directory_is_not_an_error(tmp_path):
    """Where the stamp cannot be written (here the top ``__pycache__`` is a file; in practice a
    read-only installation) the function gives up quietly: importing isrsim must not fail."""
    pkg = _package(tmp_path)
    (pkg / "__pycache__").rmdir()
    (pkg / "__pycache__").write_text("not a directory")
    assert not drop_stale_caches(pkg)
    assert not drop_stale_caches(pkg)
