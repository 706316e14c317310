"""Photon resolutions given to the energy-constrained fit (isrsim.reco.selection.photon_resolution)
against the calorimeter model of detectors/README.md, evaluated by hand for the bundled files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isrsim.detector.model import load_detector
from isrsim.reco.selection import photon_resolution


@pytest.mark.parametrize(("e", "sigma_e", "sigma_theta"), [
    # belle2.toml, every region: sigma_E/E = 0.0081/E^(1/4) (+) 0.0134 (+) 0.0035/E,
    # sigma_theta = 0.0040/sqrt(E) (+) 0.0025 (E in GeV), evaluated by hand
    (0.1, 4.0150e-3, 1.28938e-2),
    (1.0, 1.60443e-2, 4.71699e-3),
    (4.0, 5.83960e-2, 3.20156e-3),
])
def test_belle2_photon_resolution_by_hand(e, sigma_e, sigma_theta):
    """All four terms of sigma_E enter (the E^(1/4) term is the largest below 1 GeV: a wrong
    power changes sigma_E by 11 % at 0.1 GeV and 18 % at 4 GeV); sigma_phi = sigma_theta/sin(theta).
    Hand values to 5-6 digits: rel 1e-4."""
    det = load_detector("belle2")
    for theta in (0.4, math.pi / 2, 2.5):
        out = photon_resolution(det.calorimeter, np.array([e]), np.array([theta]))[0]
        assert out[0] == pytest.approx(sigma_e, rel=1e-4)
        assert out[1] == pytest.approx(sigma_theta, rel=1e-4)
        assert out[2] == pytest.approx(sigma_theta / math.sin(theta), rel=1e-4)


def test_besiii_photon_resolution_uses_the_region_of_the_photon():
    """besiii.toml: barrel (34.3-145.7 deg) 2.3 %/sqrt(E) (+) 1 % and 6.4 mrad/sqrt(E), end caps
    4.9 %/sqrt(E) (+) 1 % and 6.0 mrad/sqrt(E) (the documented 2.5 % and 5 % at 1 GeV). At
    E = 0.25 GeV by hand: barrel sigma_E = 11.769 MeV, end caps 24.627 MeV; sigma_theta 12.8 and
    12.0 mrad. Photons at 25 deg (west end cap), 90 deg (barrel) and 150 deg (east end cap)."""
    det = load_detector("besiii")
    theta = np.radians([25.0, 90.0, 150.0])
    out = photon_resolution(det.calorimeter, np.full(3, 0.25), theta)
    np.testing.assert_allclose(out[:, 0], [24.627e-3, 11.769e-3, 24.627e-3], rtol=1e-4)
    np.testing.assert_allclose(out[:, 1], [12.0e-3, 12.8e-3, 12.0e-3], rtol=1e-9)
    np.testing.assert_allclose(out[:, 2], out[:, 1] / np.sin(theta), rtol=1e-12)


def test_default_photon_resolution():
    """Without a calorimeter model: 2 % and 4 mrad/sqrt(E) (docstring, detectors.md 1)."""
    out = photon_resolution(None, np.array([0.5, 2.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(out[:, 0], [0.01, 0.04], rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], [4e-3 / math.sqrt(0.5), 4e-3 / math.sqrt(2.0)], rtol=1e-12)
    np.testing.assert_allclose(out[:, 2], out[:, 1] / np.sin([1.0, 2.0]), rtol=1e-12)
