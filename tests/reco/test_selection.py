"""Tests of the selections on toy RecoChunks (BESIII 2017 and Belle II low mass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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
    assert np.all(cols["ndf"] == 4)


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
