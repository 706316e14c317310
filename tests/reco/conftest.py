"""Shared toy samples for the reconstruction tests (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from isrsim.beam import Beam
from isrsim.constants import M_MU
from isrsim.reco import toys

#: BESIII-like helix resolutions used by the 1C tests (cm, rad); the d0-phi0 correlation
#: exercises the off-diagonal covariance handling.
BES_SIGMAS = dict(sigma_d0=0.01, sigma_phi0=1e-3, sigma_rel_pt=0.005, sigma_z0=0.1,
                  sigma_tanl=2e-3, rho_d0_phi0=-0.5)


@pytest.fixture(scope="session")
def bes_beam() -> Beam:
    """BEPCII: 3.773 GeV, 11 mrad crossing half-angle (physics.md 0)."""
    return Beam.symmetric(3.773, crossing_half_angle_rad=0.011)


@pytest.fixture(scope="session")
def isr_mumu_sample(bes_beam):
    """10k untagged ISR mu mu toys at M = 2 GeV, 1 T, photon within 0.05 rad of the beam."""
    return smeared_isr_pairs(np.random.default_rng(20240601), bes_beam, 10_000, 1.0, BES_SIGMAS)


def smeared_isr_pairs(rng, beam, n, bz, sigmas, *, beam_spread=False):
    """Untagged ISR mu mu toys at M = 2 GeV (photon within 0.05 rad of the beam) with their
    true helices, diagonal covariances from ``sigmas`` and Gaussian-smeared measurements."""
    lm, lp, gam = toys.isr_pair(rng, n, beam, 2.0, M_MU, 0.05, beam_spread=beam_spread)
    h1 = toys.helices_from_states(np.zeros(3), lm[:, :3], -1.0, bz)
    h2 = toys.helices_from_states(np.zeros(3), lp[:, :3], 1.0, bz)
    c1 = toys.diagonal_covariance(h1, **sigmas)
    c2 = toys.diagonal_covariance(h2, **sigmas)
    m1 = toys.smear_helices(rng, h1, c1)
    m2 = toys.smear_helices(rng, h2, c2)
    return dict(bz=bz, photon=gam, true1=h1, true2=h2, meas1=m1, meas2=m2, cov1=c1, cov2=c2)
