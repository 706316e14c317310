"""Dark-photon signal e+e- -> gamma A', A' -> l+l- (l = e, mu), with displaced decay vertices.

Physics (CM frame, +z along the e- beam; physics.md sections 6.1-6.3, BESIII 2017
arXiv:1705.04265 eqs. 1-3):

* production: tree level, the ISR formula with a narrow resonance, physics.md eq. (6.1). The
  photon polar angle at x0 = 1 - m^2/s follows the electron-mass regulated eq. (1.6)
  (:func:`isrsim.processes._kin.sample_photon_cos`), restricted to the :class:`PhotonCut`
  intervals; azimuth uniform. The A' recoils with E = (s + m^2)/(2 sqrt(s)).
* rate inside the photon cut: ``sigma_aprime_gamma_nb(m, eps, sqrt_s, cos_theta_range)`` of
  :mod:`isrsim.physics.darkphoton` (summed over the cut's intervals) times BR(A' -> decay);
  for ``decay="ll"`` BR(ee) + BR(mumu).
* line shape (``lineshape="bw"``, default): relativistic Breit-Wigner with fixed width in
  s' = m'^2, rho(s') ∝ 1/((s' - m^2)^2 + m^2 Gamma^2), Gamma = the physical total width
  (:func:`isrsim.physics.darkphoton.gamma_total`, physics.md eq. 6.3), truncated to
  |m' - m| < ``bw_window`` Gamma (and to the kinematic limits) and normalised to unit
  probability inside the window (the rate stays the narrow-width sigma x BR; the truncated
  Cauchy tails, a fraction ~2/(pi bw_window), are not generated). s' is drawn exactly by the
  inverse CDF s' = m^2 + m Gamma tan(u), u uniform; the production rate at the sampled m'
  enters as the weight w = sigma(m')/sigma_max <= 1 (sigma(m') ∝ W_LO(s, x') A(x'), x' =
  1 - m'^2/s, eq. 1.2 times the angular fraction of eq. 1.6), i.e. dsigma/ds' ∝ W(s, x') rho(s')
  as in the ISR factorisation (physics.md 1.1, 6.1). ``lineshape="delta"``: m' = m, w = 1.
* decay: the A' is polarised like the ISR gamma* (physics.md 6.1 last paragraph); the l-
  direction in the A' rest frame is sampled from the exact LO matrix element with final-state
  mass terms (:func:`isrsim.processes._kin.sample_gamma_star_decay`, spin 1, physics.md 1.5)
  at the sampled mass m'. For ``decay="ll"`` the channel is chosen per event with probability
  Gamma_ll(m')/(Gamma_ee(m') + Gamma_mumu(m')) (eq. 6.3 mass factors; mu mu only above 2 m_mu).
* decay vertex: lab-frame distance l = (beta gamma)_lab c tau E, E ~ Exp(1), with
  (beta gamma)_lab = |p_lab|/m' and c tau = hbar c/Gamma_tot (physics.md 6.3) or the
  ``ctau_cm`` override, along the A' lab flight direction from the production vertex (the
  origin; the runner later shifts every vertex by the primary vertex, which keeps the decay
  vertex on the flight line).

Truth per event (lab frame): 0 = A' (pdg 1023, parent -1, vertex at the origin), 1 = photon,
2 = l-, 3 = l+ (parent 0, vertex = decay vertex). Event-level extras: ``x_cms`` (x' of the
photon), ``m_true`` (m'), ``cos_gamma_cms``, ``cos_star`` (z component of the l- direction in
the A' rest frame, CM axes), ``decay_length_cm`` (lab), ``ctau_cm``, ``betagamma_lab``.

Bookkeeping (:class:`~isrsim.processes.base.SampleStats`): proposal integral sigma_prop_nb =
sigma_max x BR, where sigma_max bounds the production cross section over the line-shape window;
each proposal is one trial with weight w; sigma_prop_nb sum_w/n_trials estimates the cross
section inside the photon cut (BW-averaged), with its MC error. Unweighted events are accepted
with probability w (efficiency ~ 1 - 1e-6); weighted events carry w sigma_prop_nb.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import ALPHA, M_E, M_MU, PDG_APRIME, PDG_E, PDG_GAMMA, PDG_MU
from ..events import TruthChunk
from ..exceptions import ConfigError
from ..physics import darkphoton as dp
from ..physics.fsr import decay_with_fsr
from ..physics.radiator import angular_fraction, h_primitive, w_lo
from ._kin import apply_matrix, event_beam, sample_gamma_star_decay, sample_photon_cos
from .base import Process, SampleStats, check_fsr, check_number
from .isr import X_MIN, PhotonCut

__all__ = ["DECAYS", "LINESHAPES", "DarkPhoton"]

#: Allowed values of ``decay`` -> kernel code (0 = e+e-, 1 = mu+mu-, 2 = both by BR).
DECAYS = {"ee": 0, "mumu": 1, "ll": 2}
#: Allowed values of ``lineshape``.
LINESHAPES = ("bw", "delta")
#: Safety factor on the production-rate bound over the line-shape window (unweighting).
_BOUND_MARGIN = 1.0 + 1e-6
#: Largest accepted c tau override [cm] (1 km: far beyond any detector).
_CTAU_MAX_CM = 1e5


@kernel
def _shape(x, acc0, acc1):
    """Production-rate shape sigma(m') ∝ W_LO(s, x') A(x') up to x'-independent factors.

    W_LO ∝ (2 - 2x + x^2)/x (physics.md eq. 1.2) and the angular fraction of eq. (1.6) is linear
    in k(x) = x^2/(2(x^2 - 2x + 2)): its primitive is h(c) = h0(c) + k(x) c (1 - a/D(c))
    (physics.md 1.4), so A(x) ∝ acc0 + k(x) acc1 with per-cut constants (:meth:`DarkPhoton._prepare`).
    """
    k = x * x / (2.0 * (x * x - 2.0 * x + 2.0))
    return (2.0 - 2.0 * x + x * x) / x * (acc0 + k * acc1)


@kernel
def _shape_grid(s, m_nodes, acc0, acc1):
    out = np.empty(m_nodes.shape[0])
    for i in range(m_nodes.shape[0]):
        out[i] = _shape(1.0 - m_nodes[i] * m_nodes[i] / s, acc0, acc1)
    return out


@kernel
def _mass_factor(m, m_l):
    """(1 + 2 m_l^2/m^2) sqrt(1 - 4 m_l^2/m^2): Gamma_ll/(alpha eps^2 m/3), eq. (6.3); 0 below 2 m_l."""
    r = m_l * m_l / (m * m)
    if 4.0 * r >= 1.0:
        return 0.0
    return (1.0 + 2.0 * r) * math.sqrt(1.0 - 4.0 * r)


@kernel
def _darkphoton_block(rng, n, weighted, s, m0, gam, use_bw, u_lo, u_hi, shape_max,
                      acc0, acc1, y_lo, y_hi, b_e, decay_code, ctau, sigma_prop, lab_nominal, bp,
                      npart, pdg, p4, vtx, parent, weight,
                      x_out, m_out, cg_out, cs_out, l_out, ct_out, bg_out, fsr, fsr_x_min, xf_out):
    """Fill n events; returns (n_trials, sum_w, sum_w2, n_overweight).

    With ``fsr`` the A' decay radiates (:func:`isrsim.physics.fsr.emit_fsr`): a photon above
    ``fsr_x_min`` goes to slot 4 (parent 0, at the decay vertex), its fraction to ``xf_out``.

    Beam-energy spread (``bp[3] + bp[4] > 0``): as in :func:`isrsim.processes.isr._isr_block`, the
    line shape is sampled at the nominal s and the kinematics (photon, A' and its decay, lab
    transformation, hence the decay length) use the event's own beams, ``x' = 1 - m'^2/s'``.
    """
    sqrt_s0 = math.sqrt(s)
    spread = bp[3] + bp[4] > 0.0
    lab = lab_nominal.copy()  # the event's CM -> lab matrix (overwritten per event with a spread)
    w_scale = 1.0 / math.sqrt(1.0 - X_MIN)
    n_trials = 0
    sum_w = 0.0
    sum_w2 = 0.0
    n_over = 0
    i = 0
    while i < n:
        # --- A' mass: truncated relativistic BW in s' (exact inverse CDF) ---
        if use_bw:
            u = u_lo + (u_hi - u_lo) * rng.random()
            m = math.sqrt(m0 * m0 + m0 * gam * math.tan(u))
            x = 1.0 - m * m / s
            w = _shape(x, acc0, acc1) / shape_max
        else:
            m = m0
            x = 1.0 - m * m / s
            w = 1.0
        n_trials += 1
        sum_w += w
        sum_w2 += w * w
        if w > 1.0:
            n_over += 1
        if not weighted and rng.random() >= w:
            continue
        # --- decay channel ---
        if decay_code == 0:
            m_f, pdg_neg = M_E, PDG_E
        elif decay_code == 1:
            m_f, pdg_neg = M_MU, PDG_MU
        else:
            fe = _mass_factor(m, M_E)
            fm = _mass_factor(m, M_MU)
            if rng.random() * (fe + fm) < fm:
                m_f, pdg_neg = M_MU, PDG_MU
            else:
                m_f, pdg_neg = M_E, PDG_E
        # --- the event's beams, then the photon (CM), eq. (6.1) with the regulator (1.6) ---
        sqrt_s = sqrt_s0
        if spread:
            sqrt_s = event_beam(rng, bp, m * w_scale, lab)
            x = 1.0 - m * m / (sqrt_s * sqrt_s)
        ebeam = 0.5 * sqrt_s
        eg = x * ebeam
        c = sample_photon_cos(rng, sqrt_s * sqrt_s, x, y_lo, y_hi, b_e)
        phi = 2.0 * math.pi * rng.random()
        st = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
        kx, ky, kz = eg * st * math.cos(phi), eg * st * math.sin(phi), eg * c
        # --- A' (CM) and its decay l- in the A' rest frame (physics.md 1.5) ---
        q0 = sqrt_s - eg
        nx, ny, nz = sample_gamma_star_decay(rng, ebeam, kx, ky, kz, m, m_f, 1)
        bx, by, bz = -kx / q0, -ky / q0, -kz / q0
        xf, ax, ay, az, ae, gx, gy, gz, ge = decay_with_fsr(rng, fsr, fsr_x_min, m, m_f, 1,
                                                           nx, ny, nz, bx, by, bz)
        if fsr:
            xf_out[i] = xf
        # --- to the lab; l+ = A' - l- [- FSR photon] keeps the A' 4-momentum exact to rounding ---
        apx, apy, apz, ape = apply_matrix(lab, -kx, -ky, -kz, q0)
        lx, ly, lz, le = apply_matrix(lab, ax, ay, az, ae)
        p4[i, 0, 0], p4[i, 0, 1], p4[i, 0, 2], p4[i, 0, 3] = apx, apy, apz, ape
        p4[i, 1, 0], p4[i, 1, 1], p4[i, 1, 2], p4[i, 1, 3] = apply_matrix(lab, kx, ky, kz, eg)
        p4[i, 2, 0], p4[i, 2, 1], p4[i, 2, 2], p4[i, 2, 3] = lx, ly, lz, le
        n_i = 4
        if xf > 0.0:
            gx, gy, gz, ge = apply_matrix(lab, gx, gy, gz, ge)
            p4[i, 4, 0], p4[i, 4, 1], p4[i, 4, 2], p4[i, 4, 3] = gx, gy, gz, ge
            pdg[i, 4] = PDG_GAMMA
            n_i = 5
        p4[i, 3, 0], p4[i, 3, 1], p4[i, 3, 2], p4[i, 3, 3] = (apx - lx - gx, apy - ly - gy,
                                                              apz - lz - gz, ape - le - ge)
        # --- decay vertex: Exp(beta gamma c tau) along the lab flight direction (6.3) ---
        p_lab = math.sqrt(apx * apx + apy * apy + apz * apz)
        bg = p_lab / m
        ell = bg * ctau * rng.exponential()
        f = ell / p_lab
        for j in range(2, n_i):
            vtx[i, j, 0] = f * apx
            vtx[i, j, 1] = f * apy
            vtx[i, j, 2] = f * apz
            parent[i, j] = 0
        vtx[i, 0, 0] = 0.0
        vtx[i, 0, 1] = 0.0
        vtx[i, 0, 2] = 0.0
        vtx[i, 1, 0] = 0.0
        vtx[i, 1, 1] = 0.0
        vtx[i, 1, 2] = 0.0
        parent[i, 0] = -1
        parent[i, 1] = -1
        npart[i] = n_i
        pdg[i, 0] = PDG_APRIME
        pdg[i, 1] = PDG_GAMMA
        pdg[i, 2] = pdg_neg
        pdg[i, 3] = -pdg_neg
        weight[i] = w * sigma_prop if weighted else 1.0
        x_out[i] = x
        m_out[i] = m
        cg_out[i] = c
        cs_out[i] = nz
        l_out[i] = ell
        ct_out[i] = ctau
        bg_out[i] = bg
        i += 1
    return n_trials, sum_w, sum_w2, n_over


class DarkPhoton(Process):
    """e+e- -> gamma A', A' -> e+e- / mu+mu-, with a Breit-Wigner line shape and displaced decays.

    Parameters
    ----------
    beam
        Beams (any energies and crossing angle); generation in the CM frame, transformed once
        with ``beam.cms_to_lab()`` (with an energy spread: the event's own beams, see
        ``_darkphoton_block``).
    mass
        A' mass m [GeV]: 2 m_l < m < min(10.5, sqrt(s (1 - 1e-4))) GeV, with m_l = m_e for
        ``decay`` "ee" and "ll", m_mu for "mumu" (physics.md 6.3 validity range).
    epsilon
        Kinetic mixing, 1e-12 <= epsilon < 1 (:data:`isrsim.physics.darkphoton.EPSILON_MIN`).
    decay
        "ee", "mumu" or "ll" (both, chosen per event by branching ratio; mu mu only above 2 m_mu).
    photon_cut
        :class:`~isrsim.processes.isr.PhotonCut` or its dict form (CM polar angle of the photon).
    ctau_cm
        Optional override of the proper decay length c tau [cm] (0 <= ctau_cm <= 1e5; 0 = prompt).
        Default: hbar c/Gamma_tot (physics.md 6.3). The line-shape width is always the physical one.
    lineshape
        "bw" (relativistic Breit-Wigner, physical width, default) or "delta" (m' = m).
    bw_window
        Half-width of the Breit-Wigner window in units of Gamma_tot (default 10; 0 < N <= 1e6).
    fsr, fsr_x_min
        Final-state radiation in the A' decay (:mod:`isrsim.physics.fsr`, default off): one photon
        (slot 4, parent 0, at the decay vertex) with ``x_fsr = 2 E/m`` in the A' frame above
        ``fsr_x_min`` (default 1e-4).

    Notes
    -----
    Cross section inside the photon cut: physics.md eq. (6.1) times BR(decay), averaged over the
    line shape; :meth:`narrow_width_sigma_nb` gives the narrow-width value. Sources:
    physics.md 6.1-6.3, arXiv:1705.04265 eqs. (1)-(3).
    """

    name = "darkphoton"
    k = 4
    extra_fields = ("x_cms", "m_true", "cos_gamma_cms", "cos_star", "decay_length_cm", "ctau_cm",
                    "betagamma_lab")

    def __init__(self, beam: Beam, *, mass: Any = None, epsilon: Any = None, decay: str = "ll",
                 photon_cut: Any = None, ctau_cm: Any = None, lineshape: str = "bw",
                 bw_window: Any = 10.0, fsr: bool = False, fsr_x_min: float = 1e-4,
                 **unknown: Any) -> None:
        super().__init__(beam)
        if unknown:
            msg = (f"darkphoton: unknown parameter(s) {sorted(unknown)}; allowed mass, epsilon, "
                   "decay, photon_cut, ctau_cm, lineshape, bw_window, fsr, fsr_x_min")
            raise ConfigError(msg)
        self.fsr, self.fsr_x_min = check_fsr(fsr, fsr_x_min)
        if fsr:  # the FSR photon (slot 4, daughter of the A') and the radiated fraction
            self.k = 5
            self.extra_fields = (*type(self).extra_fields, "x_fsr")
        if decay not in DECAYS:
            msg = f"decay = {decay!r} is unknown: allowed {', '.join(DECAYS)}"
            raise ConfigError(msg)
        self.decay = str(decay)
        s = beam.s
        m_thr = 2.0 * (M_MU if decay == "mumu" else M_E)
        m_kin = math.sqrt(s * (1.0 - X_MIN))
        m_hi = min(dp.M_MAX, m_kin)
        lep = "m_mu" if decay == "mumu" else "m_e"
        upper = (f"sqrt(s (1 - 1e-4)) = {m_kin:.6g} GeV at sqrt(s) = {beam.sqrt_s:.6g} GeV"
                 if m_kin < dp.M_MAX else f"{dp.M_MAX:g} GeV (validity of isrsim.physics.darkphoton)")
        allowed = f"2 {lep} = {m_thr:.6g} GeV < mass < {upper} for decay = {decay!r}"
        self.mass = check_number("mass", mass, lo=m_thr, hi=m_hi, lo_open=True, hi_open=True,
                                 allowed=allowed)
        self.epsilon = check_number("epsilon", epsilon, lo=dp.EPSILON_MIN, hi=1.0, hi_open=True,
                                    allowed=dp.EPSILON_ALLOWED)
        if lineshape not in LINESHAPES:
            msg = f"lineshape = {lineshape!r} is unknown: allowed {', '.join(LINESHAPES)}"
            raise ConfigError(msg)
        self.lineshape = str(lineshape)
        self.bw_window = check_number("bw_window", bw_window, lo=0.0, hi=1e6, lo_open=True,
                                      allowed="0 < bw_window <= 1e6 (units of Gamma_tot)")
        self.ctau_override_cm = None if ctau_cm is None else check_number(
            "ctau_cm", ctau_cm, lo=0.0, hi=_CTAU_MAX_CM, allowed=f"0 <= ctau_cm <= {_CTAU_MAX_CM:g} cm")
        self.photon_cut = PhotonCut.from_config(photon_cut)
        self._prepare(m_thr, m_kin)

    # -- set-up ---------------------------------------------------------------------------
    def _prepare(self, m_thr: float, m_kin: float) -> None:
        beam, m, eps = self.beam, self.mass, self.epsilon
        s = beam.s
        #: physical total width [GeV] and proper decay length [cm] (physics.md 6.3)
        self.gamma_total = float(dp.gamma_total(m, eps))
        self.ctau_physical_cm = float(dp.ctau_cm(m, eps))
        self.ctau = self.ctau_physical_cm if self.ctau_override_cm is None else self.ctau_override_cm
        br = dp.branching_ratios(m)
        self.branching_ratio = float({"ee": br["ee"], "mumu": br["mumu"],
                                      "ll": br["ee"] + br["mumu"]}[self.decay])
        if not self.branching_ratio > 0.0:
            msg = f"mass = {m!r} GeV gives BR(A' -> {self.decay}) = 0: allowed mass > {m_thr:.6g} GeV"
            raise ConfigError(msg)
        self._c_lo, self._c_hi = self.photon_cut.arrays()
        self._b_e = math.sqrt(1.0 - 4.0 * M_E * M_E / s)
        self._y_lo = np.arctanh(self._b_e * self._c_lo)
        self._y_hi = np.arctanh(self._b_e * self._c_hi)
        self._lab = np.ascontiguousarray(beam.cms_to_lab())
        self._sigma0_nb = sum(dp.sigma_aprime_gamma_nb(m, eps, beam.sqrt_s, cos_theta_range=(a, b))
                              for a, b in self.photon_cut.intervals)
        # A(x) = sum over intervals of [h(c1) - h(c2)]/h(-1), h = h0 + k(x) g (physics.md 1.4)
        a = 4.0 * M_E * M_E / s
        b2 = 1.0 - a

        def g(c: float) -> float:
            return c * (1.0 - a / (a + b2 * (1.0 - c) * (1.0 + c)))

        self._acc0 = float(sum(h_primitive(s, 0.0, c1) - h_primitive(s, 0.0, c2)
                               for c1, c2 in self.photon_cut.intervals))
        self._acc1 = float(sum(g(c1) - g(c2) for c1, c2 in self.photon_cut.intervals))
        # consistency with the generic radiator kernels at the nominal mass (1e-9 relative)
        x0 = 1.0 - m * m / s
        generic = w_lo(s, x0) * sum(angular_fraction(s, x0, c1, c2) for c1, c2 in self.photon_cut.intervals)
        fast = ALPHA / math.pi * _shape(x0, self._acc0, self._acc1)  # = W_LO A exactly
        if not abs(fast - generic) <= 1e-9 * abs(generic):
            msg = f"darkphoton: internal inconsistency of the photon-acceptance shape ({fast} vs {generic})"
            raise RuntimeError(msg)
        shape0 = float(_shape(x0, self._acc0, self._acc1))
        # line-shape window in m' and its image in u = atan((s' - m^2)/(m Gamma))
        use_bw = self.lineshape == "bw" and self.gamma_total > 0.0
        if use_bw:
            half = self.bw_window * self.gamma_total
            lo = max(m - half, m_thr * (1.0 + 1e-12))
            hi = min(m + half, m_kin)
            mg = m * self.gamma_total
            self._u_lo = math.atan((lo * lo - m * m) / mg)
            self._u_hi = math.atan((hi * hi - m * m) / mg)
            u = np.linspace(self._u_lo, self._u_hi, 513)
            nodes = np.sqrt(m * m + mg * np.tan(u))
            shape_max = float(_shape_grid(s, np.concatenate([nodes, [lo, hi, m]]),
                                          self._acc0, self._acc1).max()) * _BOUND_MARGIN
        else:
            self._u_lo = self._u_hi = 0.0
            shape_max = shape0
        self._use_bw = use_bw
        self.mass_window = (float(np.sqrt(m * m + m * self.gamma_total * math.tan(self._u_lo))),
                            float(np.sqrt(m * m + m * self.gamma_total * math.tan(self._u_hi)))
                            ) if use_bw else (m, m)
        self._shape_max = shape_max
        #: proposal integral [nb]: the production cross section bound times BR
        self.sigma_prop_nb = self._sigma0_nb * self.branching_ratio * shape_max / shape0

    # -- public API -------------------------------------------------------------------------
    def narrow_width_sigma_nb(self) -> float:
        """sigma(e+e- -> gamma A') x BR(decay) [nb] inside the photon cut at m' = m (eq. 6.1)."""
        return self._sigma0_nb * self.branching_ratio

    def sample(self, rng: np.random.Generator, n: int, *, weighted: bool = False
               ) -> tuple[TruthChunk, SampleStats]:
        """Generate exactly ``n`` events (lab frame, production vertex at the origin).

        Parameters
        ----------
        rng
            The random-number generator (the only source of randomness).
        n
            Number of events, >= 0.
        weighted
            False: unweighted (accept/reject, weight 1); True: every trial is an event with
            weight w sigma_prop_nb [nb].

        Returns
        -------
        (TruthChunk, SampleStats)
        """
        if not isinstance(rng, np.random.Generator):
            msg = f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
            raise ConfigError(msg)
        n = int(check_number("n", n, lo=0, hi=2**62))
        out = TruthChunk.empty(n, self.k, self.extra_fields)
        ex = out.extra
        res = _darkphoton_block(
            rng, n, bool(weighted), self.beam.s, self.mass, self.gamma_total, self._use_bw,
            self._u_lo, self._u_hi, self._shape_max, self._acc0, self._acc1, self._y_lo,
            self._y_hi, self._b_e, DECAYS[self.decay], self.ctau, self.sigma_prop_nb, self._lab,
            self.beam.kernel_params(), out.npart, out.pdg, out.p4, out.vtx, out.parent, out.weight,
            ex["x_cms"], ex["m_true"], ex["cos_gamma_cms"], ex["cos_star"],
            ex["decay_length_cm"], ex["ctau_cm"], ex["betagamma_lab"],
            self.fsr, self.fsr_x_min, ex["x_fsr"] if self.fsr else np.empty(0),
        )
        stats = SampleStats(int(res[0]), float(res[1]), float(res[2]), int(res[3]), self.sigma_prop_nb)
        return out, stats

    def config(self) -> dict[str, Any]:
        return {
            "mass": self.mass,
            "epsilon": self.epsilon,
            "decay": self.decay,
            "photon_cut": self.photon_cut.to_dict(),
            "ctau_cm": self.ctau_override_cm,
            "lineshape": self.lineshape,
            "bw_window": self.bw_window,
            "fsr": self.fsr,
            "fsr_x_min": self.fsr_x_min,
        }
