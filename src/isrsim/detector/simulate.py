"""Fast parameterised detector simulation: TruthChunk -> RecoChunk in one fused kernel pass.

Model (all numbers from the detector file, see ``detectors/README.md``):

* **Which particles.** Final-state particles only: a particle that has a daughter in the truth
  list (an A', a converted photon, ...) is skipped. Charged e, mu, pi become tracks; photons
  (and charged particles that are not reconstructed as tracks but reach the calorimeter)
  become clusters.
* **Tracks.** The true perigee helix (:mod:`isrsim.helix`, exact, w.r.t. the origin) of the
  particle from its TRUE production vertex. Electrons lose energy by bremsstrahlung
  (Bethe-Heitler: ``-ln z ~ Gamma(t/ln 2)``, as
  :func:`~isrsim.detector.material.bremsstrahlung_survival_fraction`) in every material layer
  the helix crosses between the production point and ``tracker.momentum_measurement_radius_cm``
  (incidence angle from the exact crossing; ``phi_fraction`` as a hit probability); a layer
  loss ``-ln z`` below ``1e-5`` counts as none (soft photons below the dielectric-suppression
  scale ``k ~ gamma hbar omega_p``, where the Bethe-Heitler spectrum does not apply; see
  :data:`_U_MIN`). The measured momentum is the degraded one (low-side M_ee tail). A loss
  before the first sensitive layer outside the production point kinks the measured helix (it is
  recomputed exactly from the crossing point); a loss at or beyond that layer, where the
  track's position and direction are first measured, changes the measured curvature only: the
  measured helix passes through that first crossing with the direction there and the final
  momentum. (Taking the post-loss helix extrapolated to the IP instead, as up to 2026-11-20,
  gave 9 % of 1 GeV Belle II electrons a d0 more than 5 sigma off, kinks in the SVD moving d0
  by ~Delta omega r^2/2 ~ 0.1-0.2 mm, which the pixel hits of a real track fit do not allow.)
  At BESIII the first sensitive layer is the momentum-measurement layer: every loss is a kink.
  The sampling is exact for
  this model but does no work for the layer crossings without a loss (see :func:`_brems_walk`),
  and none at all for an electron outside the tracking acceptance that cannot enter a
  calorimeter region at any momentum (nothing of it is recorded; :func:`_may_enter_a_region`).
  Multiple scattering is represented by the Gaussian covariance (the ``b`` terms of the
  resolution model are the multiple-scattering terms), not by explicit kicks, so the pulls
  stay unit-normal.
* **Covariance** (parameterised, contracts.md order d0, phi0, omega, z0, tanl):
  ``sigma(omega)/|omega| = pt_a pT (+) pt_b/beta``;
  ``sigma(d0) = f (d0_a (+) d0_b/(p beta sin^{3/2} theta))``, ``sigma(z0)`` with sin^{5/2};
  ``sigma(phi0) = phi0_a (+) phi0_b/(p beta sin^{3/2} theta)``, ``sigma(tanl)`` with sin^{5/2};
  optional correlations rho(d0, phi0), rho(z0, tanl). ``f = r_first / r_0 >= 1`` is the lever
  arm of the extrapolation: ``r_first`` the first sensitive layer outside the production radius,
  ``r_0`` the innermost layer (displaced tracks have worse impact parameters). A particle
  produced on a layer radius (within :data:`_R_ON_LAYER`, e.g. a conversion in a thin layer) is
  outside that layer: neither its first sensitive layer nor material it crosses. A sensitive
  layer at the radius of a material layer with ``phi_fraction < 1`` (Belle II Run-1 PXD L2: 2
  of 12 ladders) is hit with that probability (:func:`sensitive_layer_coverage`; drawn
  independently of the material crossing in the bremsstrahlung walk); when it is missed, the
  next layer is the first.
  Smearing: exact Cholesky factor of the two 2x2 blocks (d0, phi0), (z0, tanl) and omega.
* **Acceptance / efficiency.** True polar angle within the tracking acceptance; at least
  ``min_layers`` sensitive layers hit between the production radius and the helix' maximum
  radius ``|d0 + 2/omega|`` (very soft tracks curl up and are lost; a partially covered layer
  counts with its coverage probability, drawn only for a track that could fall short without
  it: Belle II Run 1, pT 44.5-46.8 MeV, PXD L2 at 17 %); efficiency
  ``plateau (1 - exp(-(pT - pt_min)/pt_turnon))``.
* **Calorimeter.** Regions (barrel/end caps, gaps between them) are polar-angle windows of
  the front surface, a closed can: the barrel cylinder ``barrel_radius_cm`` between the
  end-cap faces ``endcap_backward_z_cm`` / ``endcap_forward_z_cm``. A photon's region is that
  of its direction; a charged particle's that of the point where its helix (after the
  bremsstrahlung losses) enters the can (:func:`_calorimeter_entry`): a soft track that curls
  up inside the barrel radius spirals on to an end-cap face, and lands in a region or in the
  beam hole. An untracked charged particle's cluster is placed at that point. Energy resolution
  ``stochastic/sqrt(E) (+) quarter/E^(1/4) (+) constant (+) noise/E``, angular resolution
  ``a/sqrt(E) (+) c`` (sigma_phi = sigma_theta/sin theta); clusters below the region's
  threshold are dropped. Electrons deposit their (post-bremsstrahlung) energy, muons and pions
  a MIP signal (pions shower electron-like with probability ``pid.electron.pion_misid``).
  Bremsstrahlung photons make clusters of their own only with ``calorimeter.brems_clusters =
  true`` (default false, as the bundled detectors): a loss whose photon carries at least half
  the lowest cluster threshold is emitted along the electron's direction at that crossing (up
  to :data:`_BREMS_MAX` per electron), into the region of the electron's polar angle, smeared
  as a photon, never merged with the electron's cluster (in 1-1.5 T a 1 GeV electron lands
  ~0.1-0.3 rad away from its photons; at several GeV in pT they would overlap).
* **PID.** Muon-ID decision drawn from the momentum table (efficiency for muons, pi->mu misID
  for pions, ``electron_misid`` for electrons) inside the muon-system acceptance; electron-ID
  decision ``E/p > e_over_p_cut`` (times ``efficiency`` for electrons, ``muon_misid`` extra
  fakes for muons). ``prob_e/mu/pi`` are the posterior probabilities of the observed decisions
  for equal priors, with the nominal rates as likelihoods (sum to 1).

``smear=False`` switches off every resolution effect and bremsstrahlung (tracks give back the
exact true helix, clusters the true energy/direction); acceptance, efficiencies and PID
decisions stay random.

Cost (belle2, one core, 2026-11-21, blocks of 10^4 events as the runner calls it): an isr_mumu
event (2 tracks + 1 photon) takes ~300 ns (15 normal + 6 uniform draws ~90 ns, 4 table atan2
(:func:`isrsim.helix._atan2_fast`, ~9 ns instead of libm's ~20) and ~25 sqrt, ~19 ns per track
to find the calorimeter entry region; a single call for 10^6 events costs ~70 ns/event more,
first-touching fresh output arrays); a diphoton event ~155 ns. A Belle II ISR electron in the
acceptance adds the walk, ~190 ns (isr_ee: ~250 ns per event, 557 vs 304 ns with the walk
switched off): ~30 ns to set up, ~30 ns to scan the 11 layers, ~130 ns for 1.19 bound
candidates, 1.09 Gamma(1 + a) draws (:func:`_gamma1p`, ~13 ns each) and 0.80 helix updates per
walked electron, instead of ~23 draws and ~200 libm calls for 11 exact per-layer updates
(measured 2026-11-20, when every loss kinked the helix; since losses beyond PXD L1 change the
curvature only, most of those updates are one final update per electron: isr_ee 535-554 ns
per event against 600 measured the same way on 2026-11-21, i.e. within this VM's noise).
The walk is inlined (:data:`isrsim._numba.kernel_inline`): as a
compiled call it increfs and decrefs its five arrays and the generator, ~37 ns per electron.
Inlined, it still did so with the kernel's own arguments (8 atomic incref/decref pairs per walked
electron, one pair per charged particle for :func:`_entry_region`, one per Gamma draw), so the
kernel passes :func:`isrsim._numba.borrowed` views to its inlined helpers (2026-11-22, same
events bit for bit: isr_ee 606 -> 567 ns/event, median of 15 alternated passes in one process).
The output arrays are allocated uninitialised and every slot is written by the kernel (no
memset of ~450 B per event before it).
Polar-angle windows and photon regions are compared as cos(theta) intervals (no branch waits
for an atan2), angles are wrapped without libm calls.
"""

from __future__ import annotations

import math

import numpy as np

from .._numba import borrowed, kernel, kernel_inline
from ..constants import K_CURV, M_E, M_MU, M_PI, SQRT_S_MAX
from ..events import RecoChunk, TruthChunk
from ..exceptions import ConfigError
from ..helix import _atan2_fast, perigee_from_state, state_at_arclength
from .model import DetectorModel

__all__ = ["TRACK_EXTRA_FIELDS", "add_primary_vertex", "simulate"]

#: Per-track fields written to ``RecoChunk.track_extra`` (float32 [n, kt], contracts.md).
TRACK_EXTRA_FIELDS = ("prob_e", "prob_mu", "prob_pi", "e_over_p", "p_lab")

_P_FLOOR = 1e-4  # likelihood floor so that no hypothesis gets exactly zero probability


#: Soft-photon cutoff of the Bethe-Heitler loss per layer: a layer whose ``u = -ln z`` is below
#: ``_U_MIN`` costs the electron nothing. Below ``y = k/E ~ hbar omega_p / m_e`` the medium's
#: polarisation suppresses bremsstrahlung by ~(k / gamma hbar omega_p)^2 (Ter-Mikaelian
#: dielectric suppression; PDG RPP "Passage of particles through matter", LPM and dielectric
#: suppression; measured by SLAC E-146, Anthony et al., PRL 76 (1996) 3550), i.e. the 1/k
#: Bethe-Heitler spectrum is wrong there: hbar omega_p = 28.816 eV sqrt(rho <Z/A>) is 21 eV
#: (paraffin) to 80 eV (Au) for the bundled materials, y = 4e-5 to 1.6e-4. 1e-5 lies a factor
#: >= 4 below that for every solid (suppression >= 16x at the cutoff); the energy the cutoff
#: removes is below 1e-5 E per layer (on average ~1e-5 a E, a = t/ln 2).
_U_MIN = 1e-5
#: Bound on ``G ~ Gamma(1 + a)`` used for the candidate selection: P(G > 40) <= 41 e^-40 = 1.7e-16
#: for a <= 1 (~4e-18 for the thin layers of the bundled detectors, a ~ 0.01).
_G_MAX = 40.0
#: Hazard scale of the candidate-layer sampling (see :func:`_brems_walk`): a layer of
#: ``a = t/ln 2`` is a candidate with probability ``1 - exp(-K a)``; otherwise
#: ``u = G e^{-E/a} < G_max e^{-K} = U_MIN`` (``E > K a``): no loss. K = ln(G_max / U_MIN) = 15.2
#: (it was ln(1e20) = 46 while losses were kept down to the last bit of z: per Belle II ISR
#: electron 2.1 instead of 0.84 candidate layers and 1.67 instead of 0.57 helix updates).
_K_CANDIDATE = math.log(_G_MAX / _U_MIN)
_INV_LN2 = 1.0 / math.log(2.0)
_TWO_PI = 2.0 * math.pi
#: Most radiated-photon clusters recorded per electron (``calorimeter.brems_clusters``). With
#: the Belle II material a 1 GeV electron makes 0.135 photon clusters on average
#: (validation/detector); Poisson-like, P(>= 3) ~ 0.135^3/6 = 4e-4 of the electrons lose one.
_BREMS_MAX = 2
#: ``1/cos h`` bound meaning "no bound" (finite so that ``0 * _NO_BOUND == 0`` for tanl = 0).
_NO_BOUND = 1e100
#: A particle produced within this distance [cm] (10 nm) of a layer radius is produced on that
#: layer: it is not the particle's first sensitive layer (lever arm, ``min_layers``) and not
#: material it crosses. ``convert_photons`` places a conversion in a thin layer exactly on its
#: radius, and ``sqrt(x^2 + y^2)`` of that point is off by an ulp either way: without the
#: tolerance ~10-20 % of the tracks born in a Belle II silicon layer took that layer as their
#: first measurement (sigma(d0) and sigma(z0) 1.6-2 times too small) and their electrons
#: crossed its material a second time.
_R_ON_LAYER = 1e-6
#: Largest particle energy [GeV] the simulation accepts: both beams at the generators' largest
#: sqrt(s) (:data:`isrsim.constants.SQRT_S_MAX`); |p| = 1e300 ended in an internal error.
_E_TRUTH_MAX = 2.0 * SQRT_S_MAX
#: A momentum component may exceed E by rounding only (massless photons: |p| = E).
_E_SLACK = 1.0 + 1e-9


@kernel
def _region_of_cos(cos_t, regions_cos):
    """Region index from cos(theta): ``regions_cos[r] = (cos theta_max, cos theta_min)``."""
    for r in range(regions_cos.shape[0]):
        if regions_cos[r, 0] <= cos_t <= regions_cos[r, 1]:
            return r
    return -1


@kernel
def _wrap(a):
    """Map an angle into [-pi, pi] (one addition of +-2 pi for |a| < 3 pi, no libm call)."""
    if -math.pi <= a <= math.pi:
        return a
    if a > 0.0 and a < 3.0 * math.pi:
        return a - _TWO_PI
    if a < 0.0 and a > -3.0 * math.pi:
        return a + _TWO_PI
    return math.atan2(math.sin(a), math.cos(a))  # large or non-finite input


@kernel
def _sigma_e_rel(e, regions, r):
    inv_se = 1.0 / math.sqrt(e)
    a = regions[r, 3] * inv_se
    b = regions[r, 4] * math.sqrt(inv_se)
    c = regions[r, 5]
    d = regions[r, 6] * inv_se * inv_se
    return math.sqrt(a * a + b * b + c * c + d * d)


@kernel
def _sigma_angle(e, regions, r):
    a = regions[r, 7] / math.sqrt(e)
    c = regions[r, 8]
    return math.sqrt(a * a + c * c)


@kernel
def _muon_rates(p, table):
    nrow = table.shape[0]
    for r in range(nrow):
        if p < table[r, 1]:
            return table[r, 2], table[r, 3]
    return table[nrow - 1, 2], table[nrow - 1, 3]


@kernel
def _clip_prob(p):
    return min(max(p, _P_FLOOR), 1.0 - _P_FLOOR)


@kernel
def _helix_after_loss(d0, phi0, om, z0, tl, sq, cq, s, scale, q, bz):
    """Perigee helix after the momentum is scaled by ``scale`` at an outward crossing.

    The crossing is at transverse arc length ``s`` from the perigee, ``|omega| s/2 = h``
    with ``sin h = sq``, ``cos h = cq``. Position and direction are written in the frame
    rotated by ``-phi0`` without trigonometric calls: ``x' = chord cq``,
    ``y' = -d0 - chord sign(omega) sq``, ``chord = 2 sq/|omega|``, direction
    ``(1 - 2 sq^2, -2 sign(omega) sq cq)`` (azimuth ``-2 sign(omega) h``). The new perigee
    follows the closed forms of :func:`isrsim.helix.perigee_from_state`; its rotation angle
    ``phi0' - phi0`` is small for small losses (series atan2), and the turning angle from the
    new perigee to the crossing is that rotation plus ``2 sign(omega) h`` (no second atan2).
    ``tanl`` is unchanged (the direction is kept). Equivalent to
    ``perigee_from_state(*state_at_arclength(..., s))`` with the scaled momentum (tested).
    """
    aom = abs(om)
    sg = 1.0 if om > 0.0 else -1.0
    chord = 2.0 * sq / aom
    xr = chord * cq
    yr = -d0 - chord * sg * sq
    pt_new = K_CURV * bz / aom * scale
    ptx = pt_new * (1.0 - 2.0 * sq * sq)
    pty = pt_new * (-2.0 * sg * sq * cq)
    qb = q * K_CURV * bz
    ppx = ptx - qb * yr
    ppy = pty + qb * xr
    rot = _atan2_fast(ppy, ppx)
    p_per = math.sqrt(ppx * ppx + ppy * ppy)
    d0n = (qb * (xr * xr + yr * yr) + 2.0 * (xr * pty - yr * ptx)) / (pt_new + p_per)
    omn = qb / pt_new
    dphi = _wrap(rot + sg * aom * s)  # phi0' - phi(crossing); |omega| s = 2h
    z0n = z0 + tl * s - tl * (dphi / omn)
    return d0n, _wrap(phi0 + rot), omn, z0n, tl


@kernel
def _cq_bound(d0_max, om_max, r_hi):
    """Lower bound of ``cos h`` (``h`` half the turning angle from the perigee) at the first
    outward crossing of any radius ``<= r_hi`` by a helix with ``|d0| <= d0_max``,
    ``|omega| <= om_max``: ``sin^2 h = (r^2 - d0^2) omega^2 / (4 (1 + omega d0))`` is bounded
    with ``r <= r_hi`` and ``1 + omega d0 >= 1 - om_max d0_max``. Returns 0 when no useful bound
    exists."""
    a_lo = 1.0 - om_max * d0_max
    if a_lo <= 0.0:
        return 0.0
    q2 = 0.25 * r_hi * r_hi * om_max * om_max / a_lo
    if q2 >= 1.0:
        return 0.0
    return math.sqrt(1.0 - q2)


@kernel
def _cos_incidence_bound(d0_max, om_max, inv_st2, r_lo, cqb):
    """Lower bound of ``cos(incidence)`` for outward crossings of radii in [r_lo, r_hi] by any
    helix with ``|d0| <= d0_max``, ``|omega| <= om_max`` and the given ``(pT/p)^2 = inv_st2``;
    ``cqb = _cq_bound(d0_max, om_max, r_hi)``.

    At radius r the transverse incidence cosine is
    ``sqrt(a (1 - d0^2/r^2) (1 - (r^2 - d0^2) omega^2 / (4 a)))``, ``a = 1 + omega d0``
    (from the crossing relation of :func:`isrsim.detector.material.crossing_arclength`); each
    factor is bounded with ``a >= 1 - om_max d0_max``, ``r >= r_lo`` in the second and
    ``r <= r_hi`` in the third (:func:`_cq_bound`). Returns 0 when no useful bound exists.
    """
    a_lo = 1.0 - om_max * d0_max
    f = 1.0 - d0_max * d0_max / (r_lo * r_lo)
    if a_lo <= 0.0 or f <= 0.0:
        return 0.0
    return math.sqrt(a_lo * f * inv_st2) * cqb


@kernel
def _hazard_bound(d0_b, om_b, inv_st2, r_lo, r_hi):
    """``(hfac, inv_cqb)`` of the brems walk for helices with ``|d0| <= d0_b``,
    ``|omega| <= om_b`` crossing radii in [r_lo, r_hi]: the bound hazard per unit x/X0,
    ``K / (ln 2 max(c_lb, 1e-3))`` (:func:`_cos_incidence_bound`), and ``1/_cq_bound``
    (:data:`_NO_BOUND` if there is none) for :func:`_may_cross_in_z`."""
    cqb = _cq_bound(d0_b, om_b, r_hi)
    c_lb = _cos_incidence_bound(d0_b, om_b, inv_st2, r_lo, cqb)
    hfac = _K_CANDIDATE * _INV_LN2 / max(c_lb, 1e-3)
    return hfac, (1.0 / cqb if cqb > 0.0 else _NO_BOUND)


@kernel
def _asin_fast(x):
    """``asin(x)`` for ``0 <= x <= 1``; below 0.1 the Taylor series to x^17 (the first neglected
    term is 0.0098 x^19 < 1e-20 x, i.e. exact in double precision), else libm."""
    if x >= 0.1:
        return math.asin(x)
    x2 = x * x
    return x * (1.0 + x2 * (1.0 / 6.0 + x2 * (3.0 / 40.0 + x2 * (5.0 / 112.0 + x2 * (
        35.0 / 1152.0 + x2 * (63.0 / 2816.0 + x2 * (231.0 / 13312.0 + x2 * (
            143.0 / 10240.0 + x2 * (6435.0 / 557056.0)))))))))


@kernel
def _may_cross_in_z(z0, tl, d0, r, inv_cqb, zmin, zmax):
    """False only if the first outward crossing of radius ``r`` certainly lies outside
    [zmin, zmax]: its transverse arc length from the perigee is at least the chord
    ``>= r - |d0|`` and at most ``chord / cos h <= (r + |d0|) inv_cqb`` (``inv_cqb`` the inverse
    of :func:`_cq_bound`, :data:`_NO_BOUND` for no bound), with a 1e-9 relative slack for
    rounding. Written without branches (min/max and a bitwise and): it is evaluated for every
    layer of every electron and its outcome is unpredictable."""
    ad0 = abs(d0)
    z_a = z0 + tl * ((r - ad0) * (1.0 - 1e-9))
    z_b = z0 + tl * ((r + ad0) * inv_cqb * (1.0 + 1e-9))
    return (max(z_a, z_b) >= zmin) & (min(z_a, z_b) <= zmax)


@kernel_inline
def _r2_at(d0, om, a1, s):
    """Squared radius of the helix after transverse arc ``s`` from the perigee:
    ``d0^2 + 4 (1 + omega d0) sin^2(omega s/2) / omega^2`` (``a1 = 1 + omega d0``)."""
    sh = math.sin(0.5 * om * s)
    return d0 * d0 + 4.0 * a1 * sh * sh / (om * om)


@kernel
def _calorimeter_entry(d0, om, z0, tl, r_b, z_bwd, z_fwd):
    """``(s, r, z)``: transverse arc length from the perigee, radius and z of the point where
    the helix enters the calorimeter's front surface, a closed can: the barrel cylinder
    ``r = r_b`` for ``z_bwd <= z <= z_fwd``, else the end-cap face ``z = z_fwd`` (tanl > 0) or
    ``z_bwd`` (tanl < 0) inside it. ``r^2(s) = d0^2 + 4 (1 + omega d0) sin^2(omega s/2) /
    omega^2``, so the first barrel crossing has ``sin^2(omega s/2) = (r_b^2 - d0^2) omega^2 /
    (4 (1 + omega d0))`` (the crossing relation of the walk); a helix that does not reach
    ``r_b`` on its first half turn, or reaches it beyond a face, spirals on to that face.
    ``s = -1`` if it meets neither (tanl = 0 and the barrel out of reach).
    """
    a1 = 1.0 + om * d0
    if abs(d0) < r_b and a1 > 0.0:
        q2 = 0.25 * (r_b * r_b - d0 * d0) * om * om / a1
        if q2 <= 1.0:
            s = 2.0 * _asin_fast(math.sqrt(q2)) / abs(om)
            z = z0 + tl * s
            if z_bwd <= z <= z_fwd:
                return s, r_b, z
    if tl > 0.0:
        zf = z_fwd
    elif tl < 0.0:
        zf = z_bwd
    else:
        return -1.0, 0.0, 0.0
    s = (zf - z0) / tl
    if s < 0.0:
        return -1.0, 0.0, 0.0
    return s, math.sqrt(max(_r2_at(d0, om, a1, s), 0.0)), zf


#: ``asin(q) <= q + q^3/6 + C q^5`` on [0, 1] with ``C = pi/2 - 7/6`` (the remaining Taylor
#: terms are positive, so their sum over q^5 grows with q and is largest at q = 1)
_ASIN_Q5 = math.pi / 2.0 - 7.0 / 6.0


@kernel
def _window_of(v, win, c):
    """Index of the region whose window ``[win[r, c], win[r, c + 1]]`` contains ``v``, or -1."""
    for r in range(win.shape[0]):
        if win[r, c] <= v <= win[r, c + 1]:
            return r
    return -1


def calorimeter_windows(regions: np.ndarray, r_b: float, z_bwd: float, z_fwd: float) -> np.ndarray:
    """Region windows on the calorimeter's front surface, float64 [n_regions, 6]: z on the
    barrel cylinder, r^2 on the forward face, r^2 on the backward face (an empty window has
    its lower edge above its upper one). A point of the surface at polar angle theta (seen
    from the origin) lies in a region iff its coordinate lies in the region's window."""
    big = 1e300
    win = np.empty((regions.shape[0], 6))
    for r, (t1, t2) in enumerate(regions[:, :2]):
        win[r, 0] = r_b / math.tan(t2) if t2 < math.pi else -big
        win[r, 1] = r_b / math.tan(t1) if t1 > 0.0 else big
        half = 0.5 * math.pi
        if t1 < half:  # forward face: r = z_fwd tan(theta), theta < 90 deg
            win[r, 2] = (z_fwd * math.tan(t1)) ** 2
            win[r, 3] = (z_fwd * math.tan(t2)) ** 2 if t2 < half else big
        else:
            win[r, 2], win[r, 3] = big, -big
        if t2 > half:  # backward face: r = |z_bwd| tan(pi - theta)
            win[r, 4] = (z_bwd * math.tan(math.pi - t2)) ** 2
            win[r, 5] = (z_bwd * math.tan(math.pi - t1)) ** 2 if t1 > half else big
        else:
            win[r, 4], win[r, 5] = big, -big
    return win


@kernel_inline
def _entry_region(d0, om, z0, tl, r_b, z_bwd, z_fwd, win):
    """Calorimeter region of the point where the helix enters the front surface (the point of
    :func:`_calorimeter_entry`), -1 if none or a gap. The region needs only the entry
    coordinate (z on the barrel, r^2 on a face; :func:`calorimeter_windows`), which is first
    bracketed with multiplications only; the exact coordinate (asin or sin) is computed only
    when the bracket straddles a region edge or a face or starts in a gap (a few per mille of
    tracks).

    Barrel: ``s = c asin(q)/q`` with chord ``c = sqrt((r_b^2 - d0^2)/a)`` and
    ``q^2 = (r_b^2 - d0^2) omega^2 / (4 a)``, ``a = 1 + omega d0``; with ``x = |omega d0| < 1/2``,
    ``1 - x <= 1/a <= 1 + 2x``, ``1 - x/2 <= 1/sqrt(a) <= 1 + x``,
    ``r_b - d0^2/r_b <= sqrt(r_b^2 - d0^2) <= r_b`` and
    ``1 + q^2/6 <= asin(q)/q <= 1 + q^2/6 + C q^4`` (:data:`_ASIN_Q5`).
    Face: ``r^2 = d0^2 + a s^2 (sin(h)/h)^2``, ``h = |omega| s/2``, with
    ``1 - h^2/6 <= sin(h)/h <= 1 - h^2/6 + h^4/120`` (h < 1/2).
    Measured (2026-11-21, Belle II tracks at 0.3-2.6 rad, 0.3-4 GeV): ~4 ns per track;
    the exact closed form for every track cost ~40.
    """
    aom = abs(om)
    x = aom * abs(d0)
    if x < 0.5 and abs(d0) < r_b:
        w2 = r_b * r_b - d0 * d0
        om2 = 0.25 * om * om
        q2_lo = om2 * w2 * (1.0 - x)
        q2_hi = om2 * r_b * r_b * (1.0 + 2.0 * x)
        if q2_hi <= 1.0:  # the barrel radius is reached on the first half turn
            s_lo = (r_b - d0 * d0 / r_b) * (1.0 - 0.5 * x) * (1.0 + q2_lo * (1.0 / 6.0))
            s_hi = r_b * (1.0 + x) * (1.0 + q2_hi * (1.0 / 6.0 + _ASIN_Q5 * q2_hi))
            za = z0 + tl * s_lo
            zb = z0 + tl * s_hi
            z_min = min(za, zb)
            z_max = max(za, zb)
            if z_min >= z_bwd and z_max <= z_fwd:
                r1 = _window_of(z_min, win, 0)
                if r1 >= 0 and z_max <= win[r1, 1]:
                    return r1
            elif z_max < z_bwd or z_min > z_fwd:
                return _face_region(d0, om, z0, tl, z_bwd, z_fwd, win)
    s_b, r_e, z_e = _calorimeter_entry(d0, om, z0, tl, r_b, z_bwd, z_fwd)
    if s_b < 0.0:
        return -1
    if r_e == r_b:
        return _window_of(z_e, win, 0)
    return _window_of(r_e * r_e, win, 2 if z_e > 0.0 else 4)


@kernel_inline
def _face_region(d0, om, z0, tl, z_bwd, z_fwd, win):
    """Region where a helix known to miss the barrel meets the end-cap face ahead of it (see
    :func:`_entry_region`); -1 for tanl = 0 or a gap."""
    if tl == 0.0:
        return -1
    zf = z_fwd if tl > 0.0 else z_bwd
    c = 2 if tl > 0.0 else 4
    s = (zf - z0) / tl
    if s < 0.0:
        return -1
    h = 0.5 * abs(om) * s
    a = 1.0 + om * d0
    if h < 0.5:
        h2 = h * h
        f_lo = 1.0 - h2 * (1.0 / 6.0)
        f_hi = f_lo + h2 * h2 * (1.0 / 120.0)
        as2 = a * s * s
        r1 = _window_of(d0 * d0 + as2 * f_lo * f_lo, win, c)
        if r1 >= 0 and d0 * d0 + as2 * f_hi * f_hi <= win[r1, c + 1]:
            return r1
    return _window_of(_r2_at(d0, om, a, s), win, c)


@kernel
def _may_enter_a_region(r_prod, z_prod, tl, r_b, z_bwd, z_fwd, cos_first, cos_last):
    """False only if a charged particle produced at ``(r_prod, z_prod)`` with this tanl cannot
    enter the calorimeter inside any region, whatever its momentum (bremsstrahlung changes only
    the curvature): over a transverse arc ``s`` it moves at most ``s`` away from the axis while
    z advances by ``tanl s``. So it cannot meet the barrel before the end-cap face
    ``z_f`` ahead of it if ``z_prod + tanl (r_b - r_prod)`` lies beyond that face, and then it
    meets the face at ``r <= r_prod + (z_f - z_prod)/tanl``, i.e. at a polar angle closer to the
    beam than that radius gives. ``cos_first``, ``cos_last``: cos of the smallest and of the
    largest polar angle covered by a region."""
    if r_prod >= r_b or tl == 0.0:
        return True
    z_at_rb = z_prod + tl * (r_b - r_prod)
    zf = z_fwd if tl > 0.0 else z_bwd
    if (tl > 0.0 and z_at_rb <= zf) or (tl < 0.0 and z_at_rb >= zf):
        return True
    r_hi = r_prod + (zf - z_prod) / tl
    c = zf / math.sqrt(zf * zf + r_hi * r_hi)  # cos(theta) of the entry is beyond c
    return c <= cos_first if tl > 0.0 else c >= cos_last


@kernel_inline
def _gamma1p(rng, a):
    """``G ~ Gamma(1 + a)`` for ``a >= 0``.

    For ``a <= 0.1`` (every layer of the bundled detectors up to ~84 deg incidence) exact
    rejection from ``x = E/(1 - a)``, ``E ~ Exp(1)``: the density ratio
    ``x^a e^{-x} / e^{-(1-a) x}`` peaks at ``x = 1``, so ``x`` is accepted with probability
    ``exp(-a (x - 1 - ln x))``, i.e. iff an independent ``E' ~ Exp(1)`` exceeds
    ``a (x - 1 - ln x)``; ``ln x >= 1 - 1/x`` gives the squeeze ``E' x >= a (x - 1)^2`` that
    accepts without the logarithm (it is needed for 1.4 % of the draws at a = 0.003, 3.5 % at
    0.01, 16 % at 0.1). Acceptance
    ``e^a Gamma(1 + a)(1 - a) >= 0.94`` for ``a <= 0.1``. Measured in numba (2026-11-21):
    12-15 ns against 22 ns for numpy's Marsaglia-Tsang draw, which is used above ``a = 0.1``
    (25 ns for the rejection at a = 0.3).
    """
    if a > 0.1:
        return rng.standard_gamma(1.0 + a)
    inv = 1.0 / (1.0 - a)
    while True:
        x = rng.standard_exponential() * inv
        e = rng.standard_exponential()
        d = x - 1.0
        if e * x >= a * d * d:
            return x
        if x > 0.0 and e >= a * (d - math.log(x)):
            return x


@kernel_inline
def _momentum_ratio(e_new, e_old, mass):
    """``p_new / p_old`` of a particle of this mass at energies ``e_new``, ``e_old``."""
    return math.sqrt((e_new * e_new - mass * mass) / (e_old * e_old - mass * mass))


@kernel_inline
def _brems_walk(rng, d0, phi0, om, z0, tl, q, bz, mass, e_cur, r_prod, r_pin, r_meas,
                mat_r, mat_zmin, mat_zmax, mat_x, mat_phif, k_rec, brem_e, brem_phi):
    """Bethe-Heitler energy loss in the layers between the production and measurement radii.

    Physics: every layer the helix crosses (outward, inside its z range; a layer
    with ``phi_fraction < 1`` is met with that probability) multiplies the energy by
    ``z = exp(-u)``, ``u ~ Gamma(a)``, ``a = t/ln 2``, ``t = x/X0 / max(cos(incidence), 1e-3)``,
    unless ``u < U_MIN = 1e-5`` (:data:`_U_MIN`, the soft-photon cutoff: dielectric suppression).
    What a loss does to the measured helix depends on where it happens:

    * inside ``r_pin`` (the first sensitive layer outside the production point), before the
      track is first measured: the helix is recomputed exactly from the crossing point, so
      later crossings and the final perigee use the kinked trajectory (impact parameters
      included);
    * at or beyond ``r_pin``: the position and direction where the track is first measured are
      those of the trajectory before the loss, so the loss degrades the measured curvature
      only. The losses there are sampled along the helix entering that region (their
      crossings, incidence and z ranges are not recomputed after each loss); at the end the
      measured helix is the one through the ``r_pin`` crossing with the direction there and
      the final momentum (one exact update, :func:`_helix_after_loss`). With ``r_pin >= r_meas``
      every loss is a kink.

    Sampling (exact for this model, up to a probability < 2e-16 per layer for a <= 1):

    * ``u = G exp(-E/a)`` with ``G ~ Gamma(1 + a)``, ``E ~ Exp(1)`` (Stuart's theorem,
      Gamma(a) = Gamma(1 + a) U^{1/a}, ``U = e^{-E}``). A layer with ``E > K a``
      (K = :data:`_K_CANDIDATE` = ln(G_max/U_MIN)) has ``u < U_MIN`` unless ``G > G_max = 40``
      (probability < 2e-16 for a <= 1): only the other layers ("candidates", hazard ``K a``) need a draw
      of G, and only those with ``u >= U_MIN`` a helix update.
    * The first candidate is found with one Exp(1) variate against the accumulated hazard
      (memorylessness: the overshoot is that layer's conditional E). The hazard is first
      accumulated with an upper bound ``K x/X0 / (ln 2 max(c_lb, 1e-3))``, ``c_lb`` a lower bound
      of the incidence cosine over the remaining radii (:func:`_cos_incidence_bound`): a
      multiply-add per layer; the bound is computed for a slightly larger |omega| and |d0|
      and only recomputed when a loss leaves that range. At a bound candidate the exact
      crossing (reach, z range, incidence, in closed form without trigonometric calls) is
      computed, and the layer is
      a true candidate iff the overshoot is below its exact hazard (thinning: the truncated
      Exp(1) overshoot is then distributed as the exact layer's conditional E). Every
      bound candidate restarts with a fresh Exp(1). Layers whose z range the crossing
      certainly misses (:func:`_may_cross_in_z`, a few multiply-adds) have exact hazard 0 and
      are left out of the accumulation (this removed ~2.7 of ~4.9 bound candidates per Belle II
      ISR electron with the former K = 46: forward electrons miss the short inner layers).
    * Only true candidates draw the coverage decision (``phi_fraction``) and G
      (:func:`_gamma1p`); only real losses recompute the helix (:func:`_helix_after_loss`).

    Radiated photons (``k_rec > 0``, detector option ``calorimeter.brems_clusters``): a loss whose photon
    energy ``k = E (1 - z)`` is at least ``k_rec`` is recorded in ``brem_e`` (k) and
    ``brem_phi`` (azimuth of the electron's direction at the crossing, ``phi0 - 2 sign(omega)
    asin(sin h)``: the photon is emitted along it), up to ``len(brem_e)`` photons.

    Returns ``(alive, d0, phi0, omega, z0, tanl, e, n_photons)``.
    """
    n_rec = 0
    e_in = e_cur  # energy of the current helix (changes only at a kink)
    n_mat = mat_r.shape[0]
    m0 = 0
    while m0 < n_mat and mat_r[m0] <= r_prod:
        m0 += 1
    if m0 >= n_mat or mat_r[m0] >= r_meas:
        return True, d0, phi0, om, z0, tl, e_cur, n_rec
    e_thr = rng.standard_exponential()
    h_acc = 0.0
    inv_st2 = 1.0 / (1.0 + tl * tl)
    # hazard bound valid while |omega| <= om_b and |d0| <= d0_b (slack: losses rarely leave it)
    om_b = 1.05 * abs(om)
    d0_b = abs(d0) + 0.01 * mat_r[m0]
    hfac, inv_cqb = _hazard_bound(d0_b, om_b, inv_st2, mat_r[m0], r_meas)
    for m in range(m0, n_mat):
        rm = mat_r[m]
        if rm >= r_meas:
            break  # radii increase
        h_prev = h_acc
        # a layer whose z range the crossing certainly misses has exact hazard 0
        if _may_cross_in_z(z0, tl, d0, rm, inv_cqb, mat_zmin[m], mat_zmax[m]):
            h_acc += mat_x[m] * hfac
        if h_acc < e_thr:
            continue
        w = e_thr - h_prev  # Exp(1) conditioned on <= bound hazard of this layer
        e_thr = rng.standard_exponential()
        h_acc = 0.0
        # ---- exact crossing: r^2 = d0^2 + 2 (1 + omega d0)(1 - cos(omega s))/omega^2 ----
        if rm < abs(d0):
            break
        a1 = 1.0 + om * d0
        if a1 <= 0.0:
            break
        q2 = 0.25 * (rm * rm - d0 * d0) * om * om / a1
        if q2 < 0.0 or q2 > 1.0:
            break  # the helix never reaches this or any larger radius
        sq = math.sqrt(q2)
        cq = math.sqrt(1.0 - q2)
        aom = abs(om)
        # z at the crossing: s = 2 asin(sq)/|omega| lies in [2 sq, 2 sq/cq]/|omega|
        s = -1.0
        s_lo = 2.0 * sq / aom
        z_a = z0 + tl * s_lo
        decided = False
        if cq > 1e-8:
            z_b = z0 + tl * (s_lo / cq)
            z_lo = min(z_a, z_b)
            z_hi = max(z_a, z_b)
            if z_hi < mat_zmin[m] or z_lo > mat_zmax[m]:
                continue
            decided = z_lo >= mat_zmin[m] and z_hi <= mat_zmax[m]
        if not decided:
            s = 2.0 * _asin_fast(sq) / aom
            zc = z0 + tl * s
            if zc < mat_zmin[m] or zc > mat_zmax[m]:
                continue
        cos_inc = math.sqrt(a1 * (1.0 - d0 * d0 / (rm * rm)) * inv_st2) * cq
        am = mat_x[m] / max(cos_inc, 1e-3) * _INV_LN2
        if w > _K_CANDIDATE * am:
            continue  # not a candidate of the exact hazard: z == 1.0
        if mat_phif[m] < 1.0 and rng.random() >= mat_phif[m]:
            continue
        u = _gamma1p(rng, am) * math.exp(-w / am)
        if u < _U_MIN:
            continue  # below the soft-photon cutoff: no loss
        zk = math.exp(-u)
        e_new = e_cur * zk
        if k_rec > 0.0 and e_cur - e_new >= k_rec and n_rec < brem_e.shape[0]:
            brem_e[n_rec] = e_cur - e_new
            brem_phi[n_rec] = phi0 - (2.0 if om > 0.0 else -2.0) * _asin_fast(sq)
            n_rec += 1
        if e_new <= 1.001 * mass:
            return False, d0, phi0, om, z0, tl, e_new, n_rec
        e_cur = e_new
        if rm >= r_pin:
            continue  # after the first measurement: the curvature only, applied at the end
        if s < 0.0:
            s = 2.0 * _asin_fast(sq) / aom
        d0, phi0, om, z0, tl = _helix_after_loss(d0, phi0, om, z0, tl, sq, cq, s,
                                                 _momentum_ratio(e_new, e_in, mass), q, bz)
        e_in = e_new
        if m + 1 < n_mat and (abs(om) > om_b or abs(d0) > d0_b):
            om_b = 1.05 * abs(om)
            d0_b = abs(d0) + 0.01 * mat_r[m + 1]
            hfac, inv_cqb = _hazard_bound(d0_b, om_b, inv_st2, mat_r[m + 1], r_meas)
    if e_cur != e_in:
        # losses beyond r_pin: the helix through the r_pin crossing with the final momentum
        # (the helix reached a layer at or beyond r_pin, so it reaches r_pin)
        a1 = 1.0 + om * d0
        q2 = min(max(0.25 * (r_pin * r_pin - d0 * d0) * om * om / a1, 0.0), 1.0)
        sq = math.sqrt(q2)
        s = 2.0 * _asin_fast(sq) / abs(om)
        d0, phi0, om, z0, tl = _helix_after_loss(d0, phi0, om, z0, tl, sq, math.sqrt(1.0 - q2), s,
                                                 _momentum_ratio(e_cur, e_in, mass), q, bz)
    return True, d0, phi0, om, z0, tl, e_cur, n_rec


@kernel
def _brems_pass(rng, brem_n, brem_out, regions, regions_cos, nphot, phot, phot_truth):
    """Clusters of the photons radiated by electrons (``calorimeter.brems_clusters``), after the
    simulation pass: ``brem_out[i, b] = (k, azimuth, cos theta, truth index)`` as recorded by
    :func:`_brems_walk`. Each goes to the region of the electron's polar angle (a helix keeps
    it, and the photon is emitted along the electron), smeared as a photon, separate from the
    electron's own cluster, appended to the event's photons (truth index: the electron's).
    A pass of its own, not in the simulation kernel: there, its draws made every isr_ee event
    35-150 ns slower even with the option off (measured 2026-11-21), and here the option leaves
    the random numbers of the rest of the simulation unchanged."""
    kg = phot.shape[1]
    for i in range(brem_n.shape[0]):
        ng = nphot[i]
        for b in range(brem_n[i]):
            cos_t = brem_out[i, b, 2]
            reg = _region_of_cos(cos_t, regions_cos)
            if reg < 0 or ng >= kg:
                continue
            k = brem_out[i, b, 0]
            sin_t = math.sqrt(max(1.0 - cos_t * cos_t, 0.0))
            sa = _sigma_angle(k, regions, reg)
            e_m = k * (1.0 + _sigma_e_rel(k, regions, reg) * rng.standard_normal())
            th_m = math.acos(cos_t) + sa * rng.standard_normal()
            ph_m = brem_out[i, b, 1] + sa / max(sin_t, 1e-6) * rng.standard_normal()
            if e_m < regions[reg, 2]:
                continue
            phot[i, ng, 0] = e_m
            phot[i, ng, 1] = min(max(th_m, 0.0), math.pi)
            phot[i, ng, 2] = _wrap(ph_m)
            phot_truth[i, ng] = int(brem_out[i, b, 3])
            ng += 1
        nphot[i] = ng


@kernel
def _simulate_kernel(rng, npart, pdg, p4, vtx, parent, bz, tp, layer_r, layer_cov,
                     mat_r, mat_zmin, mat_zmax, mat_x, mat_phif,
                     regions, regions_cos, barrel_r, z_ec_bwd, z_ec_fwd, cal_win, mip_e, mip_spread, pp,
                     mu_table, smear, brems_k_rec, brem_n, brem_out, brem_scratch, ntrk, charge,
                     helix, cov, trk_truth, nphot, phot, phot_truth, prob_e, prob_mu, prob_pi,
                     e_over_p, p_lab):
    n = npart.shape[0]
    k = pdg.shape[1]
    kt = helix.shape[1]  # track and photon slots (upper bounds from _scan_truth)
    kg = phot.shape[1]
    has_daughter = np.zeros(k, np.bool_)
    # what the inlined helpers (_brems_walk, _gamma1p, _entry_region) take: views without a
    # reference-count owner (isrsim._numba.borrowed; the caller holds the arguments), else every
    # walked electron paid 8 atomic incref/decref pairs and every charged particle one
    rng = borrowed(rng)
    mat_r, mat_zmin, mat_zmax = borrowed(mat_r), borrowed(mat_zmin), borrowed(mat_zmax)
    mat_x, mat_phif, cal_win = borrowed(mat_x), borrowed(mat_phif), borrowed(cal_win)
    brem_e = borrowed(brem_scratch[0])
    brem_phi = borrowed(brem_scratch[1])
    cos_tmin, cos_tmax = tp[0], tp[1]  # cos(theta_max) <= cos(theta) <= cos(theta_min)
    n_reg = regions_cos.shape[0]  # sorted by polar angle
    cos_first = regions_cos[0, 1] if n_reg > 0 else -2.0  # cos of the smallest region angle
    cos_last = regions_cos[n_reg - 1, 0] if n_reg > 0 else 2.0  # ... and of the largest
    pt_min, pt_turnon, eff_plateau = tp[2], tp[3], tp[4]
    min_layers = int(tp[5])
    r_meas = tp[6]
    pt_a, pt_b, d0_a, d0_b, z0_a, z0_b = tp[7], tp[8], tp[9], tp[10], tp[11], tp[12]
    ph_a, ph_b, tl_a, tl_b, rho_dp, rho_zt = tp[13], tp[14], tp[15], tp[16], tp[17], tp[18]
    c_dp = math.sqrt(1.0 - rho_dp * rho_dp)
    c_zt = math.sqrt(1.0 - rho_zt * rho_zt)
    mu_cmin, mu_cmax, e_to_mu = pp[0], pp[1], pp[2]  # cos(theta_max), cos(theta_min)
    eop_cut, e_eff, pi_to_e, mu_to_e = pp[3], pp[4], pp[5], pp[6]
    pe, pmu, ppi = _clip_prob(e_eff), _clip_prob(mu_to_e), _clip_prob(pi_to_e)
    qe = _clip_prob(e_to_mu)
    n_layers = layer_r.shape[0]
    n_partial = 0  # partially covered sensitive layers (Belle II Run-1 PXD L2)
    for m in range(n_layers):
        if layer_cov[m] < 1.0:
            n_partial += 1
    r0 = layer_r[0]
    r2_on_first = max(r0 - _R_ON_LAYER, 0.0) ** 2  # production on or outside the first layer
    kb = K_CURV * bz
    inv_turnon = 1.0 / pt_turnon if pt_turnon > 0.0 else 0.0
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
            pt2 = px * px + py * py
            pt = math.sqrt(pt2)
            ptot = math.sqrt(pt2 + pz * pz)
            if ptot <= 0.0:
                continue
            if a == 22:
                # region from cos(theta): no branch waits for the atan2 latency (~20 ns each)
                reg = _region_of_cos(pz / ptot, regions_cos)
                if reg < 0 or ng >= kg:
                    continue
                theta = _atan2_fast(pt, pz)
                phi = _atan2_fast(py, px)
                e_meas, th_m, ph_m = en, theta, phi
                if smear:
                    e_meas = en * (1.0 + _sigma_e_rel(en, regions, reg) * rng.standard_normal())
                    sa = _sigma_angle(en, regions, reg)
                    th_m = theta + sa * rng.standard_normal()
                    ph_m = phi + sa * min(ptot / pt, 1e6) * rng.standard_normal()
                if e_meas < regions[reg, 2]:
                    continue
                phot[i, ng, 0] = e_meas
                phot[i, ng, 1] = min(max(th_m, 0.0), math.pi)
                phot[i, ng, 2] = _wrap(ph_m)
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
            cos_t = pz / ptot
            x, y, z = vtx[i, j, 0], vtx[i, j, 1], vtx[i, j, 2]
            r2_prod = x * x + y * y
            d0, phi0, om, z0, tl = perigee_from_state(x, y, z, px, py, pz, q, bz)
            e_cur = math.sqrt(ptot * ptot + mass * mass)
            in_tracker = cos_tmin <= cos_t <= cos_tmax
            # first sensitive layer outside the production radius (radii strictly increasing;
            # a layer within _R_ON_LAYER of the production radius is not outside it)
            i0 = 0
            if r2_prod >= r2_on_first:
                r_on = math.sqrt(r2_prod) + _R_ON_LAYER
                lo, hi = 0, n_layers
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if layer_r[mid] <= r_on:
                        lo = mid + 1
                    else:
                        hi = mid
                i0 = lo
            # a partially covered sensitive layer is hit with its coverage probability; one that
            # is missed is not the first measurement (lever arm, r_pin, min_layers count from the
            # next). Drawn only for such a layer: prompt tracks start on a full layer.
            while i0 < n_layers and layer_cov[i0] < 1.0 and not rng.random() < layer_cov[i0]:
                i0 += 1
            # ---- bremsstrahlung in the material before the momentum measurement ----------
            # (only where it can be seen: a track in the polar-angle acceptance, which the
            # losses do not change, or a cluster, which they cannot bring into a region if
            # _may_enter_a_region says so)
            if smear and a == 11 and (in_tracker or _may_enter_a_region(
                    math.sqrt(r2_prod), z, tl, barrel_r, z_ec_bwd, z_ec_fwd, cos_first, cos_last)):
                r_pin = layer_r[i0] if i0 < n_layers else r_meas
                # the material layer the electron is produced on (within _R_ON_LAYER) is not crossed
                alive, d0, phi0, om, z0, tl, e_cur, n_brem = _brems_walk(
                    rng, d0, phi0, om, z0, tl, q, bz, mass, e_cur,
                    math.sqrt(r2_prod) + _R_ON_LAYER, r_pin, r_meas,
                    mat_r, mat_zmin, mat_zmax, mat_x, mat_phif, brems_k_rec, brem_e, brem_phi)
                for b in range(n_brem):  # radiated photons: clusters in _brems_pass
                    nb_i = brem_n[i]
                    if nb_i < brem_out.shape[1]:
                        brem_out[i, nb_i, 0] = brem_e[b]
                        brem_out[i, nb_i, 1] = brem_phi[b]
                        brem_out[i, nb_i, 2] = cos_t
                        brem_out[i, nb_i, 3] = j
                        brem_n[i] = nb_i + 1
                if not alive:
                    continue
            inv_om = 1.0 / om
            pt_t = kb * abs(inv_om)
            st = math.sqrt(1.0 + tl * tl)
            p_t = pt_t * st
            e_t = math.sqrt(p_t * p_t + mass * mass)
            r_max = abs(d0 + 2.0 * inv_om)
            # ---- tracking acceptance and efficiency --------------------------------------
            tracked = in_tracker
            r_first = -1.0
            if tracked:
                il = i0 + min_layers - 1
                tracked = il < n_layers and layer_r[il] <= r_max
                if tracked and n_partial > 0 and (il + n_partial >= n_layers
                                                  or layer_r[il + n_partial] > r_max):
                    # a partially covered layer beyond the first is hit with its coverage:
                    # drawn (in radius order) only for a track that may then fall short
                    nl = 1
                    for m in range(i0 + 1, n_layers):
                        if layer_r[m] > r_max:
                            break
                        if layer_cov[m] >= 1.0 or rng.random() < layer_cov[m]:
                            nl += 1
                    tracked = nl >= min_layers
                if tracked:
                    r_first = layer_r[i0]
            if tracked:
                u = rng.random()
                if pt_t > pt_min:
                    if pt_turnon > 0.0:
                        xt = (pt_t - pt_min) * inv_turnon
                        # 1 - exp(-x) >= x/(1+x): decide without exp() when possible
                        tracked = u * (1.0 + xt) < eff_plateau * xt or \
                            u < eff_plateau * (1.0 - math.exp(-xt))
                    else:
                        tracked = u < eff_plateau
                else:
                    tracked = False
            # ---- calorimeter deposit of the charged particle ----------------------------
            reg = _entry_region(d0, om, z0, tl, barrel_r, z_ec_bwd, z_ec_fwd, cal_win)
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
                # at the point where the helix enters the calorimeter
                if e_dep > 0.0 and ng < kg:
                    s_cal, r_cal, z_cal = _calorimeter_entry(d0, om, z0, tl, barrel_r, z_ec_bwd,
                                                             z_ec_fwd)
                    xc, yc, _, _, _, _ = state_at_arclength(d0, phi0, om, z0, tl, bz, s_cal)
                    theta = _atan2_fast(r_cal, z_cal)
                    phi = _atan2_fast(yc, xc)
                    th_m, ph_m = theta, phi
                    if smear:
                        sa = _sigma_angle(max(e_dep, 1e-3), regions, reg)
                        th_m = theta + sa * rng.standard_normal()
                        ph_m = phi + sa * min(math.sqrt(r_cal * r_cal + z_cal * z_cal) / r_cal,
                                              1e6) * rng.standard_normal()
                    phot[i, ng, 0] = e_dep
                    phot[i, ng, 1] = min(max(th_m, 0.0), math.pi)
                    phot[i, ng, 2] = _wrap(ph_m)
                    phot_truth[i, ng] = j
                    ng += 1
                continue
            if nt >= kt:
                continue
            # ---- covariance and smearing (block diagonal: (d0, phi0), omega, (z0, tanl)) ---
            f_arm = r_first / r0 if r_first > r0 else 1.0
            # 1/(p beta sin^{3/2}) = E/p^2 st^{3/2}; 1/(p beta sin^{5/2}) = that * st
            inv15 = e_t / (p_t * p_t) * st * math.sqrt(st)
            inv25 = inv15 * st
            t_om = pt_b * e_t / p_t
            s_om = abs(om) * math.sqrt(pt_a * pt_t * pt_a * pt_t + t_om * t_om)
            t_d0 = d0_b * inv15
            t_z0 = z0_b * inv25
            t_ph = ph_b * inv15
            t_tl = tl_b * inv25
            s_d0 = f_arm * math.sqrt(d0_a * d0_a + t_d0 * t_d0)
            s_z0 = f_arm * math.sqrt(z0_a * z0_a + t_z0 * t_z0)
            s_ph = math.sqrt(ph_a * ph_a + t_ph * t_ph)
            s_tl = math.sqrt(tl_a * tl_a + t_tl * t_tl)
            cv = cov[i, nt]
            cv[0] = s_d0 * s_d0
            cv[1] = rho_dp * s_d0 * s_ph
            cv[2] = 0.0
            cv[3] = 0.0
            cv[4] = 0.0
            cv[5] = s_ph * s_ph
            cv[6] = 0.0
            cv[7] = 0.0
            cv[8] = 0.0
            cv[9] = s_om * s_om
            cv[10] = 0.0
            cv[11] = 0.0
            cv[12] = s_z0 * s_z0
            cv[13] = rho_zt * s_z0 * s_tl
            cv[14] = s_tl * s_tl
            if smear:
                # exact Cholesky factor of the two 2x2 blocks
                g1 = rng.standard_normal()
                g2 = rng.standard_normal()
                g3 = rng.standard_normal()
                g4 = rng.standard_normal()
                g5 = rng.standard_normal()
                d0 += s_d0 * g1
                phi0 = _wrap(phi0 + s_ph * (rho_dp * g1 + c_dp * g2))
                om += s_om * g3
                z0 += s_z0 * g4
                tl += s_tl * (rho_zt * g4 + c_zt * g5)
                if om == 0.0:
                    om = 1e-12
            helix[i, nt, 0] = d0
            helix[i, nt, 1] = phi0
            helix[i, nt, 2] = om
            helix[i, nt, 3] = z0
            helix[i, nt, 4] = tl
            charge[i, nt] = 1 if om > 0.0 else -1
            trk_truth[i, nt] = j
            p_meas = kb / abs(om) * math.sqrt(1.0 + tl * tl)
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
            if mu_cmin <= cos_t <= mu_cmax:
                eff_mu, mis_pi = _muon_rates(p_meas, mu_table)
                if a == 13:
                    rate = eff_mu
                elif a == 211:
                    rate = mis_pi
                else:
                    rate = e_to_mu
                mu_pass = rng.random() < rate
                qmu, qpi = _clip_prob(eff_mu), _clip_prob(mis_pi)
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
        # the output arrays are allocated uninitialised (simulate): the unused slots are set
        # here, as the used ones are, with every field (zeros, truth index -1)
        for t in range(nt, kt):
            charge[i, t] = 0
            trk_truth[i, t] = -1
            for c in range(5):
                helix[i, t, c] = 0.0
            for c in range(15):
                cov[i, t, c] = 0.0
            prob_e[i, t] = 0.0
            prob_mu[i, t] = 0.0
            prob_pi[i, t] = 0.0
            e_over_p[i, t] = 0.0
            p_lab[i, t] = 0.0
        for g in range(ng, kg):
            phot[i, g, 0] = 0.0
            phot[i, g, 1] = 0.0
            phot[i, g, 2] = 0.0
            phot_truth[i, g] = -1
        ntrk[i] = nt
        nphot[i] = ng


def sensitive_layer_coverage(det: DetectorModel) -> np.ndarray:
    """Hit probability of each sensitive layer (``tracker.layer_radius_cm``): the
    ``phi_fraction`` of a material layer at the same radius (within 1e-6 cm), else 1."""
    at = np.abs(det.tracker.layer_radius_cm[:, None] - det.material.r_cm[None, :]) < 1e-6
    return np.where(at, det.material.phi_fraction[None, :], 1.0).min(axis=1, initial=1.0)


def _check_truth(truth: TruthChunk, brems_per_electron: int = 0) -> tuple[int, int]:
    """Validate the chunk's shapes, ``npart`` and the particles the simulation reads; return the
    output slot counts ``(kt, kg)`` (:func:`_scan_truth`; ``brems_per_electron`` more photon
    slots per electron for radiated-photon clusters)."""
    n, k = truth.n, truth.k
    shapes = {"pdg": (n, k), "p4": (n, k, 4), "vtx": (n, k, 3), "parent": (n, k)}
    for name, shape in shapes.items():
        got = getattr(truth, name).shape
        if got != shape:
            msg = f"truth.{name} has shape {got}; expected {shape} (n = {n}, k = {k})"
            raise ConfigError(msg)
    if n == 0:
        return 2, 2
    kt, kg, bad_event, bad_what = _scan_truth(
        np.ascontiguousarray(truth.npart), np.ascontiguousarray(truth.pdg),
        np.ascontiguousarray(truth.p4, dtype=np.float64),
        np.ascontiguousarray(truth.vtx, dtype=np.float64), brems_per_electron)
    if bad_what == 1:
        msg = (f"truth.npart[{bad_event}] = {truth.npart[bad_event]} out of range; "
               f"allowed 0..k = {k}")
        raise ConfigError(msg)
    if bad_what == 4:
        msg = (f"truth.p4 of event {bad_event} has a particle with E outside 0..{_E_TRUTH_MAX:g} GeV "
               "or a momentum component above its energy; allowed: physical four-momenta")
        raise ConfigError(msg)
    if bad_what > 1:
        name = "p4" if bad_what == 2 else "vtx"
        msg = (f"truth.{name} of event {bad_event} contains non-finite values; "
               "allowed: finite numbers")
        raise ConfigError(msg)
    return kt, kg


@kernel
def _scan_truth(npart, pdg, p4, vtx, brems_per_electron):
    """One pass over the particles the simulation reads (slots below ``npart``): returns
    ``(kt, kg, bad_event, bad_what)`` with kt, kg the largest numbers of charged and of
    charged + photon particles per event, each at least 2 (the two-track selections index the
    first two slots), and the first bad event with ``bad_what`` = 1 for ``npart`` outside 0..k,
    2 for a non-finite momentum, 4 for an unphysical one (E outside 0.._E_TRUTH_MAX, a component
    above E), 3 for a non-finite vertex (0: none; ``v - v`` is 0 for every
    finite v and nan otherwise). Measured 2026-11-21, diphoton (6 slots, 2 used): 7 ns/event,
    against 22 for numpy's ``isfinite`` over all slots plus a separate count (comparing the
    exponent bits instead took 10 ns)."""
    k = pdg.shape[1]
    kt = 2
    kg = 2
    for i in range(npart.shape[0]):
        m = npart[i]
        if m < 0 or m > k:
            return kt, kg, i, 1
        nc = 0
        ng = 0
        ne = 0
        for j in range(m):
            f = 0.0
            for c in range(4):
                f += p4[i, j, c] - p4[i, j, c]
            if f != 0.0:
                return kt, kg, i, 2
            e = p4[i, j, 3]
            if not (0.0 <= e <= _E_TRUTH_MAX and abs(p4[i, j, 0]) <= _E_SLACK * e
                    and abs(p4[i, j, 1]) <= _E_SLACK * e and abs(p4[i, j, 2]) <= _E_SLACK * e):
                return kt, kg, i, 4
            f = vtx[i, j, 0] - vtx[i, j, 0] + vtx[i, j, 1] - vtx[i, j, 1] + vtx[i, j, 2] - vtx[i, j, 2]
            if f != 0.0:
                return kt, kg, i, 3
            a = abs(pdg[i, j])
            if a == 11 or a == 13 or a == 211:
                nc += 1
                if a == 11:
                    ne += 1
            elif a == 22:
                ng += 1
        kt = max(kt, nc)
        kg = max(kg, nc + ng + brems_per_electron * ne)
    return kt, kg, -1, 0


def simulate(truth: TruthChunk, det: DetectorModel, rng: np.random.Generator, *,
             smear: bool = True) -> RecoChunk:
    """Simulate the detector response to a chunk of generated events.

    Parameters
    ----------
    truth : TruthChunk
        Lab-frame particles (GeV, cm); vertices are used as given (add the primary vertex
        with :func:`add_primary_vertex` before, if wanted).
    det : DetectorModel
        From :func:`isrsim.detector.load_detector`.
    rng : numpy.random.Generator
        The only source of randomness.
    smear : bool
        False: no resolution smearing and no bremsstrahlung (see module docstring).

    Returns
    -------
    RecoChunk
        Track slots ``kt`` = the largest number of charged particles (e, mu, pi) in an event of
        the chunk, photon slots ``kg`` = the largest number of photons and charged particles
        (an untracked charged particle may leave a cluster), both at least 2 and at most
        ``max(truth.k, 2)``: the output arrays, which are zeroed and written per block, are no wider
        than needed (diphoton, ``truth.k = 6`` for conversions: 187 -> ~160 ns/event). Unused
        slots are zero (truth index -1). ``track_extra`` holds
        ``prob_e, prob_mu, prob_pi, e_over_p, p_lab`` (float32, contracts.md).
    """
    if not isinstance(rng, np.random.Generator):
        msg = f"rng = {rng!r} must be a numpy.random.Generator"
        raise ConfigError(msg)
    cal = det.calorimeter
    brems = bool(cal.brems_clusters) and bool(smear)
    kt, kg = _check_truth(truth, _BREMS_MAX if brems else 0)
    n = truth.n
    # uninitialised: the kernel writes every slot of every event (unused ones zero, truth
    # index -1); zero-filling them first cost ~10-15 ns per isr_ee event (memset of ~450 B)
    reco = RecoChunk(
        ntrk=np.empty(n, np.int16), charge=np.empty((n, kt), np.int8),
        helix=np.empty((n, kt, 5)), cov=np.empty((n, kt, 15)),
        trk_truth=np.empty((n, kt), np.int16), nphot=np.empty(n, np.int16),
        phot=np.empty((n, kg, 3)), phot_truth=np.empty((n, kg), np.int16),
        track_extra={name: np.empty((n, kt), np.float32) for name in TRACK_EXTRA_FIELDS},
    )
    if n == 0:
        return reco
    mat = det.material
    te = reco.track_extra
    # radiated photons below half the lowest cluster threshold (they would need a +100 %
    # fluctuation to pass it) are not recorded; 0 switches the recording off
    k_rec = max(0.5 * float(cal.regions[:, 2].min()), 1e-6) if brems else 0.0
    brem_n = np.zeros(n if brems else 1, np.int64)
    brem_out = np.zeros((n, kg, 4) if brems else (1, 1, 4))
    # polar-angle windows as cos(theta) intervals (the kernel compares cos(theta) = pz/p, no atan2)
    tp = det.tracker.params()
    tp[0], tp[1] = math.cos(tp[1]), math.cos(tp[0])
    pp = det.pid.params()
    pp[0], pp[1] = math.cos(pp[1]), math.cos(pp[0])
    regions_cos = np.ascontiguousarray(np.cos(cal.regions[:, 1::-1]))
    _simulate_kernel(
        rng, np.ascontiguousarray(truth.npart), np.ascontiguousarray(truth.pdg),
        np.ascontiguousarray(truth.p4, dtype=np.float64), np.ascontiguousarray(truth.vtx, dtype=np.float64),
        np.ascontiguousarray(truth.parent), float(det.bz_T), tp,
        det.tracker.layer_radius_cm, sensitive_layer_coverage(det),
        mat.r_cm, mat.z_min_cm, mat.z_max_cm, mat.x_over_x0,
        mat.phi_fraction, cal.regions, regions_cos, float(cal.barrel_radius_cm),
        float(cal.endcap_backward_z_cm), float(cal.endcap_forward_z_cm),
        calorimeter_windows(cal.regions, cal.barrel_radius_cm, cal.endcap_backward_z_cm,
                            cal.endcap_forward_z_cm),
        float(cal.mip_energy_GeV), float(cal.mip_relative_spread), pp, det.pid.muon_table, bool(smear),
        k_rec, brem_n, brem_out, np.zeros((2, _BREMS_MAX)), reco.ntrk, reco.charge, reco.helix,
        reco.cov, reco.trk_truth,
        reco.nphot, reco.phot,
        reco.phot_truth, te["prob_e"], te["prob_mu"], te["prob_pi"], te["e_over_p"], te["p_lab"],
    )
    if brems:
        _brems_pass(rng, brem_n, brem_out, cal.regions, regions_cos, reco.nphot, reco.phot,
                    reco.phot_truth)
    return reco


@kernel
def _shift_vertices(rng, npart, pdg, parent, p4, vtx, sx, sy, sz):
    """Shift each event by a Gaussian primary vertex. A photon conversion (a particle whose
    parent is a photon) happened in the detector's material, which does not move with the
    beam spot: its vertex is put where the photon's line from its shifted origin crosses the
    same radius from the detector axis (the radius the conversion was generated at), not
    shifted with the event; the draws (3 normals per event) are those of a rigid shift."""
    for i in range(npart.shape[0]):
        dx = sx * rng.standard_normal()
        dy = sy * rng.standard_normal()
        dz = sz * rng.standard_normal()
        n_i = npart[i]
        for j in range(n_i):
            par = parent[i, j]
            if not (0 <= par < n_i and pdg[i, par] == 22):
                vtx[i, j, 0] += dx
                vtx[i, j, 1] += dy
                vtx[i, j, 2] += dz
        for j in range(n_i):
            par = parent[i, j]
            if not (0 <= par < n_i and pdg[i, par] == 22):
                continue
            x0, y0 = vtx[i, par, 0], vtx[i, par, 1]  # the photon's (shifted) origin
            ux, uy, uz = p4[i, par, 0], p4[i, par, 1], p4[i, par, 2]
            r2 = vtx[i, j, 0] ** 2 + vtx[i, j, 1] ** 2  # conversion radius from the axis
            a = ux * ux + uy * uy
            b = x0 * ux + y0 * uy
            disc = b * b - a * (x0 * x0 + y0 * y0 - r2)
            t = (-b + math.sqrt(disc)) / a if a > 0.0 and disc >= 0.0 else -1.0
            if t > 0.0:
                vtx[i, j, 0] = x0 + t * ux
                vtx[i, j, 1] = y0 + t * uy
                vtx[i, j, 2] = vtx[i, par, 2] + t * uz
            else:  # no outward crossing (not reached for a beam spot inside the layer)
                vtx[i, j, 0] += dx
                vtx[i, j, 1] += dy
                vtx[i, j, 2] += dz


def add_primary_vertex(truth: TruthChunk, det: DetectorModel, rng: np.random.Generator) -> TruthChunk:
    """Shift all vertices of every event by a primary vertex drawn from the luminous region.

    Gaussian with ``det.beam.sigma_xyz_cm`` (no x-z tilt). Modifies ``truth.vtx`` in place and
    returns ``truth``.
    """
    return shift_primary_vertex(truth, det.beam.sigma_xyz_cm, rng)


def shift_primary_vertex(truth: TruthChunk, sigma_xyz_cm, rng: np.random.Generator) -> TruthChunk:
    """Shift the vertices of every event by one Gaussian primary vertex with sizes
    ``sigma_xyz_cm`` [cm] (in place; no draws when all sizes are zero). Photon conversions
    already in the event (``diphoton`` with ``conversion``) stay on their material radius, on
    the photon's line from the shifted vertex (:func:`_shift_vertices`)."""
    sx, sy, sz = (float(v) for v in sigma_xyz_cm)
    if sx > 0 or sy > 0 or sz > 0:
        _shift_vertices(rng, truth.npart, truth.pdg, truth.parent, truth.p4, truth.vtx, sx, sy, sz)
    return truth
