"""Kinematic fits: the 1C fit with a missing massless photon and the energy-constrained fit.

Both are least-squares fits with Lagrange multipliers, linearised and iterated
(physics.md 7.4; P. Avery, "Applied fitting theory VI: formulas for kinematic fitting",
CBX 98-37): with measured parameters ``a0`` (covariance ``V``) and constraints ``g(a) = 0``
linearised at the current point ``a_k`` (``D = dg/da``),

    r = g(a_k) + D (a0 - a_k),   S = D V D^T,   a_{k+1} = a0 - V D^T S^-1 r,
    chi2 = r^T S^-1 r,           V_fit = V - V D^T S^-1 D V,

repeated until chi2 changes by less than ``tol`` (default 1e-3, physics.md 7.4).

Beam-energy spread: both fits take an optional covariance ``cov_beam`` (4x4, lab (px, py,
pz, E), e.g. :meth:`isrsim.beam.Beam.p4_covariance_lab`) of the beam 4-vector ``P``. The beam
is then a measured nuisance parameter, uncorrelated with the tracks and the photon, kept at
its nominal value: with ``D_P = dg/dP`` the constraint covariance becomes

    S = D V D^T + D_P V_P D_P^T,

and ``a_{k+1}``, chi2 and ``V_fit`` (the track/photon block) keep the forms above with this
``S``; there is no track-beam cross term, as they are uncorrelated. The beam's own update,
``P_fit = P - V_P D_P^T S^-1 r``, is not returned, and ``g``, ``D`` and ``D_P`` stay
evaluated at the nominal ``P``. A fit that also iterated ``P`` would differ only at second
order in the beam spread: the energy-constrained constraints are linear in ``P`` (no
difference at all in the linearised fit), the 1C constraint is quadratic, with a remainder
``(P_fit - P)^2 ~ sigma_E^2`` against the beam's own contribution ``~ 4 k0 sigma_E`` to the
error of ``g`` (ratio ``sigma_E/(4 k0)`` < 1e-3: Belle II untagged ISR, 2.5e-5 vs 0.07
GeV^2). ``cov_beam = None`` or zeros is the exact beam and gives bit-for-bit the fit without
the term.

* :func:`fit_1c_missing_photon` -- two tracks (helix parameters, 10 x 10 block-diagonal
  covariance) and the lab beam 4-vector ``P`` (including the crossing angle, physics.md 0)
  with the single constraint ``(P - p1 - p2)^2 = 0`` (massless unseen ISR photon, 1 dof).
* :func:`fit_energy_constrained` -- two tracks given by their momenta at the fitted vertex
  (from :func:`isrsim.reco.vertexfit.fit_vertex`) plus one calorimeter photon ``(E, theta,
  phi)`` against the beam: either the full 4C fit ``P = p1 + p2 + k`` (default) or the
  energy constraint alone ``E_beam = E1 + E2 + E_gamma`` (1C).

Failed fits: when the constraint covariance ``S`` of an event is not positive definite (or not
finite) the fit of that event fails: ``chi2`` is NaN, ``converged`` False, and every other
per-event output of the fit (fitted parameters, covariances, masses, their errors, ``k_miss``,
angles) is NaN as well -- never values of a previous event or of a half-finished iteration.
Only the unfitted quantities (``m_ll_raw``, ``sigma_m_ll_raw``) keep their values. A mass
error whose propagated variance is not positive is NaN too. Covariances given to the fits must
be positive semi-definite (checked before the kernels run, ``_checks.check_psd``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._numba import kernel, kernel_inline
from ..constants import K_CURV
from ..exceptions import ConfigError
from ..helix import wrap_angle
from ._checks import _PK5, as_beam4, as_cov_matrices, as_helices, as_positive, same_length
from ._linalg import chol_factor, chol_solve, unpack_sym

__all__ = [
    "EnergyFitResult",
    "OneCFitResult",
    "chi2_prob",
    "fit_1c_missing_photon",
    "fit_energy_constrained",
]


def _as_cov_beam(cov_beam) -> tuple[np.ndarray, bool]:
    """Validate the beam covariance: None -> zeros; else a finite, symmetric, positive
    semi-definite 4x4 [GeV^2] (both within rounding: 1e-12 of its largest element).

    Returns the (symmetrised) matrix and whether it is non-zero.
    """
    allowed = ("allowed: None or a finite, symmetric, positive semi-definite 4x4 covariance "
               "[GeV^2] of (px, py, pz, E)")
    if cov_beam is None:
        return np.zeros((4, 4)), False
    try:
        c = np.array(cov_beam, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"cov_beam = {cov_beam!r} is not numeric; {allowed}"
        raise ConfigError(msg) from None
    if c.shape != (4, 4):
        msg = f"cov_beam has shape {c.shape}; {allowed}"
        raise ConfigError(msg)
    if not np.all(np.isfinite(c)):
        msg = f"cov_beam = {c.tolist()} is not finite; {allowed}"
        raise ConfigError(msg)
    scale = float(np.max(np.abs(c)))
    eps = 1e-12 * scale
    if np.max(np.abs(c - c.T)) > eps:
        msg = f"cov_beam = {c.tolist()} is not symmetric; {allowed}"
        raise ConfigError(msg)
    c = 0.5 * (c + c.T)
    if np.any(np.diag(c) < 0.0):
        msg = f"cov_beam has negative variances (diagonal {np.diag(c).tolist()}); {allowed}"
        raise ConfigError(msg)
    lmin = float(np.linalg.eigvalsh(c).min()) if scale > 0.0 else 0.0
    if lmin < -eps:
        msg = (f"cov_beam = {c.tolist()} is not positive semi-definite (smallest eigenvalue "
               f"{lmin:.3g}); {allowed}")
        raise ConfigError(msg)
    return np.ascontiguousarray(c), scale > 0.0


def chi2_prob(chi2, ndf: int) -> np.ndarray:
    """P(chi2(ndf) > chi2), elementwise, as ``scipy.special.chdtrc`` (NaN for NaN and for
    chi2 < 0). Closed forms for ndf = 1 (``erfc(sqrt(x/2))``) and 2, 4
    (``exp(-x/2) sum_k (x/2)^k/k!``), ``chdtrc`` otherwise: the same values to ~1e-13
    relative, while ``chdtrc`` (incomplete gamma function) costs ~1.3 us per value here,
    more than a 1C fit."""
    x = np.asarray(chi2, dtype=np.float64)
    if ndf not in (1, 2, 4):
        return special.chdtrc(ndf, x)
    h = np.where(x >= 0.0, np.minimum(0.5 * x, 1e300), np.nan)  # inf -> 1e300: P = 0, no inf*0
    if ndf == 1:
        return special.erfc(np.sqrt(h))
    return np.exp(-h) * (1.0 + h) if ndf == 4 else np.exp(-h)


# --------------------------------------------------------------------------------------
# 1C fit with a missing photon
# --------------------------------------------------------------------------------------
#: The helix parameters (phi0, omega, tanl) of the two tracks, in the 10-vector of both, that
#: the constraint and the pair mass depend on; d0 and z0 do not enter (zero derivatives).
_ACTIVE = np.array([1, 2, 4, 6, 7, 9], dtype=np.int64)


@kernel
def _helix_p4(phi, om, tl, bz, m):
    """(px, py, pz, E, pT) [GeV] of a track of mass ``m`` at the perigee (phi0, omega, tanl)."""
    pt = K_CURV * bz / abs(om)
    return (pt * math.cos(phi), pt * math.sin(phi), pt * tl,
            math.sqrt(pt * pt * (1.0 + tl * tl) + m * m), pt)


@kernel
def _near_angle(x):
    """``wrap_angle(x)`` (into (-pi, pi]); ``x`` itself when it already lies there, where
    ``wrap_angle`` = atan2(sin x, cos x) returns ``x`` to rounding (1 ulp) at the cost of three
    libm calls. The fit's angle differences and fitted phi0 almost always do."""
    if -math.pi < x <= math.pi:
        return x
    return wrap_angle(x)


@kernel
def _dg_track(p, om, k0, kx, ky, kz):
    """The non-zero elements (d/dphi0, d/domega, d/dtanl) of ``D = dg/da`` for one track, ``g =
    k0^2 - |k|^2``, ``k = P - p1 - p2``: ``D = -2 (k0 dE/da - k . dp/da)`` with ``dp/dphi0 =
    (-py, px, 0)``, ``dp/domega = -p/omega``, ``dp/dtanl = (0, 0, pT)``, ``dE/dphi0 = 0``,
    ``dE/domega = -|p|^2/(omega E)``, ``dE/dtanl = pz pT / E``. ``p`` = ``_helix_p4``'s tuple."""
    kdp_phi = kx * -p[1] + ky * p[0]
    de_om = -(p[0] ** 2 + p[1] ** 2 + p[2] ** 2) / (om * p[3])
    kdp_om = -(kx * p[0] + ky * p[1] + kz * p[2]) / om
    de_tl = p[2] * p[4] / p[3]
    kdp_tl = kz * p[4]
    return (-2.0 * (k0 * 0.0 - kdp_phi), -2.0 * (k0 * de_om - kdp_om),
            -2.0 * (k0 * de_tl - kdp_tl))


@kernel_inline
def _mass_jac_1c(p, q, om1, om2, jac):
    """Pair mass [GeV] of the tracks with ``_helix_p4`` tuples ``p``, ``q`` (0 below threshold,
    NaN for NaN input) and, for ``M > 0``, ``jac`` (6) = dM/d(phi0, omega, tanl) of both
    tracks: ``dM = (E dE_i - P . dp_i)/M`` (``E``, ``P`` the pair's; derivatives as in
    :func:`_dg_track`)."""
    e = p[3] + q[3]
    px = p[0] + q[0]
    py = p[1] + q[1]
    pz = p[2] + q[2]
    m2 = e * e - px * px - py * py - pz * pz
    if math.isnan(m2):
        return np.nan
    m = math.sqrt(m2) if m2 > 0.0 else 0.0
    if not m > 0.0:
        return m
    for t in range(2):
        r = p if t == 0 else q
        om = om1 if t == 0 else om2
        jac[3 * t] = -(-px * r[1] + py * r[0]) / m
        jac[3 * t + 1] = (-e * (r[0] ** 2 + r[1] ** 2 + r[2] ** 2) / (om * r[3])
                          + (px * r[0] + py * r[1] + pz * r[2]) / om) / m
        jac[3 * t + 2] = (e * r[2] * r[4] / r[3] - pz * r[4]) / m
    return m


@kernel_inline
def _quad6(w, jac):
    """Standard error ``sqrt(J W J^T)`` for the 6x6 covariance ``w`` of the active parameters;
    NaN when the variance is not positive (or NaN)."""
    var = 0.0
    for i in range(6):
        acc = 0.0
        for j in range(6):
            acc += w[i, j] * jac[j]
        var += jac[i] * acc
    return math.sqrt(var) if var > 0.0 else np.nan


@kernel_inline
def _mass_sigma_1c(p, q, om1, om2, cv1, cv2, ev, vd, s, w, jac):
    """Pair mass [GeV] and its standard error ``sqrt(J V J^T)``: ``V`` the 10x10 covariance of
    both tracks, block-diagonal from the packed 5x5 blocks ``cv1[ev]``, ``cv2[ev]`` minus, when
    ``s`` is finite, the rank-one fit term ``vd vd^T / s`` of the track1-track2 blocks (the
    diagonal blocks of a fitted covariance already hold it). NaN error for ``M = 0`` and for
    a variance that is not positive; ``w`` (6x6) and ``jac`` (6) are scratch."""
    m = _mass_jac_1c(p, q, om1, om2, jac)
    if not m > 0.0:
        return m, np.nan
    for a in range(3):
        ia = _ACTIVE[a]
        for b in range(3):
            ib = _ACTIVE[b]
            w[a, b] = cv1[ev, _PK5[ia, ib]]
            w[3 + a, 3 + b] = cv2[ev, _PK5[ia, ib]]
            x = 0.0 - vd[ia] * vd[5 + ib] / s if math.isfinite(s) else 0.0
            w[a, 3 + b] = x
            w[3 + b, a] = x
    return m, _quad6(w, jac)


@kernel
def _fit1c_kernel(h1, c1, h2, c2, rows, bz, beam, vbeam, has_vbeam, m1, m2, max_iter, tol,
                  hfit1, hfit2, cfit1, cfit2, chi2, niter, conv, kmiss, mll, mll_raw, smll,
                  smll_raw):
    """The 1C fit of the events ``rows`` of ``h1``, ``c1``, ``h2``, ``c2`` (output ``k`` is
    event ``rows[k]``; module docstring): linearised Lagrange iterations of the one
    constraint ``g = (P - p1 - p2)^2``, so ``S = D V D^T`` is a scalar and each step is the
    rank-one update ``a = a0 - V D^T r / S``; ``V_fit = V - V D^T D V / S``.

    ``V`` is block-diagonal (one packed 5x5 per track) and ``D`` vanishes for d0 and z0, so
    ``V D^T`` takes three columns of each block; the sums skip only exact zeros and keep the
    order of the dense 10x10 products, so the results are those of the dense arithmetic (angle
    wrapping aside: :func:`_near_angle`). ``vbeam`` (4x4, (px, py, pz, E) [GeV^2]) is added to
    ``S`` only when ``has_vbeam``. A failed fit (``S`` not positive or not finite) gives NaN in
    every fitted output; ``m_ll_raw``, ``sigma_m_ll_raw`` keep their values.
    """
    a0 = np.empty(10)
    a = np.empty(10)
    vd = np.empty(10)
    w = np.empty((6, 6))
    jac = np.empty(6)
    for out in range(rows.shape[0]):
        ev = rows[out]
        for i in range(5):
            a0[i] = h1[ev, i]
            a0[5 + i] = h2[ev, i]
            a[i] = a0[i]
            a[5 + i] = a0[5 + i]
        # the measured momenta: the raw mass and the first linearisation point
        p = _helix_p4(a0[1], a0[2], a0[4], bz, m1)
        q = _helix_p4(a0[6], a0[7], a0[9], bz, m2)
        mll_raw[out], smll_raw[out] = _mass_sigma_1c(p, q, a0[2], a0[7], c1, c2, ev, vd, np.inf,
                                                   w, jac)
        c = np.inf
        ok = False
        failed = False
        it = 0
        s = 1.0
        for it in range(1, max_iter + 1):
            if it > 1:
                p = _helix_p4(a[1], a[2], a[4], bz, m1)
                q = _helix_p4(a[6], a[7], a[9], bz, m2)
            k0 = beam[3] - p[3] - q[3]
            kx = beam[0] - p[0] - q[0]
            ky = beam[1] - p[1] - q[1]
            kz = beam[2] - p[2] - q[2]
            g = k0 * k0 - kx * kx - ky * ky - kz * kz
            d1, d2, d4 = _dg_track(p, a[2], k0, kx, ky, kz)
            d6, d7, d9 = _dg_track(q, a[7], k0, kx, ky, kz)
            r = (g + d1 * _near_angle(a0[1] - a[1]) + d2 * (a0[2] - a[2]) + d4 * (a0[4] - a[4])
                 + d6 * _near_angle(a0[6] - a[6]) + d7 * (a0[7] - a[7]) + d9 * (a0[9] - a[9]))
            for i in range(5):
                vd[i] = (c1[ev, _PK5[i, 1]] * d1 + c1[ev, _PK5[i, 2]] * d2
                         + c1[ev, _PK5[i, 4]] * d4)
                vd[5 + i] = (c2[ev, _PK5[i, 1]] * d6 + c2[ev, _PK5[i, 2]] * d7
                             + c2[ev, _PK5[i, 4]] * d9)
            s = d1 * vd[1] + d2 * vd[2] + d4 * vd[4] + d6 * vd[6] + d7 * vd[7] + d9 * vd[9]
            if has_vbeam:
                # beam term D_P V_P D_P^T, D_P = dg/dP = 2 (-kx, -ky, -kz, k0) in (px, py, pz, E)
                db = (-2.0 * kx, -2.0 * ky, -2.0 * kz, 2.0 * k0)
                for i in range(4):
                    for j in range(4):
                        s += db[i] * vbeam[i, j] * db[j]
            if not (s > 0.0) or not math.isfinite(s):
                failed = True
                break
            lam = r / s
            for i in range(10):
                a[i] = a0[i] - vd[i] * lam
            c_new = r * lam
            if abs(c_new - c) < tol:
                c = c_new
                ok = True
                break
            c = c_new
        niter[out] = it
        if failed or not math.isfinite(c):
            chi2[out] = np.nan
            conv[out] = False
            hfit1[out, :] = np.nan
            hfit2[out, :] = np.nan
            cfit1[out, :] = np.nan
            cfit2[out, :] = np.nan
            kmiss[out, :] = np.nan
            mll[out] = np.nan
            smll[out] = np.nan
            continue
        chi2[out] = c
        conv[out] = ok
        # V_fit = V - vd vd^T / s: the two diagonal blocks (the cross block enters sigma_m)
        for i in range(5):
            for j in range(i, 5):
                cfit1[out, _PK5[i, j]] = c1[ev, _PK5[i, j]] - vd[i] * vd[j] / s
                cfit2[out, _PK5[i, j]] = c2[ev, _PK5[i, j]] - vd[5 + i] * vd[5 + j] / s
        a[1] = _near_angle(a[1])
        a[6] = _near_angle(a[6])
        for i in range(5):
            hfit1[out, i] = a[i]
            hfit2[out, i] = a[5 + i]
        p = _helix_p4(a[1], a[2], a[4], bz, m1)
        q = _helix_p4(a[6], a[7], a[9], bz, m2)
        for i in range(4):
            kmiss[out, i] = beam[i] - p[i] - q[i]
        mll[out], smll[out] = _mass_sigma_1c(p, q, a[2], a[7], cfit1, cfit2, out, vd, s, w, jac)


@dataclass(frozen=True)
class OneCFitResult:
    """Output of :func:`fit_1c_missing_photon` (arrays over events, lab frame).

    Every fitted quantity (all but ``m_ll_raw``, ``sigma_m_ll_raw``, ``n_iter``, ``converged``)
    is NaN for an event whose fit failed (``chi2`` NaN).

    Attributes
    ----------
    helix1, helix2 : float64[n, 5]
        Fitted helix parameters.
    cov1, cov2 : float64[n, 15]
        Packed covariance of the fitted parameters (``V - V D^T S^-1 D V``, ``S`` including
        the beam term when ``cov_beam`` is given; the 10x10 fitted covariance also has
        track1-track2 correlations, not returned).
    chi2, prob : float64[n]
        Fit chi2 (1 dof) and its upper-tail probability; NaN when the fit failed.
    n_iter : int32[n]; converged : bool[n]
    k_miss : float64[n, 4]
        Fitted missing 4-momentum (px, py, pz, E) [GeV]: the unseen photon.
    theta_gamma_miss : float64[n]
        Polar angle of ``k_miss`` to the +z (solenoid / beam) axis [rad], in [0, pi].
    m_ll, m_ll_raw : float64[n]
        Lepton-pair mass [GeV] from the fitted / measured momenta (at the perigee).
    sigma_m_ll, sigma_m_ll_raw : float64[n]
        Their standard errors [GeV], linear propagation of the full 10x10 fitted covariance
        (track1-track2 correlations of the fit and the beam term included) / of the measured
        one; NaN where the fit failed or the propagated variance is not positive.
    """

    helix1: np.ndarray
    helix2: np.ndarray
    cov1: np.ndarray
    cov2: np.ndarray
    chi2: np.ndarray
    prob: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    k_miss: np.ndarray
    theta_gamma_miss: np.ndarray
    m_ll: np.ndarray
    m_ll_raw: np.ndarray
    sigma_m_ll: np.ndarray
    sigma_m_ll_raw: np.ndarray


def fit_1c_missing_photon(helix1, cov1, helix2, cov2, *, bz: float, p4_beam,
                          mass: float | tuple[float, float], max_iter: int = 20,
                          tol: float = 1e-3, cov_beam=None) -> OneCFitResult:
    """1C kinematic fit of two tracks with a missing massless photon (physics.md 7.4).

    Constraint ``(P - p1 - p2)^2 = 0`` with ``P`` the lab beam 4-vector
    (``Beam.p4_total_lab()``, crossing angle included). All ten helix parameters enter the
    fit with their full covariance; only (phi0, omega, tanl) appear in the constraint, so
    d0 and z0 move only through their correlations.

    Parameters
    ----------
    helix1, helix2 : array [n, 5]
        Perigee helix parameters (d0, phi0, omega, z0, tanl) of the two tracks (contracts.md).
    cov1, cov2 : array [n, 15]
        Packed upper-triangle 5x5 covariances: positive diagonal, positive semi-definite
        (ConfigError naming the track and event otherwise).
    bz : float
        Solenoid field [T].
    p4_beam : array [4]
        Beam 4-vector (px, py, pz, E) [GeV], lab frame.
    mass : float or (float, float)
        Mass hypothesis [GeV] of the tracks (e.g. ``M_MU``).
    max_iter : int
        Iteration cap; events that hit it have ``converged = False``.
    tol : float
        Convergence: chi2 change below ``tol`` (physics.md 7.4: 1e-3).
    cov_beam : array [4, 4], optional
        Covariance [GeV^2] of ``p4_beam`` in the order (px, py, pz, E), e.g.
        ``Beam.p4_covariance_lab()`` for the beam-energy spread; None (default) or zeros: exact
        beam. Adds ``D_P V_P D_P^T`` with ``D_P = dg/dP = 2 (-k_x, -k_y, -k_z, k_0)``,
        ``k = P - p1 - p2``, to the constraint variance (module docstring: the beam stays at
        its nominal value, a second-order approximation). Must be symmetric and positive
        semi-definite.

    Returns
    -------
    OneCFitResult
    """
    h1, c1 = as_helices("track1", helix1, cov1)
    h2, c2 = as_helices("track2", helix2, cov2)
    n = same_length(track1=h1, track2=h2)
    return _fit_1c_rows(h1, c1, h2, c2, np.arange(n), bz=bz, p4_beam=p4_beam, mass=mass,
                        max_iter=max_iter, tol=tol, cov_beam=cov_beam)


def _fit_1c_rows(h1, c1, h2, c2, rows, *, bz, p4_beam, mass, max_iter=20, tol=1e-3,
                 cov_beam=None) -> OneCFitResult:
    """:func:`fit_1c_missing_photon` of the events ``rows`` (int64) of ``h1`` ``[n, 5]``, ``c1``
    ``[n, 15]``, ``h2``, ``c2`` (float64, views allowed: the kernel reads the rows in place,
    no gathered copies), whose helices and covariances have been validated
    (:func:`isrsim.reco._checks.check_helix_rows`). Output ``k`` is event ``rows[k]``."""
    n = rows.shape[0]
    bz = as_positive("bz", bz)
    beam = as_beam4(p4_beam)
    vbeam, has_vbeam = _as_cov_beam(cov_beam)
    m1, m2 = (mass, mass) if np.ndim(mass) == 0 else tuple(mass)
    m1 = as_positive("mass", m1, allow_zero=True)
    m2 = as_positive("mass", m2, allow_zero=True)
    tol = as_positive("tol", tol)
    if int(max_iter) < 1:
        msg = f"max_iter = {max_iter!r} out of range: must be >= 1"
        raise ConfigError(msg)
    hf1 = np.empty((n, 5))
    hf2 = np.empty((n, 5))
    cf1 = np.empty((n, 15))
    cf2 = np.empty((n, 15))
    chi2 = np.empty(n)
    niter = np.empty(n, np.int32)
    conv = np.empty(n, np.bool_)
    kmiss = np.empty((n, 4))
    mll = np.empty(n)
    mraw = np.empty(n)
    smll = np.empty(n)
    sraw = np.empty(n)
    if n:
        _fit1c_kernel(h1, c1, h2, c2, rows, bz, beam, vbeam, has_vbeam, m1, m2, int(max_iter),
                      tol, hf1, hf2, cf1, cf2, chi2, niter, conv, kmiss, mll, mraw, smll, sraw)
    pk = np.hypot(kmiss[:, 0], kmiss[:, 1])
    theta = np.arctan2(pk, kmiss[:, 2])
    prob = chi2_prob(chi2, 1)
    smll[~np.isfinite(chi2)] = np.nan
    return OneCFitResult(hf1, hf2, cf1, cf2, chi2, prob, niter, conv, kmiss, theta, mll, mraw,
                         smll, sraw)


# --------------------------------------------------------------------------------------
# Energy-constrained fit: two tracks at the vertex + one photon against the beam
# --------------------------------------------------------------------------------------
@kernel
def _ecfit_one(a0, vmat, beam, vbeam, has_vbeam, m1, m2, ncon, max_iter, tol, a, out4):
    """Parameters a = (p1x, p1y, p1z, p2x, p2y, p2z, E, theta, phi); ``ncon`` = 4 or 1 (E only).

    ``vbeam`` (4x4, (px, py, pz, E)) is the beam covariance, added to ``S`` when ``has_vbeam``.
    Returns (chi2, n_iter, converged, sigma_m): ``out4`` = fitted pair 4-momentum and
    ``sigma_m`` the standard error of its mass, ``sqrt(J V_fit J^T)`` with ``V_fit = V - V D^T
    S^-1 D V`` (of the last linearisation) and ``J = dM/d(p1, p2) = (E p_i/E_i - P)/M``;
    NaN for a failed fit, ``M = 0`` or a variance that is not positive. A failed fit (``S`` not
    positive definite) returns NaN chi2 and fills ``a`` and ``out4`` with NaN.
    """
    n = 9
    dmat = np.zeros((4, n))
    r = np.zeros(4)
    vd = np.zeros((n, 4))
    smat = np.zeros((4, 4))
    low = np.zeros((4, 4))
    lam = np.zeros(4)
    for i in range(n):
        a[i] = a0[i]
    chi2 = np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        e1 = math.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2 + m1 * m1)
        e2 = math.sqrt(a[3] ** 2 + a[4] ** 2 + a[5] ** 2 + m2 * m2)
        eg = a[6]
        st = math.sin(a[7])
        ct = math.cos(a[7])
        sp = math.sin(a[8])
        cp = math.cos(a[8])
        # g = (sum p) - P, ordered (E, px, py, pz) so that ncon = 1 keeps the energy row
        g0 = e1 + e2 + eg - beam[3]
        g1 = a[0] + a[3] + eg * st * cp - beam[0]
        g2 = a[1] + a[4] + eg * st * sp - beam[1]
        g3 = a[2] + a[5] + eg * ct - beam[2]
        for i in range(4):
            for j in range(n):
                dmat[i, j] = 0.0
        for j in range(3):
            dmat[0, j] = a[j] / e1
            dmat[0, 3 + j] = a[3 + j] / e2
            dmat[1 + j, j] = 1.0
            dmat[1 + j, 3 + j] = 1.0
        dmat[0, 6] = 1.0
        dmat[1, 6] = st * cp
        dmat[1, 7] = eg * ct * cp
        dmat[1, 8] = -eg * st * sp
        dmat[2, 6] = st * sp
        dmat[2, 7] = eg * ct * sp
        dmat[2, 8] = eg * st * cp
        dmat[3, 6] = ct
        dmat[3, 7] = -eg * st
        r[0] = g0
        r[1] = g1
        r[2] = g2
        r[3] = g3
        for i in range(ncon):
            for j in range(n):
                da = a0[j] - a[j]
                if j == 8:
                    da = wrap_angle(da)
                r[i] += dmat[i, j] * da
        for i in range(n):
            for c in range(ncon):
                acc = 0.0
                for j in range(n):
                    acc += vmat[i, j] * dmat[c, j]
                vd[i, c] = acc
        for c1 in range(ncon):
            for c2 in range(ncon):
                acc = 0.0
                for j in range(n):
                    acc += dmat[c1, j] * vd[j, c2]
                smat[c1, c2] = acc
        if has_vbeam:
            # D_P = dg/dP = -1 on the matching component: constraint c = (E, px, py, pz)
            # is beam index (3, 0, 1, 2), so D_P V_P D_P^T picks V_P[b(c1), b(c2)]
            for c1 in range(ncon):
                b1 = 3 if c1 == 0 else c1 - 1
                for c2 in range(ncon):
                    b2 = 3 if c2 == 0 else c2 - 1
                    smat[c1, c2] += vbeam[b1, b2]
        if not chol_factor(smat, ncon, low):
            a[:] = np.nan
            out4[:] = np.nan
            return np.nan, it, False, np.nan
        chol_solve(low, ncon, r, lam)
        chi2_new = 0.0
        for c in range(ncon):
            chi2_new += r[c] * lam[c]
        for i in range(n):
            acc = 0.0
            for c in range(ncon):
                acc += vd[i, c] * lam[c]
            a[i] = a0[i] - acc
        if abs(chi2_new - chi2) < tol:
            chi2 = chi2_new
            converged = True
            break
        chi2 = chi2_new
    e1 = math.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2 + m1 * m1)
    e2 = math.sqrt(a[3] ** 2 + a[4] ** 2 + a[5] ** 2 + m2 * m2)
    out4[0] = a[0] + a[3]
    out4[1] = a[1] + a[4]
    out4[2] = a[2] + a[5]
    out4[3] = e1 + e2
    mm = out4[3] ** 2 - out4[0] ** 2 - out4[1] ** 2 - out4[2] ** 2
    if not mm > 0.0:
        return chi2, it, converged, np.nan
    m = math.sqrt(mm)
    jac = np.zeros(n)  # dM/da; the photon parameters do not enter the pair mass
    for k in range(3):
        jac[k] = (out4[3] * a[k] / e1 - out4[k]) / m
        jac[3 + k] = (out4[3] * a[3 + k] / e2 - out4[k]) / m
    # J V_fit J^T = J V J^T - u^T S^-1 u, u = D V J^T (vd = V D^T)
    var = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += vmat[i, j] * jac[j]
        var += jac[i] * acc
    for c in range(ncon):
        acc = 0.0
        for i in range(n):
            acc += jac[i] * vd[i, c]
        r[c] = acc
    chol_solve(low, ncon, r, lam)
    for c in range(ncon):
        var -= r[c] * lam[c]
    return chi2, it, converged, math.sqrt(var) if var > 0.0 else np.nan


@kernel
def _ecfit_kernel(p1, p2, cov6, phot, sig_phot, beam, vbeam, has_vbeam, m1, m2, ncon, max_iter, tol,
                  afit, chi2, niter, conv, m_pair, m_recoil, sigma_m):
    n = p1.shape[0]
    a0 = np.empty(9)
    a = np.empty(9)
    vmat = np.zeros((9, 9))
    blk = np.zeros((6, 6))
    q4 = np.empty(4)
    for ev in range(n):
        for i in range(9):
            for j in range(9):
                vmat[i, j] = 0.0
        for i in range(3):
            a0[i] = p1[ev, i]
            a0[3 + i] = p2[ev, i]
            a0[6 + i] = phot[ev, i]
            vmat[6 + i, 6 + i] = sig_phot[ev, i] ** 2
        unpack_sym(cov6[ev], 6, blk)
        for i in range(6):
            for j in range(6):
                vmat[i, j] = blk[i, j]
        c, it, ok, sigma_m[ev] = _ecfit_one(a0, vmat, beam, vbeam, has_vbeam, m1, m2, ncon,
                                            max_iter, tol, a, q4)
        chi2[ev] = c
        niter[ev] = it
        conv[ev] = ok
        if not math.isfinite(c):
            # failed fit: NaN in every fitted output (the scratch arrays are reused by events)
            chi2[ev] = np.nan
            conv[ev] = False
            afit[ev, :] = np.nan
            m_pair[ev] = np.nan
            m_recoil[ev] = np.nan
            sigma_m[ev] = np.nan
            continue
        for i in range(9):
            afit[ev, i] = a[i]
        mm = q4[3] ** 2 - q4[0] ** 2 - q4[1] ** 2 - q4[2] ** 2
        m_pair[ev] = math.sqrt(mm) if mm > 0.0 else 0.0
        # recoil mass against the fitted photon
        st = math.sin(a[7])
        rx = beam[0] - a[6] * st * math.cos(a[8])
        ry = beam[1] - a[6] * st * math.sin(a[8])
        rz = beam[2] - a[6] * math.cos(a[7])
        re = beam[3] - a[6]
        mm = re * re - rx * rx - ry * ry - rz * rz
        m_recoil[ev] = math.sqrt(mm) if mm > 0.0 else -math.sqrt(-mm)


@dataclass(frozen=True)
class EnergyFitResult:
    """Output of :func:`fit_energy_constrained`.

    Attributes
    ----------
    params : float64[n, 9]
        Fitted (p1x, p1y, p1z, p2x, p2y, p2z) [GeV] and photon (E [GeV], theta, phi [rad]).
        NaN, as ``m_pair``, ``sigma_m_pair``, ``m_recoil`` and ``prob``, where the fit failed
        (``chi2`` NaN: constraint covariance not positive definite).
    chi2, prob : float64[n]
        chi2 with ``ndf`` = number of constraints (4 or 1) and its upper-tail probability.
    ndf : int
    n_iter : int32[n]; converged : bool[n]
    m_pair : float64[n]
        Fitted lepton-pair mass [GeV].
    sigma_m_pair : float64[n]
        Its standard error [GeV] (linear propagation of the fitted covariance of the two
        momenta, their correlation included); NaN where the fit failed or the propagated
        variance is not positive.
    m_recoil : float64[n]
        Mass recoiling against the fitted photon [GeV] (negative when m^2 < 0), computed with
        the NOMINAL beam 4-vector ``p4_beam``: with ``cov_beam`` the fit also moves the beam
        (not returned), so m_recoil then differs from ``m_pair`` (by up to ~0.1 GeV for Belle
        II ISR events); with an exact beam the two agree.
    """

    params: np.ndarray
    chi2: np.ndarray
    prob: np.ndarray
    ndf: int
    n_iter: np.ndarray
    converged: np.ndarray
    m_pair: np.ndarray
    m_recoil: np.ndarray
    sigma_m_pair: np.ndarray


def fit_energy_constrained(p1, p2, cov_p, photon, sigma_photon, *, p4_beam,
                           mass: float, constraints: str = "4c", max_iter: int = 20,
                           tol: float = 1e-3, cov_beam=None) -> EnergyFitResult:
    """Kinematic fit of a lepton pair (momenta at its vertex) and one photon against the beam.

    Parameters
    ----------
    p1, p2 : array [n, 3]
        Lepton momenta [GeV] at the fitted vertex (e.g. ``VertexFitResult.p1``).
    cov_p : array [n, 6, 6]
        Their joint covariance, order (p1x, p1y, p1z, p2x, p2y, p2z) (the momentum block of
        ``VertexFitResult.cov``, which keeps the p1-p2 correlation from the shared vertex):
        positive diagonal, symmetric and positive semi-definite (ConfigError otherwise).
    photon : array [n, 3]
        Measured photon (E [GeV], theta [rad], phi [rad]), lab frame.
    sigma_photon : array [n, 3]
        Its resolutions (sigma_E [GeV], sigma_theta, sigma_phi [rad]), taken uncorrelated.
    p4_beam : array [4]
        Lab beam 4-vector (``Beam.p4_total_lab()``).
    mass : float
        Lepton mass hypothesis [GeV].
    constraints : {"4c", "energy"}
        ``"4c"``: the four constraints ``P = p1 + p2 + k`` (4 dof, default);
        ``"energy"``: only ``E_beam = E1 + E2 + E_gamma`` (1 dof; use when the momentum
        balance is spoilt by unmeasured extra radiation).
    cov_beam : array [4, 4], optional
        Covariance [GeV^2] of ``p4_beam`` in the order (px, py, pz, E), e.g.
        ``Beam.p4_covariance_lab()``; None (default) or zeros: exact beam. The constraints
        ``g = sum p - P`` are ordered (E, px, py, pz), so ``D_P = -1`` on the matching
        component and the beam adds ``V_P`` reordered to (E, px, py, pz) to ``S`` (only
        ``V_P[E, E]`` for ``"energy"``; module docstring for the approximation).

    Returns
    -------
    EnergyFitResult
    """
    if constraints not in ("4c", "energy"):
        msg = f"constraints = {constraints!r}; allowed: '4c', 'energy'"
        raise ConfigError(msg)
    ncon = 4 if constraints == "4c" else 1
    a1 = np.ascontiguousarray(p1, dtype=np.float64)
    a2 = np.ascontiguousarray(p2, dtype=np.float64)
    cp = np.ascontiguousarray(cov_p, dtype=np.float64)
    ph = np.ascontiguousarray(photon, dtype=np.float64)
    sp = np.ascontiguousarray(sigma_photon, dtype=np.float64)
    n = same_length(p1=a1, p2=a2, cov_p=cp, photon=ph, sigma_photon=sp)
    for name, arr, shape in (("p1", a1, (n, 3)), ("p2", a2, (n, 3)), ("cov_p", cp, (n, 6, 6)),
                             ("photon", ph, (n, 3)), ("sigma_photon", sp, (n, 3))):
        if arr.shape != shape:
            msg = f"{name} has shape {arr.shape}; allowed: {shape}"
            raise ConfigError(msg)
        if not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0])
            msg = f"{name}[{i}] is not finite; allowed: finite numbers"
            raise ConfigError(msg)
    if n and not (np.all(sp > 0) and np.all(ph[:, 0] > 0)):
        msg = "photon E and sigma_photon must be > 0; allowed: E > 0, sigmas > 0"
        raise ConfigError(msg)
    cov6 = as_cov_matrices("cov_p", cp, 6)
    beam = as_beam4(p4_beam)
    vbeam, has_vbeam = _as_cov_beam(cov_beam)
    m = as_positive("mass", mass, allow_zero=True)
    afit = np.empty((n, 9))
    chi2 = np.empty(n)
    niter = np.empty(n, np.int32)
    conv = np.empty(n, np.bool_)
    mpair = np.empty(n)
    mrec = np.empty(n)
    smp = np.empty(n)
    if n:
        _ecfit_kernel(a1, a2, cov6, ph, sp, beam, vbeam, has_vbeam, m, m, ncon, int(max_iter),
                      as_positive("tol", tol), afit, chi2, niter, conv, mpair, mrec, smp)
    return EnergyFitResult(afit, chi2, chi2_prob(chi2, ncon), ncon, niter, conv, mpair, mrec,
                           smp)
