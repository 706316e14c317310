"""Thin cylindrical material layers (beam pipe, silicon layers, drift-chamber walls).

The same :class:`MaterialLayers` object drives multiple scattering and bremsstrahlung in the
detector simulation and photon conversions in the ``diphoton`` process (contracts.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._numba import kernel

__all__ = ["MaterialLayers", "bremsstrahlung_survival_fraction", "crossing_arclength", "highland_theta0"]


@dataclass(frozen=True)
class MaterialLayers:
    """Cylindrical layers centred on the z axis, sorted by mean radius.

    Attributes
    ----------
    r_cm : float64[n]
        Mean radius [cm].
    dr_cm : float64[n]
        Radial thickness [cm] (0 for layers treated as infinitely thin).
    z_min_cm, z_max_cm : float64[n]
        Longitudinal extent [cm].
    x_over_x0 : float64[n]
        Thickness in radiation lengths at normal incidence; a particle crossing at polar angle
        theta (radially) sees ``x_over_x0 / sin(theta)`` (shared/detectors.md conventions).
    z_eff : float64[n]
        Effective atomic number (Bethe-Heitler energy dependence, physics.md 5.1).
    phi_fraction : float64[n]
        Azimuthal coverage (1 = full; e.g. 0.17 for the Run-1 Belle II PXD layer 2). Kernels
        treat it as the probability that a crossing particle meets the layer.
    names : tuple[str, ...]
        Human-readable layer names.
    """

    r_cm: np.ndarray
    dr_cm: np.ndarray
    z_min_cm: np.ndarray
    z_max_cm: np.ndarray
    x_over_x0: np.ndarray
    z_eff: np.ndarray
    phi_fraction: np.ndarray
    names: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of layers."""
        return int(self.r_cm.shape[0])

    def total_x_over_x0(self, r_max_cm: float = math.inf) -> float:
        """Sum of ``x_over_x0 * phi_fraction`` of the layers with ``r_cm < r_max_cm`` (normal incidence)."""
        sel = self.r_cm < r_max_cm
        return float(np.sum(self.x_over_x0[sel] * self.phi_fraction[sel]))


@kernel
def crossing_arclength(d0, omega, r):
    """Positive transverse arc length [cm] from the perigee at which a helix reaches radius ``r``.

    Uses the exact relation ``r^2 = d0^2 + 2 (1 + omega d0)(1 - cos(omega s)) / omega^2``
    (derived from :func:`isrsim.helix.state_at_arclength`). Returns -1 if the helix never
    reaches ``r`` (r < |d0| or r beyond the circle's far side).
    """
    if r < abs(d0):
        return -1.0
    a = 1.0 + omega * d0
    if omega == 0.0:
        return math.sqrt(r * r - d0 * d0)
    if a == 0.0:
        return -1.0
    # 1 - cos(omega s) = c  ->  2 sin^2(omega s / 2) = c
    c = (r * r - d0 * d0) * omega * omega / (2.0 * a)
    if c < 0.0 or c > 2.0:
        return -1.0
    half = math.asin(math.sqrt(0.5 * c))
    return 2.0 * half / abs(omega)


@kernel
def highland_theta0(p, beta, x_over_x0):
    """Highland/Lynch-Dahl plane multiple-scattering angle [rad] (PDG RPP, passage of particles):
    theta0 = 13.6 MeV / (beta c p) sqrt(x/X0) (1 + 0.038 ln(x z^2 / (X0 beta^2))), z = 1."""
    if x_over_x0 <= 0.0:
        return 0.0
    return 0.0136 / (beta * p) * math.sqrt(x_over_x0) * (1.0 + 0.038 * math.log(x_over_x0 / (beta * beta)))


@kernel
def bremsstrahlung_survival_fraction(rng, t):
    """Energy fraction kept by an electron after a layer of ``t`` radiation lengths.

    Bethe-Heitler (1934) thin-layer distribution: -ln(z) follows a Gamma(t/ln 2, 1) law,
    f(z) = (-ln z)^(t/ln2 - 1) / Gamma(t/ln2) (as used in Gaussian-sum-filter electron fits,
    e.g. Frühwirth, Comput. Phys. Commun. 154 (2003) 131).
    """
    if t <= 0.0:
        return 1.0
    u = rng.standard_gamma(t / math.log(2.0))
    return math.exp(-u)
