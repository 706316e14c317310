"""e+e- -> gamma gamma at lowest order (QED annihilation into two photons), CM frame.

What to use when
----------------
* :func:`sigma_window_nb` -- cross section of events with both photons in ``|cos theta*| < c0``
  (physics.md eq. 4.2, with the electron-mass regulator kept).
* :func:`sigma_cos_range_nb` -- the same integral over an arbitrary band ``c_lo < cos theta* < c_hi``
  of *one* (randomly labelled) photon; this is the proposal normalisation of the
  :class:`isrsim.processes.diphoton.DiPhoton` sampler.
* :func:`sigma_total_nb` / :func:`sigma_heitler_nb` -- the total cross section, exact regulated
  integral and the Heitler closed form (2 pi alpha^2/s)(ln(s/m_e^2) - 1).
* :func:`sample_cos_theta` -- ``@kernel`` sampler of cos theta* from eq. (4.1).

Conventions: theta* is the polar angle of a photon to the e- beam in the CM frame; the two
photons are back to back, so an event has one photon at cos theta* and one at -cos theta*.
Identical photons: the event cross section is (1/2) x the integral of dsigma/dOmega over the
full solid angle of one photon.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel
from ..constants import ALPHA, HBARC2_GEV2_NB, M_E
from ..exceptions import ConfigError

__all__ = [
    "angular_primitive",
    "beta_electron",
    "dsigma_domega_nb",
    "sample_cos_theta",
    "sigma_cos_range_nb",
    "sigma_heitler_nb",
    "sigma_total_nb",
    "sigma_window_nb",
]


def __dir__() -> list[str]:
    return __all__


@kernel
def beta_electron(s: float) -> float:
    """Velocity b_e = sqrt(1 - 4 m_e^2 / s) of the beam electrons in the CM frame.

    Parameters
    ----------
    s : float
        Squared CM energy [GeV^2], s > 4 m_e^2.
    """
    return math.sqrt(1.0 - 4.0 * M_E * M_E / s)


@kernel
def dsigma_domega_nb(s: float, cos_theta: float) -> float:
    """LO differential cross section dsigma/dOmega [nb/sr] for one photon at cos theta*.

    physics.md eq. (4.1): (alpha^2/s) (1 + c^2) / (1 - b_e^2 c^2), converted with (hbar c)^2.
    The identical-particle factor 1/2 is *not* included (it enters the integrated
    cross sections).

    Parameters
    ----------
    s : float
        Squared CM energy [GeV^2].
    cos_theta : float
        cos theta* of the photon to the e- beam, CM frame.
    """
    b = beta_electron(s)
    c2 = cos_theta * cos_theta
    return ALPHA * ALPHA / s * (1.0 + c2) / (1.0 - b * b * c2) * HBARC2_GEV2_NB


@kernel
def angular_primitive(s: float, c: float) -> float:
    """Primitive F(c) = int_0^c (1 + t^2)/(1 - b^2 t^2) dt of eq. (4.1) (exact, b = b_e).

    F(c) = -c/b^2 + (1 + 1/b^2) atanh(b c) / b, written with log1p so that it stays
    accurate for |c| -> 1, where b c -> 1 - 2 m_e^2/s.
    """
    b = beta_electron(s)
    b2 = b * b
    bc = b * c
    # atanh(bc) = 0.5 * ln((1 + bc)/(1 - bc)) = 0.5 * (log1p(bc) - log1p(-bc))
    at = 0.5 * (math.log1p(bc) - math.log1p(-bc))
    return -c / b2 + (1.0 + 1.0 / b2) * at / b


def _check_s(s: float) -> float:
    try:
        v = float(s)
    except (TypeError, ValueError):
        msg = f"s = {s!r} must be a number (GeV^2)"
        raise ConfigError(msg) from None
    if not math.isfinite(v) or v <= 4.0 * M_E * M_E:
        msg = f"s = {s!r} GeV^2 out of range: must be finite and > 4 m_e^2 = {4 * M_E * M_E:.3e}"
        raise ConfigError(msg)
    return v


def _check_cos(name: str, c: float) -> float:
    try:
        v = float(c)
    except (TypeError, ValueError):
        msg = f"{name} = {c!r} must be a number in [-1, 1]"
        raise ConfigError(msg) from None
    if not (-1.0 <= v <= 1.0):
        msg = f"{name} = {c!r} out of range: must be in [-1, 1]"
        raise ConfigError(msg)
    return v


def sigma_cos_range_nb(s: float, c_lo: float, c_hi: float) -> float:
    """(1/2) int dOmega dsigma/dOmega over the band ``c_lo < cos theta* < c_hi`` of one photon [nb].

    The factor 1/2 is the identical-photon factor. For a symmetric band ``[-c0, c0]`` this
    is the cross section of events with both photons in the band (physics.md eq. 4.2);
    for an asymmetric band it is the normalisation of a sampler that draws the direction of
    one randomly labelled photon inside the band.

    Parameters
    ----------
    s : float
        Squared CM energy [GeV^2].
    c_lo, c_hi : float
        Band limits on cos theta* (CM frame), -1 <= c_lo <= c_hi <= 1.
    """
    s = _check_s(s)
    c_lo = _check_cos("c_lo", c_lo)
    c_hi = _check_cos("c_hi", c_hi)
    if c_hi < c_lo:
        msg = f"c_hi = {c_hi!r} must be >= c_lo = {c_lo!r}"
        raise ConfigError(msg)
    integral = angular_primitive(s, c_hi) - angular_primitive(s, c_lo)
    # (1/2) * 2 pi (phi integral) * alpha^2/s * integral
    return math.pi * ALPHA**2 / s * integral * HBARC2_GEV2_NB


def sigma_window_nb(s: float, c0: float) -> float:
    """Cross section of e+e- -> gamma gamma with ``|cos theta*| < c0`` [nb] (each event once).

    physics.md eq. (4.2): (pi alpha^2/s)[2 ln((1 + c0)/(1 - c0)) - 2 c0] in the massless
    limit; here the electron-mass regulator of eq. (4.1) is kept, so ``c0 = 1`` gives the
    total cross section.

    Parameters
    ----------
    s : float
        Squared CM energy [GeV^2].
    c0 : float
        Window half-width in cos theta* (CM frame), 0 <= c0 <= 1.
    """
    c0 = _check_cos("c0", c0)
    if c0 < 0.0:
        msg = f"c0 = {c0!r} out of range: must be in [0, 1]"
        raise ConfigError(msg)
    return sigma_cos_range_nb(s, -c0, c0)


def sigma_total_nb(s: float) -> float:
    """Total LO cross section [nb]: eq. (4.1) integrated exactly over the full solid angle."""
    return sigma_window_nb(s, 1.0)


def sigma_heitler_nb(s: float) -> float:
    """Heitler's total cross section (2 pi alpha^2/s)(ln(s/m_e^2) - 1) [nb] (physics.md section 4).

    Leading-logarithmic high-energy form; agrees with :func:`sigma_total_nb` up to
    O(m_e^2/s) terms.
    """
    s = _check_s(s)
    return 2.0 * math.pi * ALPHA**2 / s * (math.log(s / (M_E * M_E)) - 1.0) * HBARC2_GEV2_NB


@kernel
def sample_cos_theta(rng: np.random.Generator, b: float, c_lo: float, c_hi: float) -> float:
    """Draw cos theta* from eq. (4.1) restricted to ``[c_lo, c_hi]``.

    Proposal 1/(1 - b^2 c^2), sampled exactly by inversion (c = tanh(y)/b with y uniform in
    [atanh(b c_lo), atanh(b c_hi)]); accepted with probability (1 + c^2)/2 >= 1/2.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random stream.
    b : float
        Electron velocity in the CM frame (:func:`beta_electron`), 0 < b < 1.
    c_lo, c_hi : float
        Limits, -1 <= c_lo < c_hi <= 1 (validated by the caller).
    """
    y_lo = 0.5 * (math.log1p(b * c_lo) - math.log1p(-b * c_lo))
    y_hi = 0.5 * (math.log1p(b * c_hi) - math.log1p(-b * c_hi))
    while True:
        c = math.tanh(y_lo + (y_hi - y_lo) * rng.random()) / b
        if rng.random() * 2.0 < 1.0 + c * c:
            return c
