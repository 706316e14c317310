"""A plain vectorised NumPy implementation of the isr_mumu sampler: the benchmark baseline.

Same physics and the same algorithm as :mod:`isrsim.processes.isr` (physics.md 1.1-1.8):

* mass from the same tabulated piecewise-constant majorant (the process's own ``_edges``,
  ``_cdf``, ``_qdens``: tabulation is set-up, not timed), inverse CDF with ``np.searchsorted``;
* weight f/q with the Kuraev-Fadin radiator (eq. 1.3), the Born mu+mu- cross section with the
  muon mass (eq. 2.1) and the photon-angle acceptance of eq. (1.6) (closed form from its
  primitive), accept/reject with a second uniform;
* photon polar angle: y uniform, c = tanh(y)/b, accept/reject with the ratio of eq. (1.6) to
  the proposal; azimuth uniform;
* gamma* -> mu+ mu- direction by accept/reject on the exact LO ISR matrix element with the
  muon-mass term (``_kin.sample_gamma_star_decay``), uniform trial directions;
* beam-energy spread as in the kernels: per event E(1 + r xi) for each beam (xi standard normal
  truncated at 6, redrawn while sqrt(s') < M / sqrt(1 - X_MIN)); the photon, the decay and
  the CM -> lab transformation use the event's own beams (per-event 4x4 matrices, vectorised);
* boost to the CM frame, then the CM -> lab transformation.

Every accept/reject step works on whole arrays (over-draw, keep the accepted ones, redraw the
rest), as a careful NumPy programmer would write it. Written independently of the kernels (only
the tables and the beam matrix are taken from the process object), so it also cross-checks the
kernel's distributions in :mod:`benchmarks.run` (mean M, mean cos theta*).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from isrsim.constants import ALPHA, HBARC2_GEV2_NB, K_CURV, M_E, M_MU, ZETA2, ZETA3
from isrsim.events import RecoChunk, TruthChunk
from isrsim.processes._kin import SPREAD_TRUNCATION
from isrsim.processes.isr import X_MIN

__all__ = ["NumpyDetector", "NumpyIsrMuMu", "check_equivalence", "numpy_chunk_to_table",
           "perigee_from_state_np"]


class NumpyIsrMuMu:
    """Vectorised isr_mumu (photon cut "all", KF radiator) using the tables of ``proc``."""

    def __init__(self, proc) -> None:
        if proc.radiator != "kf" or proc.final_state != "mumu":
            msg = "the NumPy baseline implements isr_mumu with the kf radiator"
            raise ValueError(msg)
        self.s = proc.beam.s
        self.m_f = proc.m_f
        self.edges, self.cdf, self.qdens = proc._edges, proc._cdf, proc._qdens
        self.lab = proc._lab
        self.beam = proc.beam
        self.c_lo, self.c_hi = proc._c_lo, proc._c_hi
        s = self.s
        self.a = 4.0 * M_E * M_E / s
        self.b = math.sqrt(1.0 - self.a)
        big_l = math.log(s / (M_E * M_E))
        self.beta = 2.0 * ALPHA / math.pi * (big_l - 1.0)
        ap = ALPHA / math.pi
        d2 = ((9.0 / 8.0 - 2.0 * ZETA2) * big_l**2 - (45.0 / 16.0 - 5.5 * ZETA2 - 3.0 * ZETA3) * big_l
              - 1.2 * ZETA2**2 - 4.5 * ZETA3 - 6.0 * ZETA2 * math.log(2.0) + 0.375 * ZETA2 + 57.0 / 12.0)
        self.delta = 1.0 + ap * (1.5 * big_l + 2.0 * ZETA2 - 2.0) + ap * ap * d2
        self.log_term = math.log((1.0 + self.b) ** 2 / self.a) - 1.0
        self.y_lo = np.arctanh(self.b * self.c_lo)
        self.y_hi = np.arctanh(self.b * self.c_hi)

    # -- pieces ---------------------------------------------------------------------------
    def _h(self, x, c):
        a, b = self.a, self.b
        d = a + b * b * (1.0 - c) * (1.0 + c)
        k = x * x / (2.0 * (x * x - 2.0 * x + 2.0))
        return (0.5 * self.log_term + 0.5 * a * c / d - 0.5 * np.log((1.0 + b * c) / (1.0 - b * c))
                + k * c * (1.0 - a / d))

    def dsigma_dm(self, m):
        s = self.s
        x = 1.0 - m * m / s
        lx, l1x = np.log(x), np.log1p(-x)
        beta = self.beta
        w = (self.delta * beta * np.exp((beta - 1.0) * lx) - 0.5 * beta * (2.0 - x)
             + beta * beta / 8.0 * ((2.0 - x) * (3.0 * l1x - 4.0 * lx) - 4.0 * l1x / x - 6.0 + x))
        sp = m * m
        bf = np.sqrt(1.0 - 4.0 * self.m_f**2 / sp)
        sig0 = 4.0 * math.pi * ALPHA**2 / (3.0 * sp) * bf * (3.0 - bf * bf) * 0.5 * HBARC2_GEV2_NB
        acc = np.zeros_like(x)
        for lo, hi in zip(self.c_lo, self.c_hi):
            acc += (self._h(x, lo) - self._h(x, hi)) / self.log_term
        return 2.0 * m / s * w * sig0 * acc

    def _masses(self, rng, n):
        out = np.empty(n)
        k = 0
        while k < n:
            want = int((n - k) * 1.002) + 16
            u = rng.random(want)
            j = np.clip(np.searchsorted(self.cdf, u, side="right") - 1, 0, self.qdens.size - 1)
            frac = (u - self.cdf[j]) / (self.cdf[j + 1] - self.cdf[j])
            m = self.edges[j] + frac * (self.edges[j + 1] - self.edges[j])
            w = self.dsigma_dm(m) / self.qdens[j]
            m = m[rng.random(want) < w]
            take = min(m.size, n - k)
            out[k:k + take] = m[:take]
            k += take
        return out

    def _photon_cos(self, rng, x):
        n = x.size
        out = np.empty(n)
        todo = np.arange(n)
        a, b = self.a, self.b
        width = self.y_hi - self.y_lo
        cum = np.concatenate([[0.0], np.cumsum(width)])
        while todo.size:
            xs = x[todo]
            r = rng.random(todo.size) * cum[-1]
            i = np.clip(np.searchsorted(cum, r, side="right") - 1, 0, width.size - 1)
            y = self.y_lo[i] + (r - cum[i])
            c = np.tanh(y) / b
            d = a + b * b * (1.0 - c) * (1.0 + c)
            q = (1.0 + b * b * c * c) / (d * d)
            f0 = 2.0 - 2.0 * xs + xs * xs
            ratio = (f0 * (b / d - 0.5 * a * q) - 0.5 * xs * xs * (1.0 - a * q)) / (f0 * b / d)
            ok = rng.random(todo.size) < ratio
            out[todo[ok]] = c[ok]
            todo = todo[~ok]
        return out

    @staticmethod
    def _boost(b, p, e):
        """Boost (p, e) [n,3], [n] by velocities b [n,3]."""
        b2 = np.einsum("ij,ij->i", b, b)
        g = 1.0 / np.sqrt(1.0 - b2)
        bp = np.einsum("ij,ij->i", b, p)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(b2 > 0, (g - 1.0) * bp / b2, 0.0) + g * e
        return p + f[:, None] * b, g * (e + bp)

    def _decay(self, rng, k, m, sqrt_s):
        """Directions n [n,3] of the mu- in the gamma* frame (CM axes), eq. (1.8) with mass."""
        n = m.size
        ebeam = 0.5 * sqrt_s
        eg = np.linalg.norm(k, axis=1)
        bvec = -k / (2.0 * ebeam - eg)[:, None]
        zero = np.zeros(n)
        pm, em = self._boost(-bvec, np.stack([zero, zero, zero + ebeam], 1), zero + ebeam)
        pp, ep = self._boost(-bvec, np.stack([zero, zero, zero - ebeam], 1), zero + ebeam)
        e2 = ep * ep + em * em
        pp2, pm2 = (pp * pp).sum(1), (pm * pm).sum(1)
        fmean = e2 + (pp2 + pm2) / 3.0
        beta2 = np.clip(1.0 - 4.0 * self.m_f**2 / (m * m), 0.0, None)
        bound = (1.0 - beta2) * 1.5 * fmean + beta2 * (e2 + pp2 + pm2)
        out = np.empty((n, 3))
        todo = np.arange(n)
        while todo.size:
            ct = 2.0 * rng.random(todo.size) - 1.0
            phi = 2.0 * math.pi * rng.random(todo.size)
            st = np.sqrt(1.0 - ct * ct)
            nv = np.stack([st * np.cos(phi), st * np.sin(phi), ct], 1)
            f = e2[todo] + np.einsum("ij,ij->i", pp[todo], nv) ** 2 + np.einsum("ij,ij->i", pm[todo], nv) ** 2
            fm = (1.0 - beta2[todo]) * 1.5 * fmean[todo] + beta2[todo] * f
            ok = rng.random(todo.size) * bound[todo] < fm
            out[todo[ok]] = nv[ok]
            todo = todo[~ok]
        return out

    # -- public ---------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n unweighted events: lab-frame p4 array [n, 3, 4] (mu-, mu+, gamma)."""
        return self._sample(rng, n)[0]

    def sample_truth(self, rng: np.random.Generator, n: int) -> TruthChunk:
        """n unweighted events as a TruthChunk with the same content as ``IsrMuMu.sample``
        (pdg 13, -13, 22; vertices at the origin; gen fields x_cms, m_true, cos_gamma_cms,
        cos_star)."""
        p4, m, x, c, cos_star = self._sample(rng, n)
        return TruthChunk(
            npart=np.full(n, 3, np.int16),
            pdg=np.broadcast_to(np.array([13, -13, 22], np.int32), (n, 3)).copy(),
            p4=p4, vtx=np.zeros((n, 3, 3)), parent=np.full((n, 3), -1, np.int16),
            weight=np.ones(n),
            extra={"x_cms": x, "m_true": m, "cos_gamma_cms": c, "cos_star": cos_star},
        )

    def _beams(self, rng, m):
        """Per-event beam energies [n] each and sqrt(s') (module docstring); nominal without a
        spread."""
        b = self.beam
        n = m.size
        r_minus, r_plus = b.energy_spreads_rel
        if r_minus + r_plus == 0.0:
            return np.full(n, b.e_minus_GeV), np.full(n, b.e_plus_GeV), np.full(n, math.sqrt(self.s))
        em, ep, w = np.empty(n), np.empty(n), np.empty(n)
        ca, sa = math.cos(b.crossing_half_angle_rad), math.sin(b.crossing_half_angle_rad)
        w_min2 = m * m / (1.0 - X_MIN)
        todo = np.arange(n)
        while todo.size:
            xi = rng.standard_normal((todo.size, 2))
            e1 = b.e_minus_GeV * (1.0 + r_minus * xi[:, 0])
            e2 = b.e_plus_GeV * (1.0 + r_plus * xi[:, 1])
            p1, p2 = np.sqrt(e1 * e1 - M_E * M_E), np.sqrt(e2 * e2 - M_E * M_E)
            w2 = (e1 + e2) ** 2 - ((p1 + p2) * sa) ** 2 - ((p1 - p2) * ca) ** 2
            ok = (w2 >= w_min2[todo]) & (np.abs(xi) <= SPREAD_TRUNCATION).all(axis=1)
            t = todo[ok]
            em[t], ep[t], w[t] = e1[ok], e2[ok], np.sqrt(w2[ok])
            todo = todo[~ok]
        return em, ep, w

    def _sample(self, rng: np.random.Generator, n: int):
        m = self._masses(rng, n)
        e_minus, e_plus, sqrt_s = self._beams(rng, m)
        x = 1.0 - m * m / sqrt_s**2
        eg = 0.5 * x * sqrt_s
        c = self._photon_cos(rng, x)
        phi = 2.0 * math.pi * rng.random(n)
        st = np.sqrt((1.0 - c) * (1.0 + c))
        k = np.stack([eg * st * np.cos(phi), eg * st * np.sin(phi), eg * c], 1)
        nv = self._decay(rng, k, m, sqrt_s)
        q0 = sqrt_s - eg
        pstar = 0.5 * np.sqrt(m * m - 4.0 * self.m_f**2)
        a_p, a_e = self._boost(-k / q0[:, None], pstar[:, None] * nv, 0.5 * m)
        p4 = np.empty((n, 3, 4))
        p4[:, 0, :3], p4[:, 0, 3] = a_p, a_e
        p4[:, 1, :3], p4[:, 1, 3] = -k - a_p, q0 - a_e
        p4[:, 2, :3], p4[:, 2, 3] = k, eg
        if self.beam.sqrt_s_spread_GeV == 0.0:
            return p4 @ self.lab.T, m, x, c, nv[:, 2]
        return self._to_lab(p4, e_minus, e_plus), m, x, c, nv[:, 2]

    def _to_lab(self, p4, em, ep):
        """CM -> lab of each event's beams (as ``Beam.cms_to_lab`` of those beams): rotation
        about y taking +z to the e- direction in the event's CM frame, then the boost by the
        e+e- velocity, applied to p4 [n, k, 4] with per-event coefficients."""
        a = self.beam.crossing_half_angle_rad
        sa, ca = math.sin(a), math.cos(a)
        pm, pp = np.sqrt(em * em - M_E * M_E), np.sqrt(ep * ep - M_E * M_E)
        e = em + ep
        bx, bz = (pm + pp) * sa / e, (pm - pp) * ca / e
        g = 1.0 / np.sqrt(1.0 - bx * bx - bz * bz)
        f = g * g / (g + 1.0)
        k = g * em - f * (bx * pm * sa + bz * pm * ca)  # e- beam boosted by -beta
        dx, dz = pm * sa - k * bx, pm * ca - k * bz
        dn = np.hypot(dx, dz)
        c, s = (dz / dn)[:, None], (dx / dn)[:, None]
        bx, bz, g, f = bx[:, None], bz[:, None], g[:, None], f[:, None]
        px = c * p4[..., 0] + s * p4[..., 2]
        pz = c * p4[..., 2] - s * p4[..., 0]
        bp = bx * px + bz * pz
        ff = f * bp + g * p4[..., 3]
        out = np.empty_like(p4)
        out[..., 0] = px + ff * bx
        out[..., 1] = p4[..., 1]
        out[..., 2] = pz + ff * bz
        out[..., 3] = g * (p4[..., 3] + bp)
        return out


# ---------------------------------------------------------------------------------------
# detector simulation (isr_mumu layout), vectorised
# ---------------------------------------------------------------------------------------
_P_FLOOR = 1e-4  # the same likelihood floor as isrsim.detector.simulate


def _wrap(a):
    """Angles within (-3 pi, 3 pi) -> [-pi, pi]."""
    a = np.where(a > math.pi, a - 2.0 * math.pi, a)
    return np.where(a < -math.pi, a + 2.0 * math.pi, a)


def perigee_from_state_np(x, y, z, px, py, pz, q, bz):
    """Vectorised exact perigee helix w.r.t. the origin (contracts.md convention; the same
    closed forms as :func:`isrsim.helix.perigee_from_state`): returns (d0, phi0, omega, z0, tanl)."""
    pt = np.sqrt(px * px + py * py)
    qb = q * (K_CURV * bz)
    omega = qb / pt
    ppx = px - qb * y  # momentum transported to the perigee
    ppy = py + qb * x
    phi0 = np.arctan2(ppy, ppx)
    p_perigee = np.sqrt(ppx * ppx + ppy * ppy)
    d0 = (qb * (x * x + y * y) + 2.0 * (x * py - y * px)) / (pt + p_perigee)
    dphi = np.arctan2(ppy * px - ppx * py, ppx * px + ppy * py)  # phi0 - phi(point)
    tanl = pz / pt
    z0 = z - tanl * (dphi / omega)
    return d0, phi0, omega, z0, tanl


def _region(v, lo, hi):
    """Index of the first interval lo[r] <= v <= hi[r], -1 outside all."""
    reg = np.full(v.shape, -1, np.int64)
    for r in range(lo.size):
        reg[(reg < 0) & (lo[r] <= v) & (v <= hi[r])] = r
    return reg


def _calorimeter_entry_np(d0, om, z0, tl, r_b, z_b, z_f):
    """(s, r, z) where each helix enters the calorimeter can (barrel cylinder ``r_b`` between
    the faces ``z_b < 0 < z_f``, or the face ahead), s = -1 if none: the first barrel crossing
    ``sin^2(omega s/2) = (r_b^2 - d0^2) omega^2 / (4 (1 + omega d0))`` if it lies between the faces,
    else the face at ``s = (z_face - z0)/tanl`` with
    ``r^2 = d0^2 + 4 (1 + omega d0) sin^2(omega s/2)/omega^2``."""
    a1 = 1.0 + om * d0
    with np.errstate(invalid="ignore", divide="ignore"):
        q2 = 0.25 * (r_b * r_b - d0 * d0) * om * om / a1
        s_b = 2.0 * np.arcsin(np.sqrt(np.clip(q2, 0.0, 1.0))) / np.abs(om)
        z_bar = z0 + tl * s_b
        barrel = (np.abs(d0) < r_b) & (a1 > 0.0) & (q2 <= 1.0) & (z_b <= z_bar) & (z_bar <= z_f)
        zf = np.where(tl > 0.0, z_f, z_b)
        s_e = (zf - z0) / tl
        sh = np.sin(0.5 * om * s_e)
        r_e = np.sqrt(np.maximum(d0 * d0 + 4.0 * a1 * sh * sh / (om * om), 0.0))
    face = ~barrel & (tl != 0.0) & (s_e >= 0.0)
    s = np.where(barrel, s_b, np.where(face, s_e, -1.0))
    return s, np.where(barrel, r_b, r_e), np.where(barrel, z_bar, zf)


class NumpyDetector:
    """Plain vectorised NumPy version of ``isrsim.detector.simulate.simulate`` for isr_mumu
    events (slots mu-, mu+, gamma; no daughters, so no bremsstrahlung walk): the same
    per-event physics and the same RecoChunk content.

    * primary vertex: one Gaussian shift per event (``beam.sigma_xyz_cm``);
    * muons: exact perigee helix from the production vertex; tracked if the polar angle is in
      the tracking acceptance, ``min_layers`` sensitive layers lie between the production
      radius and the maximum helix radius ``|d0 + 2/omega|``, and a uniform passes the
      efficiency ``plateau (1 - exp(-(pT - pt_min)/pt_turnon))`` (pT > pt_min);
    * covariance: ``sigma(omega) = |omega| (pt_a pT (+) pt_b/beta)``,
      ``sigma(d0) = f (d0_a (+) d0_b/(p beta sin^{3/2}))``, ``sigma(z0)`` with ``sin^{5/2}``,
      ``sigma(phi0)``/``sigma(tanl)`` likewise without ``f``; ``f = r_first/r_0 >= 1``;
      blocks (d0, phi0), omega, (z0, tanl) with the file's correlations, Gaussian smearing by
      their Cholesky factors; ``charge = sign(omega)``, ``p_lab = p`` from the smeared helix;
    * calorimeter: region by polar angle (photons: of the direction; muons: of the point where
      the helix enters the barrel cylinder or an end-cap face); muons deposit a MIP
      ``min(E_mip, T) (1 + spread N)``; an untracked muon with a deposit above threshold
      becomes a neutral cluster; the photon's energy and angles are smeared with the region's
      resolution and it is dropped below the region's threshold; clusters keep truth order;
    * PID: E/p decision (``E/p > cut`` or the mu->e fake rate) and the muon-ID decision from
      the momentum table inside the muon acceptance; posterior probabilities for equal priors.
    """

    def __init__(self, det) -> None:
        tr, cal, pid = det.tracker, det.calorimeter, det.pid
        self.bz = float(det.bz_T)
        self.kb = K_CURV * self.bz
        self.sigma_xyz = np.array([float(v) for v in det.beam.sigma_xyz_cm])
        self.cos_tmin, self.cos_tmax = math.cos(tr.theta_max_rad), math.cos(tr.theta_min_rad)
        self.pt_min, self.pt_turnon, self.plateau = tr.pt_min_GeV, tr.pt_turnon_GeV, tr.efficiency_plateau
        self.min_layers = int(tr.min_layers)
        self.layer_r = np.asarray(tr.layer_radius_cm, float)
        self.res = (tr.pt_a_per_GeV, tr.pt_b, tr.d0_a_cm, tr.d0_b_cm_GeV, tr.z0_a_cm, tr.z0_b_cm_GeV,
                    tr.phi0_a_rad, tr.phi0_b_rad_GeV, tr.tanl_a, tr.tanl_b_GeV)
        self.rho_dp, self.rho_zt = tr.rho_d0_phi0, tr.rho_z0_tanl
        self.regions = np.asarray(cal.regions, float)
        self.cos_lo = np.cos(self.regions[:, 1])
        self.cos_hi = np.cos(self.regions[:, 0])
        self.barrel_r = cal.barrel_radius_cm
        self.z_ec = (cal.endcap_backward_z_cm, cal.endcap_forward_z_cm)
        self.mip_e, self.mip_spread = cal.mip_energy_GeV, cal.mip_relative_spread
        self.mu_cmin, self.mu_cmax = math.cos(pid.muon_theta_max_rad), math.cos(pid.muon_theta_min_rad)
        self.mu_table = np.asarray(pid.muon_table, float)
        self.eop_cut = pid.e_over_p_cut
        self.mu_to_e = pid.mu_to_e_misid
        clip = lambda p: min(max(p, _P_FLOOR), 1.0 - _P_FLOOR)  # noqa: E731
        self.pe, self.pmu, self.ppi = clip(pid.electron_efficiency), clip(pid.mu_to_e_misid), clip(pid.pi_to_e_misid)
        self.qe = clip(pid.e_to_mu_misid)

    def add_primary_vertex(self, truth: TruthChunk, rng: np.random.Generator) -> TruthChunk:
        """Shift every vertex of an event by one Gaussian primary vertex (in place)."""
        truth.vtx += (rng.standard_normal((truth.n, 3)) * self.sigma_xyz)[:, None, :]
        return truth

    def _sigma_e_rel(self, e, coef):
        inv = 1.0 / np.sqrt(e)
        return np.sqrt((coef[:, 3] * inv) ** 2 + (coef[:, 4] * np.sqrt(inv)) ** 2 + coef[:, 5] ** 2
                       + (coef[:, 6] * inv * inv) ** 2)

    @staticmethod
    def _sigma_angle(e, coef):
        return np.sqrt(coef[:, 7] ** 2 / e + coef[:, 8] ** 2)

    def simulate(self, truth: TruthChunk, rng: np.random.Generator) -> RecoChunk:
        n, k = truth.n, truth.k
        if k != 3 or not (np.all(truth.npart == 3) and np.all(np.abs(truth.pdg[:, :2]) == 13)
                          and np.all(truth.pdg[:, 2] == 22) and np.all(truth.parent == -1)):
            msg = "NumpyDetector handles the isr_mumu layout only (mu-, mu+, gamma; no daughters)"
            raise ValueError(msg)
        p4, vtx = truth.p4, truth.vtx
        # ---- muons [n, 2] ---------------------------------------------------------------
        px, py, pz = p4[:, :2, 0], p4[:, :2, 1], p4[:, :2, 2]
        x, y, z = vtx[:, :2, 0], vtx[:, :2, 1], vtx[:, :2, 2]
        q = np.where(truth.pdg[:, :2] > 0, -1.0, 1.0)
        pt2 = px * px + py * py
        ptot = np.sqrt(pt2 + pz * pz)
        cos_t = pz / ptot
        d0, phi0, om, z0, tl = perigee_from_state_np(x, y, z, px, py, pz, q, self.bz)
        pt_t = self.kb / np.abs(om)
        r_max = np.abs(d0 + 2.0 / om)
        r2_prod = x * x + y * y
        lr = self.layer_r
        nl = lr.size
        i0 = np.where(r2_prod >= lr[0] ** 2, np.searchsorted(lr, np.sqrt(r2_prod), side="right"), 0)
        il = i0 + self.min_layers - 1
        tracked = ((self.cos_tmin <= cos_t) & (cos_t <= self.cos_tmax) & (il < nl)
                   & (lr[np.minimum(il, nl - 1)] <= r_max))
        u = rng.random((n, 2))
        if self.pt_turnon > 0.0:
            eff = self.plateau * -np.expm1(-(pt_t - self.pt_min) / self.pt_turnon)
        else:
            eff = self.plateau
        tracked &= (pt_t > self.pt_min) & (u < eff)
        # calorimeter deposit (MIP) of muons reaching the calorimeter radius
        e_cur = np.sqrt(ptot * ptot + M_MU * M_MU)
        s_c, r_c, z_c = _calorimeter_entry_np(d0, om, z0, tl, self.barrel_r, *self.z_ec)
        rho_c = np.sqrt(r_c * r_c + z_c * z_c)
        reg_mu = np.where(s_c >= 0.0, _region(z_c / np.maximum(rho_c, 1e-300), self.cos_lo, self.cos_hi), -1)
        e_dep = np.minimum(self.mip_e, e_cur - M_MU) * (1.0 + self.mip_spread * rng.standard_normal((n, 2)))
        thr = self.regions[np.maximum(reg_mu, 0), 2]
        e_dep = np.where((reg_mu >= 0) & (e_dep >= thr), e_dep, -1.0)
        # ---- clusters: candidates in truth order (mu-, mu+, gamma) -------------------------
        cl_ok = np.zeros((n, 3), bool)
        cl = np.zeros((n, 3, 3))
        mcl = ~tracked & (e_dep > 0.0)
        ei, ji = np.nonzero(mcl)
        if ei.size:
            # at the entry point: position after arc s from the perigee (chord 2 sin(h)/omega)
            cd0, cph, com, cs = d0[ei, ji], phi0[ei, ji], om[ei, ji], s_c[ei, ji]
            h = 0.5 * com * cs
            chord = 2.0 * np.sin(h) / com
            cx = cd0 * np.sin(cph) + chord * np.cos(cph - h)
            cy = -cd0 * np.cos(cph) + chord * np.sin(cph - h)
            cr, cz = r_c[ei, ji], z_c[ei, ji]
            ed = e_dep[ei, ji]
            sa = self._sigma_angle(np.maximum(ed, 1e-3), self.regions[reg_mu[ei, ji]])
            g = rng.standard_normal((ei.size, 2))
            cl[ei, ji, 0] = ed
            cl[ei, ji, 1] = np.arctan2(cr, cz) + sa * g[:, 0]
            cl[ei, ji, 2] = np.arctan2(cy, cx) + sa * np.minimum(rho_c[ei, ji] / cr, 1e6) * g[:, 1]
            cl_ok[ei, ji] = True
        gpx, gpy, gpz, ge = p4[:, 2, 0], p4[:, 2, 1], p4[:, 2, 2], p4[:, 2, 3]
        gpt = np.sqrt(gpx * gpx + gpy * gpy)
        gp = np.sqrt(gpt * gpt + gpz * gpz)
        theta = np.arctan2(gpt, gpz)
        reg_g = _region(theta, self.regions[:, 0], self.regions[:, 1])
        coef = self.regions[np.maximum(reg_g, 0)]
        g = rng.standard_normal((3, n))
        sa = self._sigma_angle(ge, coef)
        e_meas = ge * (1.0 + self._sigma_e_rel(ge, coef) * g[0])
        cl[:, 2, 0] = e_meas
        cl[:, 2, 1] = theta + sa * g[1]
        cl[:, 2, 2] = np.arctan2(gpy, gpx) + sa * np.minimum(gp / gpt, 1e6) * g[2]
        cl_ok[:, 2] = (reg_g >= 0) & (e_meas >= coef[:, 2])
        # ---- tracks (1-D over the tracked muons) -------------------------------------------
        ei, ji = np.nonzero(tracked)
        m = ei.size
        d0, phi0, om, z0, tl = d0[ei, ji], phi0[ei, ji], om[ei, ji], z0[ei, ji], tl[ei, ji]
        pt_t, ct, ed = pt_t[ei, ji], cos_t[ei, ji], e_dep[ei, ji]
        pt_a, pt_b, d0_a, d0_b, z0_a, z0_b, ph_a, ph_b, tl_a, tl_b = self.res
        st = np.sqrt(1.0 + tl * tl)
        p_t = pt_t * st
        e_t = np.sqrt(p_t * p_t + M_MU * M_MU)
        f_arm = np.maximum(lr[i0[ei, ji]] / lr[0], 1.0)
        inv15 = e_t / (p_t * p_t) * st * np.sqrt(st)  # 1/(p beta sin^{3/2} theta)
        inv25 = inv15 * st                              # 1/(p beta sin^{5/2} theta)
        s_om = np.abs(om) * np.sqrt((pt_a * pt_t) ** 2 + (pt_b * e_t / p_t) ** 2)
        s_d0 = f_arm * np.sqrt(d0_a ** 2 + (d0_b * inv15) ** 2)
        s_z0 = f_arm * np.sqrt(z0_a ** 2 + (z0_b * inv25) ** 2)
        s_ph = np.sqrt(ph_a ** 2 + (ph_b * inv15) ** 2)
        s_tl = np.sqrt(tl_a ** 2 + (tl_b * inv25) ** 2)
        rho_dp, rho_zt = self.rho_dp, self.rho_zt
        gn = rng.standard_normal((5, m))
        d0 = d0 + s_d0 * gn[0]
        phi0 = _wrap(phi0 + s_ph * (rho_dp * gn[0] + math.sqrt(1.0 - rho_dp ** 2) * gn[1]))
        om = om + s_om * gn[2]
        om[om == 0.0] = 1e-12
        z0 = z0 + s_z0 * gn[3]
        tl = tl + s_tl * (rho_zt * gn[3] + math.sqrt(1.0 - rho_zt ** 2) * gn[4])
        p_meas = self.kb / np.abs(om) * np.sqrt(1.0 + tl * tl)
        # PID: E/p decision, then the muon-system decision
        has = ed > 0.0
        eop = np.where(has, ed / p_meas, -1.0)
        e_pass = (eop > self.eop_cut) | (rng.random(m) < self.mu_to_e)
        le = np.where(has, np.where(e_pass, self.pe, 1.0 - self.pe), 1.0)
        lmu = np.where(has, np.where(e_pass, self.pmu, 1.0 - self.pmu), 1.0)
        lpi = np.where(has, np.where(e_pass, self.ppi, 1.0 - self.ppi), 1.0)
        row = np.minimum(np.searchsorted(self.mu_table[:, 1], p_meas, side="right"), self.mu_table.shape[0] - 1)
        eff_mu = self.mu_table[row, 2]
        qmu = np.clip(eff_mu, _P_FLOOR, 1.0 - _P_FLOOR)
        qpi = np.clip(self.mu_table[row, 3], _P_FLOOR, 1.0 - _P_FLOOR)
        in_mu = (self.mu_cmin <= ct) & (ct <= self.mu_cmax)
        mu_pass = rng.random(m) < eff_mu
        le = le * np.where(in_mu, np.where(mu_pass, self.qe, 1.0 - self.qe), 1.0)
        lmu = lmu * np.where(in_mu, np.where(mu_pass, qmu, 1.0 - qmu), 1.0)
        lpi = lpi * np.where(in_mu, np.where(mu_pass, qpi, 1.0 - qpi), 1.0)
        tot = le + lmu + lpi
        # ---- fill the RecoChunk (objects in truth order) -----------------------------------
        kt, kg = 2, 3  # slots as isrsim's simulate: charged particles, charged + photons
        reco = RecoChunk(
            ntrk=tracked.sum(1).astype(np.int16), charge=np.zeros((n, kt), np.int8),
            helix=np.zeros((n, kt, 5)), cov=np.zeros((n, kt, 15)),
            trk_truth=np.full((n, kt), -1, np.int16), nphot=cl_ok.sum(1).astype(np.int16),
            phot=np.zeros((n, kg, 3)), phot_truth=np.full((n, kg), -1, np.int16),
            track_extra={name: np.zeros((n, kt), np.float32)
                         for name in ("prob_e", "prob_mu", "prob_pi", "e_over_p", "p_lab")},
        )
        slot = np.cumsum(tracked, axis=1)[ei, ji] - 1
        reco.helix[ei, slot] = np.stack([d0, phi0, om, z0, tl], axis=1)
        cov = np.zeros((m, 15))
        cov[:, 0] = s_d0 * s_d0
        cov[:, 1] = rho_dp * s_d0 * s_ph
        cov[:, 5] = s_ph * s_ph
        cov[:, 9] = s_om * s_om
        cov[:, 12] = s_z0 * s_z0
        cov[:, 13] = rho_zt * s_z0 * s_tl
        cov[:, 14] = s_tl * s_tl
        reco.cov[ei, slot] = cov
        reco.charge[ei, slot] = np.where(om > 0.0, 1, -1)
        reco.trk_truth[ei, slot] = ji
        te = reco.track_extra
        te["prob_e"][ei, slot] = le / tot
        te["prob_mu"][ei, slot] = lmu / tot
        te["prob_pi"][ei, slot] = lpi / tot
        te["e_over_p"][ei, slot] = eop
        te["p_lab"][ei, slot] = p_meas
        ei, ji = np.nonzero(cl_ok)
        slot = np.cumsum(cl_ok, axis=1)[ei, ji] - 1
        c = cl[ei, ji]
        c[:, 1] = np.clip(c[:, 1], 0.0, math.pi)
        c[:, 2] = _wrap(c[:, 2])
        reco.phot[ei, slot] = c
        reco.phot_truth[ei, slot] = ji
        return reco


# ---------------------------------------------------------------------------------------
# Arrow conversion, the NumPy way
# ---------------------------------------------------------------------------------------
def _np_list_of_struct(counts: np.ndarray, fields: list[tuple[str, np.ndarray]], bad: list[str]) -> pa.Array:
    """Non-nullable list<struct> from [n, k] (or [n, k, m]: fixed-size list) slot arrays with
    boolean-mask indexing: the written slots of every field, checked for NaN/inf."""
    k = fields[0][1].shape[1]
    mask = np.arange(k)[None, :] < counts[:, None]
    offsets = np.zeros(counts.shape[0] + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    children = []
    for name, arr in fields:
        flat = arr[mask]
        if flat.dtype.kind == "f" and not np.isfinite(flat).all():
            bad.append(name)
        if arr.ndim == 3:
            item = pa.field("item", pa.from_numpy_dtype(flat.dtype), nullable=False)
            children.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()),
                                                              type=pa.list_(item, arr.shape[2])))
        else:
            children.append(pa.array(flat))
    struct = pa.StructArray.from_arrays(
        children, fields=[pa.field(name, c.type, nullable=False) for (name, _), c in zip(fields, children)])
    return pa.ListArray.from_arrays(pa.array(offsets), struct,
                                    type=pa.list_(pa.field("item", struct.type, nullable=False)))


def numpy_chunk_to_table(truth: TruthChunk, start: int, process: str, reco: RecoChunk | None = None) -> pa.Table:
    """The same Arrow table as ``isrsim.io.chunk_to_table`` (equal, tested), written the plain
    NumPy way: a boolean-mask copy per field and ``np.isfinite`` checks, where isrsim gathers
    each slot array in one compiled pass with the check folded in."""
    n = truth.n
    bad = []
    w = truth.weight
    if not (np.isfinite(w).all() and (w >= 0).all()):
        bad.append("weight")
    bad.extend(f"gen.{key}" for key, v in truth.extra.items() if not np.isfinite(v).all())
    cols = {
        "event_id": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "process": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([process])),
        "weight": pa.array(w),
    }
    p4, vtx = truth.p4, truth.vtx
    cols["truth"] = _np_list_of_struct(truth.npart.astype(np.int32), [
        ("pdg", truth.pdg), ("px", p4[..., 0]), ("py", p4[..., 1]), ("pz", p4[..., 2]), ("E", p4[..., 3]),
        ("vx", vtx[..., 0]), ("vy", vtx[..., 1]), ("vz", vtx[..., 2]), ("parent", truth.parent)], bad)
    if truth.extra:
        gen = [pa.array(v) for v in truth.extra.values()]
        cols["gen"] = pa.StructArray.from_arrays(
            gen, fields=[pa.field(key, c.type, nullable=False) for key, c in zip(truth.extra, gen)])
    if reco is not None:
        h = reco.helix
        cols["tracks"] = _np_list_of_struct(reco.ntrk.astype(np.int32), [
            ("charge", reco.charge), ("d0", h[..., 0]), ("phi0", h[..., 1]), ("omega", h[..., 2]),
            ("z0", h[..., 3]), ("tanl", h[..., 4]), ("cov", reco.cov), ("truth", reco.trk_truth),
            *reco.track_extra.items()], bad)
        ph = reco.phot
        cols["photons"] = _np_list_of_struct(reco.nphot.astype(np.int32), [
            ("E", ph[..., 0]), ("theta", ph[..., 1]), ("phi", ph[..., 2]), ("truth", reco.phot_truth),
            *reco.photon_extra.items()], bad)
    if bad:
        msg = f"non-finite values in {', '.join(bad)}"
        raise RuntimeError(msg)
    return pa.table(cols, schema=pa.schema([pa.field(key, c.type, nullable=False) for key, c in cols.items()]))


# ---------------------------------------------------------------------------------------
# equivalence with isrsim (in distribution; exact where the model is deterministic)
# ---------------------------------------------------------------------------------------
def _z_mean(a, b):
    se2 = a.var() / a.size + b.var() / b.size
    if se2 == 0.0:  # constant values (e.g. charge * q_true): must agree exactly
        return 0.0 if a.mean() == b.mean() else math.inf
    return (a.mean() - b.mean()) / math.sqrt(se2)


def _se_std(a):
    """Standard error of the sample standard deviation for any distribution:
    Var(s^2) ~ (m4 - s^4)/N, se(s) = se(s^2)/(2 s)."""
    d = a - a.mean()
    s2 = np.mean(d * d)
    return math.sqrt(max(np.mean(d**4) - s2 * s2, 0.0) / a.size) / (2.0 * math.sqrt(s2))


def _z_std(a, b):
    return (a.std() - b.std()) / math.hypot(_se_std(a), _se_std(b))


def _z_frac(ka, na, kb, nb):
    p = (ka + kb) / (na + nb)
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return (ka / na - kb / nb) / math.sqrt(p * (1.0 - p) * (1.0 / na + 1.0 / nb))


def _track_residuals(truth: TruthChunk, reco: RecoChunk, bz: float) -> dict[str, np.ndarray]:
    """Pulls of the helix parameters, relative momentum residual, PID fields of all tracks."""
    ei, si = np.nonzero(np.arange(reco.charge.shape[1])[None, :] < reco.ntrk[:, None])
    ji = reco.trk_truth[ei, si].astype(np.int64)
    p, v = truth.p4[ei, ji], truth.vtx[ei, ji]
    q = np.where(truth.pdg[ei, ji] > 0, -1.0, 1.0)
    true = np.stack(perigee_from_state_np(v[:, 0], v[:, 1], v[:, 2], p[:, 0], p[:, 1], p[:, 2], q, bz), 1)
    res = reco.helix[ei, si] - true
    res[:, 1] = _wrap(res[:, 1])
    sig = np.sqrt(reco.cov[ei, si][:, [0, 5, 9, 12, 14]])
    out = {f"pull {name}": res[:, i] / sig[:, i] for i, name in enumerate(("d0", "phi0", "omega", "z0", "tanl"))}
    te = reco.track_extra
    ptrue = np.sqrt((p[:, :3] ** 2).sum(1))
    out["p_lab/p_true - 1"] = te["p_lab"][ei, si].astype(np.float64) / ptrue - 1.0
    out["prob_mu"] = te["prob_mu"][ei, si].astype(np.float64)
    eop = te["e_over_p"][ei, si].astype(np.float64)
    out["E/p (with cluster)"] = eop[eop >= 0.0]
    out["charge * q_true"] = (reco.charge[ei, si] * q).astype(np.float64)
    return out


def _photon_residuals(truth: TruthChunk, reco: RecoChunk) -> dict[str, np.ndarray]:
    ei, si = np.nonzero(np.arange(reco.phot.shape[1])[None, :] < reco.nphot[:, None])
    keep = reco.phot_truth[ei, si] == 2  # the ISR photon (not an untracked-muon cluster)
    ei, si = ei[keep], si[keep]
    p = truth.p4[ei, 2]
    pt = np.hypot(p[:, 0], p[:, 1])
    ph = reco.phot[ei, si]
    return {"photon E/E_true - 1": ph[:, 0] / p[:, 3] - 1.0,
            "photon theta - theta_true": ph[:, 1] - np.arctan2(pt, p[:, 2]),
            "photon phi - phi_true": _wrap(ph[:, 2] - np.arctan2(p[:, 1], p[:, 0]))}


def _fractions(reco: RecoChunk) -> dict[str, int]:
    n = reco.n
    out = {f"events with {k} tracks": int(np.count_nonzero(reco.ntrk == k)) for k in (0, 1, 2)}
    out.update({f"events with {k} clusters": int(np.count_nonzero(reco.nphot == k)) for k in (0, 1, 2)})
    slots = np.arange(reco.phot.shape[1])[None, :] < reco.nphot[:, None]
    out["events with the ISR photon"] = int(np.count_nonzero(((reco.phot_truth == 2) & slots).any(1)))
    out["events with a muon cluster"] = int(np.count_nonzero(((reco.phot_truth < 2) & slots).any(1)))
    tslots = np.arange(reco.charge.shape[1])[None, :] < reco.ntrk[:, None]
    out["tracks with E/p = -1 (per event)"] = int(np.count_nonzero(
        ((reco.track_extra["e_over_p"] < 0) & tslots).any(1)))
    out["events n"] = n
    return out


def check_equivalence(det, proc, n: int, seed: int = 2024, z_max: float = 5.0) -> list[dict]:
    """Compare :class:`NumpyDetector` (+ :class:`NumpyIsrMuMu`) with isrsim.

    1. exact: the vectorised perigee helix equals ``isrsim.helix.perigee_from_state`` (rel.
       1e-9) on 2000 tracks; the covariances of tracks reconstructed by both on the SAME truth
       events are identical (rel. 1e-12);
    2. same truth events through both simulators (independent random streams): acceptance /
       cluster fractions (binomial z), mean and width of the helix pulls, of p_lab/p_true - 1,
       of prob_mu and E/p, of the photon energy/angle residuals (z of the difference of means
       and of widths, with the 4th-moment standard error of the width);
    3. whole chain: NumPy generation + vertex + detector vs isrsim's, event fractions and
       mean p_lab / photon energy.

    Returns rows ``{"check", "isrsim", "numpy", "z", "ok"}``; ``ok`` is |z| < z_max
    (5: with ~60 comparisons the chance of a false failure is ~3e-5).
    """
    from isrsim.detector.simulate import shift_primary_vertex, simulate
    from isrsim.helix import perigee_from_state

    nd = NumpyDetector(det)
    rows: list[dict] = []
    ss = np.random.SeedSequence(seed)
    r_gen, r_vtx, r_a, r_b, r_c, r_d = (np.random.default_rng(s) for s in ss.spawn(6))
    truth, _ = proc.sample(r_gen, n, weighted=False)
    shift_primary_vertex(truth, det.beam.sigma_xyz_cm, r_vtx)
    # (1) exact pieces
    m = min(1000, n)
    p, v = truth.p4[:m, :2].reshape(-1, 4), truth.vtx[:m, :2].reshape(-1, 3)
    q = np.where(truth.pdg[:m, :2].ravel() > 0, -1.0, 1.0)
    mine = np.stack(perigee_from_state_np(v[:, 0], v[:, 1], v[:, 2], p[:, 0], p[:, 1], p[:, 2], q, nd.bz), 1)
    ref = np.array([perigee_from_state(*v[i], *p[i, :3], q[i], nd.bz) for i in range(q.size)])
    dev = np.max(np.abs(mine - ref) / (np.abs(ref) + 1e-9))
    rows.append({"check": "helix == isrsim.helix (max rel dev)", "isrsim": 0.0, "numpy": float(dev),
                 "z": 0.0, "ok": bool(dev < 1e-9)})
    reco_a = simulate(truth, det, r_a)
    reco_b = nd.simulate(truth, r_b)
    both = (reco_a.ntrk == 2) & (reco_b.ntrk == 2)
    ca, cb = reco_a.cov[both], reco_b.cov[both]
    dev = float(np.max(np.abs(ca - cb)) / np.max(np.abs(ca))) if ca.size else 0.0
    same_truth = bool(np.all(reco_a.trk_truth[both] == reco_b.trk_truth[both]))
    rows.append({"check": f"cov identical, {int(both.sum())} events tracked by both (max rel dev)",
                 "isrsim": 0.0, "numpy": dev, "z": 0.0, "ok": dev < 1e-12 and same_truth})

    def compare(label, ra, rb, ta, tb):
        fa, fb = _fractions(ra), _fractions(rb)
        for key in fa:
            if key == "events n":
                continue
            z = _z_frac(fa[key], fa["events n"], fb[key], fb["events n"])
            rows.append({"check": f"{label}: frac {key}", "isrsim": fa[key] / fa["events n"],
                         "numpy": fb[key] / fb["events n"], "z": z, "ok": abs(z) < z_max})
        da = {**_track_residuals(ta, ra, nd.bz), **_photon_residuals(ta, ra)}
        db = {**_track_residuals(tb, rb, nd.bz), **_photon_residuals(tb, rb)}
        for key in da:
            a, b = da[key], db[key]
            z = _z_mean(a, b)
            rows.append({"check": f"{label}: mean {key}", "isrsim": float(a.mean()), "numpy": float(b.mean()),
                         "z": z, "ok": abs(z) < z_max})
            if key.startswith(("pull", "p_lab", "photon", "E/p")):
                z = _z_std(a, b)
                rows.append({"check": f"{label}: std {key}", "isrsim": float(a.std()),
                             "numpy": float(b.std()), "z": z, "ok": abs(z) < z_max})

    compare("same truth", reco_a, reco_b, truth, truth)
    # the numpy pulls are unit normal (the covariance is the one used for the smearing)
    pulls = _track_residuals(truth, reco_b, nd.bz)
    for key, a in pulls.items():
        if key.startswith("pull"):
            z = a.std() / _se_std(a) - 1.0 / _se_std(a)
            rows.append({"check": f"numpy {key}: std vs 1", "isrsim": 1.0, "numpy": float(a.std()),
                         "z": z, "ok": abs(z) < z_max})
    # (3) whole chain: NumPy generation + vertex + detector vs isrsim's
    base = NumpyIsrMuMu(proc)
    tb = nd.add_primary_vertex(base.sample_truth(r_c, n), r_c)
    rb = nd.simulate(tb, r_c)
    ta, _ = proc.sample(r_d, n, weighted=False)
    shift_primary_vertex(ta, det.beam.sigma_xyz_cm, r_d)
    ra = simulate(ta, det, r_d)
    compare("gen+sim chain", ra, rb, ta, tb)
    return rows
