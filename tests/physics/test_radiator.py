"""Radiator functions against physics.md section 1 (tables computed by independent scripts)
and against scipy quadrature of eq. (1.6)."""

from __future__ import annotations

import math

import pytest
from scipy.integrate import quad

from isrsim.physics.radiator import angular_fraction, beta_isr, dw_dc, h_primitive, w_kf, w_lo

S3 = 3.773**2
S10 = 10.58**2


@pytest.mark.parametrize(
    ("sqrt_s", "x", "wlo", "wkf"),
    [  # physics.md 1.3, table "Radiator values from isr_xsec.py" [C]
        (3.773, 0.01, 7.733, 5.739),
        (3.773, 0.10, 0.7069, 0.6306),
        (3.773, 0.30, 0.19398, 0.18950),
        (3.773, 0.50, 0.09764, 0.09945),
        (3.773, 0.80, 0.05077, 0.05363),
        (3.773, 0.95, 0.04121, 0.04472),
        (10.58, 0.10, 0.7936, 0.6971),
        (10.58, 0.50, 0.10962, 0.11164),
        (10.58, 0.95, 0.04627, 0.05057),
    ],
)
def test_radiator_table(sqrt_s, x, wlo, wkf):
    s = sqrt_s**2
    # the table is printed to 4-5 significant digits: allow half a unit of the last digit
    assert w_lo(s, x) == pytest.approx(wlo, rel=1e-3)
    assert w_kf(s, x) == pytest.approx(wkf, rel=1e-3)


def test_beta_isr():
    # physics.md section 0: beta = 0.078112 (3.773 GeV), 0.087692 (10.58 GeV)
    assert beta_isr(S3) == pytest.approx(0.078112, abs=2e-6)
    assert beta_isr(S10) == pytest.approx(0.087692, abs=2e-6)


@pytest.mark.parametrize("x", [0.05, 0.3, 0.7, 0.99])
@pytest.mark.parametrize("s", [S3, S10])
def test_angular_integral_equals_w_lo(s, x):
    """Integral over cos(theta) of eq. (1.6) equals eq. (1.2) (physics.md 1.2: to 1e-7).
    The collinear spikes have width ~ m_e/E: integrate with breakpoints near the ends."""
    eps = [1e-12, 1e-9, 1e-6, 1e-3]
    pts = sorted([-1 + e for e in eps] + [1 - e for e in eps])
    edges = [-1.0, *pts, 1.0]
    total = sum(quad(lambda c: dw_dc(s, x, c), a, b, epsabs=0, epsrel=1e-11, limit=200)[0]
                for a, b in zip(edges[:-1], edges[1:]))
    assert total == pytest.approx(w_lo(s, x), rel=1e-7)


@pytest.mark.parametrize(("c1", "c2"), [(-0.9, 0.9), (0.2, 0.95), (-1.0, -0.99)])
def test_primitive_matches_quadrature(c1, c2):
    s, x = S3, 0.4
    num = quad(lambda c: dw_dc(s, x, c), c1, c2, epsrel=1e-11, points=[-0.999, 0.999] if c1 < -0.99 else None)[0]
    norm = 1.0 / 137.035999084 / (math.pi * x) * (2 - 2 * x + x * x)
    assert (h_primitive(s, x, c1) - h_primitive(s, x, c2)) * norm == pytest.approx(num, rel=1e-7)


@pytest.mark.parametrize(
    ("sqrt_s", "x", "frac09", "frac20"),
    [  # physics.md 1.4 acceptance table [C]
        (3.773, 0.1, 0.175, 0.206), (3.773, 0.5, 0.164, 0.195), (3.773, 0.9, 0.132, 0.162),
        (10.58, 0.1, 0.156, 0.184), (10.58, 0.5, 0.147, 0.174), (10.58, 0.9, 0.118, 0.144),
    ],
)
def test_acceptance_fractions(sqrt_s, x, frac09, frac20):
    s = sqrt_s**2
    assert angular_fraction(s, x, -0.9, 0.9) == pytest.approx(frac09, abs=6e-4)
    c20 = math.cos(math.radians(20))
    assert angular_fraction(s, x, -c20, c20) == pytest.approx(frac20, abs=6e-4)
    assert angular_fraction(s, x, -1.0, 1.0) == pytest.approx(1.0, abs=1e-12)


def test_kf_over_lo_ratios():
    # physics.md 1.3 pitfalls: W_KF/W_LO = 0.89 (x=0.1), 0.98 (0.3), 1.02 (0.5), 1.06 (0.8) at 3.773 GeV
    for x, r in [(0.1, 0.89), (0.3, 0.98), (0.5, 1.02), (0.8, 1.06)]:
        assert w_kf(S3, x) / w_lo(S3, x) == pytest.approx(r, abs=0.006)
