"""Numba kernels for the binned signal + background likelihood (physics.md section 7.2).

Model for the used bins i (all channels flattened into one array):

    nu_i = mu * r_i * exp(sn_i * theta_n) * S_i(theta_r) + b0_i + sum_j D_ij a_j,
    S_i(theta_r) = s0_i + theta_r * ds_i + 0.5 * theta_r**2 * d2s_i,

i.e. a signal template (quadratically morphed in the standardised resolution nuisance
theta_r), a log-normal normalisation/efficiency factor exp(sn_i theta_n) with a Gaussian
constraint on theta_n (HistFactory's exponential normalisation: relative uncertainty sn_i for
small sn_i; a linear factor 1 + sn_i theta_n reached zero at theta_n = -1/sn_i, where the
signal could be switched off at a finite cost, so that q~_mu levelled off below its
threshold for sn_i >~ 0.3 and no upper limit existed), a fixed
background part b0 and a background linear in the (unconstrained) polynomial coefficients a.
The per-bin loss (flag ``poisson[i]``) is Poisson (Baker-Cousins form, so that 2*nll is the
likelihood-ratio chi2) or Gaussian with the sum-of-weights-squared variance (weighted
histograms). The constraint term is 0.5 * (theta - aux)**2 for both nuisances.

Parameter vector layout: p[0:P] = a, p[P] = theta_n, p[P+1] = theta_r, p[P+2] = mu.

Both kernels evaluate nu_i with the same expression, ``mu * (r_i * exp(sn_i theta_n) * S_i)
+ b0_i + sum_j D_ij a_j``, in the same order, so a point that :func:`nll_value` accepts is a
valid point for :func:`profile_fit` too.

Physical boundary: a Poisson bin with n_i > 0 needs nu_i > 0 (its -n ln nu term is a
natural barrier). An empty bin (n_i = 0) contributes nu_i, whose limit at nu_i -> 0 is 0, so
its boundary nu_i = 0 is attainable, and the maximum-likelihood estimate of a sparse spectrum
often lies on it (mu_hat < 0 pushing an empty bin under the peak to zero; a polynomial
touching zero in the empty tail of a falling spectrum). :func:`profile_fit` handles it with
a logarithmic barrier on the empty bins whose weight is driven to ~0 (an interior-point
method); :func:`nll_value` accepts nu_i = 0 in empty bins (and, to absorb the rounding of
nu_i as a sum of O(1) terms, -EMPTY_ROUNDING * sum|terms| <= nu_i < 0 counts as 0).
"""

from __future__ import annotations

import numpy as np

from .._numba import kernel, kernel_inline

__all__ = ["BOUNDARY_MULTIPLIER", "EMPTY_ROUNDING", "NU_EXACT", "NU_FLOOR", "TAU_FACTOR", "TAU_MIN",
           "TAU_START", "nll_value", "poisson_quantile", "poisson_quantiles", "profile_fit", "toy_qtilde"]

#: Floor on nu_i in the derivatives of a Poisson bin: n / NU_FLOOR**2 stays finite for any
#: count below 1e100.
NU_FLOOR = 1e-100

#: Relative rounding of nu_i tolerated below 0 in an empty bin (see the module docstring).
EMPTY_ROUNDING = 1e-12

#: Barrier weight tau of the first stage (also for warm starts: a smaller tau at a start near
#: the boundary makes the steps crawl along it); each stage divides tau by TAU_FACTOR ...
TAU_START = 1.0
TAU_FACTOR = 10.0
#: ... down to TAU_MIN: the nll of the last stage is within (number of empty bins) x TAU_MIN
#: of the constrained minimum.
TAU_MIN = 1e-12

#: An empty bin whose barrier multiplier tau / nu_i (the Lagrange multiplier of nu_i >= 0,
#: O(1) for an active bin) exceeds this at the end is on the boundary.
BOUNDARY_MULTIPLIER = 1e-6

#: Newton decrement that ends an intermediate barrier stage (the last stage uses ``tol``).
_STAGE_TOL = 1e-6


@kernel
def _objective(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, tau):  # pragma: no cover - jitted
    """nll(p) + tau * sum over empty Poisson bins of -ln nu_i (inf outside the domain; with
    tau > 0 the empty bins need nu_i > 0)."""
    nb, npb = D.shape
    tn = p[npb]
    tr = p[npb + 1]
    mu = p[npb + 2]
    total = 0.5 * (tn - aux[0]) ** 2 + 0.5 * (tr - aux[1]) ** 2
    for i in range(nb):
        # same expression and order as in profile_fit
        s = s0[i] + tr * ds[i] + 0.5 * tr * tr * d2s[i]
        fn = np.exp(sn[i] * tn)
        g = r[i] * fn * s
        nu = mu * g + b0[i]
        mag = abs(mu * g) + abs(b0[i])
        for j in range(npb):
            t = D[i, j] * p[j]
            nu += t
            mag += abs(t)
        if poisson[i]:
            if n[i] > 0.0:
                if not nu > 0.0:
                    return np.inf
                # nu - n + n ln(n/nu) = n (d - ln(1 + d)), d = nu/n - 1, without the cancellation
                # of the direct form (it lost ~1e-9 per bin at n ~ 1e7, so the fits' 1e-9
                # convergence test failed on rounding noise at 1e6-1e7 counts per bin)
                d = (nu - n[i]) / n[i]
                total += n[i] * (d - np.log1p(d))
            elif tau > 0.0:
                if not nu > 0.0:
                    return np.inf
                total += nu - tau * np.log(nu)
            elif nu >= 0.0:
                total += nu
            elif not nu >= -EMPTY_ROUNDING * mag:  # also NaN
                return np.inf
        else:
            total += 0.5 * (n[i] - nu) ** 2 / var[i]
    return total


@kernel
def nll_value(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux):  # pragma: no cover - jitted
    """Negative log-likelihood at parameters ``p`` (inf outside the physical region: some
    Poisson nu <= 0 with n > 0, nu < 0 with n = 0 beyond rounding, or a NaN nu)."""
    return _objective(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, 0.0)


@kernel
def _descent_step(h, grad):  # pragma: no cover - jitted
    """Solve h step = -grad; returns (step, grad.step, ok). Never raises: numba raises
    LinAlgError on singular or non-finite matrices, which is reported as ok = False."""
    k = grad.size
    step = np.zeros(k)
    try:
        step = np.linalg.solve(h, -grad)
    except Exception:  # noqa: BLE001 - numba raises a generic error for singular systems
        return step, 0.0, False
    dec = 0.0
    for a in range(k):
        dec += step[a] * grad[a]
    if not np.isfinite(dec) or dec > 0.0:
        return step, dec, False
    return step, dec, True


@kernel
def _inverse_diagonal(h, idx):  # pragma: no cover - jitted
    """(h^-1)[idx, idx] of a symmetric matrix via its Cholesky factor; nan unless h is
    positive definite. Plain loops (k ~ 10): no LAPACK call to compile or to raise."""
    k = h.shape[0]
    lo = np.zeros((k, k))
    for j in range(k):
        d = h[j, j]
        for m in range(j):
            d -= lo[j, m] * lo[j, m]
        if not d > 0.0:  # also nan
            return np.nan
        lo[j, j] = np.sqrt(d)
        for i in range(j + 1, k):
            v = h[i, j]
            for m in range(j):
                v -= lo[i, m] * lo[j, m]
            lo[i, j] = v / lo[j, j]
    # x = L^-1 e_idx (forward substitution); (h^-1)[idx, idx] = |x|^2
    x = np.zeros(k)
    total = 0.0
    for i in range(idx, k):
        v = 1.0 if i == idx else 0.0
        for m in range(idx, i):
            v -= lo[i, m] * x[m]
        x[i] = v / lo[i, i]
        total += x[i] * x[i]
    return total


@kernel_inline
def _bin_terms(i, p, npb, fit_mu, D, b0, r, sn, s0, ds, d2s, jac):  # pragma: no cover - jitted
    """``nu_i`` computed exactly as in :func:`_objective`, its gradient written to ``jac``
    (coefficients, the two nuisances, mu if fitted); returns ``(nu, s, s', f_n)`` (signal
    shape, its derivative in the shift nuisance, normalisation factor) for the Hessian terms."""
    tn = p[npb]
    tr = p[npb + 1]
    mu = p[npb + 2]
    s = s0[i] + tr * ds[i] + 0.5 * tr * tr * d2s[i]
    sp = ds[i] + tr * d2s[i]
    fn = np.exp(sn[i] * tn)
    g = r[i] * fn * s
    nu = mu * g + b0[i]
    for j in range(npb):
        nu += D[i, j] * p[j]
        jac[j] = D[i, j]
    jac[npb] = mu * r[i] * sn[i] * fn * s
    jac[npb + 1] = mu * r[i] * fn * sp
    if fit_mu:
        jac[npb + 2] = g
    return nu, s, sp, fn


@kernel
def profile_fit(p_start, fit_mu, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux,
                max_iter, tol):  # pragma: no cover - jitted
    """Minimise the nll over a, theta_n, theta_r (and mu if ``fit_mu``) by damped Newton.

    Returns
    -------
    nll : float
        The nll (without barrier) at ``p``.
    p : ndarray
        Parameters at the minimum (mu unchanged if not ``fit_mu``).
    status : int
        0 converged, 1 iteration limit, 2 line search failed (minimum to numerical
        precision), 3 invalid start (nu <= 0), 4 numerical failure (neither the Newton nor
        the Gauss-Newton system gave a finite descent step); ``p`` and ``nll`` are then the
        last accepted point. The kernel never raises.
    var_mu : float
        (H^-1)_{mu mu} at the minimum if ``fit_mu`` (else nan), with H the exact observed
        Hessian of the nll (d2/dnu2 = n / nu^2 for a Poisson bin, 0 for an empty bin); nan if
        H is not positive definite or if the minimum lies on the nu = 0 boundary of an empty
        bin (the likelihood is not quadratic around it: there is no Hesse error).

    Notes
    -----
    Newton's method with the exact Hessian and a backtracking (Armijo) line search, falling
    back to Gauss-Newton (with the expected information 1/nu for empty bins) where the
    Newton direction is not a descent direction. Empty Poisson bins get a log barrier
    -tau ln nu_i: tau = TAU_START, then divided by TAU_FACTOR after each converged stage down
    to TAU_MIN (or until tau / nu_i < 1e-9 in every empty bin, when the barrier no longer
    matters). Without empty bins (any high-statistics spectrum) this is plain damped Newton.
    """
    nb, npb = D.shape
    k = npb + 2 + (1 if fit_mu else 0)
    p = p_start.copy()
    f = nll_value(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux)
    if not np.isfinite(f):
        return f, p, 3, np.nan
    empty = np.zeros(nb, dtype=np.bool_)
    n_empty = 0
    for i in range(nb):
        empty[i] = poisson[i] and not n[i] > 0.0
        if empty[i]:
            n_empty += 1
    tau = TAU_START if n_empty > 0 else 0.0
    fb = _objective(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, tau)
    if not np.isfinite(fb):  # an empty bin starts exactly on the boundary: no barrier
        tau = 0.0
        fb = f
    status = 1
    grad = np.zeros(k)
    hess = np.zeros((k, k))
    hgn = np.zeros((k, k))
    jac = np.zeros(k)
    lam_max = 0.0
    for it in range(max_iter + 1):
        grad[:] = 0.0
        hess[:, :] = 0.0
        hgn[:, :] = 0.0
        lam_max = 0.0
        tn = p[npb]
        tr = p[npb + 1]
        mu = p[npb + 2]
        for i in range(nb):
            nu, s, sp, fn = _bin_terms(i, p, npb, fit_mu, D, b0, r, sn, s0, ds, d2s, jac)
            if empty[i]:
                nuc = nu if nu > NU_FLOOR else NU_FLOOR
                lam = tau / nuc  # barrier multiplier
                lam_max = max(lam_max, lam)
                l1 = 1.0 - lam
                l2 = lam / nuc  # the nll term nu is linear: only the barrier curves
                l2gn = l2 + 1.0 / max(nuc, 1e-10)  # expected information, fallback metric
            elif poisson[i]:
                nuc = nu if nu > NU_FLOOR else NU_FLOOR
                l1 = 1.0 - n[i] / nuc
                l2 = n[i] / (nuc * nuc)
                l2gn = l2
            else:
                l1 = (nu - n[i]) / var[i]
                l2 = 1.0 / var[i]
                l2gn = l2
            for a in range(k):
                grad[a] += l1 * jac[a]
                if jac[a] != 0.0:
                    for b in range(a, k):
                        hess[a, b] += l2 * jac[a] * jac[b]
                        hgn[a, b] += l2gn * jac[a] * jac[b]
            # second derivatives of nu (only the nuisance/mu block is non-linear)
            hess[npb, npb] += l1 * mu * r[i] * sn[i] * sn[i] * fn * s
            hess[npb, npb + 1] += l1 * mu * r[i] * sn[i] * fn * sp
            hess[npb + 1, npb + 1] += l1 * mu * r[i] * fn * d2s[i]
            if fit_mu:
                hess[npb, npb + 2] += l1 * r[i] * sn[i] * fn * s
                hess[npb + 1, npb + 2] += l1 * r[i] * fn * sp
        grad[npb] += tn - aux[0]
        grad[npb + 1] += tr - aux[1]
        hess[npb, npb] += 1.0
        hess[npb + 1, npb + 1] += 1.0
        hgn[npb, npb] += 1.0
        hgn[npb + 1, npb + 1] += 1.0
        for a in range(k):
            for b in range(a, k):
                hess[b, a] = hess[a, b]
                hgn[b, a] = hgn[a, b]
        # tiny ridge against exactly singular directions (e.g. unused parameters)
        scale = 0.0
        for a in range(k):
            scale = max(scale, abs(hgn[a, a]))
        ridge = 1e-13 * scale + 1e-300
        for a in range(k):
            hess[a, a] += ridge
            hgn[a, a] += ridge
        if it == max_iter:
            break
        finite = True
        for a in range(k):
            if not np.isfinite(grad[a]):
                finite = False
        if not finite:
            status = 4
            break
        # Newton direction; Gauss-Newton if that is not a descent direction
        step, dec, ok = _descent_step(hess, grad)
        if not ok:
            step, dec, ok = _descent_step(hgn, grad)
            if not ok:
                status = 4
                break
        final = tau == 0.0 or tau <= TAU_MIN or lam_max < 1e-9
        if -dec < (tol if final else max(tol, _STAGE_TOL)):
            if final:
                status = 0
                break
            # next barrier stage (the derivatives are recomputed at the same point)
            tau = max(tau / TAU_FACTOR, TAU_MIN)
            fb = _objective(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, tau)
            continue
        t = 1.0
        accepted = False
        pn = p.copy()
        fnew = fb
        for _ in range(60):
            for a in range(k):
                pn[a] = p[a] + t * step[a]
            fnew = _objective(pn, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, tau)
            if np.isfinite(fnew) and fnew <= fb + 1e-4 * t * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            if final:
                status = 2
                break
            # the barrier stage is at its minimum to numerical precision: next stage
            tau = max(tau / TAU_FACTOR, TAU_MIN)
            fb = _objective(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, tau)
            continue
        p[:] = pn
        fb = fnew
    f = nll_value(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux)
    var_mu = np.nan
    if fit_mu and lam_max <= BOUNDARY_MULTIPLIER:
        # exact observed Hessian of the nll: remove the barrier curvature of the empty bins
        # (<= lam_max / nu_i each; only where it matters, i.e. not on the boundary)
        hx = hess.copy()
        if tau > 0.0:
            for i in range(nb):
                if empty[i]:
                    nu = _bin_terms(i, p, npb, fit_mu, D, b0, r, sn, s0, ds, d2s, jac)[0]
                    nuc = nu if nu > NU_FLOOR else NU_FLOOR
                    w = tau / (nuc * nuc)
                    for a in range(k):
                        for b in range(k):
                            hx[a, b] -= w * jac[a] * jac[b]
        var_mu = _inverse_diagonal(hx, npb + 2)
        # positive definite only through the ridge (no curvature along mu): undefined too
        if not (np.isfinite(var_mu) and var_mu > 0.0) or var_mu * ridge > 1e-3:
            var_mu = np.nan
    return f, p, status, var_mu


# ---------------------------------------------------------------------------------------
# pseudo-experiments for toy-based limits (isrsim.stats.toylimits)

#: Mean up to which :func:`poisson_quantile` inverts the Poisson CDF exactly (summing the
#: probabilities from k = 0: at most ~NU_EXACT + 10 sqrt(NU_EXACT) terms).
NU_EXACT = 100.0


@kernel_inline
def poisson_quantile(u, nu, z):  # pragma: no cover - jitted
    """Smallest k with P(N <= k | nu) >= u (the Poisson quantile function), ``z = Phi^-1(u)``.

    Exact for ``nu <= NU_EXACT``. Above, the Cornish-Fisher expansion of the quantile to
    (Cornish & Fisher, Rev. Inst. Int. Stat. 5 (1937) 307; Abramowitz & Stegun 26.2.49)
    O(1/nu) (cumulants of the Poisson all nu: skewness nu^-1/2, excess kurtosis 1/nu) with the
    continuity correction, ``k = ceil(nu + sqrt(nu) w - 1/2)``, ``w = z + (z^2 - 1)/(6 sqrt nu)
    + (z^3 - 3z)/(24 nu) - (2z^3 - 5z)/(36 nu)``; against scipy.stats.poisson.ppf it is off by
    one count for < 1 % of the draws at nu = 100-10^4 (tests/test_toylimits.py), where
    a count more or less moves q~ by ~1/nu. A monotone map from ``u``, so that pseudo-data drawn
    from the same ``u`` at different means are coupled (common random numbers: the toy p-value
    is a step function of mu without toy-to-toy noise between neighbouring mu).
    """
    if nu <= 0.0:
        return 0.0
    if nu <= NU_EXACT:
        p = np.exp(-nu)
        c = p
        k = 0.0
        while c < u and p > 0.0:
            k += 1.0
            p *= nu / k
            c += p
        return k
    rs = np.sqrt(nu)
    z2 = z * z
    w = (z + (z2 - 1.0) / (6.0 * rs) + (z2 * z - 3.0 * z) / (24.0 * nu)
         - (2.0 * z2 * z - 5.0 * z) / (36.0 * nu))
    return max(np.ceil(nu + rs * w - 0.5), 0.0)


@kernel
def poisson_quantiles(u, nu, z):  # pragma: no cover - jitted
    """:func:`poisson_quantile` element-wise (same-shaped arrays)."""
    out = np.empty(u.size)
    uf = u.ravel()
    nf = nu.ravel()
    zf = z.ravel()
    for i in range(u.size):
        out[i] = poisson_quantile(uf[i], nf[i], zf[i])
    return out.reshape(u.shape)


@kernel_inline
def _fit_from(starts, mu, fit_mu, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux, max_iter,
              tol):  # pragma: no cover - jitted
    """profile_fit from the first of ``starts`` (rows) that is a valid start and converges
    (status 0 or 2); mu fixed to ``mu`` unless ``fit_mu``. Returns (nll, p, ok)."""
    npb = D.shape[1]
    for j in range(starts.shape[0]):
        p0 = starts[j].copy()
        if not fit_mu:
            p0[npb + 2] = mu
        f, p, status, _ = profile_fit(p0, fit_mu, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux,
                                      max_iter, tol)
        if status == 0 or status == 2:
            return f, p, True
    return np.inf, starts[0].copy(), False


@kernel
def toy_qtilde(mu, nu, var, poisson, u, z, z_aux, aux0, starts, D, b0, r, sn, s0, ds, d2s,
               max_iter, tol):  # pragma: no cover - jitted
    """q~_mu (arXiv:1007.1727 eq. 16) of pseudo-experiments drawn around the expected counts
    ``nu``: toy t has n_i = Poisson quantile of ``u[t, i]`` (Poisson bins, ``z = Phi^-1(u)``) or
    ``nu_i + sqrt(var_i) z[t, i]`` (weighted bins) and global observables ``aux0 + z_aux[t]``.

    Per toy: the free fit (mu fitted), the fit at mu = 0 if mu_hat < 0 (reference clipped at 0),
    and the fit at ``mu``; q~ = 0 where mu_hat >= mu. Each fit starts from the previous one's
    result, then from the rows of ``starts``. Returns ``(q, mu_hat)``; both nan for a toy whose
    fits failed.
    """
    nt, nb = u.shape
    npb = D.shape[1]
    q = np.empty(nt)
    mu_hat = np.empty(nt)
    n = np.empty(nb)
    aux = np.empty(aux0.size)
    k = starts.shape[0]
    chain = np.empty((k + 1, starts.shape[1]))
    for j in range(k):
        chain[j + 1] = starts[j]
    for t in range(nt):
        for i in range(nb):
            if poisson[i]:
                n[i] = poisson_quantile(u[t, i], nu[i], z[t, i])
            else:
                n[i] = nu[i] + np.sqrt(var[i]) * z[t, i]
        for a in range(aux0.size):
            aux[a] = aux0[a] + z_aux[t, a]
        f_hat, p_hat, ok = _fit_from(starts, 0.0, True, n, var, poisson, D, b0, r, sn, s0, ds, d2s,
                                     aux, max_iter, tol)
        if not ok:
            q[t] = np.nan
            mu_hat[t] = np.nan
            continue
        mh = p_hat[npb + 2]
        mu_hat[t] = mh
        if mh >= mu:
            q[t] = 0.0
            continue
        chain[0] = p_hat
        f_ref = f_hat
        if mh < 0.0:
            f_ref, p0, ok = _fit_from(chain, 0.0, False, n, var, poisson, D, b0, r, sn, s0, ds, d2s,
                                      aux, max_iter, tol)
            if ok:
                chain[0] = p0
        f_mu = np.inf
        if ok:
            f_mu, _, ok = _fit_from(chain, mu, False, n, var, poisson, D, b0, r, sn, s0, ds, d2s,
                                    aux, max_iter, tol)
        if not ok:
            q[t] = np.nan
            continue
        q[t] = max(2.0 * (f_mu - f_ref), 0.0)
    return q, mu_hat
