"""ISR QED processes e+e- -> gamma* gamma_ISR -> X gamma, X = mu+mu-, e+e- (s-channel), pi+pi-,
and radiative Bhabha scattering e+e- -> e+e- gamma_ISR (s + t channel, collinear ISR).

Physics (all CM frame, physics.md sections 1-3):

* rate and mass spectrum: dsigma/dM = (2M/s) W(s, x) sigma_0(M^2) A(x), eq. (1.1), with the
  Kuraev-Fadin radiator eq. (1.3) (``radiator="kf"``, default) or the LO eq. (1.2) (``"lo"``),
  and A(x) the fraction of photons inside the photon-angle cut, from eq. (1.6);
* photon polar angle at fixed x: eq. (1.6) with electron-mass terms; azimuth uniform;
* gamma* -> X decay: exact LO ISR matrix element eq. (1.8), with final-state mass terms
  (see :func:`isrsim.processes._kin.sample_gamma_star_decay`);
* ``isr_bhabha`` (:class:`IsrBhabha`): the same photon, and a pair that scatters like Born
  Bhabha scattering at s' = M^2 (:func:`isrsim.processes._kin.sample_bhabha_decay`), i.e.
  dsigma/dM is that of ``isr_ee`` times :func:`isrsim.physics.born.bhabha_factor`.

Sampling (physics.md 1.6 recipe 1): dsigma/dM is tabulated once per process on a grid that is
dense in ln M, in M, in x^beta (the soft-photon end) and near threshold / the rho-omega region;
the proposal is the piecewise-constant majorant q (the larger end-point value in each bin, plus
0.05 %), so w = f/q <= 1 and unweighted events are obtained by accept/reject with unit bound at
efficiency sigma/sigma_prop (~99.9 %). Weighted events carry w sigma_prop. The cross section
inside the cuts and its MC error follow from the weights (:class:`SampleStats`).
All particles are then transformed once to the lab with ``beam.cms_to_lab()``, or, with a
beam-energy spread, with the transformation of the event's own beams (see ``_isr_block``);
``x_cms`` is then ``1 - M^2/s'`` of the event.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import M_E
from ..events import TruthChunk
from ..exceptions import ConfigError
from ..physics.born import (
    FINAL_STATES,
    FS_PIPI,
    bhabha_c_star,
    bhabha_factor,
    dsigma_dm_isr_nb,
    sigma_born_nb,
)
from ..physics.fsr import decay_with_fsr
from ..physics.radiator import RADIATORS, beta_isr, h_primitive, radiator
from ._kin import apply_matrix, event_beam, sample_bhabha_decay, sample_gamma_star_decay, sample_photon_cos
from .base import Process, SampleStats, check_fsr, check_number, check_range_pair

__all__ = ["BHABHA_THETA_GAMMA_MAX", "X_MIN", "IsrBhabha", "IsrEE", "IsrMuMu", "IsrPiPi", "IsrProcess",
           "PhotonCut"]

#: Smallest photon energy fraction generated (physics.md 1.6 item 5): M_max^2 <= s (1 - X_MIN).
X_MIN = 1e-4
#: Largest photon-angle cut (rad, to either beam) allowed for ``isr_bhabha``: its collinear
#: factorisation (photon along the beam, Born Bhabha scattering of the pair) holds for
#: theta_gamma << 1; a photon at large angle needs the full e+e- -> e+e- gamma matrix element.
BHABHA_THETA_GAMMA_MAX = 0.2


class PhotonCut:
    """Generator cut on the ISR photon polar angle in the CM frame (theta to the e- beam).

    ``mode="all"``: no cut; ``"untagged"``: photon within ``theta_max`` [rad] of either beam;
    ``"tagged"``: ``theta_min < theta < theta_max`` [rad]. Represented as disjoint intervals
    in c = cos(theta).
    """

    MODES = ("all", "untagged", "tagged")

    def __init__(self, mode: str = "all", theta_min: float | None = None,
                 theta_max: float | None = None) -> None:
        if mode not in self.MODES:
            msg = f"photon_cut.mode = {mode!r} is unknown: allowed {', '.join(self.MODES)}"
            raise ConfigError(msg)
        self.mode, self.theta_min, self.theta_max = mode, theta_min, theta_max
        if mode == "all":
            self.intervals = [(-1.0, 1.0)]
        elif mode == "untagged":
            t = check_number("photon_cut.theta_max", theta_max, lo=0.0, hi=math.pi / 2,
                             lo_open=True, hi_open=True, allowed="0 < theta_max < pi/2 rad")
            self.intervals = [(-1.0, -math.cos(t)), (math.cos(t), 1.0)]
        else:
            t1 = check_number("photon_cut.theta_min", theta_min, lo=0.0, hi=math.pi, hi_open=True,
                              allowed="0 <= theta_min < theta_max <= pi rad")
            t2 = check_number("photon_cut.theta_max", theta_max, lo=t1, hi=math.pi, lo_open=True,
                              allowed="0 <= theta_min < theta_max <= pi rad")
            self.intervals = [(math.cos(t2), math.cos(t1))]

    @classmethod
    def from_config(cls, cfg: Any) -> PhotonCut:
        if cfg is None or isinstance(cfg, PhotonCut):
            return cfg or cls()
        if isinstance(cfg, str):
            return cls(cfg)
        if not isinstance(cfg, dict):
            msg = f"photon_cut = {cfg!r} must be a table with mode/theta_min/theta_max"
            raise ConfigError(msg)
        unknown = set(cfg) - {"mode", "theta_min", "theta_max"}
        if unknown:
            msg = f"photon_cut has unknown keys {sorted(unknown)}: allowed mode, theta_min, theta_max"
            raise ConfigError(msg)
        return cls(cfg.get("mode", "all"), cfg.get("theta_min"), cfg.get("theta_max"))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([a for a, _ in self.intervals])
        hi = np.array([b for _, b in self.intervals])
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode}
        if self.theta_min is not None:
            d["theta_min"] = float(self.theta_min)
        if self.theta_max is not None:
            d["theta_max"] = float(self.theta_max)
        return d


@kernel
def _dsigma_dm(s, m, code, rad_code, c_lo, c_hi, bh_c):
    """dsigma/dM [nb/GeV] of the process: :func:`isrsim.physics.born.dsigma_dm_isr_nb`, times
    :func:`isrsim.physics.born.bhabha_factor` for radiative Bhabha (``bh_c > 0``)."""
    d = dsigma_dm_isr_nb(s, m, code, rad_code, c_lo, c_hi)
    if bh_c > 0.0 and d > 0.0:
        d *= bhabha_factor(1.0 - m * m / s, bh_c)
    return d


@kernel
def _tabulate(s, nodes, code, rad_code, c_lo, c_hi, bh_c):
    out = np.empty(nodes.shape[0])
    for i in range(nodes.shape[0]):
        out[i] = _dsigma_dm(s, nodes[i], code, rad_code, c_lo, c_hi, bh_c)
    return out


@kernel
def _dsigma_dm_fast(s, m, code, rad_code, acc0, acc1, bh_c):
    """dsigma_dm_isr_nb (physics.md eq. 1.1) with the photon acceptance in closed form.

    The primitive h of eq. (1.6) is h(c) = h0(c) + k(x) g(c) with k = x^2/(2(x^2 - 2x + 2))
    (radiator.h_primitive), so A(x) = acc0 + k(x) acc1 with per-interval constants computed
    once (:meth:`IsrProcess._prepare`), instead of 2 logs, 2 sqrt and 4 divisions per
    interval and event. Equal to ``dsigma_dm_isr_nb`` to 1e-9 relative (checked at every node
    in ``_prepare``; the generic path is used otherwise).
    """
    x = 1.0 - m * m / s
    if x <= 0.0 or x >= 1.0:
        return 0.0
    sig0 = sigma_born_nb(m * m, code)
    if sig0 == 0.0:
        return 0.0
    k = x * x / (2.0 * (x * x - 2.0 * x + 2.0))
    d = 2.0 * m / s * radiator(s, x, rad_code) * sig0 * (acc0 + k * acc1)
    if bh_c > 0.0:
        d *= bhabha_factor(x, bh_c)
    return d


@kernel
def _isr_block(rng, n, weighted, s, code, rad_code, m_f, spin, pdg_neg,
               c_lo, c_hi, y_lo, y_hi, b_e, edges, cdf, qdens, sigma_prop, lab_nominal, bp,
               npart, pdg, p4, weight, x_out, m_out, cg_out, cs_out,
               guide, acc0, acc1, fast, fsr, fsr_x_min, xf_out, bh_c):
    """Fill n events; returns (n_trials, sum_w, sum_w2, n_overweight).

    With ``fsr`` the gamma* decay radiates (:func:`isrsim.physics.fsr.emit_fsr`): a photon
    above ``fsr_x_min`` goes to slot 3 and its fraction to ``xf_out``.

    The mass bin is found with the guide table ``guide`` (Chen & Asau 1974: guide[g] is the bin
    holding g/len(guide)), then a short forward search: the same bin as
    ``searchsorted(cdf, u, "right") - 1`` in about 1-2 comparisons instead of log2(nbins).

    Beam-energy spread (``bp[3] + bp[4] > 0``, :func:`isrsim.processes._kin.event_beam`): the mass is
    drawn from the spectrum at the nominal s, then the event's own beams are drawn (with
    ``x' = 1 - M^2/s' >= X_MIN``) and the photon, the gamma* decay and the lab transformation
    use them: exact kinematics at the event's sqrt(s'), the spectrum's O(sigma_W/W) change
    with s neglected.

    Radiative Bhabha (``bh_c > 0``, :class:`IsrBhabha`): the pair's e- direction from
    :func:`isrsim.processes._kin.sample_bhabha_decay` with the cut ``bhabha_c_star(x, bh_c)``;
    ``cs_out`` is then its cosine to the Collins-Soper axis.
    """
    sqrt_s0 = math.sqrt(s)
    spread = bp[3] + bp[4] > 0.0
    lab = lab_nominal.copy()  # the event's CM -> lab matrix (overwritten per event with a spread)
    w_scale = 1.0 / math.sqrt(1.0 - X_MIN)
    nbins = qdens.shape[0]
    ng = guide.shape[0]
    n_trials = 0
    sum_w = 0.0
    sum_w2 = 0.0
    n_over = 0
    i = 0
    while i < n:
        # --- mass from the piecewise-constant majorant (inverse CDF, one uniform) ---
        u = rng.random()
        j = guide[int(u * ng)]
        while j < nbins - 1 and cdf[j + 1] <= u:
            j += 1
        frac = (u - cdf[j]) / (cdf[j + 1] - cdf[j])
        m = edges[j] + frac * (edges[j + 1] - edges[j])
        if fast:
            w = _dsigma_dm_fast(s, m, code, rad_code, acc0, acc1, bh_c) / qdens[j]
        else:
            w = _dsigma_dm(s, m, code, rad_code, c_lo, c_hi, bh_c) / qdens[j]
        n_trials += 1
        sum_w += w
        sum_w2 += w * w
        if w > 1.0:
            n_over += 1
        if not weighted and rng.random() >= w:
            continue
        # --- the event's beams, then the photon (CM) ---
        sqrt_s = sqrt_s0
        if spread:
            sqrt_s = event_beam(rng, bp, m * w_scale, lab)
        s_ev = sqrt_s * sqrt_s
        ebeam = 0.5 * sqrt_s
        x = 1.0 - m * m / s_ev
        eg = x * ebeam
        c = sample_photon_cos(rng, s_ev, x, y_lo, y_hi, b_e)
        phi = 2.0 * math.pi * rng.random()
        st = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
        kx, ky, kz = eg * st * math.cos(phi), eg * st * math.sin(phi), eg * c
        # --- gamma* -> f fbar ---
        if bh_c > 0.0:
            nx, ny, nz, cs = sample_bhabha_decay(rng, ebeam, kx, ky, kz, bhabha_c_star(x, bh_c))
        else:
            nx, ny, nz = sample_gamma_star_decay(rng, ebeam, kx, ky, kz, m, m_f, spin)
            cs = nz
        q0 = sqrt_s - eg
        bx, by, bz = -kx / q0, -ky / q0, -kz / q0
        xf, ax, ay, az, ae, gx, gy, gz, ge = decay_with_fsr(rng, fsr, fsr_x_min, m, m_f, spin,
                                                           nx, ny, nz, bx, by, bz)
        if fsr:
            xf_out[i] = xf
        # momentum conservation: the positive particle is Q - (negative); exact to rounding
        cx, cy, cz, ce = -kx - ax, -ky - ay, -kz - az, q0 - ae
        npart[i] = 3
        if xf > 0.0:  # ... minus the FSR photon
            cx, cy, cz, ce = cx - gx, cy - gy, cz - gz, ce - ge
            p4[i, 3, 0], p4[i, 3, 1], p4[i, 3, 2], p4[i, 3, 3] = apply_matrix(lab, gx, gy, gz, ge)
            pdg[i, 3] = 22
            npart[i] = 4
        # --- to the lab ---
        p4[i, 0, 0], p4[i, 0, 1], p4[i, 0, 2], p4[i, 0, 3] = apply_matrix(lab, ax, ay, az, ae)
        p4[i, 1, 0], p4[i, 1, 1], p4[i, 1, 2], p4[i, 1, 3] = apply_matrix(lab, cx, cy, cz, ce)
        p4[i, 2, 0], p4[i, 2, 1], p4[i, 2, 2], p4[i, 2, 3] = apply_matrix(lab, kx, ky, kz, eg)
        pdg[i, 0] = pdg_neg
        pdg[i, 1] = -pdg_neg
        pdg[i, 2] = 22
        weight[i] = w * sigma_prop if weighted else 1.0
        x_out[i] = x
        m_out[i] = m
        cg_out[i] = c
        cs_out[i] = cs
        i += 1
    return n_trials, sum_w, sum_w2, n_over


class IsrProcess(Process):
    """e+e- -> X gamma_ISR for X in {"mumu", "ee", "pipi"}.

    Parameters
    ----------
    beam
        Beams (any energies and crossing angle); generation in the CM frame, boosted once
        (with an energy spread: each event with its own beams, see ``_isr_block``).
    final_state
        "mumu", "ee" (s-channel radiative-return part only, physics.md 2.1) or "pipi".
    mass_range
        [M_min, M_max] of the X system [GeV]; 2 m_X < M_min < M_max <= sqrt(s (1 - X_MIN)).
    photon_cut
        :class:`PhotonCut` or its dict form (CM-frame polar-angle cut on the ISR photon).
    radiator
        "kf" (Kuraev-Fadin eq. 1.3, default) or "lo" (eq. 1.2).
    grid_points
        Number of tabulation nodes per sub-grid (default 2048; 4 sub-grids are merged).
    fsr
        Final-state radiation (:mod:`isrsim.physics.fsr`, default off): the X system radiates
        one photon (truth slot 3, ``parent = -1``) carrying the fraction ``x_fsr = 2 E/M`` of
        the gamma* energy in its rest frame; ``mass_range`` and ``m_true`` remain the gamma* mass.
    fsr_x_min
        Smallest ``x_fsr`` written as a photon (default 1e-4); softer emission is left with the
        pair (M_X shifts by less than ``fsr_x_min/2`` relative).
    """

    k = 3
    extra_fields = ("x_cms", "m_true", "cos_gamma_cms", "cos_star")
    final_state = ""
    _bh_c = 0.0  # CM lepton acceptance |cos| <= _bh_c of radiative Bhabha; 0: annihilation
    _extra_params: tuple[str, ...] = ()

    def __init__(self, beam: Beam, *, mass_range: Any = None, photon_cut: Any = None,
                 radiator: str = "kf", grid_points: int = 2048, fsr: bool = False,
                 fsr_x_min: float = 1e-4, **unknown: Any) -> None:
        super().__init__(beam)
        if unknown:
            msg = (f"{self.name}: unknown parameter(s) {sorted(unknown)}; allowed "
                   + ", ".join(("mass_range", "photon_cut", "radiator", "grid_points", "fsr",
                                "fsr_x_min", *self._extra_params)))
            raise ConfigError(msg)
        self.fsr, self.fsr_x_min = check_fsr(fsr, fsr_x_min)
        if fsr:  # one more particle slot and the radiated fraction per event
            self.k = 4
            self.extra_fields = (*type(self).extra_fields, "x_fsr")
        self.code, self.m_f, self.pdg_neg = FINAL_STATES[self.final_state]
        self.spin = 0 if self.code == FS_PIPI else 1
        s = beam.s
        m_hi = math.sqrt(s * (1.0 - X_MIN))
        if m_hi <= 2.0 * self.m_f:
            msg = (f"sqrt_s = {math.sqrt(s):.6g} GeV is below the {self.name} threshold: allowed "
                   f"sqrt_s > 2 m = {2.0 * self.m_f:.6g} GeV (with room for the ISR photon)")
            raise ConfigError(msg)
        if mass_range is None:
            msg = (f"process.mass_range is missing ({self.name}): allowed two numbers "
                   f"{2.0 * self.m_f:.6g} < min < max < {m_hi:.6g} GeV")
            raise ConfigError(msg)
        self.mass_range = check_range_pair("mass_range", mass_range, 2.0 * self.m_f, m_hi)
        if not isinstance(radiator, str) or radiator not in RADIATORS:
            msg = f"radiator = {radiator!r} is unknown: allowed {', '.join(RADIATORS)}"
            raise ConfigError(msg)
        self.radiator = radiator
        gp = check_number("grid_points", grid_points, lo=64, hi=1_000_000)
        if gp != int(gp):
            msg = f"grid_points = {grid_points!r} is invalid: allowed an integer 64..1000000"
            raise ConfigError(msg)
        self.grid_points = int(gp)
        self.photon_cut = PhotonCut.from_config(photon_cut)
        self._prepare()

    # -- tabulation ----------------------------------------------------------------------
    def _nodes(self) -> np.ndarray:
        s = self.beam.s
        m1, m2 = self.mass_range
        n = self.grid_points
        beta = beta_isr(s)
        x_lo, x_hi = 1.0 - m2 * m2 / s, 1.0 - m1 * m1 / s
        u = np.linspace(x_lo**beta, x_hi**beta, n)
        m_soft = np.sqrt(s * (1.0 - u ** (1.0 / beta)))
        thr = 2.0 * self.m_f
        m_thr = thr + np.geomspace(max(m1 - thr, 1e-9 * m1), m2 - thr, n)
        parts = [np.geomspace(m1, m2, n), np.linspace(m1, m2, n), m_soft, m_thr]
        if self.code == FS_PIPI:  # rho-omega interference: omega width 8.4 MeV
            lo, hi = max(m1, 0.70), min(m2, 0.87)
            if lo < hi:
                parts.append(np.linspace(lo, hi, n))
        nodes = np.unique(np.clip(np.concatenate(parts), m1, m2))
        nodes[0], nodes[-1] = m1, m2
        return nodes[np.concatenate([[True], np.diff(nodes) > 1e-12 * m2])]

    def _prepare(self) -> None:
        s = self.beam.s
        self._c_lo, self._c_hi = self.photon_cut.arrays()
        self._rad_code = RADIATORS[self.radiator]
        self._b_e = math.sqrt(1.0 - 4.0 * M_E * M_E / s)
        self._y_lo = np.arctanh(self._b_e * self._c_lo)
        self._y_hi = np.arctanh(self._b_e * self._c_hi)
        nodes = self._nodes()
        g = _tabulate(s, nodes, self.code, self._rad_code, self._c_lo, self._c_hi, self._bh_c)
        if not np.all(np.isfinite(g)) or g.max() <= 0.0:
            msg = (f"{self.name}: dsigma/dM vanishes in mass_range = {list(self.mass_range)} with "
                   f"photon_cut = {self.photon_cut.to_dict()}: widen the mass window or the photon "
                   "cut (an untagged theta_max whose cosine rounds to 1 leaves no solid angle)")
            raise ConfigError(msg)
        qdens = np.maximum(g[:-1], g[1:]) * 1.0005
        qdens = np.where(qdens > 0, qdens, 1e-300)
        integ = qdens * np.diff(nodes)
        self._edges = nodes
        self._qdens = qdens
        self.sigma_prop_nb = float(integ.sum())
        cdf = np.concatenate([[0.0], np.cumsum(integ)])
        self._cdf = cdf / cdf[-1]
        self._lab = np.ascontiguousarray(self.beam.cms_to_lab())
        # guide table for the bin search: guide[g] = bin containing u = g / n_guide
        n_bins = qdens.shape[0]
        n_guide = 2 * n_bins
        g_u = np.arange(n_guide) / n_guide
        self._guide = np.clip(np.searchsorted(self._cdf, g_u, side="right") - 1, 0, n_bins - 1)
        # photon acceptance A(x) = acc0 + k(x) acc1 (see _dsigma_dm_fast): h0 = h(x=0), since
        # k(0) = 0, and g = 2 (h(x=1) - h(x=0)), since k(1) = 1/2; /_log_term via A(x=0)
        h0 = np.array([[h_primitive(s, 0.0, c) for c in (lo, hi)]
                       for lo, hi in zip(self._c_lo, self._c_hi)])
        h1 = np.array([[h_primitive(s, 1.0, c) for c in (lo, hi)]
                       for lo, hi in zip(self._c_lo, self._c_hi)])
        log_term = h_primitive(s, 0.0, -1.0) - h_primitive(s, 0.0, 1.0)
        self._acc0 = float(np.sum(h0[:, 0] - h0[:, 1]) / log_term)
        self._acc1 = float(np.sum(2.0 * ((h1[:, 0] - h0[:, 0]) - (h1[:, 1] - h0[:, 1]))) / log_term)
        fast = np.array([_dsigma_dm_fast(s, m, self.code, self._rad_code, self._acc0, self._acc1,
                                         self._bh_c)
                         for m in nodes[1:-1]])
        # agreement to ~1e-10: the direct form loses ~1e-11 to cancellations in h near |c| = 1
        ok = np.all(np.abs(fast - g[1:-1]) <= 1e-9 * np.abs(g[1:-1]) + 1e-300)
        self._fast = bool(ok)

    # -- public API ----------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int, *, weighted: bool = False
               ) -> tuple[TruthChunk, SampleStats]:
        """Generate exactly ``n`` events (lab frame, vertices at the origin)."""
        out = TruthChunk.empty(n, self.k, self.extra_fields)
        ex = out.extra
        res = _isr_block(
            rng, n, weighted, self.beam.s, self.code, self._rad_code, self.m_f, self.spin,
            self.pdg_neg, self._c_lo, self._c_hi, self._y_lo, self._y_hi, self._b_e,
            self._edges, self._cdf, self._qdens, self.sigma_prop_nb, self._lab,
            self.beam.kernel_params(), out.npart, out.pdg, out.p4, out.weight,
            ex["x_cms"], ex["m_true"], ex["cos_gamma_cms"], ex["cos_star"],
            self._guide, self._acc0, self._acc1, self._fast,
            self.fsr, self.fsr_x_min, ex["x_fsr"] if self.fsr else np.empty(0), self._bh_c,
        )
        stats = SampleStats(int(res[0]), float(res[1]), float(res[2]), int(res[3]), self.sigma_prop_nb)
        return out, stats

    def dsigma_dm_nb(self, m: np.ndarray) -> np.ndarray:
        """The exact dsigma/dM [nb/GeV] inside the photon cut that the sampler follows."""
        m = np.atleast_1d(np.asarray(m, dtype=float))
        return _tabulate(self.beam.s, m, self.code, self._rad_code, self._c_lo, self._c_hi, self._bh_c)

    def config(self) -> dict[str, Any]:
        return {
            "final_state": self.final_state,
            "mass_range": list(self.mass_range),
            "photon_cut": self.photon_cut.to_dict(),
            "radiator": self.radiator,
            "grid_points": self.grid_points,
            "fsr": self.fsr,
            "fsr_x_min": self.fsr_x_min,
        }


class IsrMuMu(IsrProcess):
    name = "isr_mumu"
    final_state = "mumu"


class IsrEE(IsrProcess):
    name = "isr_ee"
    final_state = "ee"


class IsrPiPi(IsrProcess):
    name = "isr_pipi"
    final_state = "pipi"


class IsrBhabha(IsrProcess):
    """Radiative Bhabha scattering e+e- -> e+e- gamma_ISR with an untagged photon: s- and
    t-channel photon exchange and their interference, in the collinear-ISR (leading-log
    structure-function) approximation.

    The photon (energy fraction x, angle) is drawn as for ``isr_ee``; the pair scatters like
    massless Born Bhabha scattering at s' = M^2 about the Collins-Soper axis
    (:func:`isrsim.processes._kin.sample_bhabha_decay`). The t-channel pole needs an angular
    cut: the e- is generated with ``|cos theta*| <= c*(x)``, the value for which both leptons lie
    inside ``|cos theta_CM| <= cos_theta_max`` when the photon is along the beam
    (:func:`isrsim.physics.born.bhabha_c_star`). So dsigma/dM is that of ``isr_ee`` times
    :func:`isrsim.physics.born.bhabha_factor` (zero below ``M = sqrt(s (1 - C)/(1 + C))``, where
    the pair is too fast for both leptons to reach the acceptance). ``isr_ee`` inside the same
    cut is the annihilation part: their ratio is the "Bhabha correction" of BESIII 2017
    (arXiv:1705.04265: 2-8 % after its selection; ``validation/bhabha``).

    Parameters (besides those of :class:`IsrProcess`)
    ------------------------------------------------
    cos_theta_max
        CM-frame lepton acceptance of the generator cut, ``0 < C < 1`` (default 0.95); choose it
        above the detector's acceptance in the CM frame (the selected yield must not depend on
        it: ``tests/test_bhabha.py`` checks BESIII's).
    photon_cut
        Must be ``untagged`` with ``theta_max <= 0.2`` rad (:data:`BHABHA_THETA_GAMMA_MAX`;
        default 0.15 rad): the approximation is that of a photon along the beam.

    Not included: photons at large angle, final-state radiation off the t-channel (``fsr``
    radiates from the pair as for ``isr_ee``), Z exchange, vacuum polarisation, NLO terms.
    """

    name = "isr_bhabha"
    final_state = "ee"
    _extra_params = ("cos_theta_max",)

    def __init__(self, beam: Beam, *, cos_theta_max: float = 0.95, photon_cut: Any = None,
                 **params: Any) -> None:
        self._bh_c = check_number("cos_theta_max", cos_theta_max, lo=0.0, hi=1.0, lo_open=True,
                                  hi_open=True, allowed="0 < cos_theta_max < 1")
        if photon_cut is None:
            photon_cut = {"mode": "untagged", "theta_max": 0.15}
        pc = PhotonCut.from_config(photon_cut)
        if pc.mode != "untagged" or pc.theta_max > BHABHA_THETA_GAMMA_MAX:
            msg = (f"isr_bhabha: photon_cut = {pc.to_dict()} is not allowed: the collinear-ISR "
                   f"approximation needs mode = 'untagged' with theta_max <= "
                   f"{BHABHA_THETA_GAMMA_MAX} rad")
            raise ConfigError(msg)
        c = self._bh_c
        m_min = math.sqrt(beam.s * (1.0 - c) / (1.0 + c))
        mr = params.get("mass_range")
        if isinstance(mr, (list, tuple)) and len(mr) == 2 and isinstance(mr[1], (int, float)) \
                and mr[1] <= m_min:
            msg = (f"isr_bhabha: mass_range = {list(mr)} lies below M = {m_min:.6g} GeV, where "
                   f"no pair has both leptons inside |cos theta_CM| <= cos_theta_max = {c}; allowed "
                   f"max > {m_min:.6g} GeV (or a larger cos_theta_max)")
            raise ConfigError(msg)
        super().__init__(beam, photon_cut=pc, **params)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "cos_theta_max": self._bh_c}
