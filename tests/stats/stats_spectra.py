"""Helpers for the statistics tests: smooth BESIII-like spectra (imported by name)."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

# physics.md section 3, sqrt(s) = 3.773 GeV, mu mu gamma with W_KF: dsigma/dM in nb/GeV
_M_TAB = np.array([1.5, 2.0, 2.5, 3.0, 3.4])
_DSDM_TAB = np.array([0.4106, 0.3744, 0.4165, 0.6007, 1.163])


def besiii_like_expected(edges: np.ndarray, events_per_bin_at_2gev: float = 1.0e4) -> np.ndarray:
    """Smooth expected counts per bin: log-spline through physics.md section 3's dsigma/dM
    (not a polynomial), scaled to ``events_per_bin_at_2gev`` in the 10 MeV bin at 2 GeV
    (physics.md section 3 quotes 1.1e4 for BESIII 2.93/fb before efficiency)."""
    spline = CubicSpline(_M_TAB, np.log(_DSDM_TAB))
    fine = np.linspace(edges[0], edges[-1], 20 * (edges.size - 1) + 1)
    dens = np.exp(spline(fine))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    per_bin = np.diff(np.interp(edges, fine, cum))
    ref = np.exp(spline(2.0)) * 0.010
    return per_bin * events_per_bin_at_2gev / ref


def sigma_m(mass: float) -> float:
    """Resolution rising linearly from 5 MeV at 1.5 GeV to 12 MeV at 3.4 GeV (physics.md 7.1)."""
    return 0.005 + 0.007 * (mass - 1.5) / 1.9


