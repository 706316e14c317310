"""Independent numpy implementations of physics.md eqs. (1.1), (1.3), (1.4 h), (2.1) and
(6.1) for the tests: written from physics.md, not from isrsim's own functions."""

from __future__ import annotations

import math

from isrsim.constants import ALPHA, HBARC2_GEV2_NB, M_E

ZETA2, ZETA3 = math.pi**2 / 6, 1.2020569031595942


# ---- independent numpy implementation of physics.md eqs. (1.1), (1.3), (1.4 h), (2.1) ----
def ref_wkf(s, x):
    L = math.log(s / M_E**2)
    b = 2 * ALPHA / math.pi * (L - 1)
    ap = ALPHA / math.pi
    d2 = ((9 / 8 - 2 * ZETA2) * L**2 - (45 / 16 - 11 / 2 * ZETA2 - 3 * ZETA3) * L
          - 6 / 5 * ZETA2**2 - 9 / 2 * ZETA3 - 6 * ZETA2 * math.log(2) + 3 / 8 * ZETA2 + 57 / 12)
    delta = 1 + ap * (3 * L / 2 + math.pi**2 / 3 - 2) + ap**2 * d2
    return (delta * b * x ** (b - 1) - b / 2 * (2 - x)
            + b**2 / 8 * ((2 - x) * (3 * math.log(1 - x) - 4 * math.log(x))
                          - 4 * math.log(1 - x) / x - 6 + x))


def ref_h(s, x, c):
    a = 4 * M_E**2 / s
    b = math.sqrt(1 - a)
    d = 1 - b * b * c * c
    k = x * x / (2 * (x * x - 2 * x + 2))
    lt = math.log((1 + b) / (1 - b)) - 1
    return 0.5 * lt + a / 2 * c / d - 0.5 * math.log((1 + b * c) / (1 - b * c)) + k * c * (1 - a / d), lt


def ref_dsdm(s, m, ml, c1=-1.0, c2=1.0):
    x = 1 - m * m / s
    r = 4 * ml * ml / (m * m)
    if r >= 1:
        return 0.0
    beta = math.sqrt(1 - r)
    sig0 = 4 * math.pi * ALPHA**2 / (3 * m * m) * beta * (3 - beta**2) / 2 * HBARC2_GEV2_NB
    if (c1, c2) == (-1.0, 1.0):
        acc = 1.0
    else:
        acc = (ref_h(s, x, c1)[0] - ref_h(s, x, c2)[0]) / ref_h(s, x, c1)[1]
    return 2 * m / s * ref_wkf(s, x) * sig0 * acc


def ref_aprime_gamma_nb(m, eps, sqrt_s, c1=-1.0, c2=1.0):
    """sigma(e+e- -> gamma A') [nb] with c1 < cos(theta_gamma) < c2 (CM), physics.md (6.1):
    (4 pi alpha^2 eps^2 / (s x0)) (2 - 2 x0 + x0^2) (ln((1 + b)/(1 - b)) - 1) times the
    angular fraction [h(c1) - h(c2)] / h(-1) of (1.4)."""
    s = sqrt_s * sqrt_s
    x0 = 1 - m * m / s
    h1, lt = ref_h(s, x0, c1)
    frac = (h1 - ref_h(s, x0, c2)[0]) / lt
    return 4 * math.pi * ALPHA**2 * eps**2 / (s * x0) * (2 - 2 * x0 + x0 * x0) * lt * frac * HBARC2_GEV2_NB
