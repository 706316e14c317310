"""Simple truth samples for detector tests, validation and benchmarks (not physics generators).

* :func:`single_particles` - one particle per event at fixed momentum, uniform in cos(theta)
  and phi inside a polar-angle window, from a given vertex;
* :func:`isr_like_pairs` - e+e- -> gamma gamma*, gamma* (mass M) -> f fbar: the ISR photon
  is emitted along the beam axis in the CM frame (x = 1 - M^2/s, physics.md section 0), the
  gamma* decays isotropically in its rest frame, everything is boosted to the lab with
  ``beam.cms_to_lab()``. Layout: slot 0 = photon, 1 = f, 2 = fbar.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import M_E, M_MU, M_PI
from ..events import TruthChunk
from ..exceptions import ConfigError

__all__ = ["isr_like_pairs", "single_particles"]

_MASSES = {11: M_E, 13: M_MU, 211: M_PI, 22: 0.0}


def _mass_of(pdg: int) -> float:
    try:
        return _MASSES[abs(int(pdg))]
    except KeyError:
        msg = f"pdg = {pdg!r} is not supported; allowed: +-11, +-13, +-211, 22"
        raise ConfigError(msg) from None


def single_particles(rng: np.random.Generator, n: int, pdg: int, p: float, *,
                     theta_range: tuple[float, float] = (0.6, 2.5),
                     vertex: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> TruthChunk:
    """``n`` events with one particle of momentum ``p`` [GeV] (uniform cos(theta), phi)."""
    m = _mass_of(pdg)
    c = rng.uniform(math.cos(theta_range[1]), math.cos(theta_range[0]), n)
    s = np.sqrt(1 - c * c)
    ph = rng.uniform(-math.pi, math.pi, n)
    t = TruthChunk.empty(n, 1)
    t.npart[:] = 1
    t.pdg[:, 0] = pdg
    t.p4[:, 0, 0] = p * s * np.cos(ph)
    t.p4[:, 0, 1] = p * s * np.sin(ph)
    t.p4[:, 0, 2] = p * c
    t.p4[:, 0, 3] = math.sqrt(p * p + m * m)
    t.vtx[:, 0, :] = vertex
    return t


@kernel
def _pairs_kernel(rng, n, s, mass, m_f, lab, p4):
    rs = math.sqrt(s)
    eg = (s - mass * mass) / (2.0 * rs)
    e_star = rs - eg
    pstar = math.sqrt(0.25 * mass * mass - m_f * m_f)
    for i in range(n):
        # ISR photon along +-z (CM), gamma* recoils
        sgn = 1.0 if rng.random() < 0.5 else -1.0
        gam = (0.0, 0.0, sgn * eg, eg)
        bz = -sgn * eg / e_star  # gamma* velocity along z
        g = e_star / mass
        c = 2.0 * rng.random() - 1.0
        sn = math.sqrt(max(0.0, 1.0 - c * c))
        ph = 2.0 * math.pi * rng.random()
        ef = 0.5 * mass
        for sign, slot in ((1.0, 1), (-1.0, 2)):
            px = sign * pstar * sn * math.cos(ph)
            py = sign * pstar * sn * math.sin(ph)
            pz = sign * pstar * c
            pzl = g * (pz + bz * ef)
            el = g * (ef + bz * pz)
            v = (px, py, pzl, el)
            for a in range(4):
                acc = 0.0
                for b in range(4):
                    acc += lab[a, b] * v[b]
                p4[i, slot, a] = acc
        for a in range(4):
            acc = 0.0
            for b in range(4):
                acc += lab[a, b] * gam[b]
            p4[i, 0, a] = acc


def isr_like_pairs(rng: np.random.Generator, n: int, beam: Beam, mass: float, pdg: int = 13) -> TruthChunk:
    """``n`` events gamma_ISR + f fbar with M(f fbar) = ``mass`` [GeV] (slot 0 photon, 1 f, 2 fbar)."""
    m_f = _mass_of(pdg)
    if not 2 * m_f < mass < beam.sqrt_s:
        msg = f"mass = {mass!r} out of range: must be in ({2 * m_f}, {beam.sqrt_s})"
        raise ConfigError(msg)
    t = TruthChunk.empty(n, 3)
    t.npart[:] = 3
    t.pdg[:, 0] = 22
    t.pdg[:, 1] = abs(pdg)
    t.pdg[:, 2] = -abs(pdg)
    _pairs_kernel(rng, n, beam.s, float(mass), m_f, beam.cms_to_lab(), t.p4)
    return t
