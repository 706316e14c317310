"""Radiated photons of electrons as calorimeter clusters (``calorimeter.brems_clusters``).

One material layer in front of the tracker, electrons at 90 degrees from the origin: at most
one loss each, ``-ln z = u ~ Gamma(a)``, ``a = t/ln 2`` (Bethe-Heitler; as
``test_brems_layer.py``). Independent values: the Gamma survival function at the energy of the
cluster threshold (scipy), energy conservation between the electron's deposit and the photon's
cluster, and the azimuth of the electron's direction at the layer from circle geometry.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import special

from isrsim.constants import K_CURV
from isrsim.detector import load_detector, simulate
from isrsim.detector.material import MaterialLayers
from isrsim.detector.toys import single_particles

_R = 2.0  # layer radius [cm]
_X = 0.05  # x/X0 at normal incidence
_P = 2.0  # electron momentum [GeV]
_N = 40_000


def _toy_detector(brems: bool):
    det = load_detector("belle2")
    mat = MaterialLayers(
        r_cm=np.array([_R]), dr_cm=np.array([0.0]), z_min_cm=np.array([-50.0]),
        z_max_cm=np.array([50.0]), x_over_x0=np.array([_X]), z_eff=np.array([14.0]),
        phi_fraction=np.array([1.0]), names=("layer",),
    )
    regions = det.calorimeter.regions.copy()
    regions[:, 3:7] = [0.0, 0.0, 1e-6, 0.0]  # energy resolution 1e-6
    regions[:, 7:9] = [0.0, 1e-7]  # angles to 1e-7 rad
    cal = dataclasses.replace(det.calorimeter, regions=regions, brems_clusters=brems)
    return dataclasses.replace(det, material=mat, calorimeter=cal)


@pytest.fixture(scope="module")
def electrons():
    truth = single_particles(np.random.default_rng(5), _N, 11, _P,
                             theta_range=(0.5 * math.pi, 0.5 * math.pi))
    on = simulate(truth, _toy_detector(True), np.random.default_rng(6))
    off = simulate(truth, _toy_detector(False), np.random.default_rng(6))
    return truth, on, off


def _barrel_threshold(det):
    cal = det.calorimeter
    r = [i for i, (t1, t2) in enumerate(cal.regions[:, :2]) if t1 <= 0.5 * math.pi <= t2]
    return float(cal.regions[r[0], 2])


def test_rate_of_photon_clusters_follows_bethe_heitler(electrons):
    _, on, off = electrons
    det = _toy_detector(True)
    om = K_CURV * det.bz_T / _P
    cos_inc = math.sqrt(1.0 - 0.25 * _R * _R * om * om)  # exact crossing of a circle through 0
    a = _X / cos_inc / math.log(2.0)
    thr = _barrel_threshold(det)
    p_expected = special.gammaincc(a, -math.log(1.0 - thr / _P))  # P(k = E (1 - e^-u) > thr)
    # clusters per electron with and without the photons: the difference is the photons' (an
    # electron that is not tracked leaves a cluster of its own in both)
    n_on, n_off = np.asarray(on.nphot, float), np.asarray(off.nphot, float)
    assert n_off.mean() < 0.02  # tracked electrons leave no cluster of their own
    assert n_on.max() <= 2  # one layer: at most one photon (+ an untracked electron's cluster)
    rate = n_on.mean() - n_off.mean()
    err = math.sqrt((n_on.var() + n_off.var()) / _N)
    assert abs(rate - p_expected) < 4 * err, (rate, p_expected, err)
    assert p_expected > 0.05  # the test has power: thousands of clusters


def test_photon_cluster_energy_and_direction(electrons):
    truth, on, _ = electrons
    det = _toy_detector(True)
    # one cluster (the photon), the electron tracked and in the calorimeter (E/p > 0; an
    # electron that radiated nearly everything curls up inside it)
    rows = np.flatnonzero((np.asarray(on.nphot) == 1) & (np.asarray(on.ntrk) == 1)
                          & (on.track_extra["e_over_p"][:, 0] > 0))
    assert rows.size > 1000
    assert np.all(on.phot_truth[rows, 0] == 0)  # points at the electron that radiated
    # energy: the electron deposits what it kept, the photon the rest (resolution 1e-6)
    e_el = on.track_extra["e_over_p"][rows, 0].astype(float) * on.track_extra["p_lab"][rows, 0]
    e_tot = e_el + on.phot[rows, 0, 0]
    np.testing.assert_allclose(e_tot, np.hypot(_P, 0.000511), rtol=2e-5)  # float32 E/p, p_lab
    # direction: the electron's at the layer, turned by 2 asin(R |omega| / 2) towards +phi
    # (negative charge in +Bz)
    om = K_CURV * det.bz_T / _P
    phi0 = np.arctan2(truth.p4[rows, 0, 1], truth.p4[rows, 0, 0])
    want = phi0 + 2.0 * math.asin(0.5 * _R * om)
    d = np.angle(np.exp(1j * (on.phot[rows, 0, 2] - want)))
    assert np.abs(d).max() < 1e-5
    np.testing.assert_allclose(on.phot[rows, 0, 1], 0.5 * math.pi, atol=1e-5)
