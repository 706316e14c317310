"""Exact helix geometry of a charged particle in a uniform solenoid field.

Convention (``contracts.md``, basf2-like), lab frame, field ``Bz`` [T] along +z (``bz > 0``),
reference point = the origin (nominal IP):

* parameters ``(d0 [cm], phi0 [rad], omega [1/cm], z0 [cm], tanl)``;
* ``omega = q * K_CURV * Bz / pT`` (signed; positive for positive charge), ``pT = K_CURV*Bz/|omega|``;
* ``phi0`` is the azimuth of the momentum at the perigee (point of closest approach to the
  z axis in the transverse plane); the perigee is at ``(d0 sin phi0, -d0 cos phi0, z0)``;
* ``tanl = pz / pT``;
* along the transverse arc length ``s`` (cm) the momentum azimuth is ``phi(s) = phi0 - omega s``
  (a positive particle turns clockwise seen from +z when Bz > 0, from F = q v x B) and
  ``z(s) = z0 + tanl s``;
* covariances: 15 upper-triangle elements, row-major, of the 5x5 matrix in the order above
  (:func:`cov_pack_index` gives the flat index of element ``(i, j)``).

The circle centre is ``(d0 + 1/omega) (sin phi0, -cos phi0)``. All formulas are written in a
form that stays exact and well conditioned for ``|omega| -> 0`` (straight tracks) and for
large displacements (e.g. ``d0 = (omega r^2 + 2 (x sin phi - y cos phi)) / (1 + S)``,
the cancellation-free form of ``d0 = sqrt(rho^2 + R^2 ...) - rho``, see physics.md 5.4).

Every function here is a scalar ``@kernel`` (numba njit) callable from other kernels and from
Python. Inputs are not validated inside the kernels: callers must pass ``q = +-1``,
``bz > 0`` and ``pT > 0``.
"""

from __future__ import annotations

import math

import numpy as np

from ._numba import kernel
from .constants import K_CURV

__all__ = [
    "arclength_to_point_xy",
    "cov_pack_index",
    "momentum_at_perigee",
    "pack_cov",
    "perigee_from_state",
    "perigee_jacobian",
    "state_at_arclength",
    "unpack_cov",
    "wrap_angle",
]


@kernel
def wrap_angle(a):
    """Map an angle [rad] into (-pi, pi]."""
    return math.atan2(math.sin(a), math.cos(a))


#: ``atan(k / _ATAN_N)`` for k = 0.._ATAN_N: the table of :func:`_atan2_fast` (libm values).
_ATAN_N = 32
_ATAN_TABLE = np.array([math.atan(k / _ATAN_N) for k in range(_ATAN_N + 1)])
_HALF_PI = 0.5 * math.pi


@kernel
def _atan2_fast(y, x):
    """``atan2(y, x)`` to within 2 ulp of libm's, in ~9 instead of ~20 ns (numba, 2026-11).

    For ``x > 0`` and ``|y| <= 1e-3 x`` (the small turning angles of prompt tracks) the odd
    Taylor series of atan(y/x) to order 9 (truncation error below (y/x)^11/11 < 1e-33).
    Otherwise the octant is reduced to ``t = min/max(|x|, |y|)`` in [0, 1], ``t`` to the nearest
    ``c = k/32`` and ``atan t = atan c + atan r`` with ``r = (t - c)/(1 + t c)``, ``|r| <= 1/64``,
    summed to r^9 (truncation below r^11/11 < 1e-20 r). Zeros, infinities and NaN go to libm.
    """
    if 0.0 < x < math.inf and abs(y) <= 1e-3 * x:
        t = y / x
        t2 = t * t
        return t * (1.0 - t2 * (1.0 / 3.0 - t2 * (0.2 - t2 * (1.0 / 7.0 - t2 * (1.0 / 9.0)))))
    ax = abs(x)
    ay = abs(y)
    swap = ay > ax
    num = ax if swap else ay
    den = ay if swap else ax
    t = num / den
    if not (0.0 <= t <= 1.0 and den < math.inf):  # 0/0, an infinity, NaN
        return math.atan2(y, x)
    k = int(t * _ATAN_N + 0.5)
    c = k * (1.0 / _ATAN_N)
    r = (num - c * den) / (den + c * num)
    r2 = r * r
    a = _ATAN_TABLE[k] + (r - r * r2 * (1.0 / 3.0 - r2 * (0.2 - r2 * (1.0 / 7.0 - r2 * (1.0 / 9.0)))))
    if swap:
        a = _HALF_PI - a
    if x < 0.0:
        a = math.pi - a
    return math.copysign(a, y)


@kernel
def _sinc(u):
    """sin(u)/u with the removable singularity at 0 (series below 1e-4)."""
    if abs(u) < 1e-4:
        return 1.0 - u * u / 6.0
    return math.sin(u) / u


@kernel
def perigee_from_state(x, y, z, px, py, pz, q, bz):
    """Perigee helix parameters w.r.t. the origin of a particle at (x, y, z) with momentum p.

    Exact propagation along the helix (no straight-line approximation) from any, possibly
    displaced, point to the perigee (point of closest transverse approach to the z axis)
    on the same turn of the helix (|transverse arc length| <= pi |R|).

    Parameters
    ----------
    x, y, z : float
        Position [cm], lab frame.
    px, py, pz : float
        Momentum at that position [GeV], lab frame.
    q : float
        Charge in units of e (+1 or -1).
    bz : float
        Solenoid field [T], > 0.

    Returns
    -------
    d0, phi0, omega, z0, tanl : float
        Perigee parameters in the convention of this module.
    """
    pt = math.sqrt(px * px + py * py)
    qb = q * K_CURV * bz
    omega = qb / pt
    # momentum transported to the perigee: (px - qB y, py + qB x) (same |.|/pT ratio as S)
    ppx = px - qb * y
    ppy = py + qb * x
    phi0 = _atan2_fast(ppy, ppx)
    p_perigee = math.sqrt(ppx * ppx + ppy * ppy)
    cross = x * py - y * px  # pT * (x sin phi - y cos phi)
    d0 = (qb * (x * x + y * y) + 2.0 * cross) / (pt + p_perigee)
    # transverse arc length from the perigee to the point: phi = phi0 - omega s
    dphi = _atan2_fast(ppy * px - ppx * py, ppx * px + ppy * py)  # phi0 - phi in (-pi, pi]
    s = dphi / omega
    tanl = pz / pt
    z0 = z - tanl * s
    return d0, phi0, omega, z0, tanl


@kernel
def perigee_jacobian(x, y, z, px, py, pz, q, bz, jac):
    """Perigee parameters and their exact Jacobian w.r.t. the state (x, y, z, px, py, pz).

    Same conventions and inputs as :func:`perigee_from_state`; ``jac`` is a float64 (5, 6)
    output array filled with d(d0, phi0, omega, z0, tanl)/d(x, y, z, px, py, pz).
    Analytic derivatives of the closed forms used in :func:`perigee_from_state` (useful for
    vertex and kinematic fits that linearise helices around a trial vertex).

    Returns
    -------
    d0, phi0, omega, z0, tanl : float
    """
    pt2 = px * px + py * py
    pt = math.sqrt(pt2)
    qb = q * K_CURV * bz
    omega = qb / pt
    ppx = px - qb * y
    ppy = py + qb * x
    p2 = ppx * ppx + ppy * ppy
    pp = math.sqrt(p2)
    phi0 = math.atan2(ppy, ppx)
    num = qb * (x * x + y * y) + 2.0 * (x * py - y * px)
    den = pt + pp
    d0 = num / den
    dphi = math.atan2(ppy * px - ppx * py, ppx * px + ppy * py)
    s = dphi / omega
    tanl = pz / pt
    z0 = z - tanl * s
    for i in range(5):
        for j in range(6):
            jac[i, j] = 0.0
    # phi0 = atan2(Py, Px), Px = px - qb y, Py = py + qb x
    dphi0 = (qb * ppx / p2, qb * ppy / p2, 0.0, -ppy / p2, ppx / p2, 0.0)
    # d0 = N / D
    dn = (2.0 * qb * x + 2.0 * py, 2.0 * qb * y - 2.0 * px, 0.0, -2.0 * y, 2.0 * x, 0.0)
    dd = (qb * ppy / pp, -qb * ppx / pp, 0.0, px / pt + ppx / pp, py / pt + ppy / pp, 0.0)
    # omega = qb / pT; tanl = pz / pT; phi = atan2(py, px); s = pT (phi0 - phi) / qb
    dpt = (0.0, 0.0, 0.0, px / pt, py / pt, 0.0)
    dphi_state = (0.0, 0.0, 0.0, -py / pt2, px / pt2, 0.0)
    for j in range(6):
        jac[0, j] = (dn[j] - d0 * dd[j]) / den
        jac[1, j] = dphi0[j]
        jac[2, j] = -omega / pt * dpt[j]
        dtanl = -tanl / pt * dpt[j]
        if j == 5:
            dtanl = 1.0 / pt
        jac[4, j] = dtanl
        ds = (dphi * dpt[j] + pt * (dphi0[j] - dphi_state[j])) / qb
        jac[3, j] = -s * dtanl - tanl * ds
    jac[3, 2] += 1.0
    return d0, phi0, omega, z0, tanl


@kernel
def momentum_at_perigee(phi0, omega, tanl, bz):
    """Momentum (px, py, pz) [GeV] at the perigee; ``pT = K_CURV * bz / |omega|``."""
    pt = K_CURV * bz / abs(omega)
    return pt * math.cos(phi0), pt * math.sin(phi0), pt * tanl


@kernel
def state_at_arclength(d0, phi0, omega, z0, tanl, bz, s_xy):
    """Position [cm] and momentum [GeV] after transverse arc length ``s_xy`` [cm] from the perigee.

    ``s_xy`` may be negative (backwards along the helix). Exact helix; uses the
    ``sinc`` form, stable for ``omega * s_xy -> 0``.

    Returns
    -------
    x, y, z, px, py, pz : float
    """
    half = 0.5 * omega * s_xy
    phi_mid = phi0 - half
    chord = s_xy * _sinc(half)
    x = d0 * math.sin(phi0) + chord * math.cos(phi_mid)
    y = -d0 * math.cos(phi0) + chord * math.sin(phi_mid)
    z = z0 + tanl * s_xy
    pt = K_CURV * bz / abs(omega)
    phi = phi0 - omega * s_xy
    return x, y, z, pt * math.cos(phi), pt * math.sin(phi), pt * tanl


@kernel
def arclength_to_point_xy(d0, phi0, omega, x, y):
    """Transverse arc length [cm] from the perigee to the point of the helix's circle closest to (x, y).

    The result lies in (-pi/|omega|, pi/|omega|] (the same turn as the perigee). For a
    straight track (omega = 0) it is the projection on the direction phi0.
    """
    sp = math.sin(phi0)
    cp = math.cos(phi0)
    if omega == 0.0:
        return (x - d0 * sp) * cp + (y + d0 * cp) * sp
    # direction of the momentum at the closest point: phi with
    # sin(phi) ~ -omega (x - xc), cos(phi) ~ omega (y - yc), centre (d0 + 1/omega)(sin phi0, -cos phi0)
    a = 1.0 + omega * d0
    sphi = a * sp - omega * x
    cphi = a * cp + omega * y
    # phi0 - phi
    dphi = math.atan2(sp * cphi - cp * sphi, cp * cphi + sp * sphi)
    return dphi / omega


@kernel
def cov_pack_index(i, j):
    """Flat index in the 15-element packed upper triangle (row-major) of 5x5 element (i, j)."""
    if i > j:
        i, j = j, i
    return i * 5 - (i * (i - 1)) // 2 + (j - i)


@kernel
def pack_cov(mat, out):
    """Pack a symmetric 5x5 matrix ``mat`` into the 15-element array ``out`` (upper triangle, row-major)."""
    k = 0
    for i in range(5):
        for j in range(i, 5):
            out[k] = mat[i, j]
            k += 1


@kernel
def unpack_cov(packed, out):
    """Unpack 15 upper-triangle elements into the symmetric 5x5 array ``out``."""
    k = 0
    for i in range(5):
        for j in range(i, 5):
            out[i, j] = packed[k]
            out[j, i] = packed[k]
            k += 1


def unpack_cov_array(packed: np.ndarray) -> np.ndarray:
    """NumPy helper: ``[..., 15]`` packed covariances -> ``[..., 5, 5]`` symmetric matrices."""
    packed = np.asarray(packed)
    iu = np.triu_indices(5)
    out = np.zeros((*packed.shape[:-1], 5, 5), dtype=packed.dtype)
    out[..., iu[0], iu[1]] = packed
    out[..., iu[1], iu[0]] = packed
    return out
