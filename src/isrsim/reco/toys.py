"""Truth-level toy pairs with Gaussian helix smearing, for testing and validating the fits.

These are *not* the physics generators (see :mod:`isrsim.processes`) nor the detector
simulation (:mod:`isrsim.detector`): they build exact kinematics for a few closed-form
topologies and smear the perigee helix parameters with a covariance chosen by the caller,
so that fit pulls and chi2 distributions can be checked against their exact expectations.

* :func:`isr_pair` -- untagged ISR: gamma* of mass M plus a photon within ``theta_max``
  of the beam axis (CM frame), back-to-back leptons isotropic in the gamma* frame, boosted
  to the lab with ``Beam.cms_to_lab()``; optionally with per-event beam energies drawn with
  the beam-energy spread (each event then has its own exact CM frame, :func:`event_cms_to_lab`).
* :func:`conversion_pair` -- a photon from the origin converting at transverse radius R;
  Bethe-Heitler energy sharing (physics.md eq. 5.2) or a fixed share, Urban/Tsai opening
  angles (physics.md 5.3).
* :func:`two_body_pair` -- a particle of mass M (e.g. a 17 MeV A') decaying isotropically
  at a given vertex.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import M_E
from ..helix import perigee_from_state

__all__ = [
    "conversion_pair",
    "diagonal_covariance",
    "event_cms_to_lab",
    "helices_from_states",
    "isr_pair",
    "smear_helices",
    "two_body_pair",
]


@kernel
def _helices_kernel(vtx, p3, q, bz, out):
    for i in range(p3.shape[0]):
        h = perigee_from_state(vtx[i, 0], vtx[i, 1], vtx[i, 2], p3[i, 0], p3[i, 1], p3[i, 2],
                               q[i], bz)
        for j in range(5):
            out[i, j] = h[j]


def helices_from_states(vtx: np.ndarray, p3: np.ndarray, q: np.ndarray, bz: float) -> np.ndarray:
    """Exact perigee helices ``[n, 5]`` of particles with momentum ``p3`` [n, 3] at ``vtx`` [n, 3]."""
    vtx = np.ascontiguousarray(np.broadcast_to(vtx, p3.shape), dtype=np.float64)
    q = np.ascontiguousarray(np.broadcast_to(q, p3.shape[:1]), dtype=np.float64)
    out = np.empty((p3.shape[0], 5))
    _helices_kernel(vtx, np.ascontiguousarray(p3, dtype=np.float64), q, float(bz), out)
    return out


def diagonal_covariance(helix: np.ndarray, *, sigma_d0: float, sigma_phi0: float,
                        sigma_rel_pt: float, sigma_z0: float, sigma_tanl: float,
                        rho_d0_phi0: float = 0.0) -> np.ndarray:
    """Packed [n, 15] covariances: the given sigmas (sigma_omega = sigma_rel_pt |omega|) and
    an optional d0-phi0 correlation coefficient (as produced by a real track fit)."""
    n = helix.shape[0]
    cov = np.zeros((n, 15))
    cov[:, 0] = sigma_d0**2
    cov[:, 1] = rho_d0_phi0 * sigma_d0 * sigma_phi0
    cov[:, 5] = sigma_phi0**2
    cov[:, 9] = (sigma_rel_pt * helix[:, 2]) ** 2
    cov[:, 12] = sigma_z0**2
    cov[:, 14] = sigma_tanl**2
    return cov


def smear_helices(rng: np.random.Generator, helix: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Draw ``helix + N(0, V)`` per row; ``cov`` packed [n, 15]."""
    iu = np.triu_indices(5)
    mat = np.zeros((helix.shape[0], 5, 5))
    mat[:, iu[0], iu[1]] = cov
    mat[:, iu[1], iu[0]] = cov
    low = np.linalg.cholesky(mat)
    z = rng.standard_normal(helix.shape)
    out = helix + np.einsum("nij,nj->ni", low, z)
    out[:, 1] = np.arctan2(np.sin(out[:, 1]), np.cos(out[:, 1]))
    return out


def _boost_to(p4: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Boost rest-frame 4-vectors ``p4`` [n, 4] into the frame where ``parent`` [n, 4] moves."""
    m = np.sqrt(np.maximum(parent[:, 3] ** 2 - np.sum(parent[:, :3] ** 2, axis=1), 0.0))
    b = parent[:, :3] / parent[:, 3:4]
    g = parent[:, 3] / m
    bp = np.sum(b * p4[:, :3], axis=1)
    b2 = np.sum(b * b, axis=1)
    coef = np.where(b2 > 0, (g - 1.0) * bp / np.where(b2 > 0, b2, 1.0), 0.0) + g * p4[:, 3]
    out = np.empty_like(p4)
    out[:, :3] = p4[:, :3] + coef[:, None] * b
    out[:, 3] = g * (p4[:, 3] + bp)
    return out


def _isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    s = np.sqrt(1.0 - c * c)
    return np.stack([s * np.cos(phi), s * np.sin(phi), c], axis=1)


def _two_body(rng: np.random.Generator, parent: np.ndarray, m_daughter: float):
    """Isotropic two-body decay of ``parent`` [n, 4] into equal masses (lab 4-vectors)."""
    n = parent.shape[0]
    mp = np.sqrt(parent[:, 3] ** 2 - np.sum(parent[:, :3] ** 2, axis=1))
    pstar = np.sqrt(np.maximum(0.25 * mp**2 - m_daughter**2, 0.0))
    u = _isotropic(rng, n)
    d1 = np.empty((n, 4))
    d1[:, :3] = pstar[:, None] * u
    d1[:, 3] = 0.5 * mp
    d2 = d1.copy()
    d2[:, :3] *= -1.0
    return _boost_to(d1, parent), _boost_to(d2, parent)


def _beams_p4(e_minus: np.ndarray, e_plus: np.ndarray, half_angle: float):
    """Lab 4-momenta [n, 4] of the e- and e+ beams of energies ``e_minus``, ``e_plus`` [GeV]
    (electron mass kept; directions as in :class:`isrsim.beam.Beam`)."""
    out = []
    for e, sign in ((e_minus, 1.0), (e_plus, -1.0)):
        p = np.sqrt(e * e - M_E * M_E)
        out.append(np.stack([p * math.sin(half_angle), np.zeros_like(p),
                             sign * p * math.cos(half_angle), e], axis=1))
    return out[0], out[1]


def _rotate_y(p4: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate 4-vectors [n, 4] about y by ``angle`` [n] (+z goes to (sin, 0, cos))."""
    c, s = np.cos(angle), np.sin(angle)
    out = p4.copy()
    out[:, 0] = c * p4[:, 0] + s * p4[:, 2]
    out[:, 2] = -s * p4[:, 0] + c * p4[:, 2]
    return out


def event_cms_to_lab(p4_cms: np.ndarray, e_minus: np.ndarray, e_plus: np.ndarray,
                     half_angle: float) -> np.ndarray:
    """CM -> lab for per-event beams: row i of ``p4_cms`` [n, 4] is taken to the lab of beams
    ``e_minus[i]``, ``e_plus[i]`` [GeV] with crossing half angle ``half_angle`` [rad].

    The same exact transformation as :meth:`isrsim.beam.Beam.cms_to_lab` of
    ``dataclasses.replace(beam, e_minus_GeV=e_minus[i], e_plus_GeV=e_plus[i])`` (a rotation
    about y taking +z to the e- direction in the CM frame, then the boost by ``P/E``),
    vectorised over events.
    """
    pm, pp = _beams_p4(e_minus, e_plus, half_angle)
    tot = pm + pp
    back = tot.copy()
    back[:, :3] *= -1.0  # the lab moves with -beta in the CM frame
    d = _boost_to(pm, back)  # e- beam in the CM frame
    return _boost_to(_rotate_y(p4_cms, np.arctan2(d[:, 0], d[:, 2])), tot)


def isr_pair(rng: np.random.Generator, n: int, beam: Beam, m_pair: float, m_lepton: float,
             theta_max: float = 0.05, *, beam_spread: bool = False):
    """Untagged ISR pair: gamma*(M) + photon within ``theta_max`` of the beam axis (CM frame).

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    beam : Beam
    m_pair, m_lepton : float
        gamma* and lepton masses [GeV].
    theta_max : float
        Largest photon angle to the CM beam axis [rad].
    beam_spread : bool
        False (default): every event has the nominal beams. True: each event has its own
        beam energies ``E-' = E- (1 + r- xi1)``, ``E+' = E+ (1 + r+ xi2)`` with ``(r-, r+) =
        beam.energy_spreads_rel`` and xi standard normal (drawn first, ``[n, 2]``), and its own
        exact CM frame and CM -> lab transformation (:func:`event_cms_to_lab`). With a zero
        spread nothing is drawn: events and random stream are those of ``False``.

    Returns
    -------
    lep_minus, lep_plus, photon : float64[n, 4]
        Lab 4-momenta (px, py, pz, E) [GeV]; the photon is exactly massless, so
        ``(P - p- - p+)^2 = 0`` holds exactly with ``P = beam.p4_total_lab()``, or with the
        event's own beam ``P = lep_minus + lep_plus + photon`` when ``beam_spread``.
    """
    r_minus, r_plus = beam.energy_spreads_rel
    per_event = beam_spread and r_minus + r_plus > 0.0
    if per_event:
        xi = rng.standard_normal((n, 2))
        e_minus = beam.e_minus_GeV * (1.0 + r_minus * xi[:, 0])
        e_plus = beam.e_plus_GeV * (1.0 + r_plus * xi[:, 1])
        pm, pp = _beams_p4(e_minus, e_plus, beam.crossing_half_angle_rad)
        tot = pm + pp
        rs = np.sqrt(tot[:, 3] ** 2 - np.sum(tot[:, :3] ** 2, axis=1))
    else:
        rs = np.full(n, beam.sqrt_s)
    eg = (rs**2 - m_pair**2) / (2.0 * rs)
    cmin = math.cos(theta_max)
    c = rng.uniform(cmin, 1.0, n) * rng.choice([-1.0, 1.0], n)
    phi = rng.uniform(-math.pi, math.pi, n)
    s = np.sqrt(1.0 - c * c)
    gam = np.stack([eg * s * np.cos(phi), eg * s * np.sin(phi), eg * c, eg], axis=1)
    gstar = np.empty((n, 4))
    gstar[:, :3] = -gam[:, :3]
    gstar[:, 3] = rs - eg
    l1, l2 = _two_body(rng, gstar, m_lepton)
    if per_event:
        half = beam.crossing_half_angle_rad
        return (event_cms_to_lab(l1, e_minus, e_plus, half), event_cms_to_lab(l2, e_minus, e_plus, half),
                event_cms_to_lab(gam, e_minus, e_plus, half))
    lab = beam.cms_to_lab()
    return l1 @ lab.T, l2 @ lab.T, gam @ lab.T


def two_body_pair(rng: np.random.Generator, n: int, m_parent: float, p_parent: float,
                  m_daughter: float, *, cos_theta_max: float = 0.7):
    """A parent of mass ``m_parent`` and momentum ``p_parent`` [GeV] (|cos theta| < max,
    uniform azimuth) decaying isotropically; returns the two daughters' lab 4-momenta."""
    u = _isotropic(rng, n)
    c = rng.uniform(-cos_theta_max, cos_theta_max, n)
    s = np.sqrt(1.0 - c * c)
    phi = np.arctan2(u[:, 1], u[:, 0])
    parent = np.stack([p_parent * s * np.cos(phi), p_parent * s * np.sin(phi), p_parent * c,
                       np.full(n, math.hypot(p_parent, m_parent))], axis=1)
    return _two_body(rng, parent, m_daughter)


def conversion_pair(rng: np.random.Generator, n: int, *, radius: float, e_gamma: float,
                    x_share: float | None = None, cos_theta_max: float = 0.7):
    """Photons from the origin converting at transverse radius ``radius`` [cm].

    Energy share x = E+/E_gamma fixed (``x_share``) or drawn from Bethe-Heitler
    ``1 - 4/3 x(1-x)`` (physics.md eq. 5.2); polar emission angles ``u m_e/E+-`` with u from
    Urban's fit to Tsai (physics.md 5.3), back to back in azimuth around the photon.

    Returns
    -------
    e_minus, e_plus : float64[n, 4]
        Lab 4-momenta [GeV] at the conversion point.
    vertex : float64[n, 3]
        Conversion point [cm].
    x : float64[n]
        Energy share of the positron.
    """
    c = rng.uniform(-cos_theta_max, cos_theta_max, n)
    s = np.sqrt(1.0 - c * c)
    phi = rng.uniform(-math.pi, math.pi, n)
    d = np.stack([s * np.cos(phi), s * np.sin(phi), c], axis=1)
    vertex = radius * d / s[:, None]
    if x_share is None:
        x = np.empty(n)
        filled = 0
        while filled < n:
            t = rng.uniform(0.0, 1.0, 2 * (n - filled))
            keep = t[rng.uniform(0.0, 1.0, t.size) < 1.0 - 4.0 / 3.0 * t * (1.0 - t)]
            take = keep[: n - filled]
            x[filled:filled + take.size] = take
            filled += take.size
        x = np.clip(x, 2 * M_E / e_gamma, 1 - 2 * M_E / e_gamma)
    else:
        x = np.full(n, float(x_share))
    a = np.where(rng.uniform(0.0, 1.0, n) < 0.25, 0.625, 1.875)
    u = -np.log(rng.uniform(0.0, 1.0, n) * rng.uniform(0.0, 1.0, n)) / a
    ep = x * e_gamma
    em = (1.0 - x) * e_gamma
    th_p = u * M_E / ep
    th_m = u * M_E / em
    # orthonormal frame around the photon direction
    e1 = np.stack([c * np.cos(phi), c * np.sin(phi), -s], axis=1)
    e2 = np.stack([-np.sin(phi), np.cos(phi), np.zeros(n)], axis=1)
    az = rng.uniform(-math.pi, math.pi, n)
    tr = np.cos(az)[:, None] * e1 + np.sin(az)[:, None] * e2
    dp = np.cos(th_p)[:, None] * d + np.sin(th_p)[:, None] * tr
    dm = np.cos(th_m)[:, None] * d - np.sin(th_m)[:, None] * tr
    pp = np.sqrt(np.maximum(ep**2 - M_E**2, 0.0))
    pm = np.sqrt(np.maximum(em**2 - M_E**2, 0.0))
    e_plus = np.concatenate([pp[:, None] * dp, ep[:, None]], axis=1)
    e_minus = np.concatenate([pm[:, None] * dm, em[:, None]], axis=1)
    return e_minus, e_plus, vertex, x
