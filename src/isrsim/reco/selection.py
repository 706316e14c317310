"""Event selections and the flat candidate columns (one row per selected event and channel).

* ``besiii2017`` -- the BESIII 2017 dark-photon selection exactly as in the paper
  (arXiv:1705.04265; physics.md 10): exactly two tracks, net charge 0, |d0| < 1 cm,
  |z0| < 10 cm, 0.4 < theta < pi - 0.4, pT > 0.3 GeV; mu mu: P(mu) > P(e) for both tracks
  (``prob_mu > prob_e``); e e: E/p > 0.8 for both; 1C fit with a missing massless photon
  (:func:`isrsim.reco.kinfit.fit_1c_missing_photon`) with chi2 < 20 (mu mu) / < 5 (e e) and
  the fitted photon within 0.1 / 0.05 rad of the beam axis: of the nearer lab beam direction
  (with BESIII's 22 mrad crossing the beams lie 11 mrad off the solenoid axis; measured to the
  z axis the cut lost 1.2 % of the ee events at 3.4 GeV). Both channels are evaluated; an
  event may give a row in each. Every fit must have converged (all selections).
* ``belle2_lowmass`` -- isrsim's Belle II low-mass e+e- selection (cut values are ours, [U]):
  exactly two opposite-charge tracks identified as electrons (E/p > 0.8 or prob_e the
  largest PID probability), the most energetic photon with CM energy above
  ``photon_e_cms_min``; two-track helix vertex fit (:mod:`isrsim.reco.vertexfit`, chi2 <
  ``chi2_vtx_max``; of twin minima the lower chi2, ``vertex_twin``) and the 4C
  energy-momentum fit of pair + photon against the beam
  (:func:`isrsim.reco.kinfit.fit_energy_constrained`, chi2 < ``chi2_ec_max``).

Both kinematic fits are given the covariance of the beam 4-vector from the beam-energy
spread (``Beam.p4_covariance_lab()``; zero for a beam without spread).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .._numba import kernel
from ..beam import Beam
from ..constants import K_CURV, M_E, M_MU
from ..events import RecoChunk, TruthChunk
from ..exceptions import ConfigError
from ._checks import check_helix_rows
from .kinfit import _fit_1c_rows, fit_energy_constrained
from .vertexfit import check_twin, fit_vertex

__all__ = ["SELECTIONS", "Belle2LowMassCuts", "Besiii2017Cuts", "check_cuts", "photon_resolution",
           "reconstruct_chunk"]

SELECTIONS = ("besiii2017", "belle2_lowmass")


@dataclass(frozen=True)
class Besiii2017Cuts:
    """Cut values of arXiv:1705.04265 (physics.md 10)."""

    d0_max: float = 1.0
    z0_max: float = 10.0
    theta_min: float = 0.4
    pt_min: float = 0.3
    e_over_p_min: float = 0.8
    chi2_max_mumu: float = 20.0
    chi2_max_ee: float = 5.0
    theta_gamma_max_mumu: float = 0.1
    theta_gamma_max_ee: float = 0.05


@dataclass(frozen=True)
class Belle2LowMassCuts:
    """isrsim's Belle II low-mass e+e- gamma selection (our choices, not from a paper)."""

    e_over_p_min: float = 0.8
    photon_e_cms_min: float = 4.0
    chi2_vtx_max: float = 20.0
    chi2_ec_max: float = 40.0
    constraints: str = "4c"
    vertex_twin: str = "min_chi2"  # twin-minimum convention of the vertex fit (vertexfit doc)


def check_cuts(selection: str, cuts, beam: Beam):
    """Validate ``cuts`` for ``selection`` at these beams and return them (defaults for None).

    Every cut value must be a finite number and the upper bounds (chi2, angles, |d0|, |z0|)
    positive; belle2_lowmass's ``photon_e_cms_min`` must lie below ``sqrt(s)/2``, the largest CM
    energy an ISR photon can have (``E*_gamma = (s - M_X^2) / (2 sqrt(s))``): a cut at or above
    it selects nothing at these beams (the Belle II cut of 4 GeV on BESIII events, say).
    Raises :class:`~isrsim.exceptions.ConfigError` naming the field and the allowed range.
    """
    if selection not in SELECTIONS:
        msg = f"selection = {selection!r}; allowed: {', '.join(SELECTIONS)}"
        raise ConfigError(msg)
    want = Besiii2017Cuts if selection == "besiii2017" else Belle2LowMassCuts
    if cuts is None:
        cuts = want()
    if not isinstance(cuts, want):
        msg = f"cuts = {cuts!r}; allowed: a {want.__name__} for selection {selection!r}"
        raise ConfigError(msg)
    for f in dataclasses.fields(cuts):
        v = getattr(cuts, f.name)
        if isinstance(v, str):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            msg = f"cuts.{f.name} = {v!r}; allowed: a finite number"
            raise ConfigError(msg)
        if v <= 0.0 and f.name != "photon_e_cms_min":
            msg = f"cuts.{f.name} = {v!r}; allowed: > 0"
            raise ConfigError(msg)
    if selection == "belle2_lowmass":
        check_twin(cuts.vertex_twin, "cuts.vertex_twin")
        if cuts.constraints not in ("4c", "energy"):
            msg = f"cuts.constraints = {cuts.constraints!r}; allowed: 4c, energy"
            raise ConfigError(msg)
        e_max = 0.5 * beam.sqrt_s
        if cuts.photon_e_cms_min >= e_max:
            msg = (f"cuts.photon_e_cms_min = {cuts.photon_e_cms_min:g} GeV; allowed: < sqrt(s)/2 = "
                   f"{e_max:.6g} GeV, the largest CM energy of an ISR photon at these beams "
                   f"(sqrt(s) = {beam.sqrt_s:.6g} GeV): selection belle2_lowmass is meant for the "
                   "Belle II beams: use selection besiii2017 here (or, from Python, a "
                   "Belle2LowMassCuts with a lower photon_e_cms_min)")
            raise ConfigError(msg)
    return cuts


#: Candidate-table columns (flat) and their dtypes. Masses [GeV], lengths [cm, lab frame];
#: ``theta_gamma_miss`` [rad]: besiii2017, the angle of the 1C-fitted missing photon to the
#: nearer lab beam direction (the quantity the cut uses; NaN for belle2_lowmass).
#: belle2_lowmass vertex: ``r_xy_sig = r_xy_cm / r_xy_err``, the error including the other chi2
#: minimum of a twin pair; ``r_xy_twin_cm`` / ``dchi2_vtx_twin`` that minimum's r_xy and chi2
#: minus ``chi2_vtx`` (NaN without one; :class:`isrsim.reco.vertexfit.VertexFitResult`).
COLUMNS = {
    "event_id": np.int64, "channel": object, "m_ll": np.float64, "m_ll_raw": np.float64,
    "sigma_m_ll": np.float64, "chi2": np.float64, "ndf": np.int16, "prob": np.float64,
    "theta_gamma_miss": np.float64,
    "chi2_vtx": np.float64, "prob_vtx": np.float64, "r_xy_cm": np.float64,
    "r_xy_sig": np.float64, "r_xy_twin_cm": np.float64, "dchi2_vtx_twin": np.float64,
    "m_before": np.float64, "m_after": np.float64,
    "delta_m": np.float64, "vtx_x_cm": np.float64, "vtx_y_cm": np.float64,
    "vtx_z_cm": np.float64, "e_gamma": np.float64, "truth_matched": np.bool_,
    "truth_m": np.float64, "truth_m_gen": np.float64, "truth_r_xy_cm": np.float64,
    "weight": np.float64,
}


def photon_resolution(calorimeter, e: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(sigma_E, sigma_theta, sigma_phi) [n, 3] of photons from a ``CalorimeterModel``
    (its region table: sigma_E/E = a/sqrt(E) (+) b/E^0.25 (+) c (+) noise/E, sigma_theta =
    sigma_phi sin(theta) = a_ang/sqrt(E) (+) c_ang). ``None`` uses 2 % and 4 mrad/sqrt(E)
    (detectors.md 1, Belle II)."""
    e = np.asarray(e, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    out = np.empty((e.size, 3))
    if calorimeter is None:
        out[:, 0] = 0.02 * e
        out[:, 1] = 4e-3 / np.sqrt(e)
    else:
        reg = np.asarray(calorimeter.regions)
        idx = np.clip(np.searchsorted(reg[:, 0], theta, side="right") - 1, 0, len(reg) - 1)
        r = reg[idx]
        rel = np.sqrt((r[:, 3] / np.sqrt(e)) ** 2 + (r[:, 4] / e**0.25) ** 2 + r[:, 5] ** 2
                      + (r[:, 6] / e) ** 2)
        out[:, 0] = rel * e
        out[:, 1] = np.hypot(r[:, 7] / np.sqrt(e), r[:, 8])
    out[:, 0] = np.maximum(out[:, 0], 1e-6)
    out[:, 1] = np.maximum(out[:, 1], 1e-6)
    out[:, 2] = out[:, 1] / np.maximum(np.sin(theta), 1e-3)
    return out


def _empty(n: int) -> dict[str, np.ndarray]:
    cols = {}
    for k, dt in COLUMNS.items():
        if dt is np.float64:
            cols[k] = np.full(n, np.nan)
        else:
            cols[k] = np.zeros(n, dtype=dt)
    return cols


def _truth_fields(cols, rows, trk_truth, truth: TruthChunk | None):
    """Truth columns of the candidates ``rows``: ``trk_truth`` [n, >=2] the truth indices of
    every event's tracks (``RecoChunk.trk_truth``, -1: not matched)."""
    if truth is None or rows.size == 0:
        return
    m = rows.size
    cols["truth_matched"] = np.empty(m, np.bool_)
    cols["truth_m"] = np.empty(m)
    cols["truth_r_xy_cm"] = np.empty(m)
    _truth_kernel(rows, trk_truth, truth.p4, truth.vtx, cols["truth_matched"], cols["truth_m"],
                  cols["truth_r_xy_cm"])
    if "m_true" in truth.extra:
        cols["truth_m_gen"] = np.asarray(truth.extra["m_true"], dtype=np.float64)[rows]


@kernel
def _truth_kernel(rows, trk_truth, p4, vtx, matched, m_true, r_xy):
    """Per candidate: both tracks matched; mass of the two matched truth particles
    (``sqrt(max(E^2 - |p|^2, 0))``) and the transverse distance of the first one's production
    vertex [cm]; NaN when not matched."""
    for k in range(rows.shape[0]):
        ev = rows[k]
        i0 = np.int64(trk_truth[ev, 0])
        i1 = np.int64(trk_truth[ev, 1])
        ok = i0 >= 0 and i1 >= 0
        matched[k] = ok
        if not ok:
            m_true[k] = np.nan
            r_xy[k] = np.nan
            continue
        x = p4[ev, i0, 0] + p4[ev, i1, 0]
        y = p4[ev, i0, 1] + p4[ev, i1, 1]
        z = p4[ev, i0, 2] + p4[ev, i1, 2]
        e = p4[ev, i0, 3] + p4[ev, i1, 3]
        m2 = e * e - (x * x + y * y + z * z)
        m_true[k] = math.sqrt(0.0 if m2 < 0.0 else m2)  # noqa: FURB136 - NaN stays NaN
        r_xy[k] = math.hypot(vtx[ev, i0, 0], vtx[ev, i0, 1])


def _two_track_events(reco: RecoChunk) -> np.ndarray:
    """Events with exactly two tracks of opposite charge (BESIII: 'two charged tracks with
    net charge zero')."""
    two = reco.ntrk == 2
    q = reco.charge[:, :2].astype(np.int64) if reco.charge.shape[1] >= 2 else None
    if q is None:
        return np.zeros(reco.n, bool)
    return two & (q[:, 0] + q[:, 1] == 0) & (q[:, 0] != 0)


def _extra(reco: RecoChunk, name: str) -> np.ndarray:
    try:
        return np.asarray(reco.track_extra[name], dtype=np.float64)
    except KeyError:
        msg = f"reco.track_extra lacks field {name!r}; allowed: a RecoChunk from isrsim.detector.simulate"
        raise ConfigError(msg) from None


def _extra_raw(reco: RecoChunk, name: str) -> np.ndarray:
    """``track_extra[name]`` as stored when it is float32 or float64 (for the kernels, which
    compare in float64 as :func:`_extra`'s conversion does), else converted to float64."""
    if name not in reco.track_extra:
        _extra(reco, name)  # raises the ConfigError naming the field
    x = np.asarray(reco.track_extra[name])
    return x if x.dtype in (np.float32, np.float64) else np.asarray(x, dtype=np.float64)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return _empty(0)
    if len(parts) == 1:
        return parts[0]  # fresh arrays of one selection pass: no copy
    return {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}


def reconstruct_chunk(reco: RecoChunk, truth: TruthChunk | None = None, *, selection: str,
                      bz: float, beam: Beam, event_id: np.ndarray | None = None,
                      weight: np.ndarray | None = None, cuts=None,
                      calorimeter=None, counts: dict[str, int] | None = None
                      ) -> dict[str, np.ndarray]:
    """Run a selection on one chunk and return flat candidate columns (see ``COLUMNS``).

    Parameters
    ----------
    reco : RecoChunk
        Detector-level events (tracks with helix + covariance and PID fields ``prob_e``,
        ``prob_mu``, ``e_over_p`` in ``track_extra``; photons).
    truth : TruthChunk or None
        Generator truth for the truth-matching columns (NaN without it).
    selection : {"besiii2017", "belle2_lowmass"}
    bz : float
        Solenoid field [T].
    beam : Beam
        Beam 4-vector source (``p4_total_lab()``, crossing angle included), its covariance
        from the energy spread (``p4_covariance_lab()``, given to the kinematic fits) and CM
        boost.
    event_id, weight : arrays [n], optional
        Default ``arange(n)`` and ``truth.weight`` (or 1).
    cuts : Besiii2017Cuts or Belle2LowMassCuts, optional
    calorimeter : CalorimeterModel, optional
        Photon resolutions for the energy-constrained fit (:func:`photon_resolution`).
    counts : dict, optional
        If given, the numbers of fits run are added to it (keys ``"fit_1c"``,
        ``"fit_vertex"``, ``"fit_ec"``), for throughput measurements.

    Returns
    -------
    dict[str, numpy.ndarray]
        One entry per candidate: ``m_ll`` is the mass after the fit that defines the
        selection (1C for besiii2017, 4C/EC for belle2_lowmass), ``sigma_m_ll`` its
        standard error from that fit's covariance (linear propagation; pull-tested in
        ``tests/reco/test_kinfit.py`` at 1 GeV; near threshold, sigma_m/m >~ 0.2, the masses
        lie above the truth by ~0.3 (prompt) to ~0.6 (displaced) sigma_m: 17 MeV Belle II A',
        README "Known limitations"), ``m_ll_raw`` the mass from the measured perigee
        momenta.
    """
    cuts = check_cuts(selection, cuts, beam)
    n = reco.n
    eid = np.arange(n, dtype=np.int64) if event_id is None else np.asarray(event_id, np.int64)
    if weight is None:
        weight = truth.weight if truth is not None else np.ones(n)
    weight = np.asarray(weight, dtype=np.float64)
    if eid.shape != (n,) or weight.shape != (n,):
        msg = f"event_id/weight have shapes {eid.shape}/{weight.shape}; allowed: ({n},)"
        raise ConfigError(msg)
    if counts is None:
        counts = {}
    if selection == "besiii2017":
        return _besiii2017(reco, truth, bz, beam, eid, weight, cuts, counts)
    return _belle2_lowmass(reco, truth, bz, beam, eid, weight, cuts, calorimeter, counts)


def _track_quality(reco: RecoChunk, c: Besiii2017Cuts, bz: float):
    """Per-track impact-parameter and polar-angle cuts, and pT [GeV], of the first two tracks."""
    h = reco.helix[:, :2]
    om = np.abs(h[..., 2])
    pt = np.where(om > 0, K_CURV * bz / np.where(om > 0, om, 1.0), 0.0)
    theta = 0.5 * math.pi - np.arctan(h[..., 4])
    ok = ((np.abs(h[..., 0]) < c.d0_max) & (np.abs(h[..., 3]) < c.z0_max)
          & (theta > c.theta_min) & (theta < math.pi - c.theta_min))
    return ok, pt


def _count(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + int(n)


@kernel
def _besiii_tracks(ntrk, charge, helix, bz, d0_max, z0_max, theta_min, pt_min):
    """Events with exactly two tracks of opposite charge (:func:`_two_track_events`) that both
    pass the impact-parameter, polar-angle and pT cuts (:func:`_track_quality`), as indices."""
    n = ntrk.shape[0]
    out = np.empty(n, np.int64)
    m = 0
    if charge.shape[1] < 2:
        return out[:0]
    for ev in range(n):
        if ntrk[ev] != 2:
            continue
        q0 = np.int64(charge[ev, 0])
        q1 = np.int64(charge[ev, 1])
        if q0 + q1 != 0 or q0 == 0:
            continue
        ok = True
        for t in range(2):
            om = abs(helix[ev, t, 2])
            pt = K_CURV * bz / om if om > 0 else 0.0
            theta = 0.5 * math.pi - math.atan(helix[ev, t, 4])
            if not (abs(helix[ev, t, 0]) < d0_max and abs(helix[ev, t, 3]) < z0_max
                    and theta > theta_min and theta < math.pi - theta_min and pt > pt_min):
                ok = False
        if ok:
            out[m] = ev
            m += 1
    return out[:m]


@kernel
def _rows_both_above(rows, x, y, thr, use_y):
    """The ``rows`` whose first two tracks both have ``x > y`` (``use_y``; ``y`` [n, >=2]) or
    ``x > thr``; ``x``, ``y`` float32 or float64, compared in float64."""
    out = np.empty(rows.shape[0], np.int64)
    m = 0
    for k in range(rows.shape[0]):
        ev = rows[k]
        ok = (x[ev, 0] > y[ev, 0] and x[ev, 1] > y[ev, 1]) if use_y else (
            x[ev, 0] > thr and x[ev, 1] > thr)
        if ok:
            out[m] = ev
            m += 1
    return out[:m]


def _besiii2017(reco, truth, bz, beam, eid, weight, c: Besiii2017Cuts, counts):
    helix = np.asarray(reco.helix, dtype=np.float64)
    cov = np.asarray(reco.cov, dtype=np.float64)
    rows_all = _besiii_tracks(reco.ntrk, reco.charge, helix, float(bz), float(c.d0_max),
                              float(c.z0_max), float(c.theta_min), float(c.pt_min))
    parts = []
    for channel in ("mumu", "ee"):
        if channel == "mumu":
            pm, pe = _extra_raw(reco, "prob_mu"), _extra_raw(reco, "prob_e")
            if pm.dtype != pe.dtype:
                pm, pe = pm.astype(np.float64), pe.astype(np.float64)
            rows = _rows_both_above(rows_all, pm, pe, 0.0, True)
            mass, chi2_max, th_max = M_MU, c.chi2_max_mumu, c.theta_gamma_max_mumu
        else:
            eop = _extra_raw(reco, "e_over_p")
            rows = _rows_both_above(rows_all, eop, eop, float(c.e_over_p_min), False)
            mass, chi2_max, th_max = M_E, c.chi2_max_ee, c.theta_gamma_max_ee
        if rows.size == 0:
            continue
        _count(counts, "fit_1c", rows.size)
        h1, c1, h2, c2 = helix[:, 0], cov[:, 0], helix[:, 1], cov[:, 1]
        check_helix_rows("track1", h1, c1, rows)
        check_helix_rows("track2", h2, c2, rows)
        fit = _fit_1c_rows(h1, c1, h2, c2, rows, bz=bz, p4_beam=beam.p4_total_lab(), mass=mass,
                           cov_beam=beam.p4_covariance_lab())
        th = _angle_to_beams(fit.k_miss, beam)
        keep = np.flatnonzero(fit.converged & np.isfinite(fit.chi2) & (fit.chi2 < chi2_max)
                              & (th < th_max))
        r = rows[keep]
        cols = _empty(r.size)
        cols["event_id"] = eid[r]
        cols["channel"] = np.full(r.size, channel, dtype=object)
        cols["m_ll"] = fit.m_ll[keep]
        cols["m_ll_raw"] = fit.m_ll_raw[keep]
        cols["sigma_m_ll"] = fit.sigma_m_ll[keep]
        cols["chi2"] = fit.chi2[keep]
        cols["ndf"] = np.ones(r.size, np.int16)
        cols["prob"] = fit.prob[keep]
        cols["theta_gamma_miss"] = th[keep]
        cols["m_before"] = fit.m_ll_raw[keep]
        cols["weight"] = weight[r]
        _truth_fields(cols, r, reco.trk_truth, truth)
        parts.append(cols)
    return _concat(parts)


def _angle_to_beams(k: np.ndarray, beam) -> np.ndarray:
    """Angle [rad] of lab momenta ``k`` [n, >=3] to the nearer of the two lab beam directions.
    "From the beam axis" (physics.md 10) means along a beam: with a crossing angle (BESIII
    22 mrad) the beams, and the ISR photons, are 11 mrad off the solenoid z axis."""
    kk = k[:, :3] / np.maximum(np.linalg.norm(k[:, :3], axis=1), 1e-300)[:, None]
    best = np.full(k.shape[0], np.pi)
    for p4 in (beam.p4_e_minus(), beam.p4_e_plus()):
        u = p4[:3] / np.linalg.norm(p4[:3])
        best = np.minimum(best, np.arccos(np.clip(kk @ u, -1.0, 1.0)))
    return best


def _belle2_lowmass(reco, truth, bz, beam, eid, weight, c: Belle2LowMassCuts, calorimeter,
                    counts):
    sel = _two_track_events(reco) & (reco.nphot >= 1)
    eop = _extra(reco, "e_over_p")[:, :2]
    pe = _extra(reco, "prob_e")[:, :2]
    others = np.maximum(_extra(reco, "prob_mu"), _extra(reco, "prob_pi"))[:, :2]
    sel &= ((eop > c.e_over_p_min) | (pe > others)).all(axis=1)
    rows = np.flatnonzero(sel)
    if rows.size == 0:
        return _empty(0)
    # most energetic photon (padding slots have E = 0 or are beyond nphot)
    ph = reco.phot[rows]
    slot = np.arange(ph.shape[1])[None, :] < reco.nphot[rows, None]
    e_ph = np.where(slot, ph[..., 0], -np.inf)
    best = np.argmax(e_ph, axis=1)
    g = ph[np.arange(rows.size), best]  # (E, theta, phi)
    st = np.sin(g[:, 1])
    k4 = np.stack([g[:, 0] * st * np.cos(g[:, 2]), g[:, 0] * st * np.sin(g[:, 2]),
                   g[:, 0] * np.cos(g[:, 1]), g[:, 0]], axis=1)
    e_cms = (k4 @ beam.lab_to_cms().T)[:, 3]
    keep = e_cms > c.photon_e_cms_min
    rows, g = rows[keep], g[keep]
    if rows.size == 0:
        return _empty(0)
    h = reco.helix[rows]
    cv = reco.cov[rows]
    _count(counts, "fit_vertex", rows.size)
    vf = fit_vertex(h[:, 0], cv[:, 0], h[:, 1], cv[:, 1], bz=bz, mass=M_E,
                    twin=c.vertex_twin)
    good = vf.converged & np.isfinite(vf.chi2) & (vf.chi2 < c.chi2_vtx_max)
    rows, g = rows[good], g[good]
    idx = np.flatnonzero(good)
    sig = photon_resolution(calorimeter, g[:, 0], g[:, 1])
    _count(counts, "fit_ec", idx.size)
    ec = fit_energy_constrained(vf.p1[idx], vf.p2[idx], vf.cov[idx, 3:9, 3:9], g, sig,
                                p4_beam=beam.p4_total_lab(), mass=M_E,
                                constraints=c.constraints, cov_beam=beam.p4_covariance_lab())
    k2 = ec.converged & np.isfinite(ec.chi2) & (ec.chi2 < c.chi2_ec_max)
    r = rows[k2]
    j = idx[k2]
    cols = _empty(r.size)
    cols["event_id"] = eid[r]
    cols["channel"] = np.full(r.size, "ee", dtype=object)
    cols["m_ll"] = ec.m_pair[k2]
    cols["m_ll_raw"] = vf.m_before[j]
    cols["sigma_m_ll"] = ec.sigma_m_pair[k2]
    cols["chi2"] = ec.chi2[k2]
    cols["ndf"] = np.full(r.size, ec.ndf, np.int16)
    cols["prob"] = ec.prob[k2]
    cols["chi2_vtx"] = vf.chi2[j]
    cols["prob_vtx"] = vf.prob[j]
    cols["r_xy_cm"] = vf.r_xy[j]
    cols["r_xy_sig"] = vf.r_xy_sig[j]
    cols["r_xy_twin_cm"] = np.hypot(vf.twin_vertex[j, 0], vf.twin_vertex[j, 1])
    cols["dchi2_vtx_twin"] = vf.twin_dchi2[j]
    cols["m_before"] = vf.m_before[j]
    cols["m_after"] = vf.m_after[j]
    cols["delta_m"] = vf.delta_m[j]
    cols["vtx_x_cm"] = vf.vertex[j, 0]
    cols["vtx_y_cm"] = vf.vertex[j, 1]
    cols["vtx_z_cm"] = vf.vertex[j, 2]
    cols["e_gamma"] = g[k2, 0]
    cols["weight"] = weight[r]
    _truth_fields(cols, r, reco.trk_truth, truth)
    return cols
