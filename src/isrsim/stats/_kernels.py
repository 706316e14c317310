"""Numba kernels for the binned signal + background likelihood (physics.md section 7.2).

Model for the used bins i (all channels flattened into one array):

    nu_i = mu * r_i * (1 + sn_i * theta_n) * S_i(theta_r) + b0_i + sum_j D_ij a_j,
    S_i(theta_r) = s0_i + theta_r * ds_i + 0.5 * theta_r**2 * d2s_i,

i.e. a signal template (quadratically morphed in the standardised resolution nuisance
theta_r), a Gaussian-constrained normalisation/efficiency nuisance theta_n, a fixed
background part b0 and a background linear in the (unconstrained) polynomial coefficients a.
The per-bin loss (flag ``poisson[i]``) is Poisson (Baker-Cousins form, so that 2*nll is the likelihood-ratio chi2)
or Gaussian with the sum-of-weights-squared variance (weighted histograms). The constraint
term is 0.5 * (theta - aux)**2 for both nuisances.

Parameter vector layout: p[0:P] = a, p[P] = theta_n, p[P+1] = theta_r, p[P+2] = mu.
"""

from __future__ import annotations

import numpy as np

from .._numba import kernel

__all__ = ["nll_value", "profile_fit"]


@kernel
def nll_value(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux):  # pragma: no cover - jitted
    """Negative log-likelihood at parameters ``p`` (inf if some nu <= 0 in a Poisson bin)."""
    nb, npb = D.shape
    tn = p[npb]
    tr = p[npb + 1]
    mu = p[npb + 2]
    total = 0.5 * (tn - aux[0]) ** 2 + 0.5 * (tr - aux[1]) ** 2
    for i in range(nb):
        s = s0[i] + tr * ds[i] + 0.5 * tr * tr * d2s[i]
        nu = mu * r[i] * (1.0 + sn[i] * tn) * s + b0[i]
        for j in range(npb):
            nu += D[i, j] * p[j]
        if poisson[i]:
            if nu <= 0.0:
                return np.inf
            if n[i] > 0.0:
                total += nu - n[i] + n[i] * np.log(n[i] / nu)
            else:
                total += nu
        else:
            total += 0.5 * (n[i] - nu) ** 2 / var[i]
    return total


@kernel
def profile_fit(p_start, fit_mu, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux,
                max_iter, tol):  # pragma: no cover - jitted
    """Minimise the nll over a, theta_n, theta_r (and mu if ``fit_mu``) by damped Newton.

    Returns
    -------
    nll : float
    p : ndarray
        Parameters at the minimum (mu unchanged if not ``fit_mu``).
    status : int
        0 converged, 1 iteration limit, 2 line search failed (minimum to numerical
        precision), 3 invalid start (nu <= 0).
    var_mu : float
        (H^-1)_{mu mu} at the minimum if ``fit_mu`` (else nan).
    """
    nb, npb = D.shape
    k = npb + 2 + (1 if fit_mu else 0)
    p = p_start.copy()
    f = nll_value(p, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux)
    if not np.isfinite(f):
        return f, p, 3, np.nan
    status = 1
    grad = np.zeros(k)
    hess = np.zeros((k, k))
    hgn = np.zeros((k, k))
    jac = np.zeros(k)
    var_mu = np.nan
    for it in range(max_iter + 1):
        grad[:] = 0.0
        hess[:, :] = 0.0
        hgn[:, :] = 0.0
        tn = p[npb]
        tr = p[npb + 1]
        mu = p[npb + 2]
        for i in range(nb):
            s = s0[i] + tr * ds[i] + 0.5 * tr * tr * d2s[i]
            sp = ds[i] + tr * d2s[i]
            fn = 1.0 + sn[i] * tn
            g = r[i] * fn * s
            nu = mu * g + b0[i]
            for j in range(npb):
                nu += D[i, j] * p[j]
                jac[j] = D[i, j]
            jac[npb] = mu * r[i] * sn[i] * s
            jac[npb + 1] = mu * r[i] * fn * sp
            if fit_mu:
                jac[npb + 2] = g
            if poisson[i]:
                l1 = 1.0 - n[i] / nu
                l2 = n[i] / (nu * nu) if n[i] > 0.0 else 1.0 / nu
            else:
                l1 = (nu - n[i]) / var[i]
                l2 = 1.0 / var[i]
            for a in range(k):
                grad[a] += l1 * jac[a]
                ja = l2 * jac[a]
                if ja != 0.0:
                    for b in range(a, k):
                        hgn[a, b] += ja * jac[b]
            # second derivatives of nu (only the nuisance/mu block is non-linear)
            hess[npb, npb + 1] += l1 * mu * r[i] * sn[i] * sp
            hess[npb + 1, npb + 1] += l1 * mu * r[i] * fn * d2s[i]
            if fit_mu:
                hess[npb, npb + 2] += l1 * r[i] * sn[i] * s
                hess[npb + 1, npb + 2] += l1 * r[i] * fn * sp
        grad[npb] += tn - aux[0]
        grad[npb + 1] += tr - aux[1]
        hgn[npb, npb] += 1.0
        hgn[npb + 1, npb + 1] += 1.0
        for a in range(k):
            for b in range(a, k):
                hess[a, b] += hgn[a, b]
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
        # Newton direction; fall back to Gauss-Newton if not a descent direction
        ok = True
        try:
            step = np.linalg.solve(hess, -grad)
        except Exception:  # noqa: BLE001 - numba raises a generic error for singular systems
            ok = False
        if ok:
            dec = 0.0
            for a in range(k):
                dec += step[a] * grad[a]
            if not (dec < 0.0) or not np.isfinite(dec):
                ok = False
        if not ok:
            step = np.linalg.solve(hgn, -grad)
            dec = 0.0
            for a in range(k):
                dec += step[a] * grad[a]
        if -dec < tol:
            status = 0
            break
        t = 1.0
        accepted = False
        pn = p.copy()
        for _ in range(40):
            for a in range(k):
                pn[a] = p[a] + t * step[a]
            fnew = nll_value(pn, n, var, poisson, D, b0, r, sn, s0, ds, d2s, aux)
            if np.isfinite(fnew) and fnew <= f + 1e-4 * t * dec:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            status = 2
            break
        p[:] = pn
        f = fnew
    if fit_mu:
        try:
            hinv = np.linalg.inv(hess)
            var_mu = hinv[npb + 2, npb + 2]
        except Exception:  # noqa: BLE001
            var_mu = np.nan
    return f, p, status, var_mu
