"""Beam-energy spread: the covariance of the lab beam 4-vector and the split of the sqrt(s)
spread between the beams, against Monte Carlo beams drawn with the per-beam spread."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from isrsim.beam import Beam
from isrsim.constants import M_E

N = 200_000

BEAMS = {
    "belle2": Beam(e_minus_GeV=7.004, e_plus_GeV=4.002, crossing_half_angle_rad=0.0415,
                   sqrt_s_spread_GeV=0.005),
    "besiii": Beam.symmetric(3.773, crossing_half_angle_rad=0.011, sqrt_s_spread_GeV=0.0014),
    # the bundled file's per-beam spreads (HER 7.3e-4, LER 5.9e-4): e- share 0.60 of the variance
    "belle2_per_beam": Beam(e_minus_GeV=7.004, e_plus_GeV=4.002, crossing_half_angle_rad=0.0415,
                            sqrt_s_spread_GeV=0.00499, spread_share_e_minus=0.6037),
}


def _draw(beam: Beam, seed: int) -> np.ndarray:
    """Lab beam 4-vectors [N, 4] of beams with energies E (1 + r xi), xi ~ N(0, 1) per beam,
    written out from the beam directions (independent of Beam.p4_covariance_lab)."""
    rng = np.random.default_rng(seed)
    a = beam.crossing_half_angle_rad
    tot = np.zeros((N, 4))
    for e0, sign, r in zip((beam.e_minus_GeV, beam.e_plus_GeV), (1.0, -1.0), beam.energy_spreads_rel):
        e = e0 * (1.0 + r * rng.standard_normal(N))
        p = np.sqrt(e * e - M_E * M_E)
        tot += np.stack([p * math.sin(a), np.zeros(N), sign * p * math.cos(a), e], axis=1)
    return tot


@pytest.mark.parametrize("name", sorted(BEAMS))
def test_draw_matches_beam(name):
    # the written-out 4-vectors are Beam.p4_total_lab() of the same energies
    beam = BEAMS[name]
    e = np.array([0.999, 1.001])
    a = beam.crossing_half_angle_rad
    e0 = (beam.e_minus_GeV, beam.e_plus_GeV)
    p = [math.sqrt((x * y) ** 2 - M_E**2) for x, y in zip(e, e0, strict=True)]
    mine = np.array([(p[0] + p[1]) * math.sin(a), 0.0, (p[0] - p[1]) * math.cos(a),
                     e[0] * beam.e_minus_GeV + e[1] * beam.e_plus_GeV])
    other = dataclasses.replace(beam, e_minus_GeV=e[0] * beam.e_minus_GeV,
                                e_plus_GeV=e[1] * beam.e_plus_GeV).p4_total_lab()
    np.testing.assert_allclose(mine, other, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", sorted(BEAMS))
def test_p4_covariance_lab_matches_monte_carlo(name):
    # sample covariance of 2e5 beams vs the analytic one; a sample covariance element of
    # Gaussian variables has sd sqrt((C_ii C_jj + C_ij^2)/N): 5 of those per element
    beam = BEAMS[name]
    cov = beam.p4_covariance_lab()
    mc = np.cov(_draw(beam, 11).T)
    sd = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)
    assert np.all(np.abs(mc - cov) <= 5 * sd + 1e-30), (mc, cov)
    assert np.all(cov[1] == 0.0)
    assert np.all(cov[:, 1] == 0.0)
    np.testing.assert_array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > -1e-12 * np.abs(cov).max()
    # no spread, no covariance
    assert not dataclasses.replace(beam, sqrt_s_spread_GeV=0.0).p4_covariance_lab().any()


@pytest.mark.parametrize("name", sorted(BEAMS))
def test_energy_spreads_rel_give_the_sqrt_s_spread(name):
    # beams drawn with sigma_E/E = energy_spreads_rel have sd(sqrt(s)) = sqrt_s_spread_GeV
    # to first order (second order: relative r ~ 1e-3). sd of a sample sd: 1/sqrt(2N) =
    # 0.16 %; 1 % is 6 of those
    beam = BEAMS[name]
    p = _draw(beam, 12)
    w = np.sqrt(p[:, 3] ** 2 - np.sum(p[:, :3] ** 2, axis=1))
    assert abs(w.std() / beam.sqrt_s_spread_GeV - 1.0) < 0.01
    assert abs(w.mean() - beam.sqrt_s) < 5 * beam.sqrt_s_spread_GeV / math.sqrt(N)
