"""``isrsim._numba.borrowed``: a view without its reference-count owner, for inlined helpers.

It must be the same array / Generator (same data, same random stream) and must leave the
owner's reference count as it was (no incref without its decref)."""

from __future__ import annotations

import sys

import numba
import numpy as np

from isrsim._numba import borrowed, kernel_inline


@kernel_inline
def _fill(rng, out, scale):
    for i in range(out.shape[0]):
        out[i] = scale[i % scale.shape[0]] * rng.standard_normal()


@numba.njit
def _with_borrowed(rng, out, scale):
    for _ in range(3):
        _fill(borrowed(rng), borrowed(out), borrowed(scale))
    return out.sum()


@numba.njit
def _plain(rng, out, scale):
    for _ in range(3):
        _fill(rng, out, scale)
    return out.sum()


def test_borrowed_views_write_through_and_share_the_stream():
    scale = np.array([1.0, 2.0, 3.0])
    a, b = np.zeros(10), np.zeros(10)
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    rc0 = sys.getrefcount(scale)
    sa = _with_borrowed(ra, a, scale)
    sb = _plain(rb, b, scale)
    np.testing.assert_array_equal(a, b)  # written through the view, same draws
    assert sa == sb and np.any(a != 0.0)
    assert ra.standard_normal() == rb.standard_normal()  # the generators advanced alike
    assert sys.getrefcount(scale) == rc0
