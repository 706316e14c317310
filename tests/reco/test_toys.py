"""Tests of the toy generators used by the fit tests: per-event beam energies in ``isr_pair``."""

from __future__ import annotations

import dataclasses

import numpy as np

from isrsim.beam import Beam
from isrsim.constants import M_MU
from isrsim.reco import toys

B2 = Beam(e_minus_GeV=7.004, e_plus_GeV=4.002, crossing_half_angle_rad=0.0415, sqrt_s_spread_GeV=0.005,
          spread_share_e_minus=0.6)  # unequal relative spreads, as the bundled Belle II file


def test_event_cms_to_lab_is_the_beams_transformation():
    # per-event vectorised transformation == Beam.cms_to_lab() of the event's own beams
    rng = np.random.default_rng(1)
    em = B2.e_minus_GeV * (1 + 0.003 * rng.standard_normal(6))
    ep = B2.e_plus_GeV * (1 + 0.003 * rng.standard_normal(6))
    v = rng.standard_normal((6, 4))
    out = toys.event_cms_to_lab(v, em, ep, B2.crossing_half_angle_rad)
    for i in range(6):
        b = dataclasses.replace(B2, e_minus_GeV=em[i], e_plus_GeV=ep[i])
        np.testing.assert_allclose(out[i], b.cms_to_lab() @ v[i], rtol=0, atol=1e-13)


def test_isr_pair_per_event_beams():
    rng = np.random.default_rng(2)
    n = 20_000
    lm, lp, gam = toys.isr_pair(rng, n, B2, 2.0, M_MU, 0.05, beam_spread=True)
    # each event is exact for its own beam: massless photon, leptons on shell, and the total
    # 4-momentum is a beam 4-vector of energies E-(1 + r xi1), E+(1 + r xi2)
    assert np.abs(gam[:, 3] ** 2 - np.sum(gam[:, :3] ** 2, axis=1)).max() < 1e-12
    for p in (lm, lp):
        np.testing.assert_allclose(p[:, 3] ** 2 - np.sum(p[:, :3] ** 2, axis=1), M_MU**2, atol=1e-10)
    tot = lm + lp + gam
    assert np.abs(tot[:, 1]).max() < 1e-12
    # E = E- + E+ and pz = (p- - p+) cos a: solve for the beam energies (m_e negligible here)
    c = np.cos(B2.crossing_half_angle_rad)
    e_minus = 0.5 * (tot[:, 3] + tot[:, 2] / c)
    e_plus = 0.5 * (tot[:, 3] - tot[:, 2] / c)
    r_minus, r_plus = B2.energy_spreads_rel
    # sd of a sample sd: 1/sqrt(2n) = 0.5 %; 3 % is 6 of those
    assert abs(np.std(e_minus / B2.e_minus_GeV - 1) / r_minus - 1) < 0.03
    assert abs(np.std(e_plus / B2.e_plus_GeV - 1) / r_plus - 1) < 0.03
    assert abs(np.corrcoef(e_minus, e_plus)[0, 1]) < 5 / np.sqrt(n)
    # the photon is within 0.05 rad of the beam axis in the event's own CM frame
    cms = np.array([np.linalg.inv(toys.event_cms_to_lab(np.eye(4), np.full(4, a), np.full(4, b),
                                                        B2.crossing_half_angle_rad).T)
                    for a, b in zip(e_minus[:50], e_plus[:50], strict=True)])
    g_cms = np.einsum("nij,nj->ni", cms, gam[:50])
    assert np.all(np.abs(g_cms[:, 2]) / g_cms[:, 3] > np.cos(0.05) - 1e-9)


def test_isr_pair_default_and_zero_spread_unchanged():
    # off, or a beam without spread: same events and same random stream as before the option
    nominal = dataclasses.replace(B2, sqrt_s_spread_GeV=0.0)
    runs = []
    for beam, flag in ((B2, False), (nominal, True), (nominal, False)):
        rng = np.random.default_rng(3)
        out = toys.isr_pair(rng, 100, beam, 2.0, M_MU, 0.05, beam_spread=flag)
        runs.append((out, rng.standard_normal()))
    for out, after in runs[1:]:
        assert after == runs[0][1]
        for a, b in zip(out, runs[0][0], strict=True):
            assert np.array_equal(a, b)
    # and the events are exact for the nominal beam
    lm, lp, gam = runs[0][0]
    np.testing.assert_allclose(lm + lp + gam, np.broadcast_to(B2.p4_total_lab(), lm.shape), atol=1e-12)
