"""Born cross sections and the ISR mass spectrum against physics.md sections 2-3."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isrsim.constants import ALPHA, HBARC2_GEV2_NB, M_MU
from isrsim.physics.born import FS_EE, FS_MUMU, FS_PIPI, dsigma_dm_isr_nb, sigma_ll_nb

FULL = (np.array([-1.0]), np.array([1.0]))


def test_point_cross_section():
    # physics.md 2.1: 4 pi alpha^2/(3 s) = 86.85 nb / (s in GeV^2)
    assert sigma_ll_nb(1.0, 0.0) == pytest.approx(86.85, rel=1e-4)
    assert 4 * math.pi * ALPHA**2 / 3 * HBARC2_GEV2_NB == pytest.approx(86.85, rel=1e-4)


def test_muon_mass_factor():
    # beta (3 - beta^2)/2 == (1 + 2m^2/s) sqrt(1 - 4m^2/s) (physics.md 2.1), and 0 below threshold
    for sp in [0.05, 0.2, 1.0, 14.2]:
        r = 4 * M_MU**2 / sp
        expect = 86.85 / sp * (1 + r / 2) * math.sqrt(1 - r) if r < 1 else 0.0
        assert sigma_ll_nb(sp, M_MU) == pytest.approx(expect, rel=1e-4, abs=1e-12)
    # e+e- -> mu+mu- at sqrt(s) = 3.773 GeV: 86.85/14.2355 * mass factor = 6.101 nb
    assert sigma_ll_nb(3.773**2, M_MU) == pytest.approx(6.1009, rel=2e-4)


@pytest.mark.parametrize(
    ("sqrt_s", "m", "mumu_kf", "ee_kf", "pipi_kf"),
    [  # physics.md section 3 tables (nb/GeV, full photon angle, W_KF)
        (3.773, 0.5, 1.059, 1.073, 0.551), (3.773, 1.0, 0.555, 0.555, 0.433),
        (3.773, 1.5, 0.4106, 0.4106, 4.2e-3), (3.773, 2.0, 0.3744, 0.3744, 1.7e-2),
        (3.773, 2.5, 0.4165, 0.4165, 1.6e-3), (3.773, 3.0, 0.6007, 0.6007, 7.1e-4),
        (3.773, 3.4, 1.163, 1.163, 7.3e-4),
        (10.58, 0.5, 0.1564, 0.1584, 0.0814), (10.58, 1.0, 0.0776, 0.0777, 0.0605),
        (10.58, 3.0, 0.02687, 0.02687, 3.2e-5), (10.58, 5.0, 0.01945, 0.01945, 2.4e-6),
        (10.58, 8.0, 0.02648, 0.02648, 5.3e-7),
    ],
)
def test_dsigma_dm_table(sqrt_s, m, mumu_kf, ee_kf, pipi_kf):
    s = sqrt_s**2
    # rounding of the table: 3-4 significant digits -> 0.15%; the pion column has 2 digits
    assert dsigma_dm_isr_nb(s, m, FS_MUMU, 1, *FULL) == pytest.approx(mumu_kf, rel=1.5e-3)
    assert dsigma_dm_isr_nb(s, m, FS_EE, 1, *FULL) == pytest.approx(ee_kf, rel=1.5e-3)
    # pi pi: the 3-state GS model of physics.md 2.2 is an order-of-magnitude model above 1.4 GeV;
    # the table was computed with the same model: 2-digit rounding -> 5%
    assert dsigma_dm_isr_nb(s, m, FS_PIPI, 1, *FULL) == pytest.approx(pipi_kf, rel=0.05)


@pytest.mark.parametrize(("m", "lo"), [(1.5, 0.3867), (2.5, 0.4053), (3.4, 1.238)])
def test_dsigma_dm_lo_table(m, lo):
    # physics.md section 3, column "mu mu gamma, W_LO" at 3.773 GeV
    assert dsigma_dm_isr_nb(3.773**2, m, FS_MUMU, 0, *FULL) == pytest.approx(lo, rel=1.5e-3)


def test_below_threshold_is_zero():
    assert dsigma_dm_isr_nb(10.58**2, 0.1, FS_MUMU, 1, *FULL) == 0.0
    # e e gamma at 20 MeV (physics.md section 3: 4.43 nb/GeV at 10.58 GeV)
    assert dsigma_dm_isr_nb(10.58**2, 0.02, FS_EE, 1, *FULL) == pytest.approx(4.43, rel=2e-3)
