"""Tests of the selections on toy RecoChunks (BESIII 2017 and Belle II low mass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from isrsim.beam import Beam
from isrsim.constants import M_E, M_MU
from isrsim.events import RecoChunk
from isrsim.exceptions import ConfigError
from isrsim.reco import toys
from isrsim.reco.kinfit import fit_1c_missing_photon
from isrsim.reco.selection import COLUMNS, reconstruct_chunk


def _chunk(h1, c1, h2, c2, *, prob_mu, e_over_p, photons=None):
    n = h1.shape[0]
    helix = np.stack([h1, h2], axis=1)
    cov = np.stack([c1, c2], axis=1)
    charge = np.sign(helix[..., 2]).astype(np.int8)
    kg = 1 if photons is None else photons.shape[1]
    phot = np.zeros((n, kg, 3)) if photons is None else photons
    extra = {"prob_mu": np.full((n, 2), prob_mu, np.float32),
             "prob_e": np.full((n, 2), 1.0 - prob_mu, np.float32),
             "prob_pi": np.zeros((n, 2), np.float32),
             "e_over_p": np.full((n, 2), e_over_p, np.float32),
             "p_lab": np.zeros((n, 2), np.float32)}
    return RecoChunk(ntrk=np.full(n, 2, np.int16), charge=charge, helix=helix, cov=cov,
                     trk_truth=np.tile(np.array([0, 1], np.int16), (n, 1)),
                     nphot=np.full(n, 0 if photons is None else kg, np.int16), phot=phot,
                     phot_truth=np.zeros((n, kg), np.int16), track_extra=extra)


def test_besiii2017_mumu_keeps_isr_events(isr_mumu_sample, bes_beam):
    s = isr_mumu_sample
    reco = _chunk(s["meas1"], s["cov1"], s["meas2"], s["cov2"], prob_mu=0.9, e_over_p=0.2)
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=s["bz"], beam=bes_beam)
    assert set(cols) == set(COLUMNS)
    assert set(cols["channel"]) == {"mumu"}  # E/p = 0.2 fails the ee channel
    # efficiency: chi2(1) < 20 keeps 1 - 7.7e-6; the photon cut (toys within 0.05 rad CM,
    # lab tilt <= 11 mrad) keeps nearly all; geometric cuts (theta, pT) remove the rest.
    h = s["meas1"]
    th1 = 0.5 * np.pi - np.arctan(h[:, 4])
    th2 = 0.5 * np.pi - np.arctan(s["meas2"][:, 4])
    geo = ((th1 > 0.4) & (th1 < np.pi - 0.4) & (th2 > 0.4) & (th2 < np.pi - 0.4))
    assert cols["event_id"].size <= geo.sum()
    assert cols["event_id"].size > 0.97 * geo.sum()
    assert np.all(cols["chi2"] < 20)
    assert abs(np.median(cols["m_ll"]) - 2.0) < 0.002


def test_besiii2017_pid_and_charge_cuts(isr_mumu_sample, bes_beam):
    s = isr_mumu_sample
    reco = _chunk(s["meas1"], s["cov1"], s["meas2"], s["cov2"], prob_mu=0.3, e_over_p=0.2)
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=s["bz"], beam=bes_beam)
    assert cols["event_id"].size == 0
    reco = _chunk(s["meas1"], s["cov1"], s["meas1"], s["cov1"], prob_mu=0.9, e_over_p=0.2)
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=s["bz"], beam=bes_beam)
    assert cols["event_id"].size == 0  # same-sign pair: net charge != 0


def _belle2_aprime_chunk(beam, n, bz, *, beam_spread=False):
    """Toy e+e- -> gamma A'(17 MeV) RecoChunk: A' and photon back to back in the CM frame,
    A' -> e+e- at the origin, Belle II-like track and photon resolutions."""
    rng = np.random.default_rng(5)
    lm, lp, gam = toys.isr_pair(rng, n, beam, 0.017, M_E, theta_max=1.2, beam_spread=beam_spread)
    h1 = toys.helices_from_states(np.zeros(3), lm[:, :3], -1.0, bz)
    h2 = toys.helices_from_states(np.zeros(3), lp[:, :3], 1.0, bz)
    kw = {"sigma_d0": 20e-4, "sigma_phi0": 5e-4, "sigma_rel_pt": 0.004, "sigma_z0": 25e-4,
          "sigma_tanl": 5e-4}
    c1 = toys.diagonal_covariance(h1, **kw)
    c2 = toys.diagonal_covariance(h2, **kw)
    e = gam[:, 3]
    theta = np.arccos(gam[:, 2] / e)
    phi = np.arctan2(gam[:, 1], gam[:, 0])
    photons = np.stack([e * (1 + 0.02 * rng.standard_normal(n)),
                        theta + 4e-3 / np.sqrt(e) * rng.standard_normal(n),
                        phi + 4e-3 / np.sqrt(e) / np.sin(theta) * rng.standard_normal(n)], axis=1)
    return _chunk(toys.smear_helices(rng, h1, c1), c1, toys.smear_helices(rng, h2, c2), c2,
                  prob_mu=0.0, e_over_p=0.95, photons=photons[:, None, :])


def test_belle2_lowmass_prompt_aprime(tmp_path):
    # e+e- -> gamma A'(17 MeV) at Belle II
    beam = Beam(e_minus_GeV=7.0, e_plus_GeV=4.0, crossing_half_angle_rad=0.0415)
    n, bz = 2000, 1.5
    reco = _belle2_aprime_chunk(beam, n, bz)
    cols = reconstruct_chunk(reco, selection="belle2_lowmass", bz=bz, beam=beam)
    assert cols["event_id"].size > 0.8 * n
    # Delta M of a prompt 17 MeV A' centred at 0 (physics.md 5.4); median error ~1.25 s/sqrt(N)
    dm = cols["delta_m"]
    assert abs(np.median(dm)) < 4 * 1.25 * dm.std() / np.sqrt(dm.size)
    assert abs(np.median(cols["m_ll"]) - 0.017) < 1e-3
    # the ndf column is the number of degrees of freedom the chi2 has: the fits are given the
    # resolutions the toys were smeared with, so chi2 ~ chi2(ndf) (4C: 4). N ~ 2000: mean within
    # 4 sd = 4 sqrt(2 ndf / N) and KS p > 0.01 (measured: mean 4.06, p = 0.68; against chi2(3)
    # or chi2(5) the KS p-value is < 1e-36)
    ndf = np.unique(cols["ndf"])
    assert ndf.tolist() == [4]
    assert abs(cols["chi2"].mean() - ndf[0]) < 4 * np.sqrt(2.0 * ndf[0] / cols["chi2"].size)
    assert stats.kstest(cols["chi2"], stats.chi2(int(ndf[0])).cdf).pvalue > 0.01


def test_selections_give_the_fits_the_beam_covariance(isr_mumu_sample, bes_beam):
    # besiii2017: the 1C chi2 is that of the fit with cov_beam = Beam.p4_covariance_lab()
    s = isr_mumu_sample
    spread = dataclasses.replace(bes_beam, sqrt_s_spread_GeV=0.0014)
    reco = _chunk(s["meas1"], s["cov1"], s["meas2"], s["cov2"], prob_mu=0.9, e_over_p=0.2)
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=s["bz"], beam=spread)
    i = cols["event_id"]
    kw = {"bz": s["bz"], "p4_beam": spread.p4_total_lab(), "mass": M_MU}
    args = (s["meas1"][i], s["cov1"][i], s["meas2"][i], s["cov2"][i])
    with_cov = fit_1c_missing_photon(*args, cov_beam=spread.p4_covariance_lab(), **kw)
    np.testing.assert_array_equal(cols["chi2"], with_cov.chi2)
    assert np.all(with_cov.chi2 < fit_1c_missing_photon(*args, **kw).chi2)
    # belle2_lowmass: on events with per-event beams (5 MeV sqrt(s) spread) the beam term
    # lowers the energy-constrained chi2 (S grows by a positive semi-definite term)
    beam = Beam(e_minus_GeV=7.004, e_plus_GeV=4.002, crossing_half_angle_rad=0.0415,
                sqrt_s_spread_GeV=0.005)
    reco = _belle2_aprime_chunk(beam, 2000, 1.5, beam_spread=True)
    a = reconstruct_chunk(reco, selection="belle2_lowmass", bz=1.5, beam=beam)
    b = reconstruct_chunk(reco, selection="belle2_lowmass", bz=1.5,
                          beam=dataclasses.replace(beam, sqrt_s_spread_GeV=0.0))
    common, ia, ib = np.intersect1d(a["event_id"], b["event_id"], return_indices=True)
    assert common.size > 1000
    assert np.all(a["chi2"][ia] <= b["chi2"][ib] + 1e-6)
    assert a["chi2"][ia].mean() < b["chi2"][ib].mean()


def test_unknown_selection_one_line(isr_mumu_sample, bes_beam):
    s = isr_mumu_sample
    reco = _chunk(s["meas1"][:5], s["cov1"][:5], s["meas2"][:5], s["cov2"][:5], prob_mu=0.9,
                  e_over_p=0.2)
    with pytest.raises(ConfigError, match="selection = 'x'"):
        reconstruct_chunk(reco, selection="x", bz=1.0, beam=bes_beam)
    del reco.track_extra["prob_mu"]
    with pytest.raises(ConfigError, match="prob_mu"):
        reconstruct_chunk(reco, selection="besiii2017", bz=1.0, beam=bes_beam)


# --------------------------------------------------------------------------------------
# Cut values at their boundaries, on exact (unsmeared) events: the kinematic fits return the
# generated kinematics (chi2 ~ 0), so each cut alone decides.
# --------------------------------------------------------------------------------------
#: BESIII-like helix resolutions without correlations: d0 and z0 then stay out of the 1C fit.
EXACT_SIGMAS = {"sigma_d0": 0.01, "sigma_phi0": 1e-3, "sigma_rel_pt": 0.005, "sigma_z0": 0.1,
                "sigma_tanl": 2e-3}


def _unit(theta, phi):
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def _exact_isr(beam, p1, n_gamma, mass):
    """Exact e+e- -> l- l+ gamma: lepton 1 with momentum ``p1``, a massless photon along the
    unit vector ``n_gamma``; the photon energy solves (P - p1 - k)^2 = m^2 and the lepton 2
    takes the rest. Returns (p2 [3], k [4] = (px, py, pz, E))."""
    q = beam.p4_total_lab() - np.append(p1, np.sqrt(p1 @ p1 + mass**2))
    e = (q[3] ** 2 - q[:3] @ q[:3] - mass**2) / (2.0 * (q[3] - q[:3] @ n_gamma))
    return q[:3] - e * n_gamma, np.append(e * n_gamma, e)


def _pt_theta(p):
    return np.hypot(p[0], p[1]), np.arctan2(np.hypot(p[0], p[1]), p[2])


def _exact_besiii_chunk(beam, p1s, n_gammas, channel, bz=1.0):
    """RecoChunk of exact ISR events (tracks from the origin, PID of ``channel``) and the
    lepton-2 momenta."""
    mass = M_MU if channel == "mumu" else M_E
    p1s = np.asarray(p1s, dtype=np.float64)
    p2s = np.array([_exact_isr(beam, p1, n, mass)[0] for p1, n in zip(p1s, n_gammas)])
    h1 = toys.helices_from_states(np.zeros((len(p1s), 3)), p1s, -1.0, bz)
    h2 = toys.helices_from_states(np.zeros((len(p1s), 3)), p2s, 1.0, bz)
    c1 = toys.diagonal_covariance(h1, **EXACT_SIGMAS)
    c2 = toys.diagonal_covariance(h2, **EXACT_SIGMAS)
    pid = {"prob_mu": 0.9, "e_over_p": 0.2} if channel == "mumu" else {"prob_mu": 0.1,
                                                                        "e_over_p": 0.95}
    return _chunk(h1, c1, h2, c2, **pid), p2s


def _selected(reco, beam, channel, bz=1.0):
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=bz, beam=beam)
    assert set(cols["channel"]) <= {channel}
    assert np.all(cols["chi2"] < 1e-6)  # exact events: the cuts, not the fit, decide
    return sorted(cols["event_id"].tolist())


@pytest.mark.parametrize(("channel", "cut"), [("mumu", 0.1), ("ee", 0.05)])
def test_besiii2017_photon_angle_to_the_nearer_beam(bes_beam, channel, cut):
    # arXiv:1705.04265: theta_gamma of the 1C-fitted missing photon "smaller than 0.1 radians
    # or greater than pi - 0.1" (mu mu; e e: 0.05), measured from the beam: the nearer lab beam
    # (module docstring). The BEPCII beams lie a = 11 mrad off the z axis towards +x, so a photon
    # at angle psi to the e- beam has polar angle psi + a (phi = 0) or psi - a (phi = pi): the
    # cases below keep and drop events against the beams, each the other way round against the
    # z axis, and pin the cut to +-1 mrad.
    a = bes_beam.crossing_half_angle_rad
    assert a == pytest.approx(0.011)
    p1 = _unit(1.2, 2.0) / np.sin(1.2)  # pT = 1 GeV: far from every track cut
    cases = [  # (angle to the nearer beam, photon direction, kept)
        (cut - 0.003, _unit(a + cut - 0.003, 0.0), True),  # to z: cut + 8 mrad
        (cut - 0.001, _unit(a + cut - 0.001, 0.0), True),
        (cut - 0.001, _unit(np.pi - a - (cut - 0.001), 0.0), True),  # along the e+ beam
        (cut + 0.001, _unit(a + cut + 0.001, 0.0), False),
        (cut + 0.003, _unit(cut + 0.003 - a, np.pi), False),  # to z: cut - 8 mrad
    ]
    beams = [bes_beam.p4_e_minus()[:3], bes_beam.p4_e_plus()[:3]]
    for psi, n, _ in cases:  # the geometry as stated
        to_beam = min(np.arccos(n @ b / np.linalg.norm(b)) for b in beams)
        assert to_beam == pytest.approx(psi, abs=1e-12)
    reco, p2s = _exact_besiii_chunk(bes_beam, [p1] * len(cases), [c[1] for c in cases], channel)
    for p2 in p2s:  # lepton 2 far from the track cuts
        pt, th = _pt_theta(p2)
        assert pt > 0.5 and 0.6 < th < np.pi - 0.6
    assert _selected(reco, bes_beam, channel) == [i for i, c in enumerate(cases) if c[2]]
    # the candidate column theta_gamma_miss is the cut quantity, the angle to the nearer beam
    # (before: the polar angle to +z, pi - 11 mrad - psi for the photon along the e+ beam)
    cols = reconstruct_chunk(reco, selection="besiii2017", bz=1.0, beam=bes_beam)
    kept_psi = [c[0] for c in cases if c[2]]
    np.testing.assert_allclose(cols["theta_gamma_miss"], kept_psi, atol=1e-6)


def test_besiii2017_track_cuts_at_the_paper_values(bes_beam):
    # arXiv:1705.04265 (the BESIII 2017 paper, module docstring): points of closest approach
    # "within a cylinder of 1 cm radius in the transverse direction and +-10 cm of length along
    # the beam axis", "0.4 < theta < pi - 0.4 radians", "pt above 300 MeV/c for both tracks".
    # Each cut is probed just inside (kept) and just outside (dropped) on one track of an exact
    # mu mu gamma event that passes everything else.
    a = bes_beam.crossing_half_angle_rad
    fwd, bwd = _unit(a + 0.05, 0.0), _unit(np.pi - a - 0.05, 0.0)  # photon 0.05 from a beam
    base = _unit(1.2, 2.0) / np.sin(1.2)
    reco, _ = _exact_besiii_chunk(bes_beam, [base] * 8, [fwd] * 8, "mumu")
    for i, (d0, z0) in enumerate([(0.99, 0.0), (-0.99, 0.0), (0.0, 9.9), (0.0, -9.9),
                                  (1.01, 0.0), (-1.01, 0.0), (0.0, 10.1), (0.0, -10.1)]):
        reco.helix[i, 0, 0] = d0  # track 1: d0 [cm]
        reco.helix[i, 1, 3] = z0  # track 2: z0 [cm]
    assert _selected(reco, bes_beam, "mumu") == [0, 1, 2, 3]
    # polar angle of track 1 (|p| = 1.2 GeV; the photon on the other side keeps lepton 2 central)
    thetas = [0.41, np.pi - 0.41, 0.39, np.pi - 0.39]
    p1s = [1.2 * _unit(t, 2.0) for t in thetas]
    ns = [bwd if t < 1 else fwd for t in thetas]
    reco, p2s = _exact_besiii_chunk(bes_beam, p1s, ns, "mumu")
    for p2 in p2s:
        pt, th = _pt_theta(p2)
        assert pt > 0.4 and 0.55 < th < np.pi - 0.55
    assert _selected(reco, bes_beam, "mumu") == [0, 1]


def test_besiii2017_pt_cut_at_the_paper_value():
    # pT > 300 MeV/c for both tracks (arXiv:1705.04265). At 3.773 GeV an ISR event with a
    # 0.3 GeV track inside 0.4 < theta < pi - 0.4 does not exist (the other lepton would need
    # more energy than the polar-angle cut allows); BESIII's 2 GeV running has them. Track 1:
    # pT = 0.301 (kept) and 0.299 GeV (dropped), lepton 2 at pT ~ 0.33 GeV, theta ~ 0.52.
    beam = Beam.symmetric(2.0, crossing_half_angle_rad=0.011)
    n = _unit(np.pi - 0.011 - 0.05, 0.0)
    p1s = [np.array([pt, 0.0, 0.3]) for pt in (0.301, 0.299, 0.302, 0.298)]
    reco, p2s = _exact_besiii_chunk(beam, p1s, [n] * 4, "mumu")
    for p1, p2 in zip(p1s, p2s):
        pt, th = _pt_theta(p2)
        assert pt > 0.32 and 0.45 < th < np.pi - 0.45
        assert 0.6 < _pt_theta(p1)[1] < 1.0
    assert _selected(reco, beam, "mumu") == [0, 2]


def _belle2_exact_chunk(beam, photons_cms_energy_and_lab_direction, bz=1.5):
    """Exact e+e- -> gamma (e+e-) events at the origin: the photon with the given CM energy
    along the given lab direction, the pair (mass from the recoil) decaying perpendicular to its
    flight direction in its rest frame; Belle II-like resolutions."""
    to_cms = beam.lab_to_cms()
    p_lab = beam.p4_total_lab()
    em, ep, phot = [], [], []
    for e_cms, n in photons_cms_energy_and_lab_direction:
        unit = np.append(n, 1.0)
        e_lab = e_cms / (to_cms @ unit)[3]  # E_cms is linear in E_lab along a fixed direction
        k = e_lab * unit
        pair = p_lab - k
        m = np.sqrt(pair[3] ** 2 - pair[:3] @ pair[:3])
        u = np.cross(pair[:3], [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        pstar = np.sqrt(m * m / 4 - M_E**2)
        for sign, out in ((-1.0, em), (1.0, ep)):
            rest = np.append(sign * pstar * u, m / 2)
            out.append(toys._boost_to(rest[None, :], pair[None, :])[0])
        th = np.arccos(n[2])
        phot.append([e_lab, th, np.arctan2(n[1], n[0])])
    em, ep = np.array(em), np.array(ep)
    h1 = toys.helices_from_states(np.zeros((len(em), 3)), em[:, :3], -1.0, bz)
    h2 = toys.helices_from_states(np.zeros((len(em), 3)), ep[:, :3], 1.0, bz)
    kw = {"sigma_d0": 20e-4, "sigma_phi0": 5e-4, "sigma_rel_pt": 0.004, "sigma_z0": 25e-4,
          "sigma_tanl": 5e-4}
    c1, c2 = toys.diagonal_covariance(h1, **kw), toys.diagonal_covariance(h2, **kw)
    return _chunk(h1, c1, h2, c2, prob_mu=0.0, e_over_p=0.95,
                  photons=np.array(phot)[:, None, :]), np.array(phot)[:, 0]


def test_belle2_photon_energy_cut_is_in_the_cm_frame():
    # Belle2LowMassCuts.photon_e_cms_min = 4 GeV on the photon's CM energy. With the 7 on 4 GeV
    # boost a backward photon has a lab energy below its CM energy and a forward one above:
    # the cases keep/drop at 4.05/3.95 GeV in the CM, each the other way round in the lab.
    beam = Beam(e_minus_GeV=7.0, e_plus_GeV=4.0, crossing_half_angle_rad=0.0415)
    bwd, fwd = _unit(2.4, 0.5), _unit(0.7, -1.0)
    cases = [(4.05, bwd, True), (3.95, bwd, False), (4.05, fwd, True), (3.95, fwd, False)]
    reco, e_lab = _belle2_exact_chunk(beam, [(e, n) for e, n, _ in cases])
    assert e_lab[0] < 3.5 and e_lab[1] < 3.5  # backward: lab energy well below 4 GeV
    assert e_lab[2] > 4.5 and e_lab[3] > 4.5  # forward: well above
    cols = reconstruct_chunk(reco, selection="belle2_lowmass", bz=1.5, beam=beam)
    assert np.all(cols["chi2"] < 1e-6) and np.all(cols["chi2_vtx"] < 1e-6)
    assert sorted(cols["event_id"].tolist()) == [i for i, c in enumerate(cases) if c[2]]
    np.testing.assert_allclose(cols["e_gamma"], e_lab[[0, 2]])
