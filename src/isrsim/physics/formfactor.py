"""Pion electromagnetic form factor F_pi(s): Gounaris-Sakurai tower with rho-omega mixing.

Model exactly as ``shared/physics.md`` section 2.2 (eq. 2.2 and the formulas below it), which
follows the notation of Czyz, Grzelinska, Kuehn, arXiv:1002.0279 eqs. (2)-(6):

.. math::

    F_\\pi(s) = \\frac{\\sum_{n=0}^{2} c_n\\,BW^{GS}_n(s)\\,\\mu_n(s)}{\\sum_n c_n},\\qquad
    \\mu_0(s) = \\frac{1 + \\delta_\\omega BW(s; M_\\omega, \\Gamma_\\omega)}{1 + \\delta_\\omega},
    \\quad \\mu_{1,2} = 1,

with the Gounaris-Sakurai Breit-Wigner

.. math::

    BW^{GS}(s; M, \\Gamma) = \\frac{M^2 + H(0)}{M^2 - s + H(s) - i\\sqrt{s}\\,\\Gamma(s)},

``Gamma(s) = Gamma (sqrt(s)/M) (v(s)/v(M^2))^3``, ``v(s) = sqrt(1 - 4 m_pi^2/s)`` (charged-pion
mass), ``H(s) = Hhat(s) - Hhat(M^2) - (s - M^2) Hhat'(M^2)`` and ``H(0)`` as in physics.md 2.2, and
the fixed-width ``BW(s; M, Gamma) = M^2/(M^2 - s - i M Gamma)`` for the omega.

Parameters (physics.md 2.2; [V] masses, widths and delta_omega from the CGK tower as coded in
Hazma, [C] for the effective c_n of the three-state truncation, renormalised to F_pi(0) = 1):

==========  ===========  ===========  =======================
state       M [GeV]      Gamma [GeV]  c_n
==========  ===========  ===========  =======================
rho         0.77337      0.1471       1.0876
rho'        1.490        0.429        -0.1514 - 0.0813 i
rho''       1.870        0.357        0.0138 + 0.1005 i
omega       0.7824       0.00833      delta = 1.87e-3 exp(0.106 i)
==========  ===========  ===========  =======================

Good to ~5-10 % below 1 GeV; above ~1.4 GeV only an order-of-magnitude model (enough for a pi pi
misidentification background), physics.md 2.2.

Below threshold (0 <= s < 4 m_pi^2) the function is continued analytically (v -> i w), so that
F_pi(0) = 1 exactly through H(0) (tested, not imposed). For s < 0 the kernels return NaN; the
Python wrappers reject s < 0 with :class:`~isrsim.exceptions.ConfigError`.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel
from ..constants import M_PI
from ..exceptions import ConfigError

__all__ = [
    "GS_STATES",
    "OMEGA",
    "fpi",
    "fpi2",
    "fpi2_array",
    "fpi_array",
    "r_pipi",
]

#: (M [GeV], Gamma [GeV], Re c_n, Im c_n) of the rho, rho', rho'' (physics.md 2.2).
GS_STATES = (
    (0.77337, 0.1471, 1.0876, 0.0),
    (1.490, 0.429, -0.1514, -0.0813),
    (1.870, 0.357, 0.0138, 0.1005),
)
#: (M [GeV], Gamma [GeV], |delta_omega|, arg delta_omega [rad]) (physics.md 2.2).
OMEGA = (0.7824, 0.00833, 1.87e-3, 0.106)

_M0, _G0, _C0R, _C0I = GS_STATES[0]
_M1, _G1, _C1R, _C1I = GS_STATES[1]
_M2, _G2, _C2R, _C2I = GS_STATES[2]
_MW, _GW, _DW_ABS, _DW_ARG = OMEGA
_MPI2 = M_PI * M_PI


@kernel
def _vlog_term(s):
    """(v^3 ln((1+v)/(1-v)), v^3) as complex numbers, continued to 0 < s < 4 m_pi^2.

    Above threshold both are real. Below threshold v = i w with w = sqrt(4 m_pi^2/s - 1), so
    v^3 = -i w^3 and v^3 ln((1+v)/(1-v)) = 2 w^3 atan(w) (real).
    """
    r = 4.0 * _MPI2 / s
    if r <= 1.0:
        v = math.sqrt(1.0 - r)
        v3 = v * v * v
        return complex(v3 * math.log((1.0 + v) / (1.0 - v)), 0.0), complex(v3, 0.0)
    w = math.sqrt(r - 1.0)
    w3 = w * w * w
    return complex(2.0 * w3 * math.atan(w), 0.0), complex(0.0, -w3)


@kernel
def _bw_gs(s, m, g):
    """Gounaris-Sakurai Breit-Wigner BW_GS(s; M, Gamma) (physics.md 2.2), complex, s >= 0."""
    m2 = m * m
    vm2 = 1.0 - 4.0 * _MPI2 / m2
    vm = math.sqrt(vm2)
    vm3 = vm2 * vm
    lm = math.log((1.0 + vm) / (1.0 - vm))
    hhat_m = g / (math.pi * m) * m2 * lm  # (v/v_M)^3 = 1 at s = M^2
    r = 2.0 * _MPI2 / m2
    hhat_prime_m = g / (math.pi * m * vm2) * ((3.0 - 2.0 * vm2 - 3.0 * r) * lm
                                              + 2.0 * vm * (1.0 - r / (1.0 - vm2)))
    h0 = -(8.0 * _MPI2 / math.pi) * (g / m) / vm3 - hhat_m + m2 * hhat_prime_m
    if s == 0.0:
        # limit s -> 0 of H(s) - i sqrt(s) Gamma(s) is H(0) (see module docstring): BW_GS(0) = 1
        return complex(1.0, 0.0)
    vl, v3 = _vlog_term(s)
    hhat_s = g / (math.pi * m) * s * vl / vm3
    h_s = hhat_s - hhat_m - (s - m2) * hhat_prime_m
    sqs = math.sqrt(s)
    gam_s = g * (sqs / m) * v3 / vm3
    return (m2 + h0) / (m2 - s + h_s - 1j * sqs * gam_s)


@kernel
def fpi(s):
    """Complex pion form factor F_pi(s), s = q^2 [GeV^2] >= 0 (physics.md 2.2). NaN for s < 0."""
    if s < 0.0 or not math.isfinite(s):
        return complex(math.nan, math.nan)
    c0 = complex(_C0R, _C0I)
    c1 = complex(_C1R, _C1I)
    c2 = complex(_C2R, _C2I)
    dw = _DW_ABS * complex(math.cos(_DW_ARG), math.sin(_DW_ARG))
    mw2 = _MW * _MW
    bw_w = mw2 / (mw2 - s - 1j * _MW * _GW)
    mix = (1.0 + dw * bw_w) / (1.0 + dw)
    num = c0 * _bw_gs(s, _M0, _G0) * mix + c1 * _bw_gs(s, _M1, _G1) + c2 * _bw_gs(s, _M2, _G2)
    return num / (c0 + c1 + c2)


@kernel
def fpi2(s):
    """|F_pi(s)|^2 for s [GeV^2] >= 0 (physics.md 2.2); NaN for s < 0.

    Used by the pi+pi- Born cross section, physics.md eq. (2.2), in ``isrsim.physics.born``.
    """
    f = fpi(s)
    return f.real * f.real + f.imag * f.imag


def _as_s_array(s, name: str) -> np.ndarray:
    arr = np.asarray(s, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0):
        bad = float(arr[~(np.isfinite(arr) & (arr >= 0.0))].ravel()[0])
        msg = f"{name}={bad!r} outside the allowed range [0, inf) GeV^2"
        raise ConfigError(msg)
    return arr


def fpi_array(s) -> np.ndarray:
    """Vectorised :func:`fpi` (complex F_pi) for an array of s [GeV^2] >= 0."""
    arr = _as_s_array(s, "s")
    out = np.empty(arr.shape, dtype=np.complex128)
    flat_in, flat_out = arr.ravel(), out.reshape(-1)
    for i in range(flat_in.size):
        flat_out[i] = fpi(flat_in[i])
    return out


def fpi2_array(s) -> np.ndarray:
    """Vectorised :func:`fpi2` (|F_pi|^2) for an array of s [GeV^2] >= 0."""
    return np.abs(fpi_array(s)) ** 2


def r_pipi(sqrt_s) -> np.ndarray:
    """R_pipi(sqrt(s)) = beta_pi^3 |F_pi|^2 / 4 (physics.md eq. 2.2), 0 below 2 m_pi.

    Parameters
    ----------
    sqrt_s : array_like
        CM energy [GeV], >= 0.

    Returns
    -------
    numpy.ndarray
        sigma(e+e- -> pi+pi-)/sigma_pointlike(e+e- -> mu+mu-) with massless muons.
    """
    w = np.asarray(sqrt_s, dtype=np.float64)
    s = _as_s_array(w * w, "sqrt_s^2")
    beta2 = np.clip(1.0 - 4.0 * _MPI2 / np.where(s > 0.0, s, 1.0), 0.0, None)
    beta2 = np.where(s > 4.0 * _MPI2, beta2, 0.0)
    return beta2**1.5 * fpi2_array(s) / 4.0

