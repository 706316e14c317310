"""Final-state radiation (FSR) in gamma* -> f fbar: one photon carrying the radiated energy.

Model (leading-logarithmic, soft-photon exponentiated; the standard structure-function form,
cf. the ISR radiator of physics.md eq. (1.2)-(1.3) with the electron replaced by the final state):

* **Rate.** A back-to-back pair of charges with velocity ``beta`` (in the gamma* rest frame,
  ``beta^2 = 1 - 4 m_f^2 / M^2``) radiates soft photons with the eikonal current
  ``J = p+/(p+.k) - p-/(p-.k)``; ``-J^2 w^2 = 4 beta^2 sin^2(theta) / (1 - beta^2 cos^2(theta))^2``
  with theta the photon angle to the f direction, so
  ``dN = (2 alpha/pi) beta^2 (1 - c^2)/(1 - beta^2 c^2)^2 dc dw/w`` and, integrated over c,
  ``dN = beta_f dx/x`` with ``x = 2 E_gamma / M`` and the exponent
  ``beta_f = (2 alpha/pi) I(beta)``, ``I(beta) = (1 + beta^2)/(2 beta) ln((1 + beta)/(1 - beta)) - 1``
  (-> ``ln(M^2/m_f^2) - 1`` for beta -> 1, the textbook soft-photon exponent; ``4 beta^2/3``
  at threshold).
* **Spectrum.** Soft photons exponentiated (Yennie-Frautschi-Suura), hard collinear ones from
  the splitting function: the total radiated fraction x has the density
  ``beta_f x^(beta_f - 1) h(x)`` on ``0 < x < beta^2`` (the pair mass ``M sqrt(1 - x)`` stays
  above ``2 m_f``), ``h = (1 + (1 - x)^2)/2`` for spin-1/2 and ``h = 1 - x`` for spin-0 (pions),
  normalised to 1 (the inclusive gamma* -> f fbar rate is unchanged: KLN, the O(alpha)
  correction ``3 alpha/(4 pi)`` = 0.17 % is neglected).
* **Angle.** The photon direction follows the soft dipole pattern above around the f axis
  (peaks along either fermion, width ~ m_f/E); azimuth uniform.
* **Kinematics** (as in PHOTOS' single-emission mode): in the gamma* frame the photon takes
  ``E = x M/2``; the pair recoils as a system of mass ``M sqrt(1 - x)`` and decays in its own rest
  frame along the direction the fermion had without FSR.

This is the leading-log model of generators such as PHOTOS without its matrix-element
correction weights: the soft and collinear regions are exact, wide-angle hard photons are
approximate at O(alpha) without a large log.
"""

from __future__ import annotations

import math

from .._numba import kernel
from ..constants import ALPHA
from ..processes._kin import boost_by

__all__ = ["decay_with_fsr", "dipole_integral", "emit_fsr", "fsr_exponent", "sample_dipole_cos",
           "sample_fsr_x"]


@kernel
def dipole_integral(beta):
    """I(beta) = int_{-1}^{1} beta^2 (1 - c^2)/(1 - beta^2 c^2)^2 dc
    = (1 + beta^2)/(2 beta) ln((1 + beta)/(1 - beta)) - 1  (series below beta = 1e-3)."""
    if beta <= 0.0:
        return 0.0
    b2 = beta * beta
    if beta < 1e-3:
        return 4.0 / 3.0 * b2 + 8.0 / 15.0 * b2 * b2
    # ln((1+b)/(1-b)) = ln((1+b)^2/(1-b^2)): no cancellation in 1 - b for b -> 1
    log_ratio = 2.0 * math.log1p(beta) - math.log((1.0 - beta) * (1.0 + beta))
    return (1.0 + b2) / (2.0 * beta) * log_ratio - 1.0


@kernel
def fsr_exponent(m, m_f):
    """beta_f = (2 alpha/pi) I(beta) for a pair of mass-m_f fermions from a gamma* of mass m."""
    b2 = 1.0 - 4.0 * m_f * m_f / (m * m)
    if b2 <= 0.0:
        return 0.0
    return 2.0 * ALPHA / math.pi * dipole_integral(math.sqrt(b2))


@kernel
def sample_fsr_x(rng, beta_f, x_max, spin):
    """Radiated energy fraction x = 2 E_gamma/M from beta_f x^(beta_f - 1) h(x) on (0, x_max):
    x = u^(1/beta_f) (exact for the soft factor), accepted with h(x) <= 1 and x < x_max."""
    if beta_f <= 0.0 or x_max <= 0.0:
        return 0.0
    inv = 1.0 / beta_f
    while True:
        u = rng.random()
        if u <= 0.0:
            continue
        x = math.exp(math.log(u) * inv)
        if x >= x_max:
            continue
        h = 0.5 * (1.0 + (1.0 - x) * (1.0 - x)) if spin == 1 else 1.0 - x
        if rng.random() < h:
            return x


@kernel
def sample_dipole_cos(rng, beta):
    """cos(theta) of the photon to the fermion axis from (1 - c^2)/(1 - beta^2 c^2)^2 on [-1, 1].

    Proposal beta/(1 - beta^2 c^2), sampled exactly by c = tanh(y)/beta with y uniform in
    [-atanh(beta), atanh(beta)]; acceptance (1 - c^2)/(1 - beta^2 c^2) <= 1. tanh from one expm1
    (precise for |c| -> 1). Below beta = 1e-6 the proposal is uniform and the acceptance 1 - c^2.
    """
    if beta < 1e-6:
        while True:
            c = 2.0 * rng.random() - 1.0
            if rng.random() < (1.0 - c) * (1.0 + c):
                return c
    y_max = math.atanh(beta)
    b2 = beta * beta
    inv_b = 1.0 / beta
    while True:
        y = (2.0 * rng.random() - 1.0) * y_max
        em = math.expm1(-2.0 * abs(y))
        th = -em / (2.0 + em)  # tanh(|y|)
        c = min(th * inv_b, 1.0)
        if y < 0.0:
            c = -c
        one_m_c2 = (1.0 - c) * (1.0 + c)
        if rng.random() * (1.0 - b2 * c * c) < one_m_c2:
            return c


@kernel
def emit_fsr(rng, m, m_f, spin, nx, ny, nz, x_min):
    """FSR in the rest frame of a gamma* of mass ``m`` decaying to f (direction n) fbar.

    Returns ``(x, gx, gy, gz, ge, fx, fy, fz, fe)``: the radiated fraction, the photon and the
    f four-momenta in the gamma* frame. ``x = 0`` (no photon, f = (p* n, m/2)) when the sampled
    fraction is below ``x_min`` (its energy stays with the pair: M_ff shifts by < x_min/2).
    """
    b2 = max(0.0, 1.0 - 4.0 * m_f * m_f / (m * m))
    x = sample_fsr_x(rng, fsr_exponent(m, m_f), b2, spin)
    if x < x_min:
        ps = 0.5 * m * math.sqrt(b2)
        return 0.0, 0.0, 0.0, 0.0, 0.0, ps * nx, ps * ny, ps * nz, 0.5 * m
    # photon direction: polar angle to n from the dipole pattern, azimuth uniform (Marsaglia)
    c = sample_dipole_cos(rng, math.sqrt(b2))
    s = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
    while True:
        u = 2.0 * rng.random() - 1.0
        v = 2.0 * rng.random() - 1.0
        r2 = u * u + v * v
        if 0.0 < r2 < 1.0:
            break
    cphi, sphi = (u * u - v * v) / r2, 2.0 * u * v / r2
    # orthonormal e1, e2 perpendicular to n
    if abs(nz) < 0.9:
        e1x, e1y, e1z = ny, -nx, 0.0            # n x z
    else:
        e1x, e1y, e1z = 0.0, nz, -ny            # n x x
    norm = 1.0 / math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    e1x, e1y, e1z = e1x * norm, e1y * norm, e1z * norm
    e2x, e2y, e2z = ny * e1z - nz * e1y, nz * e1x - nx * e1z, nx * e1y - ny * e1x
    ge = 0.5 * x * m
    dx = c * nx + s * (cphi * e1x + sphi * e2x)
    dy = c * ny + s * (cphi * e1y + sphi * e2y)
    dz = c * nz + s * (cphi * e1z + sphi * e2z)
    gx, gy, gz = ge * dx, ge * dy, ge * dz
    # the pair (mass m sqrt(1 - x)) recoils against the photon; f along n in the pair frame
    mp = m * math.sqrt(1.0 - x)
    ps = 0.5 * math.sqrt(max(0.0, mp * mp - 4.0 * m_f * m_f))
    inv_e = 1.0 / (m - ge)
    fx, fy, fz, fe = boost_by(-gx * inv_e, -gy * inv_e, -gz * inv_e, ps * nx, ps * ny, ps * nz, 0.5 * mp)
    return x, gx, gy, gz, ge, fx, fy, fz, fe


@kernel
def decay_with_fsr(rng, fsr, x_min, m, m_f, spin, nx, ny, nz, bx, by, bz):
    """The f of gamma*(mass m) -> f (direction n in the gamma* frame) fbar [gamma_FSR], with and
    without FSR, boosted to the frame where the gamma* moves with velocity b.

    Returns ``(x, fx, fy, fz, fe, gx, gy, gz, ge)`` (photon zero when ``x = 0``); fbar follows
    from momentum conservation in the caller.
    """
    if fsr:
        x, gx, gy, gz, ge, fx, fy, fz, fe = emit_fsr(rng, m, m_f, spin, nx, ny, nz, x_min)
    else:
        x, gx, gy, gz, ge = 0.0, 0.0, 0.0, 0.0, 0.0
        ps = 0.5 * math.sqrt(max(0.0, m * m - 4.0 * m_f * m_f))
        fx, fy, fz, fe = ps * nx, ps * ny, ps * nz, 0.5 * m
    fx, fy, fz, fe = boost_by(bx, by, bz, fx, fy, fz, fe)
    if x > 0.0:
        gx, gy, gz, ge = boost_by(bx, by, bz, gx, gy, gz, ge)
    return x, fx, fy, fz, fe, gx, gy, gz, ge
