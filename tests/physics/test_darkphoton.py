"""Tests of the dark-photon widths, lifetime and production (src/isrsim/physics/darkphoton.py).

References: shared/physics.md 6.1 (cross sections [C]), 6.2 (ISR relation), 6.3 (widths, N_f,
c tau table [C]); BESIII 2017 (arXiv:1705.04265) eqs. (1)-(3).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.integrate import quad

from isrsim.constants import ALPHA, HBARC2_GEV2_NB, M_E, M_MU, M_TAU
from isrsim.exceptions import ConfigError
from isrsim.physics import darkphoton as dp
from isrsim.physics.born import FS_MUMU, dsigma_dm_isr_nb
from isrsim.physics.rratio import r_ratio


def mass_factor(m, m_l):
    r = (m_l / m) ** 2
    return (1 + 2 * r) * math.sqrt(1 - 4 * r) if 4 * r < 1 else 0.0


# ------------------------------------------------------------------ widths
@pytest.mark.parametrize(("m", "table"), [(0.017, 4.1352e-5), (1.0, 2.4324e-3), (0.5, 1.2162e-3)])
def test_gamma_ee_closed_form_and_table_6_3(m, table):
    eps = 1e-3
    closed = ALPHA * eps**2 / (3 * m**2) * (m**2 + 2 * M_E**2) * math.sqrt(m**2 - 4 * M_E**2)
    assert dp.gamma_ee(m, eps) == pytest.approx(closed, rel=1e-13)
    # physics.md 6.3 table (5 significant digits, rounded): 1e-4
    assert dp.gamma_ee(m, eps) / eps**2 == pytest.approx(table, rel=1e-4)


def test_gamma_ll_thresholds_and_mass_factor():
    eps = 2e-3
    assert dp.gamma_mumu(0.2, eps) == 0.0
    assert dp.gamma_tautau(3.5, eps) == 0.0
    m = 3.7
    assert dp.gamma_tautau(m, eps) == pytest.approx(ALPHA * eps**2 * m / 3 * mass_factor(m, M_TAU), rel=1e-13)
    assert dp.gamma_ll(1.0, eps, M_MU) == dp.gamma_mumu(1.0, eps)


def test_gamma_had_is_gamma_mumu_times_r():
    # BESIII 2017 eq. (3) convention (physics.md 6.3)
    m = np.array([0.5, 1.0, 1.7, 2.5, 3.3, 5.0])
    assert np.allclose(dp.gamma_had(m, 1e-3), dp.gamma_mumu(m, 1e-3) * r_ratio(m), rtol=1e-14)
    # the alternative convention (alpha eps^2 m/3) R differs by <= 1.3 % for m >= 0.5 GeV
    alt = ALPHA * 1e-6 * m / 3 * r_ratio(m)
    assert np.all(np.abs(dp.gamma_had(m, 1e-3) / alt - 1) <= 0.013)


@pytest.mark.parametrize(("m", "eps", "ctau_um"), [(0.017, 1e-3, 4.77), (0.017, 1e-4, 477.0),
                                                   (0.017, 1.4e-3, 2.44), (0.017, 6.8e-4, 10.3),
                                                   (0.0167, 1e-3, 4.86), (1.0, 1e-3, 0.0244),
                                                   (1.0, 1e-4, 2.44)])
def test_ctau_table_6_3(m, eps, ctau_um):
    # physics.md 6.3 lifetime table, 3 significant digits: 0.3 % (the 1.4e-3 entry, 2.4347 um,
    # is printed as 2.44); 0.5 % at 1 GeV, where Gamma_tot depends on R(1 GeV) (the same PDG
    # phi-shoulder point 1.32 as in the table, but the phi Breit-Wigner adds its own shape)
    assert dp.ctau_cm(m, eps) * 1e4 == pytest.approx(ctau_um, rel=0.005 if m == 1.0 else 0.003)


def test_ctau_17mev_closed_form():
    # c tau(17 MeV) = 4.772e-12 m / eps^2 (physics.md 6.3) = hbar c / (alpha m/3)
    assert dp.ctau_cm(0.017, 1e-3) == pytest.approx(4.772e-12 / 1e-6 * 100, rel=2e-4)


def test_nf_continuous_across_muon_and_tau_thresholds():
    for thr in (2 * M_MU, 2 * M_TAU):
        below, above = dp.n_f(np.array([thr * (1 - 1e-10), thr * (1 + 1e-10)]))
        assert above == pytest.approx(below, rel=1e-4)
        assert above >= below
    assert dp.n_f(0.2) == pytest.approx(1.0, abs=1e-12)  # only e+e- below 2 m_mu


def test_nf_closed_form_and_table_6_3():
    for m in (0.3, 0.5, 1.0, 1.5, 2.5, 3.4, 4.0, 7.0):
        f_e, f_mu, f_tau = mass_factor(m, M_E), mass_factor(m, M_MU), mass_factor(m, M_TAU)
        expect = 1 + f_mu / f_e * (1 + float(r_ratio(m))) + f_tau / f_e
        assert dp.n_f(m) == pytest.approx(expect, rel=1e-12)
    # physics.md 6.3 table. At 0.5/1.0/1.5 GeV isrsim's R equals the table's PDG points (0.2 %);
    # at 2.0-3.4 GeV the table used the scattered nearest PDG points while isrsim uses pQCD,
    # so N_f = 2 + R differs by at most (2.39 - 2.20)/4.39 = 4.5 %: tolerance 5 %.
    for m, table in ((0.5, 2.455), (1.0, 3.321), (1.5, 4.096)):
        assert dp.n_f(m) == pytest.approx(table, rel=2e-3)
    for m, table in ((2.0, 4.180), (2.5, 4.390), (3.0, 4.210), (3.4, 4.380)):
        assert dp.n_f(m) == pytest.approx(table, rel=0.05)


def test_nf_ll_variant():
    m = 0.3
    # BESIII N_f^{mumu} = Gamma_tot/Gamma_mumu = N_f (Gamma_ee/Gamma_mumu)
    assert dp.n_f_ll(m, "mu") == pytest.approx(dp.n_f(m) * mass_factor(m, M_E) / mass_factor(m, M_MU), rel=1e-12)
    # physics.md 6.3: Gamma_tot/Gamma_mumu and Gamma_tot/Gamma_ee differ by < 0.1 % above 1 GeV
    for m in (1.0, 2.0, 3.4):
        assert dp.n_f_ll(m, "mu") == pytest.approx(dp.n_f(m), rel=1e-3)
    with pytest.raises(ConfigError, match=r"m=0\.2 GeV outside the allowed range \(2 m_mu"):
        dp.n_f_ll(0.2, "mu")


def test_branching_ratios_sum_to_one_and_eps_independent():
    m = np.geomspace(0.0011, 10.49, 400)
    br = dp.branching_ratios(m)
    assert np.allclose(sum(br.values()), 1.0, rtol=0, atol=1e-14)
    assert all(np.all(v >= 0) for v in br.values())
    # widths scale as eps^2 so ratios do not depend on eps
    for eps in (1e-5, 0.3):
        tot = dp.gamma_total(m, eps)
        assert np.allclose(dp.gamma_ee(m, eps) / tot, br["ee"], rtol=1e-13)
    # physics.md 6.3 table BRs at 0.5 and 1.5 GeV (3 digits)
    b05, b15 = dp.branching_ratios(0.5), dp.branching_ratios(1.5)
    assert (b05["ee"], b05["mumu"], b05["hadrons"]) == pytest.approx((0.407, 0.402, 0.191), abs=1.5e-3)
    assert (b15["ee"], b15["mumu"], b15["hadrons"]) == pytest.approx((0.244, 0.244, 0.512), abs=1.5e-3)


def test_vectorised_matches_scalar():
    m = np.array([0.017, 0.5, 2.0, 9.0])
    assert np.allclose(dp.gamma_total(m, 1e-3), [dp.gamma_total(x, 1e-3) for x in m], rtol=1e-15)
    assert isinstance(dp.gamma_total(1.0, 1e-3), float)


# ------------------------------------------------------------------ production
SIGMA_6_1 = [  # physics.md 6.1, eps = 1e-3: (sqrt_s, m, full angle, |cos| < 0.8 or None)
    (3.773, 0.017, 3.08e-4, 2.6e-5),
    (3.773, 1.5, 3.75e-4, 3.7e-5),
    (3.773, 3.0, 1.17e-3, 1.5e-4),
    (10.58, 0.017, 4.39e-5, None),
    (10.58, 1.0, 4.43e-5, None),
    (10.58, 5.0, 5.94e-5, None),
]


@pytest.mark.parametrize(("w", "m", "full", "cut"), SIGMA_6_1)
def test_sigma_gamma_aprime_against_physics_md_6_1(w, m, full, cut):
    eps = 1e-3
    s = w * w
    x0 = 1 - m * m / s
    b = math.sqrt(1 - 4 * M_E**2 / s)
    closed = (4 * math.pi * ALPHA**2 * eps**2 / (s * x0) * (2 - 2 * x0 + x0**2)
              * (math.log((1 + b) / (1 - b)) - 1) * HBARC2_GEV2_NB)
    assert dp.sigma_aprime_gamma_nb(m, eps, w) == pytest.approx(closed, rel=1e-12)
    assert dp.sigma_aprime_gamma_nb(m, eps, w) == pytest.approx(full, rel=0.01)  # 3 digits quoted
    if cut is not None:
        # independent quadrature of the large-angle form (6.1) (mass terms ~ 4 m_e^2/s ~ 1e-7)
        def dsdc(c):
            return (4 * math.pi * ALPHA**2 * eps**2 / (s * x0)
                    * ((2 - 2 * x0 + x0**2) / (1 - c * c) - x0**2 / 2) * HBARC2_GEV2_NB)

        val = quad(dsdc, -0.8, 0.8, epsabs=0, epsrel=1e-12)[0]
        got = dp.sigma_aprime_gamma_nb(m, eps, w, cos_theta_range=(-0.8, 0.8))
        assert got == pytest.approx(val, rel=1e-6)
        assert got == pytest.approx(cut, rel=0.05)  # 2 digits quoted


@pytest.mark.parametrize(("w", "m", "flavour"), [(3.773, 0.017, "e"), (3.773, 1.5, "mu"), (3.773, 3.0, "mu"),
                                                 (10.58, 0.017, "e"), (10.58, 1.0, "mu"), (10.58, 5.0, "mu")])
@pytest.mark.parametrize("ctr", [None, (-0.8, 0.8), (math.cos(math.radians(160)), math.cos(math.radians(20)))])
def test_two_production_routes_agree(w, m, flavour, ctr):
    # physics.md 6.2: sigma(gamma A') BR(ll) = (3 pi eps^2 m/(2 N_f alpha)) dsigma_QED/dM, an
    # identity at LO with N_f = Gamma_tot/Gamma_ee (ratio 1.000000 in physics.md). The only
    # residual is the electron mass factor of Gamma_ee, 1 - 6 m_e^4/m^4 = 1 - 5e-6 at 17 MeV.
    eps = 1e-3
    br = dp.branching_ratios(m)["ee" if flavour == "e" else "mumu"]
    a = dp.sigma_aprime_gamma_nb(m, eps, w, cos_theta_range=ctr) * br
    b = dp.sigma_aprime_gamma_isr_nb(m, eps, w, flavour=flavour, cos_theta_range=ctr)
    assert b == pytest.approx(a, rel=1e-5)  # the brief asks for 1 %; it is an identity to 1e-5


def test_isr_route_options():
    m, eps, w = 0.3, 1e-3, 3.773
    ee = dp.sigma_aprime_gamma_isr_nb(m, eps, w, n_f_convention="ee")
    ll = dp.sigma_aprime_gamma_isr_nb(m, eps, w, n_f_convention="ll")
    # BESIII N_f^{mumu} convention carries one extra muon mass factor (11 % at 0.3 GeV)
    assert ll == pytest.approx(ee * mass_factor(m, M_MU) / mass_factor(m, M_E), rel=1e-12)
    # the KF radiator scales the QED yield by W_KF/W_LO (physics.md 1.3: 0.94 at x = 0.19,
    # 10.58 GeV is not tabulated, use the 3.773 GeV row: x = 0.5 -> 0.09945/0.09764)
    m_half = w * math.sqrt(0.5)
    kf = dp.sigma_aprime_gamma_isr_nb(m_half, eps, w, radiator="kf")
    lo = dp.sigma_aprime_gamma_isr_nb(m_half, eps, w, radiator="lo")
    assert kf / lo == pytest.approx(0.09945 / 0.09764, rel=1e-3)


def test_signal_to_qed_ratio_per_bin_6_2():
    # physics.md 6.2: sigma(A')/sigma_QED(10 MeV bin)/eps^2 = 3 pi m/(2 N_f alpha delta_m) = 2.36e4
    # at m = 1.5 GeV (N_f from the 6.3 table; isrsim's R equals the table's there)
    m, w, eps = 1.5, 3.773, 1e-3
    qed_bin = dsigma_dm_isr_nb(w * w, m, FS_MUMU, 0, np.array([-1.0]), np.array([1.0])) * 0.010
    ratio = dp.sigma_aprime_gamma_isr_nb(m, eps, w) / qed_bin / eps**2
    assert ratio == pytest.approx(2.36e4, rel=3e-3)


def test_describe():
    d = dp.describe(0.017, 1e-3, 3.773)
    json.dumps(d)
    assert d["ctau_cm"] * 1e4 == pytest.approx(4.77, rel=2e-3)
    # physics.md 6.3: beta gamma = 111 at BESIII for 17 MeV, mean decay length 0.53 mm
    assert d["betagamma_cms"] == pytest.approx(111, rel=5e-3)
    assert d["mean_decay_length_cms_cm"] * 10 == pytest.approx(0.53, rel=0.01)
    d2 = dp.describe(2.0, 1e-3, 3.773)
    assert d2["br_ee"] + d2["br_mumu"] + d2["br_tautau"] + d2["br_had"] == pytest.approx(1.0, abs=1e-14)
    assert d2["sigma_gamma_aprime_mumu_nb"] == pytest.approx(d2["sigma_gamma_aprime_nb"] * d2["br_mumu"])
    assert d2["n_f"] == pytest.approx(dp.n_f(2.0))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: dp.gamma_ee(0.001, 1e-3), r"m=0\.001 GeV outside the allowed range \(0\.0010219979, 10\.5\) GeV"),
    (lambda: dp.gamma_total(10.5, 1e-3), r"m=10\.5 GeV outside the allowed range"),
    (lambda: dp.n_f(float("nan")), r"m=nan GeV outside the allowed range"),
    (lambda: dp.ctau_cm(0.017, 0.0), r"eps=0\.0 outside the allowed range 1e-12 <= epsilon < 1"),
    (lambda: dp.gamma_had(1.0, 1.0), r"eps=1\.0 outside the allowed range 1e-12 <= epsilon < 1"),
    # eps^2 underflows below ~1e-154 (c tau = inf, widths 0): refused, not returned
    (lambda: dp.ctau_cm(0.017, 1e-160), r"eps=1e-160 outside the allowed range 1e-12 <= epsilon"),
    (lambda: dp.sigma_aprime_gamma_nb(0.017, 1e-13, 3.773), r"eps=1e-13 outside the allowed range"),
    (lambda: dp.gamma_ll(1.0, 1e-3, -0.1), r"m_l=-0\.1 GeV outside the allowed range"),
    (lambda: dp.sigma_aprime_gamma_nb(4.0, 1e-3, 3.773), r"sqrt_s=3\.773 GeV outside the allowed range \(m = 4\.0"),
    # s overflowed to inf: NaN cross sections (review 2026-11-22)
    (lambda: dp.sigma_aprime_gamma_nb(0.5, 1e-3, 1e300), r"sqrt_s=1e\+300 GeV outside the allowed range \(m = 0\.5, 1000\]"),
    (lambda: dp.sigma_aprime_gamma_nb(1.0, 1e-3, 3.773, cos_theta_range=(0.5, 0.2)),
     r"cos_theta_range=\(0\.5, 0\.2\) outside the allowed range"),
    (lambda: dp.sigma_aprime_gamma_isr_nb(1.0, 1e-3, 3.773, flavour="tau"), r"flavour='tau' not allowed"),
    (lambda: dp.sigma_aprime_gamma_isr_nb(0.1, 1e-3, 3.773, flavour="mu"), r"m=0\.1 GeV outside the allowed range \(2 m_mu"),
    (lambda: dp.sigma_aprime_gamma_isr_nb(1.0, 1e-3, 3.773, radiator="nlo"), r"radiator='nlo' not allowed"),
    (lambda: dp.n_f_ll(1.0, "x"), r"flavour='x' not allowed"),
])
def test_bad_input_names_argument_and_range(call, pattern):
    with pytest.raises(ConfigError, match=pattern):
        call()


@pytest.mark.parametrize(("m", "w"), [(2.0, 3.773), (0.5, 3.773), (7.0, 10.58)])
def test_describe_boost_of_a_heavy_aprime(m, w):
    """beta gamma of the A' from two-body kinematics e+e- -> gamma A' in the CM frame.

    Independent value: the A' recoils against the photon, |p| = E_gamma = (s - m^2)/(2 sqrt(s)),
    so beta gamma = (s - m^2)/(2 sqrt(s) m) (0.678 for 2 GeV at 3.773 GeV). At 17 MeV
    (test_describe) beta gamma ~ sqrt(s)/(2m) hides an error of order m^2/s; at m ~ sqrt(s)/2
    the A' energy (s + m^2)/(2 sqrt(s)) and the photon energy differ by 28 %. The decay length
    and the proper time follow from c tau: pure arithmetic, so rel = 1e-12.
    """
    s = w * w
    d = dp.describe(m, 1e-3, w)
    bg = (s - m * m) / (2.0 * w * m)
    assert d["betagamma_cms"] == pytest.approx(bg, rel=1e-12)
    assert d["mean_decay_length_cms_cm"] == pytest.approx(bg * dp.ctau_cm(m, 1e-3), rel=1e-12)
    assert d["tau_ns"] == pytest.approx(dp.ctau_cm(m, 1e-3) / 29.9792458, rel=1e-12)


def test_include_narrow_reaches_the_hadronic_width():
    """include_narrow=False takes the J/psi, psi(2S), Upsilon(1S-3S) out of R in every width
    (physics.md 6.5 pitfall 5): Gamma_had = Gamma_mumu R(m; narrow excluded) exactly (rel 1e-14,
    the same product), and at the J/psi peak (R ~ 9e3 with it, ~2-3 without) the two differ by
    more than a factor 100, as do Gamma_tot and c tau."""
    m = np.array([1.0, 3.0969, 3.6861, 9.4603])
    eps = 1e-3
    off = dp.gamma_had(m, eps, include_narrow=False)
    np.testing.assert_allclose(off, dp.gamma_mumu(m, eps) * r_ratio(m, include_narrow=False), rtol=1e-14)
    on = dp.gamma_had(m, eps)
    assert on[1] > 100 * off[1]
    assert dp.gamma_total(3.0969, eps) > 100 * dp.gamma_total(3.0969, eps, include_narrow=False)
    assert dp.ctau_cm(3.0969, eps, include_narrow=False) > 100 * dp.ctau_cm(3.0969, eps)
    br = dp.branching_ratios(3.0969, include_narrow=False)
    assert br["hadrons"] == pytest.approx(float(off[1] / dp.gamma_total(3.0969, eps, include_narrow=False)),
                                          rel=1e-12)
