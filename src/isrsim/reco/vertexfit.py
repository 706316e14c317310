"""Two-track helix vertex fit (full helix measurement model, not straight lines).

Fit parameters ``theta = (x, y, z, p1x, p1y, p1z, p2x, p2y, p2z)``: the common vertex [cm]
and each track's momentum there [GeV], lab frame. Each track contributes the measurement
model ``h_i(theta) = perigee(x, y, z, p_i, q_i, Bz)`` (exact helix propagation to the
perigee, :func:`isrsim.helix.perigee_jacobian` with its analytic Jacobian) against its five
measured helix parameters and their 5x5 covariance ``V_i``:

    chi2(theta) = sum_i (m_i - h_i)^T V_i^-1 (m_i - h_i),    ndf = 10 - 9 = 1.

Minimisation. Gauss-Newton steps ``theta += N^-1 b``, ``N = J^T W J``, ``b = J^T W r`` (the
global, all-parameter form of the Billoir-Fruhwirth-Regler fit, NIM A241 (1985) 115), as long
as each full step lowers chi2 by its predicted amount ``b^T N^-1 b`` to within 25 %. For nearly
parallel tracks (conversions) they do not: along the photon direction chi2 has a flat, quartic
valley with residuals that are not small, where ``N`` lacks the curvature term
``M = sum_k (W r)_k d2h_k/dtheta2`` of the Hessian ``2 (N - M)``; Gauss-Newton then zig-zags
(step halving) or crawls, and a stop on a small chi2 change left 12 % of toy conversions with
chi2 more than 0.01 (up to 9) above the minimum. From then on the fit takes Newton steps
``(N - M)^-1 b`` (``M`` from forward differences of the analytic Jacobian), Levenberg-Marquardt
damped (``+ mu diag N``) where ``N - M`` is not positive definite, with step halving.
Convergence: ``N - M`` positive definite without damping (a minimum, not a saddle or an
inflection of the valley) and both expected chi2 decreases, ``b^T (N - M)^-1 b`` and
``b^T N^-1 b``, below ``tol`` (default 1e-6); that last step is taken too. Prompt pairs converge
in 2-4 iterations with one Hessian evaluation (the final check). Toy conversions now all
converge, at the minimum (3.7-4.0 iterations on average, 99.9 % within 17); the cost per fit went
from 5.4 to 7.4 us for prompt pairs and from 13-14 to 15-16 us for conversions (2026-11-22); the
exact Hessian at the end for the covariance (below) adds ~20 % (17.4 -> 21.3 us prompt, 30.5 ->
37.2 us conversions, in one A/B on a loaded 2-core Intel VM).
The covariance of theta is the inverse of the exact half-Hessian ``N - M`` at the minimum, the
curvature of chi2 there (``N^-1`` only for a fit stopped where ``N - M`` is not positive
definite). ``N^-1`` alone is that only for small residuals: at the minima of nearly tangent
conversion helices it overstated the freedom along the opening angle by up to ~50x in
curvature, and the energy-constrained fit, which takes the momenta's covariance from here,
moved 2 % of the Belle II conversion pairs to M_ee of 0.1-2 GeV along it (before 2026-11-22).
A failed fit (``N`` singular, e.g. one
track given twice) has NaN in every fitted output: chi2, vertex, momenta, covariance,
``m_after``, ``delta_m``, ``r_xy`` and its error.

Starting point (robust for nearly parallel tracks, e.g. conversions and 17 MeV A' decays
with a few mrad opening): the intersections of the two circles in xy, the one with the smaller
z mismatch. When the circles do not intersect (tangent-like conversions after smearing) the
midpoint of the circles' points of closest approach is used.

Twin minima (``twin``). A conversion pair at radius R is born parallel: its two circles touch.
When the smearing makes them overlap by ``delta`` they cross twice, at flight distances
``R -+ D``, ``D ~ sqrt(2 delta rho)`` (circles of radii r1, r2 touching externally and moved
together by ``delta`` intersect on a half-chord ``D^2 = 2 delta rho + O(delta^2)``,
``rho = r1 r2/(r1 + r2)``; ~0.9 cm for a 20 um overlap of two 2 GeV tracks in 1.5 T): two
chi2 minima of nearly equal depth, one on each side of the true vertex. When only one
intersection matches in z within ``3 sigma(z0)`` (combined), it is fitted; when both do (twins:
52 % of the toy pairs below; 39 % of the Belle II X17 conversion pairs have two intersections),
which one is reported is a convention, and it changes the conversion background of the X17
signal region by a third (below; validation/x17):

* ``"min_chi2"`` (default): both are fitted and the lower chi2 is kept, the maximum-likelihood
  choice; a fit that converged is preferred to one stopped at ``max_iter`` (whose chi2 is not
  a minimum). Costs a second fit for those pairs.
* ``"inner"``: the one at smaller radius is fitted (a pair is measured outside its vertex;
  right for prompt pairs, whose second intersection lies ~cm outside). It pulls conversions
  towards the IP. This was the default before 2026-11-21.

With ``"min_chi2"`` the result also records the other minimum when both fits converged
(``twin_vertex``, ``twin_dchi2``), and ``r_xy_err`` includes it: the xy second moment about the
reported vertex of the two minima weighted by their likelihoods ``exp(-chi2/2)``. Without it a
prompt pair that reports its far intersection (Delta chi2 of a few tenths) had an ``r_xy`` many
of its errors from 0: for 17 MeV A' toys 3.8 % (2 GeV) and 8.7 % (5 GeV) of the pairs fell
outside the 99 % chi2(2) contour of ``vertex_cov`` (inner: 1.2 / 2.2 %); with the twin term
``r_xy_sig > 3.035`` (the 99 % point) for 0.53 / 1.11 % (inner 0.44 / 1.15 %).
``vertex_cov`` and ``cov`` stay the curvature of the reported minimum.

Measured (toy conversions of 1 GeV photons, x = 1/2, Belle II-like resolutions, 3000 pairs;
tests/reco/test_vertexfit.py; the minimiser of 2026-11-22, "Minimisation" above): median r_xy
0.874 (inner) vs 1.014 cm (min_chi2) at R = 1 cm, 2.067 vs 2.210 cm at R = 2.2 cm (before,
stopping early: 0.862 vs 1.001 and 2.058 vs 2.201); fraction with r_xy < 3 mm at R = 1 cm
7.3 % vs 4.2 %; unsmeared conversions recovered exactly (chi2 < 1e-3) 95.5 % vs 100 %. Prompt
17 MeV A' at 2 GeV with r_xy < 3 mm: 96.0 % vs 93.3 % (the pairs whose far intersection fits
better).
Belle II samples of the X17 sideband (2026-11-21, before the minimiser change; 2.5e5 conversion
pairs, 1.7e4 A' pairs;
SR |m_after - 17 MeV| < 2 MeV, r_xy < 1 cm, Delta M > -0.5 MeV): min_chi2 keeps x0.64 of the
conversions and x0.93 of the A' pairs that inner keeps in the SR.

Masses: ``m_before`` uses the momenta at the perigees (the pair assumed to come from the IP),
``m_after`` the fitted momenta at the vertex; ``delta_m = m_after - m_before`` (physics.md
5.4: for a conversion at radius R, ``delta_m ~ -0.2998 B R / sqrt(x(1-x))``; ~0 for a prompt
A').
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._numba import kernel
from ..exceptions import ConfigError
from ..helix import (
    arclength_to_point_xy,
    momentum_at_perigee,
    perigee_jacobian,
    state_at_arclength,
    wrap_angle,
)
from ._checks import as_helices, as_positive, same_length
from ._linalg import chol_factor, chol_inverse, chol_solve, unpack_sym
from .kinfit import chi2_prob

__all__ = ["TWIN_CHOICES", "VertexFitResult", "check_twin", "fit_vertex"]

#: Conventions for the twin chi2 minima of nearly tangent helices (module docstring).
TWIN_CHOICES = ("inner", "min_chi2")


def check_twin(value: object, field: str = "twin") -> str:
    """``value`` if it is one of :data:`TWIN_CHOICES`, else a ConfigError naming ``field``."""
    if value not in TWIN_CHOICES:
        msg = f"{field} = {value!r} is invalid: allowed one of {', '.join(TWIN_CHOICES)}"
        raise ConfigError(msg)
    return str(value)


@kernel
def _seed_vertex(h1, h2, out):
    """Seed vertices from the circle intersections: fills ``out`` (2, 4) with rows
    (x, y, z, |z mismatch|) ordered by z mismatch; returns their number (1 or 2)."""
    cands = np.empty((2, 2))
    nc = 0
    c1x = (h1[0] + 1.0 / h1[2]) * math.sin(h1[1])
    c1y = -(h1[0] + 1.0 / h1[2]) * math.cos(h1[1])
    c2x = (h2[0] + 1.0 / h2[2]) * math.sin(h2[1])
    c2y = -(h2[0] + 1.0 / h2[2]) * math.cos(h2[1])
    r1 = 1.0 / abs(h1[2])
    r2 = 1.0 / abs(h2[2])
    dx = c2x - c1x
    dy = c2y - c1y
    d = math.hypot(dx, dy)
    if d == 0.0:
        cands[0, 0] = h1[0] * math.sin(h1[1])
        cands[0, 1] = -h1[0] * math.cos(h1[1])
        nc = 1
    else:
        ux = dx / d
        uy = dy / d
        if d >= r1 + r2:
            # separate circles: midpoint of the facing points
            cands[0, 0] = 0.5 * (c1x + r1 * ux + c2x - r2 * ux)
            cands[0, 1] = 0.5 * (c1y + r1 * uy + c2y - r2 * uy)
            nc = 1
        elif d <= abs(r1 - r2):
            # one circle inside the other: nearest points lie along +u (or -u)
            sgn = 1.0 if r1 >= r2 else -1.0
            cands[0, 0] = 0.5 * (c1x + sgn * r1 * ux + c2x + sgn * r2 * ux)
            cands[0, 1] = 0.5 * (c1y + sgn * r1 * uy + c2y + sgn * r2 * uy)
            nc = 1
        else:
            a = (r1 * r1 - r2 * r2 + d * d) / (2.0 * d)
            hh = math.sqrt(max(r1 * r1 - a * a, 0.0))
            px = c1x + a * ux
            py = c1y + a * uy
            cands[0, 0] = px - hh * uy
            cands[0, 1] = py + hh * ux
            cands[1, 0] = px + hh * uy
            cands[1, 1] = py - hh * ux
            nc = 2
    for c in range(nc):
        x = cands[c, 0]
        y = cands[c, 1]
        s1 = arclength_to_point_xy(h1[0], h1[1], h1[2], x, y)
        s2 = arclength_to_point_xy(h2[0], h2[1], h2[2], x, y)
        z1 = h1[3] + h1[4] * s1
        z2 = h2[3] + h2[4] * s2
        out[c, 0] = x
        out[c, 1] = y
        out[c, 2] = 0.5 * (z1 + z2)
        out[c, 3] = abs(z1 - z2)
    if nc == 2 and out[1, 3] < out[0, 3]:
        # order by z mismatch: the better-matching intersection first
        for k in range(4):
            tmp = out[0, k]
            out[0, k] = out[1, k]
            out[1, k] = tmp
    return nc


@kernel
def _chi2_at(theta, meas, wmat, q, bz, jac, resid):
    """chi2 at ``theta``; fills ``jac`` (2, 5, 6) and wrapped residuals ``resid`` (2, 5)."""
    chi2 = 0.0
    for t in range(2):
        o = 3 + 3 * t
        h = perigee_jacobian(theta[0], theta[1], theta[2], theta[o], theta[o + 1], theta[o + 2],
                             q[t], bz, jac[t])
        for k in range(5):
            resid[t, k] = meas[t, k] - h[k]
        resid[t, 1] = wrap_angle(resid[t, 1])
        for k in range(5):
            for m in range(5):
                chi2 += resid[t, k] * wmat[t, k, m] * resid[t, m]
    return chi2


@kernel
def _vertex_one(meas, wmat, q, bz, sz, max_iter, tol, min_chi2, theta, cov, theta2, cov2, ws,
                twin):
    """Fit one event from the seeds of :func:`_seed_vertex`: the intersection with the smaller
    z mismatch, unless both match within ``3 sz`` (``sz`` = combined z0 sigma; twin minima):
    then ``min_chi2`` True fits both and keeps the converged one, or of two converged (or two
    unconverged) fits the lower finite chi2 (the one at smaller radius on an exact tie;
    ``theta2``/``cov2`` are scratch), ``min_chi2`` False fits the one at
    smaller radius. ``meas`` (2, 5), ``wmat``
    (2, 5, 5) weight matrices, ``ws`` scratch (:func:`_workspace`). Returns (chi2, n_iter,
    converged); ``theta`` (9) and ``cov`` (9, 9) are filled; ``twin`` (7) gets the other
    minimum of a ``min_chi2`` twin pair when both fits converged, (x, y, z, chi2, cov_xx,
    cov_xy, cov_yy), else NaN."""
    for a in range(7):
        twin[a] = np.nan
    seeds = np.empty((2, 4))
    nc = _seed_vertex(meas[0], meas[1], seeds)
    if not (nc == 2 and seeds[0, 3] < 3.0 * sz and seeds[1, 3] < 3.0 * sz):
        return _minimise(meas, wmat, q, bz, seeds[0], max_iter, tol, theta, cov, ws)
    if min_chi2:
        ch, it, ok = _minimise(meas, wmat, q, bz, seeds[0], max_iter, tol, theta, cov, ws)
        ch2, it2, ok2 = _minimise(meas, wmat, q, bz, seeds[1], max_iter, tol, theta2, cov2, ws)
        # a failed fit (chi2 NaN) loses, then a fit stopped before convergence (its chi2 is not
        # a minimum, and the selections drop it) loses to a converged one; between fits of the
        # same standing the lower chi2 wins, and an exact tie (unsmeared symmetric pairs: both
        # crossings fit with chi2 ~ 0) goes to the vertex at smaller radius, as without
        # min_chi2, not to the seed order
        if math.isnan(ch2) or math.isnan(ch):
            take2 = math.isnan(ch) and not math.isnan(ch2)
        elif ok2 != ok:
            take2 = ok2
        else:
            tie = abs(ch2 - ch) <= 1e-9 * (1.0 + min(ch, ch2))
            inner2 = (theta2[0] * theta2[0] + theta2[1] * theta2[1]
                      < theta[0] * theta[0] + theta[1] * theta[1])
            take2 = (ch2 < ch and not tie) or (tie and inner2)
        if ok and ok2:  # both minima: the other one's position, chi2 and xy covariance
            oth, och, ocv = (theta, ch, cov) if take2 else (theta2, ch2, cov2)
            twin[0], twin[1], twin[2], twin[3] = oth[0], oth[1], oth[2], och
            twin[4], twin[5], twin[6] = ocv[0, 0], ocv[0, 1], ocv[1, 1]
        if take2:
            theta[:] = theta2
            cov[:, :] = cov2
            return ch2, it2, ok2
        return ch, it, ok
    pick = 0
    if math.hypot(seeds[1, 0], seeds[1, 1]) < math.hypot(seeds[0, 0], seeds[0, 1]):
        pick = 1
    return _minimise(meas, wmat, q, bz, seeds[pick], max_iter, tol, theta, cov, ws)


@kernel
def _normal_equations(jac, wmat, resid, big, wj, nmat, bvec):
    """Gauss-Newton normal equations N = J^T W J, b = J^T W r for the 9 fit parameters
    (vertex x, y, z shared; momenta per track) from the per-track helix Jacobians ``jac``
    (2 x 5 x 6), weights ``wmat`` and residuals ``resid``; ``big`` and ``wj`` are scratch."""
    # J (2 x 5 x 9): vertex columns shared, momentum columns per track
    for t in range(2):
        for k in range(5):
            for c in range(9):
                big[t, k, c] = 0.0
            for c in range(3):
                big[t, k, c] = jac[t, k, c]
                big[t, k, 3 + 3 * t + c] = jac[t, k, 3 + c]
    for a in range(9):
        bvec[a] = 0.0
        for b in range(9):
            nmat[a, b] = 0.0
    for t in range(2):
        for a in range(9):
            # wj = W J[:, a]
            for k in range(5):
                acc = 0.0
                for m in range(5):
                    acc += wmat[t, k, m] * big[t, m, a]
                wj[k] = acc
            acc_b = 0.0
            for k in range(5):
                acc_b += wj[k] * resid[t, k]
            bvec[a] += acc_b
            for b in range(a, 9):
                acc = 0.0
                for k in range(5):
                    acc += wj[k] * big[t, k, b]
                nmat[a, b] += acc
    for a in range(9):
        for b in range(a):
            nmat[a, b] = nmat[b, a]


@kernel
def _second_order(theta, meas, wmat, q, bz, jac, resid, mmat, jp, state, wr, loc):
    """Curvature term of the Hessian, ``M = sum_t sum_k (W_t r_t)_k d2h_tk/dtheta2`` (9 x 9),
    by forward differences of the analytic perigee Jacobian (``jac`` and ``resid`` at
    ``theta``); ``jp`` (5, 6), ``state`` (6), ``wr`` (5) and ``loc`` (6, 6) are scratch.

    Steps: 1e-6 (1 + |x_i|) cm for the vertex, 1e-7 |p| for the momenta; the relative error of
    ``M`` (~1e-6) only changes the Newton steps, not the minimum found."""
    for a in range(9):
        for b in range(9):
            mmat[a, b] = 0.0
    for t in range(2):
        o = 3 + 3 * t
        for k in range(5):
            acc = 0.0
            for m in range(5):
                acc += wmat[t, k, m] * resid[t, m]
            wr[k] = acc
        for j in range(3):
            state[j] = theta[j]
            state[3 + j] = theta[o + j]
        p = math.sqrt(state[3] ** 2 + state[4] ** 2 + state[5] ** 2)
        for j in range(6):
            h = 1e-6 * (1.0 + abs(state[j])) if j < 3 else 1e-7 * p
            keep = state[j]
            state[j] = keep + h
            h = state[j] - keep  # the step actually taken (exact in binary)
            perigee_jacobian(state[0], state[1], state[2], state[3], state[4], state[5], q[t],
                             bz, jp)
            state[j] = keep
            for i in range(6):
                acc = 0.0
                for k in range(5):
                    acc += wr[k] * (jp[k, i] - jac[t, k, i])
                loc[i, j] = acc / h
        # symmetrise; local (x, y, z, p_t) -> global (x, y, z, p1, p2)
        for i in range(6):
            gi = i if i < 3 else o + i - 3
            for j in range(6):
                gj = j if j < 3 else o + j - 3
                mmat[gi, gj] += 0.5 * (loc[i, j] + loc[j, i])


@kernel
def _newton_step(nmat, mmat, bvec, hmat, low, step):
    """Newton step ``step = (N - M + mu diag N)^-1 b`` with the smallest damping ``mu`` in
    (0, 1e-6, 1e-5, ...) that makes the matrix positive definite. Returns (mu, expected chi2
    decrease ``b . step``); mu = -1 (and ``step`` unset) if no damping up to 1e33 does."""
    mu = 0.0
    for _k in range(40):
        for a in range(9):
            for b in range(9):
                hmat[a, b] = nmat[a, b] - mmat[a, b]
            hmat[a, a] += mu * nmat[a, a]
        if chol_factor(hmat, 9, low):
            chol_solve(low, 9, bvec, step)
            dec = 0.0
            for a in range(9):
                dec += bvec[a] * step[a]
            return mu, dec
        mu = 1e-6 if mu == 0.0 else 10.0 * mu
    return -1.0, np.inf


@kernel
def _fail(theta, cov):
    """Mark a failed fit: NaN in ``theta`` and ``cov``."""
    theta[:] = np.nan
    cov[:, :] = np.nan


@kernel
def _workspace():
    """Scratch arrays of :func:`_minimise`, allocated once per kernel call (not per fit)."""
    return (np.zeros((2, 5, 6)), np.zeros((2, 5)), np.zeros((2, 5, 9)), np.zeros((9, 9)),
            np.zeros((9, 9)), np.zeros((9, 9)), np.zeros((9, 9)), np.zeros(9), np.zeros(9),
            np.zeros(9), np.zeros(5), np.zeros((5, 6)), np.zeros(6), np.zeros(5),
            np.zeros((6, 6)))


@kernel
def _minimise(meas, wmat, q, bz, seed, max_iter, tol, theta, cov, ws):
    """Minimise chi2 from the vertex ``seed`` (x, y, z, .): Gauss-Newton, switching to damped
    Newton steps when Gauss-Newton misbehaves (module docstring, "Minimisation"). Returns
    (chi2, n_iter, converged); fills ``theta`` (9) and ``cov`` = ``(N - M)^-1`` (9, 9) (``N^-1``
    where ``N - M`` is not positive definite), both NaN (and chi2 NaN) when the fit fails.
    ``ws``: scratch from :func:`_workspace`."""
    jac, resid, big, nmat, mmat, hmat, low, bvec, step, trial, wj, jp, state, wr, loc = ws
    for i in range(3):
        theta[i] = seed[i]
    for t in range(2):
        s = arclength_to_point_xy(meas[t, 0], meas[t, 1], meas[t, 2], seed[0], seed[1])
        st = state_at_arclength(meas[t, 0], meas[t, 1], meas[t, 2], meas[t, 3], meas[t, 4], bz, s)
        for k in range(3):
            theta[3 + 3 * t + k] = st[3 + k]
    chi2 = _chi2_at(theta, meas, wmat, q, bz, jac, resid)
    if not math.isfinite(chi2):
        _fail(theta, cov)
        return np.nan, 0, False
    converged = False
    newton = False
    it = 0
    for it in range(1, max_iter + 1):
        _normal_equations(jac, wmat, resid, big, wj, nmat, bvec)
        if not chol_factor(nmat, 9, low):
            _fail(theta, cov)
            return np.nan, it, False
        chol_solve(low, 9, bvec, step)
        dec_gn = 0.0
        for a in range(9):
            dec_gn += bvec[a] * step[a]
        final = False
        if not newton and dec_gn >= tol:
            # Gauss-Newton step; keep to it while the quadratic model predicts the decrease
            for a in range(9):
                trial[a] = theta[a] + step[a]
            chi2_new = _chi2_at(trial, meas, wmat, q, bz, jac, resid)
            if chi2_new <= chi2:
                for a in range(9):
                    theta[a] = trial[a]
                if abs(chi2 - chi2_new - dec_gn) > 0.25 * dec_gn:
                    newton = True
                chi2 = chi2_new
                continue
            chi2 = _chi2_at(theta, meas, wmat, q, bz, jac, resid)  # jac, resid back at theta
        newton = True
        _second_order(theta, meas, wmat, q, bz, jac, resid, mmat, jp, state, wr, loc)
        mu, dec = _newton_step(nmat, mmat, bvec, hmat, low, step)
        if mu < 0.0:  # no usable curvature (not expected): the Gauss-Newton step
            chol_factor(nmat, 9, low)
            chol_solve(low, 9, bvec, step)
        final = mu == 0.0 and dec < tol and dec_gn < tol
        lam = 1.0
        chi2_new = np.inf
        for _half in range(30):
            for a in range(9):
                trial[a] = theta[a] + lam * step[a]
            chi2_new = _chi2_at(trial, meas, wmat, q, bz, jac, resid)
            if chi2_new <= chi2 or final:
                break
            lam *= 0.5
        if chi2_new <= chi2:
            for a in range(9):
                theta[a] = trial[a]
            chi2 = chi2_new
        else:
            # no decrease (the last step of a converged fit may lose to rounding): stay
            chi2 = _chi2_at(theta, meas, wmat, q, bz, jac, resid)
            if not final:
                break
        if final:
            converged = True
            break
    # covariance at the final point (jac, resid already at theta): the inverse of the exact
    # half-Hessian N - M, the curvature of chi2 there; N^-1 only where N - M is not positive
    # definite (no minimum: a fit stopped at max_iter)
    _normal_equations(jac, wmat, resid, big, wj, nmat, bvec)
    _second_order(theta, meas, wmat, q, bz, jac, resid, mmat, jp, state, wr, loc)
    for a in range(9):
        for b in range(9):
            hmat[a, b] = nmat[a, b] - mmat[a, b]
    if chol_inverse(hmat, 9, cov, low):
        return chi2, it, converged
    if not chol_inverse(nmat, 9, cov, low):
        _fail(theta, cov)
        return np.nan, it, False
    return chi2, it, converged


@kernel
def _pair_mass(p1, p2, m1, m2):
    """Pair mass [GeV] from two momenta; 0 below threshold, NaN for NaN input."""
    e1 = math.sqrt(p1[0] ** 2 + p1[1] ** 2 + p1[2] ** 2 + m1 * m1)
    e2 = math.sqrt(p2[0] ** 2 + p2[1] ** 2 + p2[2] ** 2 + m2 * m2)
    mm = (e1 + e2) ** 2 - (p1[0] + p2[0]) ** 2 - (p1[1] + p2[1]) ** 2 - (p1[2] + p2[2]) ** 2
    if math.isnan(mm):
        return np.nan
    return math.sqrt(mm) if mm > 0.0 else 0.0


@kernel
def _vertex_kernel(h1, c1, h2, c2, bz, m1, m2, max_iter, tol, min_chi2,
                   theta_out, cov_out, chi2, niter, conv, m_before, m_after, twin_out):
    n = h1.shape[0]
    meas = np.zeros((2, 5))
    wmat = np.zeros((2, 5, 5))
    vblk = np.zeros((5, 5))
    work = np.zeros((5, 5))
    q = np.zeros(2)
    theta = np.zeros(9)
    cov = np.zeros((9, 9))
    theta2 = np.zeros(9)
    cov2 = np.zeros((9, 9))
    pa = np.zeros(3)
    pb = np.zeros(3)
    ws = _workspace()
    for ev in range(n):
        ok_w = True
        for t in range(2):
            h = h1[ev] if t == 0 else h2[ev]
            c = c1[ev] if t == 0 else c2[ev]
            for k in range(5):
                meas[t, k] = h[k]
            q[t] = 1.0 if h[2] > 0.0 else -1.0
            unpack_sym(c, 5, vblk)
            if not chol_inverse(vblk, 5, wmat[t], work):
                ok_w = False
        pp = momentum_at_perigee(h1[ev, 1], h1[ev, 2], h1[ev, 4], bz)
        pa[0], pa[1], pa[2] = pp[0], pp[1], pp[2]
        pp = momentum_at_perigee(h2[ev, 1], h2[ev, 2], h2[ev, 4], bz)
        pb[0], pb[1], pb[2] = pp[0], pp[1], pp[2]
        m_before[ev] = _pair_mass(pa, pb, m1, m2)
        if not ok_w:
            chi2[ev] = np.nan
            niter[ev] = 0
            conv[ev] = False
            for a in range(9):
                theta_out[ev, a] = np.nan
                for b in range(9):
                    cov_out[ev, a, b] = np.nan
            m_after[ev] = np.nan
            for a in range(7):
                twin_out[ev, a] = np.nan
            continue
        sz = math.sqrt(c1[ev, 12] + c2[ev, 12])
        ch, it, ok = _vertex_one(meas, wmat, q, bz, sz, max_iter, tol, min_chi2, theta, cov,
                                 theta2, cov2, ws, twin_out[ev])
        if not math.isfinite(ch):
            _fail(theta, cov)  # every fitted output NaN, whatever the scratch arrays hold
            ch = np.nan
            ok = False
            for a in range(7):
                twin_out[ev, a] = np.nan
        chi2[ev] = ch
        niter[ev] = it
        conv[ev] = ok
        for a in range(9):
            theta_out[ev, a] = theta[a]
            for b in range(9):
                cov_out[ev, a, b] = cov[a, b]
        m_after[ev] = _pair_mass(theta[3:6], theta[6:9], m1, m2)


@dataclass(frozen=True)
class VertexFitResult:
    """Output of :func:`fit_vertex` (arrays over events; lab frame, cm, GeV).

    Where a fit failed (``chi2`` NaN) every fitted quantity is NaN as well (all but
    ``m_before``, ``n_iter`` and ``converged``).

    Attributes
    ----------
    vertex : float64[n, 3]
        Fitted vertex (x, y, z) [cm].
    vertex_cov : float64[n, 3, 3]
        Its covariance (view into ``cov``).
    p1, p2 : float64[n, 3]
        Fitted momenta at the vertex [GeV].
    cov : float64[n, 9, 9]
        Covariance of (vertex, p1, p2).
    chi2, prob : float64[n]
        Fit chi2 (1 dof) and its upper-tail chi2(1) probability; NaN when the fit failed.
        For a ``twin = "min_chi2"`` pair with two minima the chi2 is the smaller of two, so
        ``prob`` is not uniform there (prompt 17 MeV Belle II A' pairs, 30 % of them twins: the
        lowest fifth of ``prob`` holds 0.8 of its expected share overall, 0.15 among the twins);
        ``vertex_cov`` likewise is the curvature of the reported minimum only (its x, y, z pulls
        have rms 1.5-2 for such samples; ``r_xy_err`` includes the other minimum).
    n_iter : int32[n]; converged : bool[n]
    m_before, m_after, delta_m : float64[n]
        Pair mass [GeV] from the perigee momenta (IP assumed), from the fitted momenta at
        the vertex, and their difference ``m_after - m_before`` (physics.md 5.4).
    r_xy, r_xy_err, r_xy_sig : float64[n]
        Transverse vertex distance from the z axis [cm], its error and ``r_xy / r_xy_err``.
        The error is the linear propagation of the xy covariance about the reported vertex,
        which for a twin pair (``twin_vertex`` finite) includes the other minimum: the second
        moment of the two-minimum mixture, ``(1 - w) V_1 + w (V_2 + d d^T)``, ``d`` the xy
        offset of the other minimum, ``w = 1 / (1 + exp(twin_dchi2 / 2))`` its likelihood
        relative to the reported one (module docstring, "Twin minima").
    twin_vertex : float64[n, 3]
        The other chi2 minimum of a ``twin = "min_chi2"`` pair when both fits converged
        [cm]; NaN otherwise (a single intersection, ``twin = "inner"``, a failed fit).
    twin_dchi2 : float64[n]
        Its chi2 minus the reported chi2 (>= 0, but for an exact tie within 1e-9 relative, which
        reports the inner one); NaN where ``twin_vertex`` is.
    """

    vertex: np.ndarray
    vertex_cov: np.ndarray
    p1: np.ndarray
    p2: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    prob: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    m_before: np.ndarray
    m_after: np.ndarray
    delta_m: np.ndarray
    r_xy: np.ndarray
    r_xy_err: np.ndarray
    r_xy_sig: np.ndarray
    twin_vertex: np.ndarray
    twin_dchi2: np.ndarray


def fit_vertex(helix1, cov1, helix2, cov2, *, bz: float, mass: float | tuple[float, float],
               max_iter: int = 50, tol: float = 1e-6, twin: str = "min_chi2") -> VertexFitResult:
    """Fit two helices to a common vertex (see the module docstring for the method).

    Parameters
    ----------
    helix1, helix2 : array [n, 5]
        Perigee helix parameters (d0, phi0, omega, z0, tanl) (contracts.md); the charge is
        the sign of omega.
    cov1, cov2 : array [n, 15]
        Packed 5x5 covariances: positive diagonal, positive semi-definite (ConfigError
        otherwise); an event whose covariance is singular cannot be fitted (all NaN).
    bz : float
        Solenoid field [T].
    mass : float or (float, float)
        Mass hypotheses [GeV] for the pair masses (e.g. ``M_E``).
    max_iter : int
        Iteration cap (``converged = False`` when reached; 99.9 % of toy conversions need <= 17).
    tol : float
        Convergence: expected chi2 decrease of the next Newton and Gauss-Newton steps below
        ``tol``, at a positive definite Hessian (module docstring, "Minimisation").
    twin : {"inner", "min_chi2"}
        Which of two circle intersections is fitted (see the module docstring, "Twin minima").

    Returns
    -------
    VertexFitResult
    """
    h1, c1 = as_helices("track1", helix1, cov1)
    h2, c2 = as_helices("track2", helix2, cov2)
    n = same_length(track1=h1, track2=h2)
    bz = as_positive("bz", bz)
    m1, m2 = (mass, mass) if np.ndim(mass) == 0 else tuple(mass)
    m1 = as_positive("mass", m1, allow_zero=True)
    m2 = as_positive("mass", m2, allow_zero=True)
    if int(max_iter) < 2:
        msg = f"max_iter = {max_iter!r} out of range: must be >= 2"
        raise ConfigError(msg)
    check_twin(twin)
    theta = np.empty((n, 9))
    cov = np.empty((n, 9, 9))
    chi2 = np.empty(n)
    niter = np.empty(n, np.int32)
    conv = np.empty(n, np.bool_)
    mb = np.empty(n)
    ma = np.empty(n)
    tw = np.empty((n, 7))
    if n:
        _vertex_kernel(h1, c1, h2, c2, bz, m1, m2, int(max_iter), as_positive("tol", tol),
                       twin == "min_chi2", theta, cov, chi2, niter, conv, mb, ma, tw)
    x, y = theta[:, 0], theta[:, 1]
    r = np.hypot(x, y)
    dchi2 = tw[:, 3] - chi2
    # xy second moment about the reported vertex of the two-minimum mixture (twin pairs)
    w = np.where(np.isfinite(dchi2), 1.0 / (1.0 + np.exp(0.5 * np.minimum(dchi2, 1400.0))), 0.0)
    dx = np.where(w > 0.0, tw[:, 0] - x, 0.0)
    dy = np.where(w > 0.0, tw[:, 1] - y, 0.0)
    vxx = (1.0 - w) * cov[:, 0, 0] + w * (np.nan_to_num(tw[:, 4]) + dx * dx)
    vxy = (1.0 - w) * cov[:, 0, 1] + w * (np.nan_to_num(tw[:, 5]) + dx * dy)
    vyy = (1.0 - w) * cov[:, 1, 1] + w * (np.nan_to_num(tw[:, 6]) + dy * dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (x * x * vxx + 2 * x * y * vxy + y * y * vyy) / (r * r)
        rerr = np.sqrt(var)
        sig = r / rerr
    return VertexFitResult(
        vertex=theta[:, :3], vertex_cov=cov[:, :3, :3], p1=theta[:, 3:6], p2=theta[:, 6:9],
        cov=cov, chi2=chi2, prob=chi2_prob(chi2, 1), n_iter=niter, converged=conv,
        m_before=mb, m_after=ma, delta_m=ma - mb, r_xy=r, r_xy_err=rerr, r_xy_sig=sig,
        twin_vertex=tw[:, :3], twin_dchi2=dchi2,
    )
