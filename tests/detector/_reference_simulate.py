"""Frozen copy of the original (pre-optimisation, commit 35be654) detector-simulation kernel.

Three deliberate physics changes since: a sensitive layer with partial azimuthal coverage
(a material layer at its radius with ``phi_fraction < 1``) is hit with that probability, drawn
right after the perigee of every charged particle whose first layer outside the production
point it is (the layers from the first hit one on count for the lever arm and ``min_layers``;
one beyond the first counts for ``min_layers`` with its coverage, drawn only when the track
has ``min_layers`` layers within reach but not without the partial ones);
bremsstrahlung losses at or beyond the first sensitive
layer outside the production point change the measured curvature only (the track's position
and direction are measured there before the loss), and a charged particle's calorimeter region
is that of the point where its helix enters the front surface (barrel cylinder between the
end-cap faces, or an end-cap face), found here independently of the optimised closed form: bisection in the
arc length on ``state_at_arclength`` (:func:`_entry_by_bisection`).

Test support only: ``tests/detector/test_simulate_equivalence.py`` compares the optimised
:func:`isrsim.detector.simulate.simulate` with this reference (identical outputs for muons,
pions and photons with the same generator state; the same bremsstrahlung distributions for
electrons, whose sampling method changed). Do not optimise this file.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from isrsim.constants import K_CURV, M_E, M_MU, M_PI
from isrsim.detector.material import bremsstrahlung_survival_fraction, crossing_arclength
from isrsim.detector.model import DetectorModel
from isrsim.detector.simulate import TRACK_EXTRA_FIELDS, sensitive_layer_coverage
from isrsim.events import RecoChunk, TruthChunk
from isrsim.exceptions import ConfigError
from isrsim.helix import arclength_to_point_xy, perigee_from_state, state_at_arclength

_P_FLOOR = 1e-4

# no on-disk cache: a frozen test helper must not depend on (or leave) cache files
kernel = numba.njit(cache=False, nogil=True, error_model="numpy")


@kernel
def _region_of(theta, regions):
    for r in range(regions.shape[0]):
        if regions[r, 0] <= theta <= regions[r, 1]:
            return r
    return -1


@kernel
def _sigma_e_rel(e, regions, r):
    a = regions[r, 3] / math.sqrt(e)
    b = regions[r, 4] / math.sqrt(math.sqrt(e))
    c = regions[r, 5]
    d = regions[r, 6] / e
    return math.sqrt(a * a + b * b + c * c + d * d)


@kernel
def _sigma_angle(e, regions, r):
    return math.hypot(regions[r, 7] / math.sqrt(e), regions[r, 8])


@kernel
def _muon_rates(p, table):
    nrow = table.shape[0]
    for r in range(nrow):
        if p < table[r, 1]:
            return table[r, 2], table[r, 3]
    return table[nrow - 1, 2], table[nrow - 1, 3]


@kernel
def _entry_by_bisection(d0, phi0, om, z0, tl, bz, r_b, z_bwd, z_fwd):
    """(theta, phi, found) of the entry point into the can r = r_b, z_bwd <= z <= z_fwd: the
    radius grows over the first half turn (s in [0, pi/|omega|]); if it reaches r_b before the
    arc length of the end-cap face ahead, bisect for r = r_b, else take that face."""
    s_face = 1e300
    if tl > 0.0:
        s_face = (z_fwd - z0) / tl
    elif tl < 0.0:
        s_face = (z_bwd - z0) / tl
    s_hi = min(s_face, math.pi / abs(om))
    x, y, z, _, _, _ = state_at_arclength(d0, phi0, om, z0, tl, bz, s_hi)
    if math.hypot(x, y) >= r_b:
        lo, hi = 0.0, s_hi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            x, y, z, _, _, _ = state_at_arclength(d0, phi0, om, z0, tl, bz, mid)
            if math.hypot(x, y) < r_b:
                lo = mid
            else:
                hi = mid
        x, y, z, _, _, _ = state_at_arclength(d0, phi0, om, z0, tl, bz, hi)
        return math.atan2(r_b, z), math.atan2(y, x), True
    if s_face > 1e299:
        return 0.0, 0.0, False
    x, y, z, _, _, _ = state_at_arclength(d0, phi0, om, z0, tl, bz, s_face)
    return math.atan2(math.hypot(x, y), z), math.atan2(y, x), True


@kernel
def _clip_prob(p):
    return min(max(p, _P_FLOOR), 1.0 - _P_FLOOR)


@kernel
def _simulate_kernel(rng, npart, pdg, p4, vtx, parent, bz, tp, layer_r, layer_cov,
                     mat_r, mat_zmin, mat_zmax, mat_x, mat_phif,
                     regions, barrel_r, z_ec_bwd, z_ec_fwd, mip_e, mip_spread, pp, mu_table, smear,
                     ntrk, charge, helix, cov, trk_truth, nphot, phot, phot_truth,
                     prob_e, prob_mu, prob_pi, e_over_p, p_lab):
    n = npart.shape[0]
    k = pdg.shape[1]
    has_daughter = np.zeros(k, np.bool_)
    theta_min, theta_max = tp[0], tp[1]
    pt_min, pt_turnon, eff_plateau = tp[2], tp[3], tp[4]
    min_layers = int(tp[5])
    r_meas = tp[6]
    pt_a, pt_b, d0_a, d0_b, z0_a, z0_b = tp[7], tp[8], tp[9], tp[10], tp[11], tp[12]
    ph_a, ph_b, tl_a, tl_b, rho_dp, rho_zt = tp[13], tp[14], tp[15], tp[16], tp[17], tp[18]
    mu_tmin, mu_tmax, e_to_mu = pp[0], pp[1], pp[2]
    eop_cut, e_eff, pi_to_e, mu_to_e = pp[3], pp[4], pp[5], pp[6]
    n_layers = layer_r.shape[0]
    n_mat = mat_r.shape[0]
    r0 = layer_r[0]
    for i in range(n):
        np_i = npart[i]
        for j in range(k):
            has_daughter[j] = False
        for j in range(np_i):
            par = parent[i, j]
            if 0 <= par < k:
                has_daughter[par] = True
        nt = 0
        ng = 0
        for j in range(np_i):
            if has_daughter[j]:
                continue
            code = pdg[i, j]
            a = abs(code)
            px, py, pz, en = p4[i, j, 0], p4[i, j, 1], p4[i, j, 2], p4[i, j, 3]
            pt = math.sqrt(px * px + py * py)
            ptot = math.sqrt(pt * pt + pz * pz)
            if ptot <= 0.0:
                continue
            theta = math.atan2(pt, pz)
            phi = math.atan2(py, px)
            if a == 22:
                reg = _region_of(theta, regions)
                if reg < 0 or ng >= k:
                    continue
                e_meas, th_m, ph_m = en, theta, phi
                if smear:
                    e_meas = en * (1.0 + _sigma_e_rel(en, regions, reg) * rng.standard_normal())
                    sa = _sigma_angle(en, regions, reg)
                    th_m = theta + sa * rng.standard_normal()
                    ph_m = phi + sa / max(math.sin(theta), 1e-6) * rng.standard_normal()
                if e_meas < regions[reg, 2]:
                    continue
                phot[i, ng, 0] = e_meas
                phot[i, ng, 1] = min(max(th_m, 0.0), math.pi)
                phot[i, ng, 2] = math.atan2(math.sin(ph_m), math.cos(ph_m))
                phot_truth[i, ng] = j
                ng += 1
                continue
            if a == 11:
                q = -1.0 if code > 0 else 1.0
                mass = M_E
            elif a == 13:
                q = -1.0 if code > 0 else 1.0
                mass = M_MU
            elif a == 211:
                q = 1.0 if code > 0 else -1.0
                mass = M_PI
            else:
                continue
            if pt <= 0.0:
                continue
            x, y, z = vtx[i, j, 0], vtx[i, j, 1], vtx[i, j, 2]
            r_prod = math.sqrt(x * x + y * y)
            d0, phi0, om, z0, tl = perigee_from_state(x, y, z, px, py, pz, q, bz)
            m_first = n_layers  # first sensitive layer outside the production point that is hit
            for m in range(n_layers):
                if layer_r[m] > r_prod:
                    m_first = m
                    break
            while m_first < n_layers and layer_cov[m_first] < 1.0 and \
                    not rng.random() < layer_cov[m_first]:
                m_first += 1
            alive = True
            e_cur = math.sqrt(ptot * ptot + mass * mass)
            # ---- bremsstrahlung in the material before the momentum measurement ----------
            if smear and a == 11:
                s_prod = arclength_to_point_xy(d0, phi0, om, x, y)
                # losses at or beyond the first sensitive layer outside the production point
                # change the measured curvature only (see isrsim.detector.simulate._brems_walk)
                r_pin = layer_r[m_first] if m_first < n_layers else r_meas
                e_pin = e_cur
                for m in range(n_mat):
                    rm = mat_r[m]
                    if rm <= r_prod or rm >= r_meas:
                        continue
                    sc = crossing_arclength(d0, om, rm)
                    if sc < 0.0:
                        break  # the helix never reaches this or any larger radius
                    if sc <= s_prod:
                        continue
                    xc, yc, zc, pxc, pyc, pzc = state_at_arclength(d0, phi0, om, z0, tl, bz, sc)
                    if zc < mat_zmin[m] or zc > mat_zmax[m]:
                        continue
                    if mat_phif[m] < 1.0 and rng.random() >= mat_phif[m]:
                        continue
                    pc = math.sqrt(pxc * pxc + pyc * pyc + pzc * pzc)
                    cos_inc = abs(pxc * xc + pyc * yc) / (rm * pc)
                    t = mat_x[m] / max(cos_inc, 1e-3)
                    zk = bremsstrahlung_survival_fraction(rng, t)
                    e_new = e_cur * zk
                    if e_new <= 1.001 * mass:
                        alive = False
                        break
                    e_cur = e_new
                    if rm >= r_pin:
                        continue
                    p_new = math.sqrt(e_new * e_new - mass * mass)
                    sc_p = p_new / pc
                    e_pin = e_cur
                    d0, phi0, om, z0, tl = perigee_from_state(xc, yc, zc, pxc * sc_p, pyc * sc_p,
                                                              pzc * sc_p, q, bz)
                    s_prod = arclength_to_point_xy(d0, phi0, om, xc, yc)
                if alive and e_cur != e_pin:
                    sc = crossing_arclength(d0, om, r_pin)
                    xc, yc, zc, pxc, pyc, pzc = state_at_arclength(d0, phi0, om, z0, tl, bz, sc)
                    sc_p = math.sqrt((e_cur * e_cur - mass * mass) / (e_pin * e_pin - mass * mass))
                    d0, phi0, om, z0, tl = perigee_from_state(xc, yc, zc, pxc * sc_p, pyc * sc_p,
                                                              pzc * sc_p, q, bz)
            if not alive:
                continue
            pt_t = K_CURV * bz / abs(om)
            p_t = pt_t * math.sqrt(1.0 + tl * tl)
            beta = p_t / math.sqrt(p_t * p_t + mass * mass)
            sin_t = pt_t / p_t
            r_max = abs(d0 + 2.0 / om)
            # ---- tracking acceptance and efficiency --------------------------------------
            tracked = theta_min <= theta <= theta_max
            if tracked:
                nl = 0  # layers certainly hit: the first one and the fully covered ones beyond
                n_part = 0  # partially covered layers beyond the first within reach
                r_first = -1.0
                for m in range(m_first, n_layers):
                    if layer_r[m] <= r_max:
                        if r_first < 0.0 or layer_cov[m] >= 1.0:
                            nl += 1
                        else:
                            n_part += 1
                        if r_first < 0.0:
                            r_first = layer_r[m]
                if nl < min_layers <= nl + n_part:
                    for m in range(m_first + 1, n_layers):
                        if layer_r[m] <= r_max and layer_cov[m] < 1.0 and rng.random() < layer_cov[m]:
                            nl += 1
                tracked = nl >= min_layers
            if tracked:
                eff = 0.0
                if pt_t > pt_min:
                    eff = eff_plateau * (1.0 - math.exp(-(pt_t - pt_min) / pt_turnon)) \
                        if pt_turnon > 0.0 else eff_plateau
                tracked = rng.random() < eff
            # ---- calorimeter deposit of the charged particle ----------------------------
            th_c, ph_c, entered = _entry_by_bisection(d0, phi0, om, z0, tl, bz, barrel_r,
                                                      z_ec_bwd, z_ec_fwd)
            reg = _region_of(th_c, regions) if entered else -1
            e_dep = -1.0
            shower_pi = False
            if reg >= 0:
                if a == 11:
                    e_dep = e_cur
                    if smear:
                        e_dep = e_cur * (1.0 + _sigma_e_rel(e_cur, regions, reg) * rng.standard_normal())
                elif a == 211 and rng.random() < pi_to_e:
                    shower_pi = True
                    e_dep = p_t * (eop_cut + (1.05 - eop_cut) * rng.random())
                else:
                    e_dep = min(mip_e, e_cur - mass)
                    if smear:
                        e_dep = e_dep * (1.0 + mip_spread * rng.standard_normal())
                if e_dep < regions[reg, 2]:
                    e_dep = -1.0
            if not tracked:
                # an untracked charged particle that reaches the calorimeter makes a neutral cluster
                if e_dep > 0.0 and ng < k:
                    th_m, ph_m = th_c, ph_c
                    if smear:
                        sa = _sigma_angle(max(e_dep, 1e-3), regions, reg)
                        th_m = th_c + sa * rng.standard_normal()
                        ph_m = ph_c + sa / max(math.sin(th_c), 1e-6) * rng.standard_normal()
                    phot[i, ng, 0] = e_dep
                    phot[i, ng, 1] = min(max(th_m, 0.0), math.pi)
                    phot[i, ng, 2] = math.atan2(math.sin(ph_m), math.cos(ph_m))
                    phot_truth[i, ng] = j
                    ng += 1
                continue
            if nt >= k:
                continue
            # ---- covariance and smearing ------------------------------------------------
            f_arm = r_first / r0 if r_first > r0 else 1.0
            pbs = p_t * beta
            s15 = sin_t * math.sqrt(sin_t)
            s25 = s15 * sin_t
            s_om = abs(om) * math.hypot(pt_a * pt_t, pt_b / beta)
            s_d0 = f_arm * math.hypot(d0_a, d0_b / (pbs * s15))
            s_z0 = f_arm * math.hypot(z0_a, z0_b / (pbs * s25))
            s_ph = math.hypot(ph_a, ph_b / (pbs * s15))
            s_tl = math.hypot(tl_a, tl_b / (pbs * s25))
            for c in range(15):
                cov[i, nt, c] = 0.0
            cov[i, nt, 0] = s_d0 * s_d0
            cov[i, nt, 1] = rho_dp * s_d0 * s_ph
            cov[i, nt, 5] = s_ph * s_ph
            cov[i, nt, 9] = s_om * s_om
            cov[i, nt, 12] = s_z0 * s_z0
            cov[i, nt, 13] = rho_zt * s_z0 * s_tl
            cov[i, nt, 14] = s_tl * s_tl
            if smear:
                g1 = rng.standard_normal()
                g2 = rng.standard_normal()
                g3 = rng.standard_normal()
                g4 = rng.standard_normal()
                g5 = rng.standard_normal()
                d0 += s_d0 * g1
                phi0 += s_ph * (rho_dp * g1 + math.sqrt(1.0 - rho_dp * rho_dp) * g2)
                om += s_om * g3
                z0 += s_z0 * g4
                tl += s_tl * (rho_zt * g4 + math.sqrt(1.0 - rho_zt * rho_zt) * g5)
                phi0 = math.atan2(math.sin(phi0), math.cos(phi0))
                if om == 0.0:
                    om = 1e-12
            helix[i, nt, 0] = d0
            helix[i, nt, 1] = phi0
            helix[i, nt, 2] = om
            helix[i, nt, 3] = z0
            helix[i, nt, 4] = tl
            charge[i, nt] = 1 if om > 0.0 else -1
            trk_truth[i, nt] = j
            p_meas = K_CURV * bz / abs(om) * math.sqrt(1.0 + tl * tl)
            p_lab[i, nt] = p_meas
            # ---- particle identification ------------------------------------------------
            le = 1.0
            lmu = 1.0
            lpi = 1.0
            if e_dep > 0.0:
                eop = e_dep / p_meas
                e_over_p[i, nt] = eop
                e_pass = eop > eop_cut
                if a == 11:
                    e_pass = e_pass and rng.random() < e_eff
                elif a == 13:
                    e_pass = e_pass or rng.random() < mu_to_e
                elif not shower_pi:
                    e_pass = False
                pe, pmu, ppi = _clip_prob(e_eff), _clip_prob(mu_to_e), _clip_prob(pi_to_e)
                if e_pass:
                    le *= pe
                    lmu *= pmu
                    lpi *= ppi
                else:
                    le *= 1.0 - pe
                    lmu *= 1.0 - pmu
                    lpi *= 1.0 - ppi
            else:
                e_over_p[i, nt] = -1.0
            if mu_tmin <= theta <= mu_tmax:
                eff_mu, mis_pi = _muon_rates(p_meas, mu_table)
                if a == 13:
                    rate = eff_mu
                elif a == 211:
                    rate = mis_pi
                else:
                    rate = e_to_mu
                mu_pass = rng.random() < rate
                qe, qmu, qpi = _clip_prob(e_to_mu), _clip_prob(eff_mu), _clip_prob(mis_pi)
                if mu_pass:
                    le *= qe
                    lmu *= qmu
                    lpi *= qpi
                else:
                    le *= 1.0 - qe
                    lmu *= 1.0 - qmu
                    lpi *= 1.0 - qpi
            tot = le + lmu + lpi
            prob_e[i, nt] = le / tot
            prob_mu[i, nt] = lmu / tot
            prob_pi[i, nt] = lpi / tot
            nt += 1
        ntrk[i] = nt
        nphot[i] = ng


def simulate_reference(truth: TruthChunk, det: DetectorModel, rng: np.random.Generator, *,
             smear: bool = True) -> RecoChunk:
    """The simulation as of commit 35be654 (reference for equivalence tests)."""
    if not isinstance(rng, np.random.Generator):
        msg = f"rng = {rng!r} must be a numpy.random.Generator"
        raise ConfigError(msg)
    n, k = truth.n, truth.k
    reco = RecoChunk(
        ntrk=np.zeros(n, np.int16), charge=np.zeros((n, k), np.int8),
        helix=np.zeros((n, k, 5)), cov=np.zeros((n, k, 15)),
        trk_truth=np.full((n, k), -1, np.int16), nphot=np.zeros(n, np.int16),
        phot=np.zeros((n, k, 3)), phot_truth=np.full((n, k), -1, np.int16),
        track_extra={name: np.zeros((n, k), np.float32) for name in TRACK_EXTRA_FIELDS},
    )
    if n == 0:
        return reco
    mat = det.material
    cal = det.calorimeter
    te = reco.track_extra
    _simulate_kernel(
        rng, np.ascontiguousarray(truth.npart), np.ascontiguousarray(truth.pdg),
        np.ascontiguousarray(truth.p4, dtype=np.float64), np.ascontiguousarray(truth.vtx, dtype=np.float64),
        np.ascontiguousarray(truth.parent), float(det.bz_T), det.tracker.params(),
        det.tracker.layer_radius_cm, sensitive_layer_coverage(det),
        mat.r_cm, mat.z_min_cm, mat.z_max_cm, mat.x_over_x0,
        mat.phi_fraction, cal.regions, float(cal.barrel_radius_cm),
        float(cal.endcap_backward_z_cm), float(cal.endcap_forward_z_cm), float(cal.mip_energy_GeV),
        float(cal.mip_relative_spread), det.pid.params(), det.pid.muon_table, bool(smear),
        reco.ntrk, reco.charge, reco.helix, reco.cov, reco.trk_truth, reco.nphot, reco.phot,
        reco.phot_truth, te["prob_e"], te["prob_mu"], te["prob_pi"], te["e_over_p"], te["p_lab"],
    )
    return reco


