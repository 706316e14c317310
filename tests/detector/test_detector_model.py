"""Detector files and loader (isrsim.detector.model): beams, schema validation, provenance."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

from isrsim.beam import Beam
from isrsim.detector.model import available_detectors, load_detector
from isrsim.exceptions import ConfigError

DETECTORS = Path(__file__).resolve().parents[2] / "detectors"


@pytest.mark.parametrize("name", ["besiii", "belle2", "belle2_no_pxd2"])
def test_bundled_files_load(name):
    det = load_detector(name)
    assert name in available_detectors()
    assert det.name == name
    assert isinstance(det.beam, Beam)
    text = (DETECTORS / f"{name}.toml").read_text(encoding="utf-8")
    assert det.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert np.all(np.diff(det.material.r_cm) > 0)
    # loading by path gives the same model
    assert load_detector(DETECTORS / f"{name}.toml").sha256 == det.sha256


def test_every_number_has_a_source_tag():
    """Each numeric assignment in the bundled files carries a [H]/[M]/[L] tag on its line or in
    the comment block directly above it (detectors/README.md)."""
    num = re.compile(r"^\s*\w+\s*=\s*[-+\[]?\s*[0-9.]")
    for path in DETECTORS.glob("*.toml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not num.match(line) or line.strip().startswith(("schema_version",)):
                continue
            window = lines[max(0, i - 8): i + 1]
            cont = lines[i + 1: i + 12] if "[" in line and "]" not in line else []
            assert any(re.search(r"\[(H|M|L)", w) for w in window + cont), f"{path.name}:{i + 1}: {line}"


def test_belle2_boost_and_crossing_angle():
    """physics.md section 0 / detectors.md 3.1: 7.004 on 4.002 GeV crossing at +-41.5 mrad gives
    P_tot ~ (0.456, 0, 2.997) GeV, beta-gamma = 0.287 (head-on it would be 0.2835) and sqrt(s) ~ 10.58."""
    det = load_detector("belle2")
    beam = det.beam
    assert beam.crossing_half_angle_rad == pytest.approx(0.0415)
    p = beam.p4_total_lab()
    # closed form for massless beams: (E1 + E2) sin a, (E1 - E2) cos a; detectors.md quotes
    # (0.456, 0, 2.997) GeV for the nominal 7.0/4.0 GeV beams, the file has the 7.004/4.002 preset
    a = 0.0415
    assert p[0] == pytest.approx((7.004 + 4.002) * math.sin(a), rel=1e-6)
    assert p[2] == pytest.approx((7.004 - 4.002) * math.cos(a), rel=1e-6)
    assert p[0] == pytest.approx(0.456, abs=0.001)
    assert beam.boost_betagamma == pytest.approx(0.287, abs=0.001)
    assert beam.sqrt_s == pytest.approx(10.58, abs=0.005)
    assert beam.sigma_xyz_cm == pytest.approx((0.0010, 0.00003, 0.025))
    assert det.bz_T == 1.5
    # detectors.md 3.1: basf2 preset spreads 5.13 MeV (HER), 2.375 MeV (LER); sigma(sqrt(s)) ~ 5.0 MeV
    r_minus, r_plus = beam.energy_spreads_rel
    assert r_minus * 7.004 == pytest.approx(0.00513, rel=1e-12)
    assert r_plus * 4.002 == pytest.approx(0.002375, rel=1e-12)
    assert beam.sqrt_s_spread_GeV == pytest.approx(0.0050, abs=0.0001)


def test_besiii_beam():
    """physics.md section 0: 22 mrad crossing -> beta_x = 0.011, sqrt(s) = 3.773 GeV."""
    beam = load_detector("besiii").beam
    assert beam.boost_beta == pytest.approx([0.011, 0.0, 0.0], abs=1e-5)
    assert beam.sqrt_s == pytest.approx(3.773, abs=0.001)
    assert beam.p4_total_lab()[0] == pytest.approx(2 * 1.8865 * math.sin(0.011), rel=1e-6)


def test_material_budget_matches_sources():
    """detectors.md 2.3 / 3.3: BESIII beam pipe 0.97% X0, MDC wall 0.64%; Belle II beam pipe 0.79% X0."""
    bes = load_detector("besiii").material
    assert bes.total_x_over_x0(r_max_cm=5.0) == pytest.approx(0.0097, abs=1e-4)
    assert bes.total_x_over_x0() == pytest.approx(0.0161, abs=1e-4)
    b2 = load_detector("belle2").material
    assert b2.total_x_over_x0(r_max_cm=1.3) == pytest.approx(0.0079, abs=1e-4)
    assert b2.phi_fraction[b2.names.index("PXD L2")] == pytest.approx(0.17)
    assert "PXD L2" not in load_detector("belle2_no_pxd2").material.names


def _write(tmp_path, text):
    p = tmp_path / "custom.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("d0_a_cm = 0.0012", "d0_a_cm = -0.0012", r"tracker\.resolution\.d0_a_cm = -0\.0012.*>= 0"),
        ("bz_T = 1.5", "", r"missing field solenoid\.bz_T"),
        ('material = "Be"', 'material = "Unobtainium"', r"material\[\d+\]\.material = 'Unobtainium'"),
        ("x0_cm = 9.37", "", r"missing field materials\.Si\.x0_cm"),
        ("r_cm = 1.40 ", "r_cm = 1.18 ", r"overlap"),
        ("[1.0, 3.0, 0.90, 0.03]", "[1.5, 3.0, 0.90, 0.03]", r"pid\.muon\.table\[2\]\[0\]"),
        ("[0.6, 1.0, 0.75, 0.06]", "[0.6, 1.0, 1.75, 0.06]", r"pid\.muon\.table\[1\]\[2\] \(efficiency\) = 1\.75"),
        ("theta_max_deg = 150.0", "theta_max_deg = 10.0", r"tracker\.theta_max_deg = 10\.0"),
        ("sigma_z_cm = 0.025", "sigma_z_cm = -1", r"luminous_region\.sigma_z_cm = -1"),
        ("e_minus_GeV = 7.004", 'e_minus_GeV = "seven"', r"beam\.e_minus_GeV = 'seven'.*finite number"),
        ("schema_version = 1", "schema_version = 7", r"meta\.schema_version = 7"),
        ("min_layers = 10", "min_layers = 100", r"tracker\.min_layers = 100.*\[1, 62\]"),
        ("endcap_forward_z_cm = 196.0", "", r"missing field calorimeter\.endcap_forward_z_cm"),
        ("endcap_backward_z_cm = -102.0", "endcap_backward_z_cm = 102.0",
         r"calorimeter\.endcap_backward_z_cm = 102\.0 is invalid; allowed: < 0"),
        ("e_plus_spread_GeV = 0.002375", "e_plus_spread_GeV = 0.05",
         r"beam\.e_plus_spread_GeV = 0\.05 is invalid.*<= 0\.04002"),
        ("e_plus_spread_GeV = 0.002375", "", r"beam\.e_minus_spread_GeV = 0\.00513 is invalid.*only one"),
        ("e_plus_spread_GeV = 0.002375", "e_plus_spread_GeV = 0.002375\nsqrt_s_spread_GeV = 0.005",
         r"beam\.e_minus_spread_GeV = 0\.00513 is invalid.*sqrt_s_spread_GeV is also given"),
        ("barrel_radius_cm = 125.0", 'barrel_radius_cm = 125.0\nbrems_clusters = "yes"',
         r"calorimeter\.brems_clusters = 'yes' is invalid; allowed: true or false"),
        # geometry across sections (review 2026-11-22: each was accepted)
        ("barrel_radius_cm = 125.0", "barrel_radius_cm = 5.0",
         r"material\[\d+\]\.r_cm = [\d.]+ is invalid; allowed: < calorimeter\.barrel_radius_cm = 5 cm"),
        ("momentum_measurement_radius_cm = 16.8", "momentum_measurement_radius_cm = 500",
         r"tracker\.momentum_measurement_radius_cm = 500.*< calorimeter\.barrel_radius_cm = 125 cm"),
        ('name = "PXD L2', 'name = "PXD L1', r"material\[\d+\]\.name = 'PXD L1.*unique"),
    ],
)
def test_malformed_files_name_the_field(tmp_path, old, new, pattern):
    text = (DETECTORS / "belle2.toml").read_text()
    assert old in text
    path = _write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=pattern):
        load_detector(path)


def test_sqrt_s_spread_bound_names_the_field(tmp_path):
    # at most 1 % per beam: 0.01 x 3.773 / sqrt(2) = 0.026678 GeV
    text = (DETECTORS / "besiii.toml").read_text().replace("sqrt_s_spread_GeV = 0.0014", "sqrt_s_spread_GeV = 0.1")
    with pytest.raises(ConfigError, match=r"beam\.sqrt_s_spread_GeV = 0\.1 is invalid.*<= 0\.02667"):
        load_detector(_write(tmp_path, text))


def test_unknown_name_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        load_detector("lep")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_detector(_write(tmp_path, "[meta\nname ="))
