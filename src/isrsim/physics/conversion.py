"""Photon conversion gamma -> e+ e- in matter (physics.md section 5).

What to use when
----------------
* :func:`conversion_probability` -- probability that a photon of energy E converts in a slab of
  t radiation lengths along its path: 1 - exp(-(7/9) t R(E, Z)) (eq. 5.1 with the energy
  dependence R of the Urban parametrisation).
* :func:`pair_cross_section_ratio` -- R(E, Z) = sigma_pair(E, Z)/sigma_pair(100 GeV, Z).
* :func:`sigma_pair_atom_nb` -- the Urban parametrisation of the pair cross section per atom.
* :func:`sample_energy_fraction` -- Bethe-Heitler energy sharing x = E+/E_gamma (eq. 5.2) within
  the kinematic limits.
* :func:`sample_u` -- Urban's u variable of the lepton angles, theta = u m_e/E (section 5.3).
* :func:`sample_pair` -- the full gamma -> e+ e- final state for a photon of given momentum.

Energy dependence: implemented as the *functional form* (not a table interpolation):
sigma = (Z + 1)(F1 Z + F2 Z^2 + F3) microbarn, F_i fifth-order polynomials in X = ln(E/m_e),
the parametrisation of L. Urban (GEANT3 manual PHYS211, used by GEANT4's G4BetheHeitlerModel,
whose coefficients are quoted below with that source); valid from 1.5 MeV to 100 GeV. Below
1.5 MeV it is scaled by ((E - 2 m_e)/(1.5 MeV - 2 m_e))^2 (same source); above 100 GeV R = 1.
physics.md section 5.1 tabulates R(E, Z) for Be, Si, Au; the tests check the table.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel
from ..constants import M_E

__all__ = [
    "E_PARAM_MAX",
    "E_PARAM_MIN",
    "SEVEN_NINTHS",
    "U_A1",
    "U_A2",
    "U_W1",
    "bh_density",
    "conversion_probability",
    "pair_cross_section_ratio",
    "sample_energy_fraction",
    "sample_pair",
    "sample_u",
    "sigma_pair_atom_nb",
    "u_density",
]


def __dir__() -> list[str]:
    return __all__


#: Complete-screening pair-production probability per radiation length (physics.md eq. 5.1).
SEVEN_NINTHS = 7.0 / 9.0
#: Lower validity edge of the Urban parametrisation [GeV] (1.5 MeV).
E_PARAM_MIN = 1.5e-3
#: Upper validity edge of the Urban parametrisation [GeV] (100 GeV).
E_PARAM_MAX = 100.0
#: Urban's angular variable u (physics.md 5.3): with probability U_W1 = 9/(9 + 27), u ~ Gamma(2, 1/U_A1),
#: otherwise u ~ Gamma(2, 1/U_A2).
U_A1 = 0.625
U_A2 = 1.875
U_W1 = 9.0 / (9.0 + 27.0)

# Urban parametrisation coefficients [microbarn] (G4BetheHeitlerModel.cc, L. Urban; physics.md 5.1):
# F1 = sum a_i X^i, F2 = sum b_i X^i, F3 = sum c_i X^i with X = ln(E/m_e).
_A0, _A1, _A2, _A3, _A4, _A5 = 8.7842e2, -1.9625e3, 1.2949e3, -2.0028e2, 1.2575e1, -2.8333e-1
_B0, _B1, _B2, _B3, _B4, _B5 = -1.0342e1, 1.7692e1, -8.2381, 1.3063, -9.0815e-2, 2.3586e-3
_C0, _C1, _C2, _C3, _C4, _C5 = -4.5263e2, 1.1161e3, -8.6749e2, 2.1773e2, -2.0467e1, 6.5372e-1


@kernel
def _urban_ub(e_clamped: float, z: float) -> float:
    x = math.log(e_clamped / M_E)
    f1 = _A0 + x * (_A1 + x * (_A2 + x * (_A3 + x * (_A4 + x * _A5))))
    f2 = _B0 + x * (_B1 + x * (_B2 + x * (_B3 + x * (_B4 + x * _B5))))
    f3 = _C0 + x * (_C1 + x * (_C2 + x * (_C3 + x * (_C4 + x * _C5))))
    return (z + 1.0) * (f1 * z + f2 * z * z + f3)


@kernel
def sigma_pair_atom_nb(e_gamma: float, z: float) -> float:
    """Pair-production cross section per atom [nb], Urban parametrisation (physics.md 5.1).

    Parameters
    ----------
    e_gamma : float
        Photon energy [GeV]. Zero at or below threshold 2 m_e; for 2 m_e < E < 1.5 MeV the
        1.5 MeV value times ((E - 2 m_e)/(1.5 MeV - 2 m_e))^2; clamped at 100 GeV above.
    z : float
        Atomic number (effective Z for a compound), z >= 1.
    """
    if e_gamma <= 2.0 * M_E:
        return 0.0
    e = min(max(e_gamma, E_PARAM_MIN), E_PARAM_MAX)
    sigma = _urban_ub(e, z) * 1.0e3  # microbarn -> nb
    if e_gamma < E_PARAM_MIN:
        f = (e_gamma - 2.0 * M_E) / (E_PARAM_MIN - 2.0 * M_E)
        sigma *= f * f
    return max(sigma, 0.0)


@kernel
def pair_cross_section_ratio(e_gamma: float, z: float) -> float:
    """R(E, Z) = sigma_pair(E, Z)/sigma_pair(100 GeV, Z) (physics.md 5.1 table).

    Multiplies the high-energy 7/9 rule: at 1 GeV R = 0.929 (Be), 0.945 (Si), 0.956 (Au).
    """
    return sigma_pair_atom_nb(e_gamma, z) / sigma_pair_atom_nb(E_PARAM_MAX, z)


@kernel
def conversion_probability(t: float, e_gamma: float, z: float) -> float:
    """Probability that a photon converts in t radiation lengths of material (along its path).

    physics.md eq. (5.1) with the energy dependence: P = 1 - exp(-(7/9) t R(E, Z)).

    Parameters
    ----------
    t : float
        Traversed thickness in units of X0 (already divided by the incidence cosine), t >= 0.
    e_gamma : float
        Photon energy [GeV].
    z : float
        (Effective) atomic number of the material.
    """
    return -math.expm1(-SEVEN_NINTHS * t * pair_cross_section_ratio(e_gamma, z))


def bh_density(x: np.ndarray | float, e_gamma: float = math.inf) -> np.ndarray:
    """Normalised Bethe-Heitler energy-sharing density of x = E+/E_gamma (physics.md eq. 5.2).

    (1 - (4/3) x (1 - x)) on the kinematic range m_e/E <= x <= 1 - m_e/E, normalised to 1;
    zero outside. ``e_gamma = inf`` gives the complete-screening range [0, 1] (integral 7/9
    before normalisation).
    """
    x = np.asarray(x, dtype=float)
    lo = M_E / e_gamma if math.isfinite(e_gamma) else 0.0
    hi = 1.0 - lo

    def prim(v: float) -> float:
        return v - (2.0 / 3.0) * v * v + (4.0 / 9.0) * v**3

    norm = prim(hi) - prim(lo)
    out = (1.0 - (4.0 / 3.0) * x * (1.0 - x)) / norm
    return np.where((x >= lo) & (x <= hi), out, 0.0)


def u_density(u: np.ndarray | float) -> np.ndarray:
    """Density of Urban's u (physics.md 5.3): U_W1 Gamma(2, 1/U_A1) + (1 - U_W1) Gamma(2, 1/U_A2)."""
    u = np.asarray(u, dtype=float)
    g1 = U_A1 * U_A1 * u * np.exp(-U_A1 * u)
    g2 = U_A2 * U_A2 * u * np.exp(-U_A2 * u)
    return np.where(u >= 0.0, U_W1 * g1 + (1.0 - U_W1) * g2, 0.0)


@kernel
def sample_energy_fraction(rng: np.random.Generator, e_gamma: float) -> float:
    """Draw x = E+/E_gamma from eq. (5.2) inside the kinematic limits [m_e/E, 1 - m_e/E].

    Accept/reject with a uniform proposal (the density's maximum on [0, 1] is 1, at the
    edges; mean acceptance 7/9). The density is symmetric, so x is also the e- fraction
    of an equally likely pair.

    Parameters
    ----------
    rng : numpy.random.Generator
    e_gamma : float
        Photon energy [GeV], > 2 m_e (validated by the caller).
    """
    lo = M_E / e_gamma
    width = 1.0 - 2.0 * lo
    while True:
        x = lo + width * rng.random()
        if rng.random() < 1.0 - (4.0 / 3.0) * x * (1.0 - x):
            return x


@kernel
def sample_u(rng: np.random.Generator) -> float:
    """Draw Urban's u (physics.md 5.3): u = -ln(r1 r2)/a with a = 0.625 (prob. 1/4) or 1.875.

    Mean 1.60, median 1.11, 90 % quantile 3.45. A lepton of energy E is emitted at
    theta = u m_e/E to the photon direction.
    """
    a = U_A1 if rng.random() < U_W1 else U_A2
    # -ln(r1 r2) with r in (0, 1]: 1 - random() avoids log(0)
    return -math.log((1.0 - rng.random()) * (1.0 - rng.random())) / a


@kernel
def sample_pair(rng: np.random.Generator, px: float, py: float, pz: float, e_gamma: float):
    """Convert a photon of lab momentum (px, py, pz) and energy e_gamma into e+ e-.

    Energy sharing from eq. (5.2) (:func:`sample_energy_fraction`, x = E+/E_gamma); one u
    from :func:`sample_u` gives theta+- = u m_e/E+-, with the e+ and e- back to back in
    azimuth around the photon direction (physics.md 5.3, as in GEANT4's G4BetheHeitlerModel),
    redrawn while ``u > 2 min(E+, E-)/m_e`` (theta <= 2 rad, the bound of G4ModifiedTsai).
    The nucleus absorbs the small momentum imbalance.

    Returns
    -------
    tuple
        (x, u, pxp, pyp, pzp, ep, pxm, pym, pzm, em): energy fraction, u, then the e+ and e-
        4-momenta [GeV] in the frame of the input momentum.
    """
    x = sample_energy_fraction(rng, e_gamma)
    ep = x * e_gamma
    em = e_gamma - ep
    # Geant4's G4ModifiedTsai bounds u by 2 E/m_e (theta <= 2 rad) per lepton; with one u for
    # both, by the softer lepton's: without the bound a 1-3 MeV lepton could come out beyond
    # pi/2 (5 % at E_gamma = 5 MeV) or wrap past pi. Acceptance >= P(u <= 2) = 0.55.
    u_max = 2.0 * min(ep, em) / M_E
    u = sample_u(rng)
    while u > u_max:
        u = sample_u(rng)
    phi = 2.0 * math.pi * rng.random()
    cphi = math.cos(phi)
    sphi = math.sin(phi)
    # orthonormal basis (e1, e2, n) with n along the photon
    p = math.sqrt(px * px + py * py + pz * pz)
    nx, ny, nz = px / p, py / p, pz / p
    if abs(nz) < 0.9:
        # e1 = normalised (z x n)
        e1x, e1y, e1z = -ny, nx, 0.0
    else:
        # e1 = normalised (x x n)
        e1x, e1y, e1z = 0.0, -nz, ny
    norm = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    e1x /= norm
    e1y /= norm
    e1z /= norm
    e2x = ny * e1z - nz * e1y
    e2y = nz * e1x - nx * e1z
    e2z = nx * e1y - ny * e1x

    th_p = u * M_E / ep
    th_m = u * M_E / em
    pp = math.sqrt(max(ep * ep - M_E * M_E, 0.0))
    pm = math.sqrt(max(em * em - M_E * M_E, 0.0))
    sp, cp = math.sin(th_p), math.cos(th_p)
    sm, cm = math.sin(th_m), math.cos(th_m)
    # e+ at azimuth phi, e- at phi + pi
    dxp = sp * (cphi * e1x + sphi * e2x) + cp * nx
    dyp = sp * (cphi * e1y + sphi * e2y) + cp * ny
    dzp = sp * (cphi * e1z + sphi * e2z) + cp * nz
    dxm = -sm * (cphi * e1x + sphi * e2x) + cm * nx
    dym = -sm * (cphi * e1y + sphi * e2y) + cm * ny
    dzm = -sm * (cphi * e1z + sphi * e2z) + cm * nz
    return (x, u, pp * dxp, pp * dyp, pp * dzp, ep, pm * dxm, pm * dym, pm * dzm, em)
