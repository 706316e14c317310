"""Parameterised detector models loaded from validated TOML files (``detectors/*.toml``).

The schema is documented in ``detectors/README.md``; every number in the bundled files
carries its source (shared/detectors.md). :func:`load_detector` checks every field and raises
:class:`~isrsim.exceptions.ConfigError` with a one-line message naming the field path, the
offending value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..beam import MAX_SPREAD_REL, Beam, max_sqrt_s_spread_GeV
from ..config import tomllib  # tomllib on Python >= 3.11, tomli before
from ..exceptions import ConfigError
from .material import MaterialLayers

__all__ = [
    "SCHEMA_VERSION",
    "CalorimeterModel",
    "DetectorModel",
    "PidModel",
    "TrackerModel",
    "available_detectors",
    "load_detector",
]

#: Version of the detector-file schema understood by this loader.
SCHEMA_VERSION = 1

_CAL_COLUMNS = ("theta_min_deg", "theta_max_deg", "min_energy_GeV", "stochastic", "quarter",
                "constant", "noise_GeV", "angle_stochastic_rad", "angle_constant_rad")


@dataclass(frozen=True)
class TrackerModel:
    """Tracking acceptance, efficiency and resolution model (``[tracker]``, ``[tracker.resolution]``).

    ``sigma(pT)/pT = pt_a pT (+) pt_b/beta``; ``sigma(d0) = d0_a (+) d0_b/(p beta sin^{3/2} theta)``;
    ``sigma(z0) = z0_a (+) z0_b/(p beta sin^{5/2} theta)``; ``sigma(phi0)`` like d0 and
    ``sigma(tanl)`` like z0. Efficiency ``plateau (1 - exp(-(pT - pt_min)/pt_turnon))`` above
    ``pt_min``. ``layer_radius_cm`` are the sensitive layers (lever arm, ``min_layers``).
    """

    theta_min_rad: float
    theta_max_rad: float
    pt_min_GeV: float
    pt_turnon_GeV: float
    efficiency_plateau: float
    min_layers: int
    momentum_measurement_radius_cm: float
    layer_radius_cm: np.ndarray
    pt_a_per_GeV: float
    pt_b: float
    d0_a_cm: float
    d0_b_cm_GeV: float
    z0_a_cm: float
    z0_b_cm_GeV: float
    phi0_a_rad: float
    phi0_b_rad_GeV: float
    tanl_a: float
    tanl_b_GeV: float
    rho_d0_phi0: float
    rho_z0_tanl: float

    def params(self) -> np.ndarray:
        """Flat float64 parameter vector read by the simulation kernel (order fixed here)."""
        return np.array([
            self.theta_min_rad, self.theta_max_rad, self.pt_min_GeV, self.pt_turnon_GeV,
            self.efficiency_plateau, float(self.min_layers), self.momentum_measurement_radius_cm,
            self.pt_a_per_GeV, self.pt_b, self.d0_a_cm, self.d0_b_cm_GeV, self.z0_a_cm,
            self.z0_b_cm_GeV, self.phi0_a_rad, self.phi0_b_rad_GeV, self.tanl_a, self.tanl_b_GeV,
            self.rho_d0_phi0, self.rho_z0_tanl,
        ])

    def sigma_d0(self, p: np.ndarray, beta: np.ndarray, sin_theta: np.ndarray) -> np.ndarray:
        """Parameterised d0 resolution [cm] of a prompt track (momentum p [GeV])."""
        return np.hypot(self.d0_a_cm, self.d0_b_cm_GeV / (p * beta * sin_theta**1.5))

    def sigma_z0(self, p: np.ndarray, beta: np.ndarray, sin_theta: np.ndarray) -> np.ndarray:
        """Parameterised z0 resolution [cm] of a prompt track."""
        return np.hypot(self.z0_a_cm, self.z0_b_cm_GeV / (p * beta * sin_theta**2.5))

    def sigma_pt_rel(self, pt: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Relative transverse-momentum resolution sigma(pT)/pT."""
        return np.hypot(self.pt_a_per_GeV * pt, self.pt_b / beta)


@dataclass(frozen=True)
class CalorimeterModel:
    """Calorimeter regions (``[[calorimeter.region]]``) and the MIP response.

    ``regions`` is float64 [n_regions, 9] with columns ``theta_min_rad, theta_max_rad,
    min_energy_GeV, stochastic, quarter, constant, noise_GeV, angle_stochastic_rad,
    angle_constant_rad``; ``sigma_E/E = stochastic/sqrt(E) (+) quarter/E^0.25 (+) constant
    (+) noise_GeV/E`` and ``sigma_theta = sigma_phi sin(theta) = angle_stochastic/sqrt(E) (+)
    angle_constant``.

    The front surface is a closed can: the barrel cylinder ``r = barrel_radius_cm`` between
    the end-cap faces ``z = endcap_backward_z_cm < 0`` and ``z = endcap_forward_z_cm > 0``, and
    those faces inside it. A charged particle's cluster region is selected by the polar angle
    of the point where its helix enters the can, a photon's by its direction.
    """

    barrel_radius_cm: float
    endcap_backward_z_cm: float
    endcap_forward_z_cm: float
    mip_energy_GeV: float
    mip_relative_spread: float
    regions: np.ndarray
    region_names: tuple[str, ...]
    #: Radiated (bremsstrahlung) photons of electrons make clusters of their own (optional
    #: ``calorimeter.brems_clusters``, default false; :func:`isrsim.detector.simulate._brems_walk`).
    brems_clusters: bool = False


@dataclass(frozen=True)
class PidModel:
    """Muon and electron identification (``[pid.muon]``, ``[pid.electron]``).

    ``muon_table`` float64 [rows, 4]: ``p_min_GeV, p_max_GeV, mu efficiency, pi->mu misid``
    (the last row is used above its p_max).
    """

    muon_theta_min_rad: float
    muon_theta_max_rad: float
    muon_table: np.ndarray
    e_to_mu_misid: float
    e_over_p_cut: float
    electron_efficiency: float
    pi_to_e_misid: float
    mu_to_e_misid: float

    def params(self) -> np.ndarray:
        """Flat float64 parameter vector read by the simulation kernel."""
        return np.array([self.muon_theta_min_rad, self.muon_theta_max_rad, self.e_to_mu_misid,
                         self.e_over_p_cut, self.electron_efficiency, self.pi_to_e_misid,
                         self.mu_to_e_misid])


@dataclass(frozen=True)
class DetectorModel:
    """A validated detector description (see ``detectors/README.md``).

    Attributes
    ----------
    name : str
        ``[meta].name``.
    bz_T : float
        Solenoid field along +z [T].
    beam : isrsim.beam.Beam
        Beam energies, crossing half angle, sqrt(s) spread and luminous region [cm].
    material : MaterialLayers
        Material in front of the momentum measurement.
    tracker, calorimeter, pid
        Sub-models.
    sha256 : str
        SHA-256 of the file text (UTF-8), for run metadata.
    path : str
        Where the file was read from.
    meta : dict
        The ``[meta]`` table (title, schema version, sources).
    """

    name: str
    bz_T: float
    beam: Beam
    material: MaterialLayers
    tracker: TrackerModel
    calorimeter: CalorimeterModel
    pid: PidModel
    sha256: str
    path: str
    meta: dict


# ------------------------------------------------------------------------------------------
# validation helpers
def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened (a 400-digit integer in a file makes no useful message)."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit - 20]}...{r[-12:]} ({len(r)} characters)"


#: Keys of each table of a detector file (``detectors/README.md``); ``[meta]`` is free-form
#: apart from its required keys, and ``[materials]`` holds one table per material name.
_KEYS: dict[str, tuple[str, ...]] = {
    "": ("meta", "beam", "luminous_region", "solenoid", "tracker", "material", "materials",
         "calorimeter", "pid"),
    "beam": ("e_minus_GeV", "e_plus_GeV", "crossing_half_angle_rad", "sqrt_s_spread_GeV",
             "e_minus_spread_GeV", "e_plus_spread_GeV"),
    "luminous_region": ("sigma_x_cm", "sigma_y_cm", "sigma_z_cm"),
    "solenoid": ("bz_T",),
    "tracker": ("theta_min_deg", "theta_max_deg", "pt_min_GeV", "pt_turnon_GeV",
                "efficiency_plateau", "min_layers", "momentum_measurement_radius_cm",
                "layer_radius_cm", "resolution"),
    "tracker.resolution": ("pt_a_per_GeV", "pt_b", "d0_a_cm", "d0_b_cm_GeV", "z0_a_cm",
                           "z0_b_cm_GeV", "phi0_a_rad", "phi0_b_rad_GeV", "tanl_a", "tanl_b_GeV",
                           "rho_d0_phi0", "rho_z0_tanl"),
    "material": ("name", "r_cm", "dr_cm", "z_min_cm", "z_max_cm", "material", "x_over_x0",
                 "phi_fraction"),
    "materials.*": ("x0_cm", "z_eff"),
    "calorimeter": ("barrel_radius_cm", "endcap_backward_z_cm", "endcap_forward_z_cm",
                    "mip_energy_GeV", "mip_relative_spread", "brems_clusters", "region"),
    "calorimeter.region": ("name", *_CAL_COLUMNS),
    "pid": ("muon", "electron"),
    "pid.muon": ("theta_min_deg", "theta_max_deg", "table", "electron_misid"),
    "pid.electron": ("e_over_p_cut", "efficiency", "pion_misid", "muon_misid"),
}


class _Reader:
    """Fetch and check fields of a parsed TOML document, naming the full path on error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, value: Any, allowed: str) -> None:
        msg = f"{self.source}: {path} = {_short(value)} is invalid; allowed: {allowed}"
        raise ConfigError(msg)

    def keys(self, tab: dict, allowed: tuple[str, ...] | set[str], path: str) -> None:
        """A key outside ``allowed`` in table ``path`` (a typo would otherwise silently fall
        back to a default): ConfigError naming the key, the table, the nearest valid key and
        every allowed one."""
        unknown = sorted(str(k) for k in tab if k not in allowed)
        if not unknown:
            return
        import difflib

        key = unknown[0]
        near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        where = f"[{path}]" if path else "the top level"
        msg = (f"{self.source}: unknown key {key!r} in {where}{hint}; allowed: "
               f"{', '.join(sorted(allowed))} (notes go in comments or [meta])")
        raise ConfigError(msg)

    def table(self, doc: dict, key: str, path: str) -> dict:
        if key not in doc:
            msg = f"{self.source}: missing table [{path}]"
            raise ConfigError(msg)
        val = doc[key]
        if not isinstance(val, dict):
            self.fail(path, val, "a table")
        return val

    def number(self, doc: dict, key: str, path: str, *, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False, default: float | None = None) -> float:
        if key not in doc:
            if default is not None:
                return default
            msg = f"{self.source}: missing field {path}"
            raise ConfigError(msg)
        val = doc[key]
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else f"<= {hi}"
        rng = " and ".join(s for s in (lo_s, hi_s) if s)
        try:
            ok = not isinstance(val, bool) and isinstance(val, (int, float)) and math.isfinite(val)
        except OverflowError:  # an integer beyond the float range
            ok = False
        if not ok:
            self.fail(path, val, f"a finite number {rng}".rstrip())
        v = float(val)
        bad = (lo is not None and (v < lo or (lo_open and v <= lo))) or (hi is not None and v > hi)
        if bad:
            self.fail(path, val, rng)
        return v

    def integer(self, doc: dict, key: str, path: str, *, lo: int, hi: int) -> int:
        val = doc.get(key)
        if key not in doc:
            msg = f"{self.source}: missing field {path}"
            raise ConfigError(msg)
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            self.fail(path, val, f"an integer in [{lo}, {hi}]")
        return int(val)

    def string(self, doc: dict, key: str, path: str) -> str:
        if key not in doc:
            msg = f"{self.source}: missing field {path}"
            raise ConfigError(msg)
        val = doc[key]
        if not isinstance(val, str) or not val.strip():
            self.fail(path, val, "a non-empty string")
        return val

    def array(self, doc: dict, key: str, path: str, *, lo: float | None = None,
              lo_open: bool = False, min_len: int = 1) -> np.ndarray:
        if key not in doc:
            msg = f"{self.source}: missing field {path}"
            raise ConfigError(msg)
        val = doc[key]
        if not isinstance(val, list) or len(val) < min_len:
            self.fail(path, val, f"an array of at least {min_len} numbers")
        for i, x in enumerate(val):
            self.number({"x": x}, "x", f"{path}[{i}]", lo=lo, lo_open=lo_open)
        return np.asarray(val, dtype=np.float64)

    def boolean(self, doc: dict, key: str, path: str, *, default: bool) -> bool:
        val = doc.get(key, default)
        if not isinstance(val, bool):
            self.fail(path, val, "true or false")
        return val

    def array_of_tables(self, doc: dict, key: str, path: str) -> list[dict]:
        if key not in doc:
            msg = f"{self.source}: missing array of tables [[{path}]]"
            raise ConfigError(msg)
        val = doc[key]
        if not isinstance(val, list) or not val or not all(isinstance(t, dict) for t in val):
            self.fail(path, val, "a non-empty array of tables [[...]]")
        return val


def _theta_pair(rd: _Reader, tab: dict, path: str) -> tuple[float, float]:
    tmin = rd.number(tab, "theta_min_deg", f"{path}.theta_min_deg", lo=0.0, hi=180.0)
    tmax = rd.number(tab, "theta_max_deg", f"{path}.theta_max_deg", lo=0.0, hi=180.0)
    if tmax <= tmin:
        rd.fail(f"{path}.theta_max_deg", tmax, f"> theta_min_deg = {tmin}")
    return math.radians(tmin), math.radians(tmax)


def _parse_beam(rd: _Reader, doc: dict) -> Beam:
    b = rd.table(doc, "beam", "beam")
    lum = rd.table(doc, "luminous_region", "luminous_region")
    rd.keys(b, _KEYS["beam"], "beam")
    rd.keys(lum, _KEYS["luminous_region"], "luminous_region")
    e_minus = rd.number(b, "e_minus_GeV", "beam.e_minus_GeV", lo=0.01, hi=1000.0)
    e_plus = rd.number(b, "e_plus_GeV", "beam.e_plus_GeV", lo=0.01, hi=1000.0)
    half = rd.number(b, "crossing_half_angle_rad", "beam.crossing_half_angle_rad", lo=0.0, hi=0.5)
    per_beam = ("e_minus_spread_GeV", "e_plus_spread_GeV")
    given = [k for k in per_beam if k in b]
    allowed = ("either beam.sqrt_s_spread_GeV or both beam.e_minus_spread_GeV and "
               "beam.e_plus_spread_GeV")
    if given and "sqrt_s_spread_GeV" in b:
        rd.fail(f"beam.{given[0]}", b[given[0]], f"{allowed} (sqrt_s_spread_GeV is also given)")
    if len(given) == 1:
        rd.fail(f"beam.{given[0]}", b[given[0]], f"{allowed} (only one of the two is given)")
    sig = tuple(rd.number(lum, f"sigma_{c}_cm", f"luminous_region.sigma_{c}_cm", lo=0.0, hi=100.0)
                for c in "xyz")
    beam = Beam(e_minus_GeV=e_minus, e_plus_GeV=e_plus, crossing_half_angle_rad=half, sigma_xyz_cm=sig)
    if given:
        # each beam's spread: at most MAX_SPREAD_REL of its energy
        sm = rd.number(b, per_beam[0], f"beam.{per_beam[0]}", lo=0.0, hi=MAX_SPREAD_REL * e_minus)
        sp = rd.number(b, per_beam[1], f"beam.{per_beam[1]}", lo=0.0, hi=MAX_SPREAD_REL * e_plus)
        return beam.with_energy_spreads(sm, sp)
    spread = rd.number(b, "sqrt_s_spread_GeV", "beam.sqrt_s_spread_GeV", lo=0.0,
                       hi=max_sqrt_s_spread_GeV(beam.sqrt_s))
    return dataclasses.replace(beam, sqrt_s_spread_GeV=spread)


def _parse_tracker(rd: _Reader, doc: dict) -> TrackerModel:
    t = rd.table(doc, "tracker", "tracker")
    r = rd.table(t, "resolution", "tracker.resolution")
    rd.keys(t, _KEYS["tracker"], "tracker")
    rd.keys(r, _KEYS["tracker.resolution"], "tracker.resolution")
    tmin, tmax = _theta_pair(rd, t, "tracker")
    radii = rd.array(t, "layer_radius_cm", "tracker.layer_radius_cm", lo=0.0, lo_open=True)
    if np.any(np.diff(radii) <= 0):
        i = int(np.argmax(np.diff(radii) <= 0)) + 1
        rd.fail(f"tracker.layer_radius_cm[{i}]", float(radii[i]), "strictly increasing radii")
    nl = rd.integer(t, "min_layers", "tracker.min_layers", lo=1, hi=len(radii))

    def res(key: str, hi: float) -> float:
        return rd.number(r, key, f"tracker.resolution.{key}", lo=0.0, hi=hi)

    return TrackerModel(
        theta_min_rad=tmin, theta_max_rad=tmax,
        pt_min_GeV=rd.number(t, "pt_min_GeV", "tracker.pt_min_GeV", lo=0.0, hi=10.0),
        pt_turnon_GeV=rd.number(t, "pt_turnon_GeV", "tracker.pt_turnon_GeV", lo=0.0, hi=10.0),
        efficiency_plateau=rd.number(t, "efficiency_plateau", "tracker.efficiency_plateau",
                                     lo=0.0, hi=1.0),
        min_layers=nl,
        momentum_measurement_radius_cm=rd.number(t, "momentum_measurement_radius_cm",
                                                 "tracker.momentum_measurement_radius_cm",
                                                 lo=0.0, hi=1000.0),
        layer_radius_cm=radii,
        pt_a_per_GeV=res("pt_a_per_GeV", 1.0), pt_b=res("pt_b", 1.0),
        d0_a_cm=res("d0_a_cm", 10.0), d0_b_cm_GeV=res("d0_b_cm_GeV", 10.0),
        z0_a_cm=res("z0_a_cm", 10.0), z0_b_cm_GeV=res("z0_b_cm_GeV", 10.0),
        phi0_a_rad=res("phi0_a_rad", 1.0), phi0_b_rad_GeV=res("phi0_b_rad_GeV", 1.0),
        tanl_a=res("tanl_a", 1.0), tanl_b_GeV=res("tanl_b_GeV", 1.0),
        rho_d0_phi0=rd.number(r, "rho_d0_phi0", "tracker.resolution.rho_d0_phi0", lo=-0.99, hi=0.99),
        rho_z0_tanl=rd.number(r, "rho_z0_tanl", "tracker.resolution.rho_z0_tanl", lo=-0.99, hi=0.99),
    )


def _parse_material(rd: _Reader, doc: dict) -> MaterialLayers:
    layers = rd.array_of_tables(doc, "material", "material")
    mats = rd.table(doc, "materials", "materials")
    known: dict[str, tuple[float, float]] = {}
    for mname, mtab in mats.items():
        if not isinstance(mtab, dict):
            rd.fail(f"materials.{mname}", mtab, "a table with x0_cm and z_eff")
        rd.keys(mtab, _KEYS["materials.*"], f"materials.{mname}")
        known[mname] = (rd.number(mtab, "x0_cm", f"materials.{mname}.x0_cm", lo=0.0, lo_open=True),
                        rd.number(mtab, "z_eff", f"materials.{mname}.z_eff", lo=1.0, hi=100.0))
    rows = []
    for i, lay in enumerate(layers):
        p = f"material[{i}]"
        rd.keys(lay, _KEYS["material"], p)
        name = rd.string(lay, "name", f"{p}.name")
        r = rd.number(lay, "r_cm", f"{p}.r_cm", lo=0.0, lo_open=True, hi=1000.0)
        dr = rd.number(lay, "dr_cm", f"{p}.dr_cm", lo=0.0, hi=100.0)
        if dr > 2 * r:
            rd.fail(f"{p}.dr_cm", dr, f"<= 2 * r_cm = {2 * r}")
        zmin = rd.number(lay, "z_min_cm", f"{p}.z_min_cm", lo=-1000.0, hi=1000.0)
        zmax = rd.number(lay, "z_max_cm", f"{p}.z_max_cm", lo=-1000.0, hi=1000.0)
        if zmax <= zmin:
            rd.fail(f"{p}.z_max_cm", zmax, f"> z_min_cm = {zmin}")
        mat = rd.string(lay, "material", f"{p}.material")
        if mat not in known:
            rd.fail(f"{p}.material", mat, f"one of the [materials] tables {sorted(known)}")
        x = rd.number(lay, "x_over_x0", f"{p}.x_over_x0", lo=0.0, hi=1.0)
        phif = rd.number(lay, "phi_fraction", f"{p}.phi_fraction", lo=0.0, hi=1.0, default=1.0)
        rows.append((r, dr, zmin, zmax, x, known[mat][1], phif, name))
    rows.sort(key=lambda row: row[0])
    # overlapping layers: radial intervals that intersect while the z ranges also intersect
    tol = 1e-6
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            ra, rb = rows[a], rows[b]
            radial = (ra[0] + ra[1] / 2) > (rb[0] - rb[1] / 2) + tol or ra[0] == rb[0]
            longit = ra[2] < rb[3] and rb[2] < ra[3]
            if radial and longit:
                msg = (f"{rd.source}: material layers {ra[7]!r} (r_cm = {ra[0]}, dr_cm = {ra[1]}) and "
                       f"{rb[7]!r} (r_cm = {rb[0]}, dr_cm = {rb[1]}) overlap; allowed: disjoint radial "
                       "intervals [r_cm - dr_cm/2, r_cm + dr_cm/2] where the z ranges overlap")
                raise ConfigError(msg)
    cols = list(zip(*rows))
    return MaterialLayers(
        r_cm=np.array(cols[0]), dr_cm=np.array(cols[1]), z_min_cm=np.array(cols[2]),
        z_max_cm=np.array(cols[3]), x_over_x0=np.array(cols[4]), z_eff=np.array(cols[5]),
        phi_fraction=np.array(cols[6]), names=tuple(cols[7]),
    )


def _backward_z(rd: _Reader, c: dict) -> float:
    """``calorimeter.endcap_backward_z_cm``: a finite number < 0 (the backward face is at
    negative z)."""
    v = rd.number(c, "endcap_backward_z_cm", "calorimeter.endcap_backward_z_cm")
    if not -2000.0 <= v < 0.0:
        rd.fail("calorimeter.endcap_backward_z_cm", v, "< 0 and >= -2000 (the backward end-cap face)")
    return v


def _parse_calorimeter(rd: _Reader, doc: dict) -> CalorimeterModel:
    c = rd.table(doc, "calorimeter", "calorimeter")
    rd.keys(c, _KEYS["calorimeter"], "calorimeter")
    regions = rd.array_of_tables(c, "region", "calorimeter.region")
    rows, names = [], []
    for i, reg in enumerate(regions):
        p = f"calorimeter.region[{i}]"
        rd.keys(reg, _KEYS["calorimeter.region"], p)
        names.append(rd.string(reg, "name", f"{p}.name"))
        tmin, tmax = _theta_pair(rd, reg, p)
        vals = [tmin, tmax]
        for key in _CAL_COLUMNS[2:]:
            vals.append(rd.number(reg, key, f"{p}.{key}", lo=0.0, hi=10.0))
        if vals[3] + vals[4] + vals[5] + vals[6] <= 0.0:
            rd.fail(f"{p}.stochastic", vals[3], "at least one energy-resolution term > 0")
        rows.append(vals)
    order = np.argsort([row[0] for row in rows])
    arr = np.array(rows)[order]
    for j in range(1, len(arr)):
        if arr[j, 0] < arr[j - 1, 1] - 1e-12:
            rd.fail(f"calorimeter.region[{int(order[j])}].theta_min_deg", math.degrees(arr[j, 0]),
                    f">= theta_max_deg = {math.degrees(arr[j - 1, 1]):.6g} of region "
                    f"{names[int(order[j - 1])]!r} (regions must not overlap)")
    return CalorimeterModel(
        barrel_radius_cm=rd.number(c, "barrel_radius_cm", "calorimeter.barrel_radius_cm",
                                   lo=0.0, lo_open=True, hi=1000.0),
        endcap_backward_z_cm=_backward_z(rd, c),
        endcap_forward_z_cm=rd.number(c, "endcap_forward_z_cm", "calorimeter.endcap_forward_z_cm",
                                      lo=0.0, lo_open=True, hi=2000.0),
        mip_energy_GeV=rd.number(c, "mip_energy_GeV", "calorimeter.mip_energy_GeV", lo=0.0, hi=10.0),
        mip_relative_spread=rd.number(c, "mip_relative_spread", "calorimeter.mip_relative_spread",
                                      lo=0.0, hi=2.0),
        regions=np.ascontiguousarray(arr), region_names=tuple(names[i] for i in order),
        brems_clusters=rd.boolean(c, "brems_clusters", "calorimeter.brems_clusters", default=False),
    )


def _parse_pid(rd: _Reader, doc: dict) -> PidModel:
    pid = rd.table(doc, "pid", "pid")
    mu = rd.table(pid, "muon", "pid.muon")
    el = rd.table(pid, "electron", "pid.electron")
    rd.keys(pid, _KEYS["pid"], "pid")
    rd.keys(mu, _KEYS["pid.muon"], "pid.muon")
    rd.keys(el, _KEYS["pid.electron"], "pid.electron")
    tmin, tmax = _theta_pair(rd, mu, "pid.muon")
    table = mu.get("table")
    if table is None:
        msg = f"{rd.source}: missing field pid.muon.table"
        raise ConfigError(msg)
    if not isinstance(table, list) or not table:
        rd.fail("pid.muon.table", table,
                "a non-empty array of [p_min_GeV, p_max_GeV, efficiency, pi_misid] rows")
    rows = []
    for i, row in enumerate(table):
        p = f"pid.muon.table[{i}]"
        if not isinstance(row, list) or len(row) != 4:
            rd.fail(p, row, "[p_min_GeV, p_max_GeV, efficiency, pi_misid]")
        vals = [rd.number({"v": row[0]}, "v", f"{p}[0] (p_min_GeV)", lo=0.0),
                rd.number({"v": row[1]}, "v", f"{p}[1] (p_max_GeV)", lo=0.0),
                rd.number({"v": row[2]}, "v", f"{p}[2] (efficiency)", lo=0.0, hi=1.0),
                rd.number({"v": row[3]}, "v", f"{p}[3] (pi_misid)", lo=0.0, hi=1.0)]
        if vals[1] <= vals[0]:
            rd.fail(f"{p}[1] (p_max_GeV)", row[1], f"> p_min_GeV = {row[0]}")
        if i == 0 and vals[0] != 0.0:
            rd.fail(f"{p}[0] (p_min_GeV)", row[0], "0 (the table must start at p = 0)")
        if i > 0 and abs(vals[0] - rows[-1][1]) > 1e-9:
            rd.fail(f"{p}[0] (p_min_GeV)", row[0], f"= previous p_max_GeV = {rows[-1][1]} (contiguous bins)")
        rows.append(vals)
    return PidModel(
        muon_theta_min_rad=tmin, muon_theta_max_rad=tmax, muon_table=np.array(rows),
        e_to_mu_misid=rd.number(mu, "electron_misid", "pid.muon.electron_misid", lo=0.0, hi=1.0),
        e_over_p_cut=rd.number(el, "e_over_p_cut", "pid.electron.e_over_p_cut", lo=0.0, hi=2.0),
        electron_efficiency=rd.number(el, "efficiency", "pid.electron.efficiency", lo=0.0, hi=1.0),
        pi_to_e_misid=rd.number(el, "pion_misid", "pid.electron.pion_misid", lo=0.0, hi=1.0),
        mu_to_e_misid=rd.number(el, "muon_misid", "pid.electron.muon_misid", lo=0.0, hi=1.0),
    )


def available_detectors() -> list[str]:
    """Names of the bundled detector files (``importlib.resources.files("isrsim") / "detectors"``)."""
    root = resources.files("isrsim") / "detectors"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def _resolve(name_or_path: str | Path) -> tuple[str, str]:
    """Return (text, path) of a bundled name or a file path.

    A bundled name always means the bundled file (a file ``besiii`` in the working directory
    does not shadow it; write ``./besiii`` for that); anything else is a path."""
    s = str(name_or_path)
    bundled = resources.files("isrsim") / "detectors" / f"{s}.toml"
    looks_like_path = isinstance(name_or_path, Path) or s.endswith(".toml") or "/" in s or os.sep in s
    if not looks_like_path and s and bundled.is_file():
        return bundled.read_text(encoding="utf-8"), str(bundled)
    if looks_like_path or Path(s).is_file():
        p = Path(s)
        if not p.is_file():
            what = "is not a regular file" if p.exists() else "not found"
            msg = (f"detector file {s!r} {what}; allowed: a bundled name {available_detectors()} or a "
                   ".toml path")
            raise ConfigError(msg)
        try:
            return p.read_text(encoding="utf-8"), str(p)
        except UnicodeDecodeError as exc:
            msg = f"detector file {s!r} is not UTF-8 text ({exc.reason}); allowed: a UTF-8 TOML file"
            raise ConfigError(msg) from None
    msg = f"detector = {s!r} is unknown; allowed: a bundled name {available_detectors()} or a .toml path"
    raise ConfigError(msg)


def load_detector(name_or_path: str | Path) -> DetectorModel:
    """Load and validate a detector file.

    Parameters
    ----------
    name_or_path : str or Path
        A bundled name (``"besiii"``, ``"belle2"``, ``"belle2_no_pxd2"``) or the path of a
        TOML file following ``detectors/README.md``.

    Returns
    -------
    DetectorModel

    Raises
    ------
    ConfigError
        Unknown name, unreadable TOML, or any field missing/out of range (the message names
        the field path, its value and the allowed range).
    """
    text, path = _resolve(name_or_path)
    rd = _Reader(Path(path).name)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{rd.source}: not valid TOML: {exc}"
        raise ConfigError(msg) from None
    meta = rd.table(doc, "meta", "meta")
    version = rd.integer(meta, "schema_version", "meta.schema_version", lo=1, hi=10**6)
    if version != SCHEMA_VERSION:
        rd.fail("meta.schema_version", version, f"{SCHEMA_VERSION}")
    name = rd.string(meta, "name", "meta.name")
    rd.keys(doc, _KEYS[""], "")
    sol = rd.table(doc, "solenoid", "solenoid")
    rd.keys(sol, _KEYS["solenoid"], "solenoid")
    bz = rd.number(sol, "bz_T", "solenoid.bz_T", lo=0.0, lo_open=True, hi=10.0)
    material, tracker = _parse_material(rd, doc), _parse_tracker(rd, doc)
    calorimeter = _parse_calorimeter(rd, doc)
    _check_geometry(rd, material, tracker, calorimeter)
    return DetectorModel(
        name=name, bz_T=bz, beam=_parse_beam(rd, doc), material=material,
        tracker=tracker, calorimeter=calorimeter,
        pid=_parse_pid(rd, doc), sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        path=path, meta=dict(meta),
    )


def _check_geometry(rd: _Reader, material: Any, tracker: Any, calorimeter: Any) -> None:
    """Across the sections: material layer names unique (``forced_layers`` selects by name),
    material, tracker layers and the momentum-measurement radius inside the calorimeter's
    barrel radius (the simulation takes every layer to be crossed before the calorimeter)."""
    seen: dict[str, int] = {}
    for i, nm in enumerate(material.names):
        if nm in seen:
            rd.fail(f"material[{i}].name", nm, f"a name unique among the layers (material[{seen[nm]}] "
                                               "has it)")
        seen[nm] = i
    rb = calorimeter.barrel_radius_cm
    inside = f"< calorimeter.barrel_radius_cm = {rb:g} cm"
    for i, r in enumerate(material.r_cm):
        if r >= rb:
            rd.fail(f"material[{i}].r_cm", float(r), inside)
    for i, r in enumerate(tracker.layer_radius_cm):
        if r >= rb:
            rd.fail(f"tracker.layer_radius_cm[{i}]", float(r), inside)
    if tracker.momentum_measurement_radius_cm >= rb:
        rd.fail("tracker.momentum_measurement_radius_cm", tracker.momentum_measurement_radius_cm, inside)
