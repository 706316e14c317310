"""Beams: energies, crossing angle, the CM 4-vector and the CMS -> lab transformation.

Convention (Belle II / basf2 and BEPCII): z is the solenoid axis, x horizontal (the
crossing plane). The e- beam travels along (sin a, 0, cos a) and the e+ beam along
(sin(pi - a), 0, cos(pi - a)) = (sin a, 0, -cos a), with a the crossing *half* angle, so
both beams have p_x > 0 and the e+e- system moves along +x (and along +z when the beams
are asymmetric). Generators work in the CM frame ("cms") with +z along the e- beam;
:meth:`Beam.cms_to_lab` is the single 4x4 Lorentz transformation (rotation, then boost)
that takes CM-frame 4-vectors (px, py, pz, E) to the lab.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .constants import M_E
from .exceptions import ConfigError

__all__ = ["MAX_SPREAD_REL", "Beam", "max_sqrt_s_spread_GeV"]

#: Largest relative energy spread sigma_E/E of a beam (1 %; BEPCII 5.2e-4, SuperKEKB 5.9e-4 / 7.3e-4,
#: sources in detectors/besiii.toml and belle2.toml): the generators truncate the per-event energy
#: draw at 6 sigma, which keeps both beams above 0.94 E.
MAX_SPREAD_REL = 0.01


def max_sqrt_s_spread_GeV(sqrt_s: float, share_e_minus: float = 0.5) -> float:
    """Largest allowed Gaussian spread of sqrt(s) [GeV]: :data:`MAX_SPREAD_REL` for the beam with
    the larger relative spread (``share_e_minus`` as :attr:`Beam.spread_share_e_minus`)."""
    return MAX_SPREAD_REL * sqrt_s / (2.0 * math.sqrt(max(share_e_minus, 1.0 - share_e_minus)))




def _finite(name: str, value: float, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        msg = f"{name} = {value!r} must be a number"
        raise ConfigError(msg) from None
    except OverflowError:  # an integer beyond the float range
        v = math.inf
    if not math.isfinite(v):
        msg = f"{name} = {value!r} must be finite"
        raise ConfigError(msg)
    if lo is not None and (v < lo or (lo_open and v <= lo)):
        rng = f"> {lo}" if lo_open else f">= {lo}"
        msg = f"{name} = {value!r} out of range: must be {rng}" + (f" and <= {hi}" if hi is not None else "")
        raise ConfigError(msg)
    if hi is not None and v > hi:
        msg = f"{name} = {value!r} out of range: must be <= {hi}"
        raise ConfigError(msg)
    return v


@dataclass(frozen=True)
class Beam:
    """Colliding e-/e+ beams.

    Parameters
    ----------
    e_minus_GeV, e_plus_GeV
        Beam energies in the lab [GeV].
    crossing_half_angle_rad
        Angle of each beam to the z axis in the x-z plane [rad] (BEPCII 0.011, SuperKEKB 0.0415).
    sqrt_s_spread_GeV
        Gaussian spread sigma_W of sqrt(s) = W [GeV]. Since ``W^2 ~ 4 E- E+``,
        ``dW/W = (dE-/E- + dE+/E+)/2``: ``(sigma_W/W)^2 = (r-^2 + r+^2)/4`` with ``r = sigma_E/E``
        of each beam (:attr:`energy_spreads_rel`); each r is at most :data:`MAX_SPREAD_REL`.
        The generators draw both beam energies per event (:meth:`kernel_params`), and the
        kinematic fits take the resulting covariance of the beam 4-vector
        (:meth:`p4_covariance_lab`).
    spread_share_e_minus
        Share of the e- beam in that variance, ``r-^2/(r-^2 + r+^2)``, in [0, 1]. The default 0.5
        splits it with equal relative spreads, ``r = sqrt(2) sigma_W/W``; beams with known
        spreads of their own are set with :meth:`with_energy_spreads` (detector files:
        ``beam.e_minus_spread_GeV`` and ``beam.e_plus_spread_GeV``).
    sigma_xyz_cm
        Gaussian sizes of the luminous region in the lab [cm]; the primary vertex is drawn
        from it. Zeros put every event at the origin.
    """

    e_minus_GeV: float
    e_plus_GeV: float
    crossing_half_angle_rad: float = 0.0
    sqrt_s_spread_GeV: float = 0.0
    sigma_xyz_cm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spread_share_e_minus: float = 0.5
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _finite("beam.e_minus_GeV", self.e_minus_GeV, lo=2 * M_E, lo_open=True)
        _finite("beam.e_plus_GeV", self.e_plus_GeV, lo=2 * M_E, lo_open=True)
        _finite("beam.crossing_half_angle_rad", self.crossing_half_angle_rad, lo=0.0, hi=0.5)
        _finite("beam.sqrt_s_spread_GeV", self.sqrt_s_spread_GeV, lo=0.0)
        _finite("beam.spread_share_e_minus", self.spread_share_e_minus, lo=0.0, hi=1.0)
        w_max = max_sqrt_s_spread_GeV(self.sqrt_s, self.spread_share_e_minus)
        # 1e-12: a beam at exactly 1 % (with_energy_spreads) must not fail on rounding
        if self.sqrt_s_spread_GeV > w_max * (1.0 + 1e-12):
            msg = (f"beam.sqrt_s_spread_GeV = {self.sqrt_s_spread_GeV!r} out of range: must be "
                   f">= 0 and <= {w_max:.6g} (a relative beam-energy spread of at most "
                   f"{MAX_SPREAD_REL:g} at sqrt(s) = {self.sqrt_s:.6g} GeV, e- share of the "
                   f"variance {self.spread_share_e_minus:.6g})")
            raise ConfigError(msg)
        if len(self.sigma_xyz_cm) != 3:
            msg = f"luminous_region sigma_xyz_cm = {self.sigma_xyz_cm!r} must have 3 entries"
            raise ConfigError(msg)
        for name, v in zip("xyz", self.sigma_xyz_cm):
            _finite(f"luminous_region.sigma_{name}_cm", v, lo=0.0)
        object.__setattr__(self, "_matrix", self._build_matrix())

    @classmethod
    def symmetric(cls, sqrt_s: float, **kwargs: float) -> Beam:
        """Equal-energy beams whose CM energy is ``sqrt_s``: ``sqrt(s)/2`` each head on; with a
        crossing half-angle ``a`` each beam has ``E^2 = (s/4 - m_e^2 sin^2 a) / cos^2 a`` (the
        summed transverse momentum ``2 p sin a`` enters s), so that :attr:`sqrt_s` is the value
        asked for (at 41.5 mrad and 10.58 GeV, 9.1 MeV more than sqrt(s)/2)."""
        rs = _finite("sqrt_s", sqrt_s, lo=2 * M_E, lo_open=True)
        a = _finite("beam.crossing_half_angle_rad", kwargs.get("crossing_half_angle_rad", 0.0),
                    lo=0.0, hi=0.5)
        e = math.sqrt((rs * rs / 4 - M_E**2 * math.sin(a) ** 2) / math.cos(a) ** 2)
        return cls(e_minus_GeV=e, e_plus_GeV=e, **kwargs)

    def with_energy_spreads(self, sigma_e_minus_GeV: float, sigma_e_plus_GeV: float) -> Beam:
        """These beams with their own energy spreads ``sigma_E`` [GeV] (what accelerator
        parameter lists quote): ``sigma_W/W = sqrt(r-^2 + r+^2)/2`` with ``r = sigma_E/E`` of
        each beam, and the e- beam's share ``r-^2/(r-^2 + r+^2)`` of that variance (0.5 when both
        are 0). ConfigError when a relative spread exceeds :data:`MAX_SPREAD_REL`."""
        rm, rp = sigma_e_minus_GeV / self.e_minus_GeV, sigma_e_plus_GeV / self.e_plus_GeV
        v = rm * rm + rp * rp
        return dataclasses.replace(self, sqrt_s_spread_GeV=0.5 * self.sqrt_s * math.sqrt(v),
                                   spread_share_e_minus=rm * rm / v if v > 0.0 else 0.5)

    def metadata(self) -> dict:
        """The beams as written to a file's metadata (JSON types; :meth:`from_metadata` reads
        it back; ``sqrt_s_GeV`` and ``p4_total_lab`` are derived, for readers)."""
        return {"e_minus_GeV": self.e_minus_GeV, "e_plus_GeV": self.e_plus_GeV,
                "crossing_half_angle_rad": self.crossing_half_angle_rad,
                "sqrt_s_GeV": self.sqrt_s, "p4_total_lab": [float(v) for v in self.p4_total_lab()],
                "sqrt_s_spread_GeV": self.sqrt_s_spread_GeV,
                "spread_share_e_minus": self.spread_share_e_minus,
                "sigma_xyz_cm": [float(v) for v in self.sigma_xyz_cm]}

    @classmethod
    def from_metadata(cls, b: dict) -> Beam:
        """The beam of :meth:`metadata` (files written before the per-beam spreads have no
        ``spread_share_e_minus``: equal relative spreads). KeyError, TypeError, ValueError or
        ConfigError on a malformed dict."""
        return cls(e_minus_GeV=float(b["e_minus_GeV"]), e_plus_GeV=float(b["e_plus_GeV"]),
                   crossing_half_angle_rad=float(b.get("crossing_half_angle_rad", 0.0)),
                   sqrt_s_spread_GeV=float(b.get("sqrt_s_spread_GeV", 0.0)),
                   sigma_xyz_cm=tuple(float(v) for v in b.get("sigma_xyz_cm", (0.0, 0.0, 0.0))),
                   spread_share_e_minus=float(b.get("spread_share_e_minus", 0.5)))

    # -- 4-vectors --------------------------------------------------------------------
    def p4_e_minus(self) -> np.ndarray:
        """Lab 4-momentum (px, py, pz, E) of the e- beam (electron mass kept)."""
        a = self.crossing_half_angle_rad
        p = math.sqrt(self.e_minus_GeV**2 - M_E**2)
        return np.array([p * math.sin(a), 0.0, p * math.cos(a), self.e_minus_GeV])

    def p4_e_plus(self) -> np.ndarray:
        """Lab 4-momentum (px, py, pz, E) of the e+ beam."""
        a = self.crossing_half_angle_rad
        p = math.sqrt(self.e_plus_GeV**2 - M_E**2)
        return np.array([p * math.sin(a), 0.0, -p * math.cos(a), self.e_plus_GeV])

    def p4_total_lab(self) -> np.ndarray:
        """Lab 4-momentum of the e+e- system: the beam 4-vector of kinematic fits."""
        return self.p4_e_minus() + self.p4_e_plus()

    @property
    def sqrt_s(self) -> float:
        """Nominal CM energy [GeV]."""
        p = self.p4_total_lab()
        return math.sqrt(p[3] ** 2 - p[0] ** 2 - p[1] ** 2 - p[2] ** 2)

    @property
    def s(self) -> float:
        return self.sqrt_s**2

    @property
    def energy_spreads_rel(self) -> tuple[float, float]:
        """Relative energy spreads ``(sigma_E/E of e-, of e+)``: ``2 (sigma_W/W) sqrt(share)``
        and ``2 (sigma_W/W) sqrt(1 - share)`` (both ``sqrt(2) sigma_W/W`` for the default
        share 0.5)."""
        r = 2.0 * self.sqrt_s_spread_GeV / self.sqrt_s
        return (r * math.sqrt(self.spread_share_e_minus),
                r * math.sqrt(1.0 - self.spread_share_e_minus))

    def p4_covariance_lab(self) -> np.ndarray:
        """4x4 covariance of the lab beam 4-vector (px, py, pz, E) from the energy spreads:
        ``sum_b sigma_b^2 u_b u_b^T`` with ``u_b = dp_b/dE_b = (E/p direction, 1)`` of beam b
        (the kinematic fits' beam term; zero without a spread)."""
        a = self.crossing_half_angle_rad
        cov = np.zeros((4, 4))
        for e, sign, r in zip((self.e_minus_GeV, self.e_plus_GeV), (1.0, -1.0),
                              self.energy_spreads_rel):
            de_dp = e / math.sqrt(e * e - M_E * M_E)
            u = np.array([de_dp * math.sin(a), 0.0, sign * de_dp * math.cos(a), 1.0])
            cov += (r * e) ** 2 * np.outer(u, u)
        return cov

    def kernel_params(self) -> np.ndarray:
        """``(E-, E+, a, r-, r+, sin a, cos a)`` (a the crossing half angle, r = sigma_E/E of
        each beam), float64[7]: what the generator kernels need to draw the beams of each event
        (:func:`isrsim.processes._kin.event_beam`)."""
        a = self.crossing_half_angle_rad
        r_minus, r_plus = self.energy_spreads_rel
        return np.array([self.e_minus_GeV, self.e_plus_GeV, a, r_minus, r_plus,
                         math.sin(a), math.cos(a)])

    @property
    def boost_beta(self) -> np.ndarray:
        """Velocity of the CM frame in the lab."""
        p = self.p4_total_lab()
        return p[:3] / p[3]

    @property
    def boost_betagamma(self) -> float:
        p = self.p4_total_lab()
        return float(np.linalg.norm(p[:3]) / self.sqrt_s)

    def cms_to_lab(self) -> np.ndarray:
        """4x4 matrix L with p_lab = L @ p_cms for 4-vectors (px, py, pz, E); the CM frame
        has +z along the e- beam and y along the lab y axis."""
        return self._matrix.copy()

    def lab_to_cms(self) -> np.ndarray:
        return np.linalg.inv(self._matrix)

    def _build_matrix(self) -> np.ndarray:
        P = self.p4_total_lab()
        beta = P[:3] / P[3]
        boost_to_cms = _boost_matrix(-beta)
        d = (boost_to_cms @ self.p4_e_minus())[:3]
        angle = math.atan2(d[0], d[2])  # rotation about y taking +z to d
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])
        return _boost_matrix(beta) @ rot


def _boost_matrix(beta: np.ndarray) -> np.ndarray:
    """Pure boost (4x4, on (px, py, pz, E)) by velocity ``beta``."""
    b2 = float(beta @ beta)
    out = np.eye(4)
    if b2 == 0.0:
        return out
    g = 1.0 / math.sqrt(1.0 - b2)
    out[:3, :3] += (g - 1.0) * np.outer(beta, beta) / b2
    out[:3, 3] = g * beta
    out[3, :3] = g * beta
    out[3, 3] = g
    return out
