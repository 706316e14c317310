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
* boost to the CM frame, then the 4x4 CM -> lab matrix.

Every accept/reject step works on whole arrays (over-draw, keep the accepted ones, redraw the
rest), as a careful NumPy programmer would write it. Written independently of the kernels (only
the tables and the beam matrix are taken from the process object), so it also cross-checks the
kernel's distributions in :mod:`benchmarks.run` (mean M, mean cos theta*).
"""

from __future__ import annotations

import math

import numpy as np

from isrsim.constants import ALPHA, HBARC2_GEV2_NB, M_E, ZETA2, ZETA3

__all__ = ["NumpyIsrMuMu"]


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

    def _decay(self, rng, k, m):
        """Directions n [n,3] of the mu- in the gamma* frame (CM axes), eq. (1.8) with mass."""
        n = m.size
        s = self.s
        ebeam = 0.5 * math.sqrt(s)
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
        s = self.s
        sqrt_s = math.sqrt(s)
        m = self._masses(rng, n)
        x = 1.0 - m * m / s
        eg = 0.5 * x * sqrt_s
        c = self._photon_cos(rng, x)
        phi = 2.0 * math.pi * rng.random(n)
        st = np.sqrt((1.0 - c) * (1.0 + c))
        k = np.stack([eg * st * np.cos(phi), eg * st * np.sin(phi), eg * c], 1)
        nv = self._decay(rng, k, m)
        q0 = sqrt_s - eg
        pstar = 0.5 * np.sqrt(m * m - 4.0 * self.m_f**2)
        a_p, a_e = self._boost(-k / q0[:, None], pstar[:, None] * nv, 0.5 * m)
        p4 = np.empty((n, 3, 4))
        p4[:, 0, :3], p4[:, 0, 3] = a_p, a_e
        p4[:, 1, :3], p4[:, 1, 3] = -k - a_p, q0 - a_e
        p4[:, 2, :3], p4[:, 2, 3] = k, eg
        return p4 @ self.lab.T
