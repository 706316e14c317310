"""Born cross sections e+e- -> f fbar and the factorised ISR mass spectrum (physics.md 1.1, 2).

Final-state codes used by the kernels: ``FS_EE = 0`` (s-channel e+e- only), ``FS_MUMU = 1``,
``FS_PIPI = 2``. Cross sections in nb, s' in GeV^2. No vacuum polarisation, no FSR (physics.md
2.3, 2.4): isrsim's QED processes are leading-order ISR.

Bhabha scattering (s- and t-channel photon exchange and their interference, massless), for the
radiative Bhabha process ``isr_bhabha`` (:class:`isrsim.processes.isr.IsrBhabha`):
``dsigma/dcos = (pi alpha^2/s) f(c)``, ``f = (t^2 + u^2)/s^2 + (s^2 + u^2)/t^2 + 2 u^2/(s t)``
(e.g. Peskin & Schroeder problem 5.2; c the angle between the incoming and outgoing e-),
which with ``y = 1 - c`` is ``f = 8/y^2 - 8/y + 6 - 2y + y^2/2`` (:func:`bhabha_shape`).
"""

from __future__ import annotations

import math

from .._numba import kernel
from ..constants import ALPHA, HBARC2_GEV2_NB, M_E, M_MU, M_PI
from .formfactor import fpi2
from .radiator import angular_fraction, radiator

__all__ = [
    "BHABHA_ENVELOPE",
    "FINAL_STATES",
    "FS_EE",
    "FS_MUMU",
    "FS_PIPI",
    "bhabha_c_star",
    "bhabha_factor",
    "bhabha_primitive",
    "bhabha_shape",
    "dsigma_dm_isr_nb",
    "final_state_mass",
    "sigma_born_nb",
    "sigma_ll_nb",
    "sigma_pipi_nb",
]

FS_EE = 0
FS_MUMU = 1
FS_PIPI = 2
#: name -> (code, final-state particle mass [GeV], PDG code of the negative particle)
FINAL_STATES = {"ee": (FS_EE, M_E, 11), "mumu": (FS_MUMU, M_MU, 13), "pipi": (FS_PIPI, M_PI, -211)}


@kernel
def final_state_mass(code):
    """Mass [GeV] of the final-state particle of a final-state code."""
    if code == FS_EE:
        return M_E
    if code == FS_MUMU:
        return M_MU
    return M_PI


@kernel
def sigma_ll_nb(s_prime, m_l):
    """sigma(e+e- -> l+l-) [nb] at s' [GeV^2], lepton mass kept: physics.md eq. (2.1).

    4 pi alpha^2/(3 s') * beta (3 - beta^2)/2, beta = sqrt(1 - 4 m_l^2/s'); 0 below threshold.
    """
    r = 4.0 * m_l * m_l / s_prime
    if r >= 1.0:
        return 0.0
    beta = math.sqrt(1.0 - r)
    return 4.0 * math.pi * ALPHA * ALPHA / (3.0 * s_prime) * beta * (3.0 - beta * beta) * 0.5 * HBARC2_GEV2_NB


@kernel
def sigma_pipi_nb(s_prime):
    """sigma(e+e- -> pi+pi-) [nb] = pi alpha^2/(3 s') beta_pi^3 |F_pi(s')|^2: physics.md eq. (2.2)."""
    r = 4.0 * M_PI * M_PI / s_prime
    if r >= 1.0:
        return 0.0
    beta = math.sqrt(1.0 - r)
    return math.pi * ALPHA * ALPHA / (3.0 * s_prime) * beta * beta * beta * fpi2(s_prime) * HBARC2_GEV2_NB


@kernel
def sigma_born_nb(s_prime, code):
    """Born cross section [nb] of final state ``code`` at s' [GeV^2]."""
    if code == FS_PIPI:
        return sigma_pipi_nb(s_prime)
    return sigma_ll_nb(s_prime, final_state_mass(code))


@kernel
def photon_acceptance(s, x, c_lo, c_hi):
    """Fraction of the eq. (1.6) photon-angle distribution inside the union of the disjoint
    intervals [c_lo[i], c_hi[i]] (CM frame)."""
    acc = 0.0
    for i in range(c_lo.shape[0]):
        acc += angular_fraction(s, x, c_lo[i], c_hi[i])
    return acc


@kernel
def dsigma_dm_isr_nb(s, m, code, rad_code, c_lo, c_hi):
    """ISR mass spectrum dsigma/dM [nb/GeV] inside a photon-angle acceptance: physics.md (1.1),

    dsigma/dM = (2M/s) W(s, x) sigma_0(M^2) A(x),  x = 1 - M^2/s,
    with A(x) the fraction of eq. (1.6) photons with cos(theta_gamma) in the intervals
    [c_lo, c_hi] (A = 1 for the full range [-1, 1]).
    """
    x = 1.0 - m * m / s
    if x <= 0.0 or x >= 1.0:
        return 0.0
    sig0 = sigma_born_nb(m * m, code)
    if sig0 == 0.0:
        return 0.0
    return 2.0 * m / s * radiator(s, x, rad_code) * sig0 * photon_acceptance(s, x, c_lo, c_hi)


# ---------------------------------------------------------------------------------------
# Bhabha scattering (massless Born, s + t channel)

#: ``max (1 - c)^2 f(c)`` over -1 <= c <= 1 (reached at c = +-1): the envelope ``8/(1 - c)^2``
#: of :func:`bhabha_shape` used by :func:`isrsim.processes._kin.sample_bhabha_decay`.
BHABHA_ENVELOPE = 8.0


@kernel
def bhabha_shape(c):
    """Angular shape ``f(c)`` of massless Bhabha scattering, ``dsigma/dcos = (pi alpha^2/s) f``:
    ``(t^2 + u^2)/s^2 + (s^2 + u^2)/t^2 + 2 u^2/(s t)`` with ``t = -s(1 - c)/2``,
    ``u = -s(1 + c)/2``, written as ``8/y^2 - 8/y + 6 - 2y + y^2/2``, ``y = 1 - c``. The
    s-channel part alone is ``(1 + c^2)/2`` (integral 4/3 over -1 < c < 1)."""
    y = 1.0 - c
    return 8.0 / (y * y) - 8.0 / y + 6.0 - 2.0 * y + 0.5 * y * y


@kernel
def bhabha_primitive(c):
    """Primitive of :func:`bhabha_shape` in c: ``8/y + 8 ln y - 6y + y^2 - y^3/6``, ``y = 1 - c``
    (c < 1)."""
    y = 1.0 - c
    return 8.0 / y + 8.0 * math.log(y) - 6.0 * y + y * y - y * y * y / 6.0


@kernel
def bhabha_c_star(x, cos_max):
    """Largest ``|cos theta*|`` of the e- in the pair rest frame (to the beam axis) for which both
    leptons lie inside ``|cos theta_CM| <= cos_max`` when the ISR photon is along the beam:
    ``(C - beta)/(1 - beta C)``, ``beta = x/(2 - x)`` the pair's speed in the CM frame (for any
    photon direction); 0 when ``beta >= C`` (massless leptons)."""
    beta = x / (2.0 - x)
    if beta >= cos_max:
        return 0.0
    return (cos_max - beta) / (1.0 - beta * cos_max)


@kernel
def bhabha_factor(x, cos_max):
    """Bhabha cross section with ``|cos theta*| <= bhabha_c_star(x, cos_max)`` over the full-angle
    s-channel cross section ``4 pi alpha^2/(3 s')``: ``(F(c*) - F(-c*)) / (4/3)``, F
    :func:`bhabha_primitive`."""
    cs = bhabha_c_star(x, cos_max)
    if cs <= 0.0:
        return 0.0
    return 0.75 * (bhabha_primitive(cs) - bhabha_primitive(-cs))
