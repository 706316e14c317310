"""Tests of the exact helix geometry (isrsim.helix), contract in contracts.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isrsim.constants import K_CURV, M_E
from isrsim.helix import (
    _atan2_fast,
    arclength_to_point_xy,
    cov_pack_index,
    momentum_at_perigee,
    pack_cov,
    perigee_from_state,
    perigee_jacobian,
    state_at_arclength,
    unpack_cov,
    unpack_cov_array,
)


def _random_states(rng, n):
    """Displaced states: vertices up to 20 cm, pT 0.05-5 GeV, any direction, both charges."""
    out = []
    for _ in range(n):
        r = rng.uniform(0, 20.0)
        a = rng.uniform(-math.pi, math.pi)
        x, y, z = r * math.cos(a), r * math.sin(a), rng.uniform(-30, 30)
        pt = math.exp(rng.uniform(math.log(0.05), math.log(5.0)))
        phi = rng.uniform(-math.pi, math.pi)
        px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * rng.uniform(-2, 2)
        q = 1.0 if rng.random() < 0.5 else -1.0
        bz = rng.choice([1.0, 1.5])
        out.append((x, y, z, px, py, pz, q, bz))
    return out


def test_round_trip_displaced_vertex():
    """state -> perigee -> state at the production point reproduces position and momentum to 1e-6."""
    rng = np.random.default_rng(1)
    for x, y, z, px, py, pz, q, bz in _random_states(rng, 2000):
        # only points that the helix reaches on the perigee's own turn are mapped back
        d0, phi0, omega, z0, tanl = perigee_from_state(x, y, z, px, py, pz, q, bz)
        assert math.copysign(1.0, omega) == q
        assert abs(omega) == pytest.approx(K_CURV * bz / math.hypot(px, py), rel=1e-12)
        s = arclength_to_point_xy(d0, phi0, omega, x, y)
        state = state_at_arclength(d0, phi0, omega, z0, tanl, bz, s)
        np.testing.assert_allclose(state, (x, y, z, px, py, pz), rtol=0, atol=1e-6)


def test_perigee_is_closest_approach():
    """The perigee point minimises the transverse distance to the z axis along the helix, and
    phi0 is the momentum direction there (momentum perpendicular to the position vector)."""
    rng = np.random.default_rng(2)
    for x, y, z, px, py, pz, q, bz in _random_states(rng, 300):
        d0, phi0, omega, z0, tanl = perigee_from_state(x, y, z, px, py, pz, q, bz)
        xp, yp, zp, pxp, pyp, _ = state_at_arclength(d0, phi0, omega, z0, tanl, bz, 0.0)
        assert math.hypot(xp, yp) == pytest.approx(abs(d0), abs=1e-12)
        assert xp * pxp + yp * pyp == pytest.approx(0.0, abs=1e-9)
        for ds in (-1e-3, 1e-3, -0.5, 0.5):
            xs, ys, *_ = state_at_arclength(d0, phi0, omega, z0, tanl, bz, ds)
            assert math.hypot(xs, ys) >= abs(d0) - 1e-12


def test_prompt_track_and_sign_conventions():
    """A positive track from the origin has d0 = z0 = 0 and curves clockwise (phi decreases)."""
    d0, phi0, omega, z0, tanl = perigee_from_state(0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 1.0, 1.5)
    assert (d0, phi0, z0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-15)
    assert omega == pytest.approx(K_CURV * 1.5)
    assert tanl == pytest.approx(0.5)
    _, _, _, px, py, pz = state_at_arclength(d0, phi0, omega, z0, tanl, 1.5, 10.0)
    assert py < 0.0
    assert momentum_at_perigee(phi0, omega, tanl, 1.5) == pytest.approx((1.0, 0.0, 0.5))
    # a positive track displaced to +y moving along +x bends towards the origin: centre at
    # (d0 + 1/omega)(sin phi0, -cos phi0) = (0, y - R), perigee d0 = y for y < R
    d0, phi0, omega, *_ = perigee_from_state(0.0, 0.3, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0)
    assert phi0 == pytest.approx(0.0, abs=1e-15)
    assert d0 == pytest.approx(-0.3)


def test_straight_line_limit():
    """For a very stiff track the helix reduces to a straight line."""
    x, y, z, px, py, pz = 0.5, -0.2, 1.0, 1e5, 3e4, 2e4
    d0, phi0, omega, z0, tanl = perigee_from_state(x, y, z, px, py, pz, 1.0, 1.0)
    phi = math.atan2(py, px)
    assert d0 == pytest.approx(x * math.sin(phi) - y * math.cos(phi), rel=1e-6)
    assert phi0 == pytest.approx(phi, abs=1e-7)  # omega*s ~ 1.5e-8
    s_line = x * math.cos(phi) + y * math.sin(phi)
    assert z0 == pytest.approx(z - tanl * s_line, rel=1e-6)
    assert arclength_to_point_xy(d0, phi0, 0.0, x, y) == pytest.approx(s_line, rel=1e-6)


def test_d0_of_conversion_matches_physics_md_5_4():
    """physics.md 5.4: d0 = sqrt(rho^2 + R^2) - rho, 0.30 mm for R = 3.15 cm, pT = 0.5 GeV, 1 T."""
    r, pt, bz = 3.15, 0.5, 1.0
    rho = pt / (K_CURV * bz)
    d0, *_ = perigee_from_state(r, 0.0, 0.0, pt, 0.0, 0.0, 1.0, bz)
    # the track leaves the point radially outwards; it is tangent there, |d0| = sqrt(rho^2+R^2)-rho
    assert abs(d0) == pytest.approx(math.sqrt(rho**2 + r**2) - rho, rel=1e-9)
    assert abs(d0) == pytest.approx(0.030, abs=0.001)


@pytest.mark.parametrize("energy", [1.0, 5.0])
@pytest.mark.parametrize("theta_deg", [30.0, 60.0, 90.0])
@pytest.mark.parametrize("x_share", [0.2, 0.5])
def test_conversion_pair_mass_at_perigee(energy, theta_deg, x_share):
    """A photon converting at R = 1 cm in 1.5 T into a collinear e+e- pair: the pair mass from the
    momenta at the perigee follows physics.md eq. (5.3), M = 0.2998 B R / sqrt(x(1-x))
    (GeV, T, m) within 1 % (9.1 MeV at x = 1/2 and 11.3 MeV at x = 0.2 in the 5.4 table; the issue
    asks for 2 %, physics.md 5.4 states < 1 % for the small-angle formula; measured +0.57 to
    +0.64 %)."""
    bz, r = 1.5, 1.0
    th, ph = math.radians(theta_deg), 0.7
    ux, uy, uz = math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)
    # conversion point on the photon line (from the origin) at transverse radius R
    t = r / math.sin(th)
    vx, vy, vz = t * ux, t * uy, t * uz
    p4 = []
    for q, frac in ((1.0, x_share), (-1.0, 1.0 - x_share)):
        p = math.sqrt((frac * energy) ** 2 - M_E**2)
        d0, phi0, omega, z0, tanl = perigee_from_state(vx, vy, vz, p * ux, p * uy, p * uz, q, bz)
        px, py, pz = momentum_at_perigee(phi0, omega, tanl, bz)
        p4.append((px, py, pz, math.sqrt(px * px + py * py + pz * pz + M_E**2)))
    tot = np.sum(p4, axis=0)
    mass = math.sqrt(tot[3] ** 2 - tot[0] ** 2 - tot[1] ** 2 - tot[2] ** 2)
    expected = 0.2998 * bz * (r / 100.0) / math.sqrt(x_share * (1 - x_share))
    assert mass == pytest.approx(expected, rel=0.01)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    jac = np.zeros((5, 6))
    for x, y, z, px, py, pz, q, bz in _random_states(rng, 100):
        state = np.array([x, y, z, px, py, pz])
        ref = perigee_jacobian(*state, q, bz, jac)
        assert ref == pytest.approx(perigee_from_state(*state, q, bz), rel=1e-12, abs=1e-14)
        num = np.zeros((5, 6))
        for j in range(6):
            h = 1e-6 * max(1.0, abs(state[j]))
            up, dn = state.copy(), state.copy()
            up[j] += h
            dn[j] -= h
            a = np.array(perigee_from_state(*up, q, bz))
            b = np.array(perigee_from_state(*dn, q, bz))
            d = a - b
            d[1] = math.atan2(math.sin(d[1]), math.cos(d[1]))
            num[:, j] = d / (2 * h)
        np.testing.assert_allclose(jac, num, rtol=1e-5, atol=1e-6)


def test_cov_packing():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 5))
    m = a @ a.T
    packed = np.zeros(15)
    pack_cov(m, packed)
    back = np.zeros((5, 5))
    unpack_cov(packed, back)
    np.testing.assert_array_equal(back, m)
    np.testing.assert_array_equal(unpack_cov_array(packed[None])[0], m)
    for i in range(5):
        for j in range(5):
            assert packed[cov_pack_index(i, j)] == m[i, j]


def test_atan2_fast_matches_libm():
    """The table atan2 of the hot loops agrees with libm to 2 ulp of the result over all
    quadrants and 40 decades of |y/x|, and takes libm's values for zeros, infinities and NaN
    (signed zeros included). Checked to fail: without the r^9 term (errors ~10 ulp near k = 0) and
    with a wrong octant reflection."""
    rng = np.random.default_rng(77)
    n = 400_000
    mag = 10.0 ** rng.uniform(-20.0, 20.0, (2, n))
    y, x = mag * rng.choice([-1.0, 1.0], (2, n))
    y[: n // 4] = rng.normal(size=n // 4)  # plus ordinary O(1) arguments
    x[: n // 4] = rng.normal(size=n // 4)
    got = np.array([_atan2_fast(a, b) for a, b in zip(y.tolist(), x.tolist())])
    ref = np.arctan2(y, x)
    assert np.all(np.abs(got - ref) <= 2.0 * np.spacing(np.abs(ref)) + 1e-300)
    inf, nan = math.inf, math.nan
    special = [0.0, -0.0, 1.0, -1.0, 1e-310, -1e-310, inf, -inf, nan]
    for a in special:
        for b in special:
            g, r = _atan2_fast(a, b), math.atan2(a, b)
            if math.isnan(r):
                assert math.isnan(g), (a, b)
            else:
                assert g == r and math.copysign(1.0, g) == math.copysign(1.0, r), (a, b, g, r)
