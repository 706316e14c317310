"""Input validation shared by the reconstruction fits (Python layer, before any kernel runs).

Every failure raises :class:`~isrsim.exceptions.ConfigError` with one line naming the field,
the offending value and the allowed range, so that no numba error reaches a user.
"""

from __future__ import annotations

import math

import numpy as np

from ..exceptions import ConfigError

__all__ = ["as_beam4", "as_helices", "as_positive", "same_length"]


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def as_helices(name: str, helix, cov) -> tuple[np.ndarray, np.ndarray]:
    """Validate one track per event: helix ``[n, 5]`` and packed covariance ``[n, 15]``.

    Checks shape, finiteness, ``omega != 0`` and positive diagonal covariance elements
    (indices 0, 5, 9, 12, 14 of the packed upper triangle).
    """
    h = np.ascontiguousarray(helix, dtype=np.float64)
    c = np.ascontiguousarray(cov, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 5:
        msg = f"{name}.helix has shape {h.shape}; allowed: (n, 5) = (d0, phi0, omega, z0, tanl)"
        raise ConfigError(msg)
    if c.shape != (h.shape[0], 15):
        msg = f"{name}.cov has shape {c.shape}; allowed: ({h.shape[0]}, 15) packed upper triangle"
        raise ConfigError(msg)
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
    return h, c


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
