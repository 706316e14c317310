"""Kernels of src/isrsim/detector/material.py: the Highland multiple-scattering angle, the
Bethe-Heitler energy fraction kept by an electron and the helix-cylinder crossing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isrsim.detector.material import bremsstrahlung_survival_fraction, crossing_arclength, highland_theta0
from isrsim.helix import state_at_arclength


@pytest.mark.parametrize(("p", "mass", "x_over_x0", "theta0"), [
    # PDG RPP 2022, "Passage of particles through matter", eq. (34.16) (Highland, Lynch-Dahl):
    # theta0 = 13.6 MeV/(beta c p) z sqrt(x/X0) [1 + 0.038 ln(x z^2/(X0 beta^2))], z = 1,
    # evaluated by hand (values to 4 digits):
    (1.0, 0.10566, 0.01, 1.1288e-3),    # 1 GeV muon, 1 % X0: beta = 0.99446
    (0.1, 0.13957, 0.003, 1.0492e-2),   # 100 MeV pion, 0.3 % X0: beta = 0.58242 (beta^2 in the log)
    (0.5, 0.000511, 0.1, 7.8488e-3),    # 500 MeV electron, 10 % X0: beta = 1
])
def test_highland_angle_against_pdg_formula(p, mass, x_over_x0, theta0):
    """The published formula, evaluated by hand above; 4 significant digits -> rel 1e-4. The
    slow pion checks the 1/beta prefactor and the beta^2 inside the logarithm (5 % effect)."""
    beta = p / math.hypot(p, mass)
    got = highland_theta0(p, beta, x_over_x0)
    assert got == pytest.approx(theta0, rel=1e-4)
    # theta0 scales as 1/p at fixed beta (the p beta = p^2/E of the formula)
    assert highland_theta0(2 * p, beta, x_over_x0) == pytest.approx(got / 2, rel=1e-12)
    assert highland_theta0(p, beta, 0.0) == 0.0


@pytest.mark.parametrize("t", [0.005, 0.3])
def test_survival_fraction_mean_is_exp_minus_t(t):
    """Definition of the radiation length: the mean energy fraction kept after t X0 is e^-t.
    For -ln z ~ Gamma(t/ln 2) (Bethe-Heitler), E[z] = 2^(-t/ln 2) = e^-t exactly, and
    P(z = 1) = 0, P(z < 1/2) = P(u > ln 2) from the Gamma law. n = 1e5, fixed seed: the mean
    within 5 standard errors (sd of z measured from the sample). A wrong shape a = t ln 2
    instead of t/ln 2 moves the mean by 2.7e-3 at t = 0.005, 28 sd."""
    from scipy import stats

    rng = np.random.default_rng(31)
    n = 100_000
    z = np.array([bremsstrahlung_survival_fraction(rng, t) for _ in range(n)])
    assert np.all((z > 0.0) & (z <= 1.0))
    assert abs(z.mean() - math.exp(-t)) < 5.0 * z.std() / math.sqrt(n)
    p_half = stats.gamma.sf(math.log(2.0), t / math.log(2.0))
    assert abs(np.mean(z < 0.5) - p_half) < 5.0 * math.sqrt(p_half * (1 - p_half) / n)
    assert bremsstrahlung_survival_fraction(rng, 0.0) == 1.0


@pytest.mark.parametrize(("d0", "omega", "r"), [
    (0.0, 0.01, 5.0), (0.0, -0.02, 30.0), (0.3, 0.004, 12.0), (-1.5, -0.01, 60.0), (0.05, 0.0, 2.0),
])
def test_crossing_arclength_reaches_the_radius(d0, omega, r):
    """The helix point at the returned arc length lies on the cylinder (exact helix of
    isrsim.helix.state_at_arclength: rounding only, 1e-9 cm), and it is the first crossing:
    the radius grows from |d0| to r on the way (checked on 200 points)."""
    s = crossing_arclength(d0, omega, r)
    assert s > 0.0
    x, y, *_ = state_at_arclength(d0, 0.7, omega, 0.0, 0.5, 1.5, s)
    assert math.hypot(x, y) == pytest.approx(r, abs=1e-9)
    radii = [math.hypot(*state_at_arclength(d0, 0.7, omega, 0.0, 0.5, 1.5, f * s)[:2])
             for f in np.linspace(0.0, 1.0, 200)]
    assert np.all(np.diff(radii) > 0.0)


def test_crossing_arclength_unreachable_radius():
    """A circle of diameter 2/|omega| = 100 cm through the origin never reaches r = 150 cm;
    a radius inside |d0| is never crossed outwards."""
    assert crossing_arclength(0.0, 0.02, 150.0) == -1.0
    assert crossing_arclength(2.0, 0.001, 1.0) == -1.0
