"""e+e- -> gamma gamma (LO) with optional photon conversions: the X17 conversion background.

Physics (physics.md sections 4 and 5):

* photon polar angle theta* (CM, to the e- beam) from eq. (4.1) with the electron-mass
  regulator, azimuth uniform, the two photons back to back with E = sqrt(s)/2 each (with a
  beam-energy spread: the event's own sqrt(s') and CM -> lab transformation, see
  :func:`isrsim.processes._kin.event_beam`; the CM band of a lab window then covers the extreme
  beams, :func:`cms_band_with_spread`);
* acceptance either in the CM frame (``|cos theta*| < cos_theta_max``, exact: no rejection)
  or in the lab frame (``theta_lab_deg = [min, max]``; the Belle II boost makes it asymmetric
  in the CM, so it is mapped event by event: cos theta* of a randomly labelled photon is drawn
  in a CM band that provably covers the lab window, computed once from the images of the two
  lab cones, and events outside the lab window are rejected);
* conversions (``conversion = "natural"`` or ``"forced"``) through the detector's material
  layers with :func:`isrsim.detector.conversion.transport_photon` (eq. 5.1 with its energy
  dependence, Bethe-Heitler sharing 5.2, Urban angles 5.3); in forced mode one of the two
  photons (chosen uniformly) is converted in ``conversion_layers`` and the event weight is
  multiplied by 2 W (W = probability to convert there), which makes rare conversions cheap;
* generator-level preselection (``m_pca_max``, default 60 MeV): only events with a conversion
  pair whose mass computed from the perigee momenta (exact helices in the detector field,
  :func:`isrsim.detector.conversion.pair_mass_at_pca`, physics.md 5.4) is below the cut are
  kept.

Bookkeeping: every proposal is one trial. Its weight w is the acceptance indicator times the
forced-conversion factor times the preselection indicator, and sigma_prop_nb * sum_w / n_trials
is the exact cross section inside all cuts, with its MC error. Weighted mode writes *every*
trial as an event (weight ``w * sigma_prop_nb``, possibly 0), so n_trials = n and the sample is
normalised by the number of events as the process contract requires. Unweighted mode writes
only accepted trials: a trial is accepted with probability w/w_max, with
w_max = 1 without forced conversions and, with forced conversions, the geometric bound
2 sum_j f_j (1 - exp(-(7/9) t_j,max)) (t_j,max: thickness of layer j along the most oblique
ray from the origin that still hits it); trials above it (impossible for vertices at the
origin) are counted in ``n_overweight``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import M_E
from ..detector.conversion import (
    material_arrays,
    pair_mass_at_pca,
    resolve_layers,
    transport_photon,
)
from ..events import TruthChunk
from ..exceptions import ConfigError
from ..physics.conversion import SEVEN_NINTHS, sample_pair
from ..physics.diphoton import beta_electron, sample_cos_theta, sigma_cos_range_nb
from ._kin import SPREAD_TRUNCATION, apply_matrix, event_beam
from .base import Process, SampleStats, check_number

__all__ = ["CONVERSION_MODES", "DiPhoton", "cms_band_for_lab_window", "cms_band_with_spread"]

#: Values of the ``conversion`` parameter.
CONVERSION_MODES = ("none", "natural", "forced")
_MODE_CODE = {"none": 0, "natural": 1, "forced": 2}


def __dir__() -> list[str]:
    return __all__


def _cms_cos_of_lab_directions(lab_to_cms: np.ndarray, theta: float, n_phi: int) -> np.ndarray:
    phi = np.linspace(0.0, 2.0 * np.pi, n_phi, endpoint=False)
    st, ct = math.sin(theta), math.cos(theta)
    p = np.stack([st * np.cos(phi), st * np.sin(phi), np.full_like(phi, ct), np.ones_like(phi)])
    q = lab_to_cms @ p
    return q[2] / q[3]


def cms_band_for_lab_window(beam: Beam, theta_min: float, theta_max: float, *,
                            n_phi: int = 7200, margin: float = 1e-4) -> tuple[float, float]:
    """CM band [c_lo, c_hi] of cos theta* that contains every photon direction whose lab polar
    angle lies in [theta_min, theta_max] [rad].

    The lab band maps (for massless particles) onto a CM-sphere region bounded by the images of
    the two lab cones; cos theta* on it is extremal on that boundary or at a CM pole inside the
    region. The boundary is sampled at ``n_phi`` azimuths and widened by ``margin`` (far more
    than the sampling error, ~(2 pi/n_phi)^2).
    """
    inv = beam.lab_to_cms()
    c = np.concatenate([_cms_cos_of_lab_directions(inv, theta_min, n_phi),
                        _cms_cos_of_lab_directions(inv, theta_max, n_phi)])
    lo, hi = float(c.min()) - margin, float(c.max()) + margin
    lab = beam.cms_to_lab()
    for pole in (1.0, -1.0):
        q = lab @ np.array([0.0, 0.0, pole, 1.0])
        th = math.atan2(math.hypot(q[0], q[1]), q[2])
        if theta_min <= th <= theta_max:
            lo, hi = min(lo, pole), max(hi, pole)
    return max(lo, -1.0), min(hi, 1.0)


def cms_band_with_spread(beam: Beam, theta_min: float, theta_max: float) -> tuple[float, float]:
    """:func:`cms_band_for_lab_window` covering every beam the generator can draw: the union of
    the bands of the nominal beam and of the four corners ``E(1 +- 6 r)`` of the truncated
    energy spreads (:func:`isrsim.processes._kin.event_beam`). The band edges move linearly
    with the beam energies over so small a range (r <= 1 %), so the corners bound them."""
    lo, hi = cms_band_for_lab_window(beam, theta_min, theta_max)
    dm, dp = (SPREAD_TRUNCATION * r for r in beam.energy_spreads_rel)
    if dm + dp > 0.0:
        for fm in (1.0 - dm, 1.0 + dm):
            for fp in (1.0 - dp, 1.0 + dp):
                corner = dataclasses.replace(beam, e_minus_GeV=beam.e_minus_GeV * fm,
                                             e_plus_GeV=beam.e_plus_GeV * fp)
                a, b = cms_band_for_lab_window(corner, theta_min, theta_max)
                lo, hi = min(lo, a), max(hi, b)
    return lo, hi


@kernel
def _diphoton_block(rng, n, weighted, s, b_e, c_lo, c_hi, lab_nominal, bp, sigma_prop,
                    lab_cut, th_lo, th_hi, n_req,
                    mode, forced_mask, bz, m_pca_max, w_max,
                    r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction,
                    npart, pdg, p4, vtx, parent, weight,
                    ex_c, ex_n, ex_layer, ex_r, ex_x, ex_w, ex_m):
    """Fill n events; returns (n_trials, sum_w, sum_w2, n_overweight).

    Beam-energy spread (``bp[3] + bp[4] > 0``): every trial has its own beams
    (:func:`isrsim.processes._kin.event_beam`): photons of sqrt(s')/2 each in its CM frame and
    its own lab transformation, before the lab acceptance and the conversions."""
    spread = bp[3] + bp[4] > 0.0
    lab = lab_nominal.copy()  # the event's CM -> lab matrix (overwritten per event with a spread)
    nl = r_cm.shape[0]
    seg_s0 = np.empty(2 * nl + 2)
    seg_s1 = np.empty(2 * nl + 2)
    seg_t = np.empty(2 * nl + 2)
    seg_p = np.empty(2 * nl + 2)
    seg_layer = np.empty(2 * nl + 2, np.int64)
    eb = 0.5 * math.sqrt(s)
    ct_lo = math.cos(th_hi)
    ct_hi = math.cos(th_lo)
    g = np.empty((2, 4))
    pairs = np.empty((4, 4))
    cvtx = np.empty((2, 3))
    cpar = np.empty(2, np.int64)
    n_trials = 0
    sum_w = 0.0
    sum_w2 = 0.0
    n_over = 0
    i = 0
    while i < n:
        n_trials += 1
        if spread:
            eb = 0.5 * event_beam(rng, bp, 0.0, lab)
        c = sample_cos_theta(rng, b_e, c_lo, c_hi)
        phi = 2.0 * math.pi * rng.random()
        st = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
        kx, ky, kz = eb * st * math.cos(phi), eb * st * math.sin(phi), eb * c
        g[0, 0], g[0, 1], g[0, 2], g[0, 3] = apply_matrix(lab, kx, ky, kz, eb)
        g[1, 0], g[1, 1], g[1, 2], g[1, 3] = apply_matrix(lab, -kx, -ky, -kz, eb)
        w = 1.0
        if lab_cut:
            n_in = 0
            for j in range(2):
                pj = math.sqrt(g[j, 0] ** 2 + g[j, 1] ** 2 + g[j, 2] ** 2)
                cj = g[j, 2] / pj
                if ct_lo <= cj <= ct_hi:
                    n_in += 1
            if n_in < n_req:
                w = 0.0
        nconv = 0
        first_layer = -1
        first_r = -1.0
        first_x = -1.0
        conv_w = 1.0
        m_first = -1.0
        if w > 0.0 and mode > 0:
            if mode == 2:
                pick = 0 if rng.random() < 0.5 else 1
                j_first, j_last = pick, pick + 1
            else:
                j_first, j_last = 0, 2
            for j in range(j_first, j_last):
                layer, xc, yc, zc, wt = transport_photon(
                    rng, 0.0, 0.0, 0.0, g[j, 0], g[j, 1], g[j, 2], g[j, 3],
                    r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction,
                    mode == 2, forced_mask, seg_s0, seg_s1, seg_t, seg_layer, seg_p)
                if mode == 2:
                    conv_w = 2.0 * wt
                if layer < 0:
                    continue
                x, u, pxp, pyp, pzp, ep, pxm, pym, pzm, em = sample_pair(
                    rng, g[j, 0], g[j, 1], g[j, 2], g[j, 3])
                pairs[2 * nconv, 0], pairs[2 * nconv, 1], pairs[2 * nconv, 2] = pxp, pyp, pzp
                pairs[2 * nconv, 3] = ep
                pairs[2 * nconv + 1, 0], pairs[2 * nconv + 1, 1] = pxm, pym
                pairs[2 * nconv + 1, 2], pairs[2 * nconv + 1, 3] = pzm, em
                cvtx[nconv, 0], cvtx[nconv, 1], cvtx[nconv, 2] = xc, yc, zc
                cpar[nconv] = j
                mp = pair_mass_at_pca(xc, yc, zc, pxp, pyp, pzp, xc, yc, zc, pxm, pym, pzm, bz)
                if nconv == 0:
                    first_layer = layer
                    first_r = math.sqrt(xc * xc + yc * yc)
                    first_x = x
                    m_first = mp
                elif m_pca_max > 0.0 and m_first >= m_pca_max and mp < m_pca_max:
                    # the pair that passes the preselection is the one reported
                    first_layer = layer
                    first_r = math.sqrt(xc * xc + yc * yc)
                    first_x = x
                    m_first = mp
                nconv += 1
            w *= conv_w
            if m_pca_max > 0.0 and not (nconv > 0 and m_first < m_pca_max):
                w = 0.0
        sum_w += w
        sum_w2 += w * w
        if w > w_max:
            n_over += 1
        if not weighted and (w <= 0.0 or rng.random() * w_max >= w):
            continue
        # --- write the event ---
        for j in range(2):
            pdg[i, j] = 22
            for a in range(4):
                p4[i, j, a] = g[j, a]
            for a in range(3):
                vtx[i, j, a] = 0.0
            parent[i, j] = -1
        for q in range(nconv):
            for d in range(2):
                slot = 2 + 2 * q + d
                pdg[i, slot] = -11 if d == 0 else 11
                for a in range(4):
                    p4[i, slot, a] = pairs[2 * q + d, a]
                for a in range(3):
                    vtx[i, slot, a] = cvtx[q, a]
                parent[i, slot] = cpar[q]
        npart[i] = 2 + 2 * nconv
        weight[i] = w * sigma_prop if weighted else 1.0
        ex_c[i] = c
        ex_n[i] = nconv
        ex_layer[i] = first_layer
        ex_r[i] = first_r
        ex_x[i] = first_x
        ex_w[i] = conv_w
        ex_m[i] = m_first
        i += 1
    return n_trials, sum_w, sum_w2, n_over


class DiPhoton(Process):
    """e+e- -> gamma gamma at LO inside a CM or lab acceptance, with optional conversions.

    Parameters
    ----------
    beam : Beam
        Beams; generation in the CM frame, one transformation to the lab.
    cos_theta_max : float, optional
        CM acceptance |cos theta*| < cos_theta_max (0 < value <= 1). Default 0.9 when
        ``theta_lab_deg`` is not given. Mutually exclusive with ``theta_lab_deg``.
    theta_lab_deg : [min, max], optional
        Lab acceptance on the photon polar angle [deg], 0 <= min < max <= 180.
    photons_in_acceptance : {1, 2}
        With a lab acceptance: number of photons required inside it (default 2).
    conversion : {"none", "natural", "forced"}
        Photon conversions in the detector material (module docstring).
    conversion_layers : list of str or int, optional
        Forced mode: layers (names, case-insensitive name prefixes, or indices) in which the
        conversion is forced; default all layers.
    detector : str, path or DetectorModel
        Detector providing the material layers and the field (required with conversions).
    m_pca_max : float or None
        Preselection: keep only events with a conversion pair of M_ee at the PCA below this
        value [GeV] (default 0.060; None or 0 disables). Only used with conversions.
    """

    name = "diphoton"
    k = 6
    extra_fields = ("cos_theta_cms", "conv_n", "conv_layer", "conv_r_cm", "conv_x", "conv_weight",
                    "m_pca")

    def __init__(self, beam: Beam, *, cos_theta_max: Any = None, theta_lab_deg: Any = None,
                 photons_in_acceptance: Any = 2, conversion: str = "none",
                 conversion_layers: Any = None, detector: Any = None, m_pca_max: Any = 0.060,
                 **unknown: Any) -> None:
        super().__init__(beam)
        if unknown:
            msg = (f"{self.name}: unknown parameter(s) {sorted(unknown)}; allowed cos_theta_max, "
                   "theta_lab_deg, photons_in_acceptance, conversion, conversion_layers, detector, "
                   "m_pca_max")
            raise ConfigError(msg)
        s = beam.s
        self._b_e = beta_electron(s)
        # --- acceptance ---
        if theta_lab_deg is not None and cos_theta_max is not None:
            msg = "cos_theta_max and theta_lab_deg are mutually exclusive: give one acceptance"
            raise ConfigError(msg)
        self.photons_in_acceptance = int(check_number(
            "photons_in_acceptance", photons_in_acceptance, lo=1, hi=2, allowed="1 or 2"))
        if photons_in_acceptance not in (1, 2):
            msg = f"photons_in_acceptance = {photons_in_acceptance!r} is invalid: allowed 1 or 2"
            raise ConfigError(msg)
        if theta_lab_deg is None:
            self.cos_theta_max = check_number("cos_theta_max", 0.9 if cos_theta_max is None
                                              else cos_theta_max, lo=0.0, hi=1.0, lo_open=True)
            self.theta_lab_deg = None
            self._c_lo, self._c_hi = -self.cos_theta_max, self.cos_theta_max
            self._th = (0.0, math.pi)
        else:
            try:
                t1, t2 = (float(v) for v in theta_lab_deg)
            except (TypeError, ValueError):
                t1 = t2 = float("nan")
            if not (math.isfinite(t1) and math.isfinite(t2) and 0.0 <= t1 < t2 <= 180.0):
                msg = (f"theta_lab_deg = {theta_lab_deg!r} is invalid: allowed two numbers "
                       "0 <= min < max <= 180 (degrees)")
                raise ConfigError(msg)
            self.cos_theta_max = None
            self.theta_lab_deg = (t1, t2)
            self._th = (math.radians(t1), math.radians(t2))
            lo, hi = cms_band_with_spread(beam, *self._th)
            if self.photons_in_acceptance == 2:
                self._c_lo, self._c_hi = max(lo, -hi), min(hi, -lo)
            else:
                self._c_lo, self._c_hi = min(lo, -hi), max(hi, -lo)
            if self._c_hi <= self._c_lo:
                msg = (f"theta_lab_deg = {list(self.theta_lab_deg)} is invalid: no back-to-back "
                       "photon pair fits inside it with this beam")
                raise ConfigError(msg)
        self.sigma_prop_nb = sigma_cos_range_nb(s, self._c_lo, self._c_hi)
        self._lab = np.ascontiguousarray(beam.cms_to_lab())
        # --- conversions ---
        if conversion not in CONVERSION_MODES:
            msg = f"conversion = {conversion!r} is unknown: allowed {', '.join(CONVERSION_MODES)}"
            raise ConfigError(msg)
        self.conversion = conversion
        self.conversion_layers = None if conversion_layers is None else (
            [conversion_layers] if isinstance(conversion_layers, (str, int)) else list(conversion_layers))
        self.detector = None
        self._detector_name = None
        if conversion != "none":
            self.detector = self._load_detector(detector)
            self._detector_name = getattr(self.detector, "name", str(detector))
            material = self.detector.material
            self._layers = material_arrays(material)
            self._forced_mask = resolve_layers(
                material, self.conversion_layers if conversion == "forced" else None)
            self._bz = check_number("detector.bz_T", self.detector.bz_T, lo=0.0, lo_open=True)
            if m_pca_max is None or m_pca_max == 0:
                self.m_pca_max = None
            else:
                self.m_pca_max = check_number("m_pca_max", m_pca_max, lo=2 * M_E, lo_open=True,
                                              allowed="None/0 (off) or a mass > 2 m_e [GeV]")
        else:
            if conversion_layers is not None:
                msg = "conversion_layers is set but conversion = 'none'"
                raise ConfigError(msg)
            # placeholders (one dummy layer) so that the kernel signature stays the same
            self._layers = tuple(np.ones(1) for _ in range(7))
            self._forced_mask = np.zeros(1, dtype=np.bool_)
            self._bz = 1.0
            self.m_pca_max = None
        self._w_max = self._weight_bound()

    @staticmethod
    def _load_detector(detector: Any) -> Any:
        if detector is None:
            msg = "detector is required when conversion != 'none' (a bundled name, a path or a DetectorModel)"
            raise ConfigError(msg)
        if hasattr(detector, "material") and hasattr(detector, "bz_T"):
            return detector
        from ..detector.model import load_detector  # noqa: PLC0415  (heavy; only when needed)

        return load_detector(detector)

    def _weight_bound(self) -> float:
        """w_max for unweighting (module docstring)."""
        if self.conversion != "forced":
            return 1.0
        r, dr, zmin, zmax, xx0, _, fphi = self._layers
        r_in = np.maximum(r - 0.5 * dr, 1e-12)
        zabs = np.maximum(np.abs(zmin), np.abs(zmax))
        # thickness along the most oblique ray from the origin that reaches the layer
        t_max = xx0 * np.hypot(r + 0.5 * dr, zabs) / r_in
        p = fphi * -np.expm1(-SEVEN_NINTHS * t_max)
        return float(2.0 * np.sum(p[self._forced_mask]))

    # -- public API ----------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int, *, weighted: bool = False
               ) -> tuple[TruthChunk, SampleStats]:
        """Generate exactly ``n`` events (lab frame, vertices at the origin; conversion pairs at
        their conversion points). Unweighted: accepted events only, rejected trials are counted
        in the stats. Weighted: one event per trial, rejected trials with weight 0."""
        if not isinstance(rng, np.random.Generator):
            msg = f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
            raise ConfigError(msg)
        n = int(check_number("n", n, lo=0))
        out = TruthChunk.empty(n, self.k, self.extra_fields)
        ex = out.extra
        res = _diphoton_block(
            rng, n, bool(weighted), self.beam.s, self._b_e, self._c_lo, self._c_hi, self._lab,
            self.beam.kernel_params(), self.sigma_prop_nb, self.theta_lab_deg is not None,
            self._th[0], self._th[1],
            self.photons_in_acceptance, _MODE_CODE[self.conversion], self._forced_mask, self._bz,
            self.m_pca_max or 0.0, self._w_max, *self._layers,
            out.npart, out.pdg, out.p4, out.vtx, out.parent, out.weight,
            ex["cos_theta_cms"], ex["conv_n"], ex["conv_layer"], ex["conv_r_cm"], ex["conv_x"],
            ex["conv_weight"], ex["m_pca"],
        )
        stats = SampleStats(int(res[0]), float(res[1]), float(res[2]), int(res[3]), self.sigma_prop_nb)
        return out, stats

    @property
    def cms_band(self) -> tuple[float, float]:
        """The CM band of cos theta* (one labelled photon) that the sampler draws from."""
        return self._c_lo, self._c_hi

    def config(self) -> dict[str, Any]:
        return {
            "cos_theta_max": self.cos_theta_max,
            "theta_lab_deg": None if self.theta_lab_deg is None else list(self.theta_lab_deg),
            "photons_in_acceptance": self.photons_in_acceptance,
            "conversion": self.conversion,
            "conversion_layers": self.conversion_layers,
            "detector": self._detector_name,
            "m_pca_max": self.m_pca_max,
        }
