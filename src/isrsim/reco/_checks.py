"""Input validation shared by the reconstruction fits (Python layer, before any kernel runs).

Every failure raises :class:`~isrsim.exceptions.ConfigError` with one line naming the field,
the offending value and the allowed range, so that no numba error reaches a user.

Covariances are checked to be positive semi-definite, not only to have a positive diagonal:
each event's matrix is scaled to unit diagonal (its correlation matrix ``R``) and ``R + eps I``
is Cholesky-factorised, which succeeds exactly when the smallest eigenvalue of ``R`` exceeds
``-eps``. ``eps`` = :data:`PSD_EPS` = 1e-6 rejects e.g. a correlation coefficient beyond
1 + 1e-6 and keeps a margin over rounding: the most nearly singular covariances the pipeline
makes, the vertex fit's momentum block for conversions (toys, R = 0.3-10 cm, 0.1-10 GeV), have
correlation-matrix eigenvalues down to 1e-12 (all >= 0). The check runs as a per-event kernel
(0.15 us per 5x5 matrix, a tenth of a batched ``np.linalg.eigvalsh``).
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel, kernel_inline
from ..exceptions import ConfigError
from ._linalg import chol_factor, unpack_sym

__all__ = ["PSD_EPS", "as_beam4", "as_cov_matrices", "as_helices", "as_positive",
           "check_helix_rows", "check_psd", "same_length"]

#: Packed index (row-major upper triangle) of element (i, j) of a symmetric 5x5 matrix.
_PK5 = np.array([[0, 1, 2, 3, 4], [1, 5, 6, 7, 8], [2, 6, 9, 10, 11], [3, 7, 10, 12, 13],
                 [4, 8, 11, 13, 14]], dtype=np.int64)

#: Tolerance on the smallest eigenvalue of a covariance's correlation matrix (module docstring).
PSD_EPS = 1e-6


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def as_helices(name: str, helix, cov) -> tuple[np.ndarray, np.ndarray]:
    """Validate one track per event: helix ``[n, 5]`` and packed covariance ``[n, 15]``.

    Checks shape, finiteness, ``omega != 0``, positive diagonal covariance elements
    (indices 0, 5, 9, 12, 14 of the packed upper triangle) and that every covariance is
    positive semi-definite (:func:`check_psd`). The contents are checked in one compiled pass
    (:func:`_first_bad_helix`); only when it finds a bad event are the checks repeated one by
    one to name the first failure.
    """
    h = np.ascontiguousarray(helix, dtype=np.float64)
    c = np.ascontiguousarray(cov, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 5:
        msg = f"{name}.helix has shape {h.shape}; allowed: (n, 5) = (d0, phi0, omega, z0, tanl)"
        raise ConfigError(msg)
    if c.shape != (h.shape[0], 15):
        msg = f"{name}.cov has shape {c.shape}; allowed: ({h.shape[0]}, 15) packed upper triangle"
        raise ConfigError(msg)
    if h.shape[0] and _first_bad_helix(h, c, np.arange(h.shape[0]), PSD_EPS) >= 0:
        _raise_helix_error(name, h, c)
    return h, c


def check_helix_rows(name: str, helix: np.ndarray, cov: np.ndarray, rows: np.ndarray) -> None:
    """:func:`as_helices` of ``(helix[rows], cov[rows])`` without gathering them: ``helix``
    ``[n, 5]`` and ``cov`` ``[n, 15]`` float64 (views allowed), ``rows`` int64 indices. The
    error, if any, names the position in ``rows`` (as ``as_helices`` of the gathered arrays)."""
    if helix.ndim != 2 or helix.shape[1] != 5 or cov.shape != (helix.shape[0], 15):
        as_helices(name, helix[rows], cov[rows])  # raises the shape error
    if rows.size and _first_bad_helix(helix, cov, rows, PSD_EPS) >= 0:
        _raise_helix_error(name, np.ascontiguousarray(helix[rows]), np.ascontiguousarray(cov[rows]))


def _raise_helix_error(name: str, h: np.ndarray, c: np.ndarray) -> None:
    """The ConfigError of the first failed check of :func:`as_helices`, in its order."""
    bad = ~np.isfinite(h)
    if bad.any():
        i = _first_bad(bad)
        msg = f"{name}.helix[{i}] = {h[i].tolist()} is not finite; allowed: finite numbers"
        raise ConfigError(msg)
    bad = ~np.isfinite(c)
    if bad.any():
        i = _first_bad(bad)
        msg = f"{name}.cov[{i}] is not finite; allowed: finite numbers"
        raise ConfigError(msg)
    zero = h[:, 2] == 0.0
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        msg = f"{name}.helix[{i}].omega = 0.0; allowed: omega != 0 (curved track in a field)"
        raise ConfigError(msg)
    diag = c[:, [0, 5, 9, 12, 14]]
    nonpos = ~(diag > 0.0)
    if nonpos.any():
        i = _first_bad(nonpos)
        msg = f"{name}.cov[{i}] diagonal = {diag[i].tolist()}; allowed: all > 0"
        raise ConfigError(msg)
    check_psd(f"{name}.cov", c, 5)
    msg = f"{name}: invalid helix or covariance; allowed: finite helices, omega != 0, covariances"
    raise ConfigError(msg)  # not reached: _first_bad_helix and the checks above agree


@kernel
def _corr_chol_ok(m, dim, eps, low, d):
    """Whether the correlation matrix ``R`` of the ``dim x dim`` covariance ``m`` (positive
    diagonal; overwritten by ``R + eps I``) has Cholesky factor of ``R + eps I``, i.e. all
    eigenvalues above ``-eps``. ``low`` (dim x dim) and ``d`` (dim) are scratch."""
    for i in range(dim):
        d[i] = 1.0 / math.sqrt(m[i, i])
    for i in range(dim):
        for j in range(dim):
            m[i, j] *= d[i] * d[j]
        m[i, i] += eps
    return chol_factor(m, dim, low)


@kernel_inline
def _psd5_ok(c, ev, eps, low, d):
    """:func:`_corr_chol_ok` of the packed 5x5 covariance ``c[ev]`` (positive diagonal), read in
    place: the same operations in the same order (so the same verdict as :func:`check_psd`),
    with the constant size unrolled and only the lower triangle that the factorisation reads
    (``low`` 5x5 and ``d`` 5 are scratch; ``low`` holds ``R + eps I`` below the diagonal)."""
    d[0] = 1.0 / math.sqrt(c[ev, 0])
    d[1] = 1.0 / math.sqrt(c[ev, 5])
    d[2] = 1.0 / math.sqrt(c[ev, 9])
    d[3] = 1.0 / math.sqrt(c[ev, 12])
    d[4] = 1.0 / math.sqrt(c[ev, 14])
    for j in range(5):
        dd = c[ev, _PK5[j, j]] * (d[j] * d[j]) + eps
        for k in range(j):
            dd -= low[j, k] * low[j, k]
        if not (dd > 1e-300) or not math.isfinite(dd):
            return False
        ljj = math.sqrt(dd)
        low[j, j] = ljj
        for i in range(j + 1, 5):
            s = c[ev, _PK5[i, j]] * (d[i] * d[j])
            for k in range(j):
                s -= low[i, k] * low[j, k]
            low[i, j] = s / ljj
    return True


@kernel
def _first_bad_helix(h, c, rows, eps):
    """Position in ``rows`` of the first event whose helix ``h[ev]`` (5) or packed covariance
    ``c[ev]`` (15) fails a check of :func:`as_helices` (finite, omega != 0, positive diagonal,
    positive semi-definite as :func:`check_psd`), or -1."""
    low = np.empty((5, 5))
    d = np.empty(5)
    for k in range(rows.shape[0]):
        ev = rows[k]
        for i in range(5):
            if not math.isfinite(h[ev, i]):
                return k
        for i in range(15):
            if not math.isfinite(c[ev, i]):
                return k
        if h[ev, 2] == 0.0:
            return k
        if not (c[ev, 0] > 0.0 and c[ev, 5] > 0.0 and c[ev, 9] > 0.0 and c[ev, 12] > 0.0
                and c[ev, 14] > 0.0):
            return k
        if not _psd5_ok(c, ev, eps, low, d):
            return k
    return -1


@kernel
def _first_not_psd(packed, dim, eps):
    """Index of the first event whose packed ``dim x dim`` covariance (positive diagonal) has a
    correlation matrix with an eigenvalue <= ``-eps`` (Cholesky of ``R + eps I`` fails), or -1."""
    m = np.empty((dim, dim))
    low = np.empty((dim, dim))
    d = np.empty(dim)
    for ev in range(packed.shape[0]):
        unpack_sym(packed[ev], dim, m)
        if not _corr_chol_ok(m, dim, eps, low, d):
            return ev
    return -1


def _unpack(packed: np.ndarray, dim: int) -> np.ndarray:
    iu = np.triu_indices(dim)
    full = np.zeros(packed.shape[:-1] + (dim, dim))
    full[..., iu[0], iu[1]] = packed
    full[..., iu[1], iu[0]] = packed
    return full


def check_psd(field: str, packed: np.ndarray, dim: int) -> None:
    """ConfigError naming ``field[i]`` for the first event whose packed (row-major upper
    triangle) ``dim x dim`` covariance is not positive semi-definite. The diagonal must already
    be known to be > 0 and every element finite."""
    if packed.shape[0] == 0:
        return
    i = int(_first_not_psd(np.ascontiguousarray(packed), dim, PSD_EPS))
    if i < 0:
        return
    full = _unpack(packed[i], dim)
    d = 1.0 / np.sqrt(np.diag(full))
    lmin = float(np.linalg.eigvalsh(full * np.outer(d, d)).min())
    msg = (f"{field}[{i}] is not positive semi-definite (smallest eigenvalue of its correlation "
           f"matrix {lmin:.3g}); allowed: a covariance, eigenvalues >= 0 (to {PSD_EPS:g})")
    raise ConfigError(msg)


def as_cov_matrices(field: str, cov: np.ndarray, dim: int) -> np.ndarray:
    """Validate full covariance matrices ``[n, dim, dim]`` (finite values already checked):
    positive diagonal, symmetric (to ``PSD_EPS`` of ``sqrt(c_ii c_jj)``) and positive
    semi-definite. Returns the packed upper triangles ``[n, dim (dim + 1) / 2]``."""
    c = np.asarray(cov, dtype=np.float64)
    diag = np.diagonal(c, axis1=1, axis2=2)
    nonpos = ~(diag > 0.0)
    if nonpos.any():
        i = _first_bad(nonpos)
        msg = f"{field}[{i}] diagonal = {diag[i].tolist()}; allowed: all > 0"
        raise ConfigError(msg)
    scale = np.sqrt(diag[:, :, None] * diag[:, None, :])
    asym = np.abs(c - np.swapaxes(c, 1, 2)) > PSD_EPS * scale
    if asym.any():
        i = _first_bad(asym)
        msg = f"{field}[{i}] is not symmetric; allowed: a symmetric covariance matrix"
        raise ConfigError(msg)
    iu = np.triu_indices(dim)
    packed = np.ascontiguousarray(c[:, iu[0], iu[1]])
    check_psd(field, packed, dim)
    return packed


def same_length(**arrays: np.ndarray) -> int:
    """Common first dimension of the arrays, or ConfigError naming the mismatch."""
    lens = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    if len(set(lens.values())) > 1:
        msg = f"inputs have different numbers of events {lens}; allowed: equal lengths"
        raise ConfigError(msg)
    return next(iter(lens.values()))


def as_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        msg = f"{name} = {value!r} must be a number"
        raise ConfigError(msg) from None
    ok = math.isfinite(v) and (v >= 0.0 if allow_zero else v > 0.0)
    if not ok:
        rng = ">= 0" if allow_zero else "> 0"
        msg = f"{name} = {value!r} out of range: must be finite and {rng}"
        raise ConfigError(msg)
    return v


def as_beam4(p4) -> np.ndarray:
    """The beam 4-vector (px, py, pz, E) [GeV], lab frame: finite, time-like."""
    p = np.asarray(p4, dtype=np.float64)
    if p.shape != (4,) or not np.all(np.isfinite(p)):
        msg = f"p4_beam = {p4!r}; allowed: 4 finite numbers (px, py, pz, E) in GeV"
        raise ConfigError(msg)
    if not p[3] > math.sqrt(p[0] ** 2 + p[1] ** 2 + p[2] ** 2):
        msg = f"p4_beam = {p.tolist()} is not time-like; allowed: E > |p|"
        raise ConfigError(msg)
    return p
