"""Small dense linear algebra for the fit kernels (n <= 10), written as ``@kernel`` loops.

The kinematic and vertex fits solve tiny symmetric positive-definite systems per event;
calling LAPACK through ``np.linalg`` from numba for a 3x3 or 9x9 matrix costs more than the
arithmetic. Cholesky (Golub & Van Loan, "Matrix Computations", alg. 4.2.1) is used for
solves and inverses; it reports failure instead of raising, so kernels can flag the event.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel

__all__ = ["chol_factor", "chol_inverse", "chol_solve", "unpack_sym"]


@kernel
def chol_factor(a, n, low):
    """Lower Cholesky factor of the leading ``n x n`` block of ``a`` into ``low``.

    Returns False (and leaves ``low`` partly filled) when the matrix is not numerically
    positive definite (a pivot <= 1e-300 or non-finite).
    """
    for i in range(n):
        for j in range(n):
            low[i, j] = 0.0
    for j in range(n):
        d = a[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        if not (d > 1e-300) or not math.isfinite(d):
            return False
        ljj = math.sqrt(d)
        low[j, j] = ljj
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            low[i, j] = s / ljj
    return True


@kernel
def chol_solve(low, n, b, x):
    """Solve ``L L^T x = b`` for the factor ``low`` from :func:`chol_factor` (``x`` may alias ``b``)."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * x[k]
        x[i] = s / low[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= low[k, i] * x[k]
        x[i] = s / low[i, i]


@kernel
def chol_inverse(a, n, out, work):
    """Inverse of the SPD leading ``n x n`` block of ``a`` into ``out``; ``work`` is n x n scratch.

    Returns False when ``a`` is not positive definite.
    """
    if not chol_factor(a, n, work):
        return False
    col = np.zeros(n)
    for j in range(n):
        for i in range(n):
            col[i] = 0.0
        col[j] = 1.0
        chol_solve(work, n, col, col)
        for i in range(n):
            out[i, j] = col[i]
    # symmetrise (round-off)
    for i in range(n):
        for j in range(i + 1, n):
            v = 0.5 * (out[i, j] + out[j, i])
            out[i, j] = v
            out[j, i] = v
    return True


@kernel
def unpack_sym(packed, n, out):
    """Unpack ``n(n+1)/2`` upper-triangle elements (row-major) into the symmetric ``out``."""
    k = 0
    for i in range(n):
        for j in range(i, n):
            out[i, j] = packed[k]
            out[j, i] = packed[k]
            k += 1

