"""Beam-energy spread in the generators: every event has its own beams.

Independent checks: the per-event CM -> lab matrix against :meth:`Beam.cms_to_lab` of a beam
built with the drawn energies; the summed final state of every event is *some* two-beam
4-vector (solved for its two energies, the remaining components must match); the drawn
energies scatter as the detector file says (tolerances from the sampling error of a mean and
a standard deviation); invariant masses and the decay geometry are those of the event's own
kinematics.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from isrsim.beam import MAX_SPREAD_REL, Beam
from isrsim.constants import M_E
from isrsim.detector.model import load_detector
from isrsim.exceptions import ConfigError
from isrsim.processes import make_process
from isrsim.processes._kin import event_beam

N = 40_000


@pytest.fixture(scope="module")
def belle2_beam():
    return load_detector("belle2").beam


def _primary_sum(chunk):
    tot = np.zeros((chunk.npart.shape[0], 4))
    for j in range(chunk.pdg.shape[1]):
        sel = (j < chunk.npart) & (chunk.parent[:, j] < 0)
        tot[sel] += chunk.p4[sel, j]
    return tot


def _beam_energies(total, a):
    """Solve E = E- + E+, pz = (p- - p+) cos a for the two beam energies (Newton on the small
    electron-mass term), then return them with the px that two such beams have."""
    e, pz = total[:, 3], total[:, 2]
    em = 0.5 * (e + pz / math.cos(a))
    for _ in range(5):
        ep = e - em
        pm, pp = np.sqrt(em**2 - M_E**2), np.sqrt(ep**2 - M_E**2)
        f = (pm - pp) * math.cos(a) - pz
        df = (em / pm + ep / pp) * math.cos(a)
        em = em - f / df
    ep = e - em
    px = (np.sqrt(em**2 - M_E**2) + np.sqrt(ep**2 - M_E**2)) * math.sin(a)
    return em, ep, px


def test_event_beam_matches_the_beam_class(belle2_beam):
    bp = belle2_beam.kernel_params()
    out = np.empty((4, 4))
    for seed in range(5):
        w = event_beam(np.random.default_rng(seed), bp, 0.0, out)
        xi = np.random.default_rng(seed).standard_normal(2)  # the same two draws (|xi| < 6)
        ref = dataclasses.replace(belle2_beam, e_minus_GeV=bp[0] * (1 + bp[3] * xi[0]),
                                  e_plus_GeV=bp[1] * (1 + bp[4] * xi[1]))
        np.testing.assert_allclose(out, ref.cms_to_lab(), rtol=0, atol=1e-14)
        assert w == pytest.approx(ref.sqrt_s, rel=1e-14)


def test_spread_is_split_evenly_and_bounded():
    b = Beam(7.004, 4.002, 0.0415, 0.005)
    assert b.energy_spreads_rel == pytest.approx((math.sqrt(2) * 0.005 / b.sqrt_s,) * 2, rel=1e-15)
    with pytest.raises(ConfigError, match=r"beam.sqrt_s_spread_GeV = 0.1 out of range"):
        Beam(7.004, 4.002, 0.0415, 0.1)
    w_max = MAX_SPREAD_REL * b.sqrt_s / math.sqrt(2)
    Beam(7.004, 4.002, 0.0415, 0.999 * w_max)  # the limit itself is allowed


def test_per_beam_spreads_give_back_each_beams_spread():
    # basf2 preset "Y4S" (generators/scripts/beamparameters.py): 5.13 MeV (HER), 2.375 MeV (LER)
    b0 = Beam(7.004, 4.002, 0.0415)
    b = b0.with_energy_spreads(0.00513, 0.002375)
    w, share = b.sqrt_s_spread_GeV, b.spread_share_e_minus
    assert b.energy_spreads_rel == pytest.approx((0.00513 / 7.004, 0.002375 / 4.002), rel=1e-14)
    # dW/W = (dE-/E- + dE+/E+)/2: sqrt(7.324e-4^2 + 5.935e-4^2)/2 W = 4.99 MeV (file: ~5.0)
    assert w == pytest.approx(4.99e-3, abs=0.005e-3)
    assert share == pytest.approx(0.6037, abs=1e-4)
    # one beam without spread: all of it from the other
    assert b0.with_energy_spreads(0.0, 0.002375).spread_share_e_minus == 0.0
    assert b0.with_energy_spreads(0.0, 0.0) == b0
    # the bound applies to the beam with the larger relative spread
    w_max = MAX_SPREAD_REL * b0.sqrt_s / (2 * math.sqrt(share))
    dataclasses.replace(b, sqrt_s_spread_GeV=0.999 * w_max)
    with pytest.raises(ConfigError, match=r"beam.sqrt_s_spread_GeV = .* out of range.*e- share"):
        dataclasses.replace(b, sqrt_s_spread_GeV=1.01 * w_max)
    with pytest.raises(ConfigError, match=r"beam.spread_share_e_minus = 1.5 out of range"):
        dataclasses.replace(b, spread_share_e_minus=1.5)
    # metadata round trip
    assert Beam.from_metadata(b.metadata()) == b
    old = {k: v for k, v in b.metadata().items() if k != "spread_share_e_minus"}
    assert Beam.from_metadata(old).spread_share_e_minus == 0.5  # files before the share


CASES = {
    "isr_mumu": {"mass_range": [0.3, 8.0]},
    "isr_ee": {"mass_range": [0.3, 8.0], "fsr": True},
    "darkphoton": {"mass": 0.5, "epsilon": 1e-3},
    "diphoton": {"theta_lab_deg": [20.0, 150.0]},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_event_has_its_own_two_beams(belle2_beam, name):
    proc = make_process(name, belle2_beam, **CASES[name])
    chunk, _ = proc.sample(np.random.default_rng(11), N)
    total = _primary_sum(chunk)
    a = belle2_beam.crossing_half_angle_rad
    em, ep, px = _beam_energies(total, a)
    # the summed final state is exactly a two-beam 4-vector (rounding of the sums ~1e-12)
    np.testing.assert_allclose(total[:, 0], px, rtol=0, atol=1e-9)
    np.testing.assert_allclose(total[:, 1], 0.0, rtol=0, atol=1e-9)
    r_minus, r_plus = belle2_beam.energy_spreads_rel
    assert r_minus > 1.2 * r_plus  # the bundled Belle II file: HER 7.3e-4, LER 5.9e-4
    for e, e0, r in ((em, belle2_beam.e_minus_GeV, r_minus), (ep, belle2_beam.e_plus_GeV, r_plus)):
        d = e / e0 - 1.0
        assert abs(d.mean()) < 4 * r / math.sqrt(N)
        assert d.std() == pytest.approx(r, abs=4 * r / math.sqrt(2 * N))
    corr = np.corrcoef(em, ep)[0, 1]
    assert abs(corr) < 4 / math.sqrt(N)
    w = np.sqrt(total[:, 3] ** 2 - np.sum(total[:, :3] ** 2, axis=1))
    sw = belle2_beam.sqrt_s_spread_GeV
    # first order: W = sqrt(4 E- E+) up to the crossing angle, so sigma_W/W =
    # sqrt(r-^2 + r+^2)/2 exactly to O(r^2)
    r = max(r_minus, r_plus)
    assert abs(w.mean() - belle2_beam.sqrt_s) < 4 * sw / math.sqrt(N) + belle2_beam.sqrt_s * r**2
    assert w.std() == pytest.approx(sw, rel=4 / math.sqrt(2 * N) + 2 * r)


def _mass(p):
    return np.sqrt(np.maximum(p[..., 3] ** 2 - np.sum(p[..., :3] ** 2, axis=-1), 0.0))


def test_isr_kinematics_use_the_event_energy(belle2_beam):
    proc = make_process("isr_mumu", belle2_beam, mass_range=[0.3, 8.0])
    chunk, _ = proc.sample(np.random.default_rng(5), N)
    total = _primary_sum(chunk)
    s_ev = total[:, 3] ** 2 - np.sum(total[:, :3] ** 2, axis=1)
    m = chunk.extra["m_true"]
    np.testing.assert_allclose(_mass(chunk.p4[:, 0] + chunk.p4[:, 1]), m, rtol=1e-9)
    np.testing.assert_allclose(chunk.extra["x_cms"], 1.0 - m**2 / s_ev, rtol=0, atol=1e-9)
    # the photon energy in the event's CM frame is x sqrt(s')/2 (not the nominal sqrt(s)/2)
    lab_to_cms = []
    for tot in total[:200]:
        em, ep, _ = _beam_energies(tot[None], belle2_beam.crossing_half_angle_rad)
        b = dataclasses.replace(belle2_beam, e_minus_GeV=float(em[0]), e_plus_GeV=float(ep[0]))
        lab_to_cms.append(b.lab_to_cms())
    eg_cms = np.array([(lt @ p)[3] for lt, p in zip(lab_to_cms, chunk.p4[:200, 2])])
    np.testing.assert_allclose(eg_cms, chunk.extra["x_cms"][:200] * np.sqrt(s_ev[:200]) / 2,
                               rtol=1e-9)


def test_darkphoton_decay_follows_the_event_momentum(belle2_beam):
    proc = make_process("darkphoton", belle2_beam, mass=0.5, epsilon=1e-4, decay="ee")
    chunk, _ = proc.sample(np.random.default_rng(2), 5000)
    ap = chunk.p4[:, 0]
    np.testing.assert_allclose(_mass(ap), chunk.extra["m_true"], rtol=1e-9)
    np.testing.assert_allclose(ap, chunk.p4[:, 2] + chunk.p4[:, 3], rtol=0, atol=1e-12)
    p = np.linalg.norm(ap[:, :3], axis=1)
    np.testing.assert_allclose(chunk.extra["betagamma_lab"], p / chunk.extra["m_true"], rtol=1e-12)
    v = chunk.vtx[:, 2]
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), chunk.extra["decay_length_cm"], rtol=1e-12)
    np.testing.assert_allclose(v / np.linalg.norm(v, axis=1, keepdims=True), ap[:, :3] / p[:, None],
                               rtol=0, atol=1e-12)


def test_diphoton_lab_window_holds_for_every_event(belle2_beam):
    # the CM band is widened for the extreme beams, and the lab cut is applied per event
    proc = make_process("diphoton", belle2_beam, theta_lab_deg=[17.0, 150.0])
    chunk, _ = proc.sample(np.random.default_rng(4), N)
    th = np.degrees(np.arctan2(np.hypot(chunk.p4[:, :2, 0], chunk.p4[:, :2, 1]), chunk.p4[:, :2, 2]))
    assert np.all((th >= 17.0) & (th <= 150.0))
    nominal = make_process("diphoton", dataclasses.replace(belle2_beam, sqrt_s_spread_GeV=0.0),
                           theta_lab_deg=[17.0, 150.0])
    lo, hi = proc.cms_band
    lo0, hi0 = nominal.cms_band
    assert lo <= lo0 and hi >= hi0
    assert (lo0 - lo) + (hi - hi0) > 0.0  # the spread widened it


def test_zero_spread_gives_the_nominal_beams(belle2_beam):
    beam0 = dataclasses.replace(belle2_beam, sqrt_s_spread_GeV=0.0)
    proc = make_process("isr_mumu", beam0, mass_range=[0.3, 8.0])
    chunk, _ = proc.sample(np.random.default_rng(9), 2000)
    total = _primary_sum(chunk)
    np.testing.assert_allclose(total, np.broadcast_to(beam0.p4_total_lab(), total.shape),
                               rtol=0, atol=1e-9)


def test_run_card_spread_is_checked_against_its_sqrt_s():
    from isrsim.config import build_spec

    card = {"run": {"process": "isr_mumu", "events": 10, "output": "unused.parquet"},
            "beam": {"sqrt_s": 3.773, "sqrt_s_spread": 0.0014},
            "process": {"mass_range": [1.5, 3.4]}}
    assert build_spec(card).beam.sqrt_s_spread_GeV == 0.0014
    card["beam"]["sqrt_s_spread"] = 0.05  # > 1 % per beam: limit 0.01 x 3.773 / sqrt(2) GeV
    with pytest.raises(ConfigError, match=r"beam.sqrt_s_spread = 0.05 is invalid: allowed "
                                          r"0 <= sqrt_s_spread <= 0.02667\d* GeV"):
        build_spec(card)


@pytest.mark.parametrize(("sqrt_s", "a"), [(3.773, 0.0), (3.773, 0.011), (10.58, 0.0415), (0.01, 0.5)])
def test_symmetric_beams_have_the_requested_sqrt_s(sqrt_s, a):
    # [beam] sqrt_s with a crossing angle: s from the two lab 4-vectors, written out here
    # (E^2 - p^2 with p_x = 2 p sin a), must be the sqrt_s asked for; sqrt(s)/2 per beam would
    # be 9.1 MeV short at 41.5 mrad and 10.58 GeV
    beam = Beam.symmetric(sqrt_s, crossing_half_angle_rad=a)
    e = beam.e_minus_GeV
    assert beam.e_plus_GeV == e
    p = math.sqrt(e * e - M_E * M_E)
    assert math.sqrt(4 * e * e - 4 * p * p * math.sin(a) ** 2) == pytest.approx(sqrt_s, rel=1e-13)
    assert beam.sqrt_s == pytest.approx(sqrt_s, rel=1e-13)
    if sqrt_s > 1 and a > 0:  # the electron mass matters only for the 10 MeV case
        assert e - sqrt_s / 2 == pytest.approx(sqrt_s / 2 * (1 / math.cos(a) - 1), rel=1e-6)
    with pytest.raises(ConfigError, match=r"beam.crossing_half_angle_rad = 0.6 out of range"):
        Beam.symmetric(sqrt_s, crossing_half_angle_rad=0.6)


def test_run_card_per_beam_spreads(belle2_beam):
    from isrsim.config import build_spec

    card = {"run": {"process": "isr_mumu", "events": 10, "output": "unused.parquet"},
            "beam": {"e_minus": 7.004, "e_plus": 4.002, "crossing_half_angle": 0.0415,
                     "e_minus_spread": 0.00513, "e_plus_spread": 0.002375},
            "process": {"mass_range": [1.5, 3.4]}}
    beam = build_spec(card).beam
    assert beam == dataclasses.replace(belle2_beam, sigma_xyz_cm=(0.0, 0.0, 0.0))  # as the file
    for bad, pattern in (({"e_plus_spread": None}, r"\[beam\] e_minus_spread is invalid: allowed "
                                                   r"sqrt_s_spread, or both"),
                         ({"sqrt_s_spread": 0.005}, r"\[beam\] e_minus_spread, e_plus_spread, "
                                                    r"sqrt_s_spread is invalid"),
                         ({"e_plus_spread": 0.05}, r"beam.e_plus_spread = 0.05 is invalid: allowed "
                                                   r"0 <= e_plus_spread <= 0.04002 GeV")):
        c = {**card, "beam": {k: v for k, v in {**card["beam"], **bad}.items() if v is not None}}
        with pytest.raises(ConfigError, match=pattern):
            build_spec(c)


def test_isr_masses_at_the_kinematic_edge_stay_physical(belle2_beam):
    # M up to sqrt(s (1 - X_MIN)): events whose drawn sqrt(s') is below M / sqrt(1 - X_MIN) get
    # new beams, so every event keeps x' >= X_MIN and finite, on-shell kinematics
    from isrsim.processes.isr import X_MIN

    w = belle2_beam.sqrt_s
    m_hi = w * math.sqrt(1 - X_MIN) * 0.999999
    proc = make_process("isr_mumu", belle2_beam, mass_range=[0.999 * w, m_hi])
    chunk, _ = proc.sample(np.random.default_rng(12), 20_000)
    assert np.all(np.isfinite(chunk.p4))
    assert chunk.extra["x_cms"].min() >= X_MIN * (1 - 1e-9)
    total = _primary_sum(chunk)
    w_ev = np.sqrt(total[:, 3] ** 2 - np.sum(total[:, :3] ** 2, axis=1))
    assert np.all(w_ev >= chunk.extra["m_true"])
    # the redraw moves sqrt(s') up here (by construction), by at most a few sigma_W
    shift = w_ev.mean() - w
    assert 0.0 < shift < 3 * belle2_beam.sqrt_s_spread_GeV


def test_forced_conversion_cross_section_does_not_depend_on_the_spread(belle2_beam):
    # the X17 background with forced conversions and the M_PCA preselection: the spread changes
    # the rate only at O(r^2) ~ 4e-7, so the two estimates agree within their MC errors (4 sigma)
    det = load_detector("belle2")
    kw = {"theta_lab_deg": [17.0, 150.0], "conversion": "forced", "detector": det}
    res = []
    for beam in (belle2_beam, dataclasses.replace(belle2_beam, sqrt_s_spread_GeV=0.0)):
        _, st = make_process("diphoton", beam, **kw).sample(np.random.default_rng(21), 40_000,
                                                             weighted=True)
        res.append((st.sigma_nb, st.sigma_err_nb))
    (a, ea), (b, eb) = res
    assert a > 0 and b > 0
    assert abs(a - b) < 4 * math.hypot(ea, eb), res
