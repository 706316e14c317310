"""ISR radiator functions W(s, x) in the CM frame (``shared/physics.md`` section 1).

x = 2 E_gamma / sqrt(s) is the fraction of the beam energy carried by the ISR photon(s);
c = cos(theta_gamma) is the photon polar angle to the e- beam in the CM frame.

Forms implemented
-----------------
* ``w_lo``: lowest order, integrated over the photon angle (Bonneau-Martin), physics.md eq. (1.2).
* ``w_kf``: Kuraev-Fadin structure function with the O(alpha^2) soft+virtual terms in the form of
  Benayoun, Eidelman, Ivanchenko, Silagadze, hep-ph/9910523 eq. (8) (as in BESIII ConExc),
  physics.md eq. (1.3). It resums soft photons (the x^(beta-1) term) and is integrated over the
  photon angle; the real e+e- pair-emission terms of the 1985 form are deliberately *not*
  included (they describe pair emission, not an l+l-gamma final state, physics.md 1.3 pitfalls).
* ``dw_dc``: fully differential O(alpha) radiator with electron-mass terms, physics.md eq. (1.6);
  ``h_primitive`` its primitive in c (Benayoun et al. eq. 11) and ``angular_fraction`` the
  fraction of photons inside c1 < c < c2. The generator uses W_KF(s, x) for the rate and the
  normalised eq. (1.6) shape for the photon angle (the factorised ansatz of physics.md 1.5).
"""

from __future__ import annotations

import math

from .._numba import kernel
from ..constants import ALPHA, M_E, ZETA2, ZETA3

__all__ = [
    "RADIATORS",
    "angular_fraction",
    "beta_isr",
    "dw_dc",
    "h_primitive",
    "radiator",
    "w_kf",
    "w_lo",
]

#: Radiator codes used by the kernels.
RADIATORS = {"lo": 0, "kf": 1}

_LN2 = math.log(2.0)


@kernel
def beta_isr(s):
    """ISR structure exponent beta = (2 alpha/pi)(ln(s/m_e^2) - 1), physics.md section 0."""
    return 2.0 * ALPHA / math.pi * (math.log(s / (M_E * M_E)) - 1.0)


@kernel
def _log_term(s):
    """ln((1+b_e)/(1-b_e)) - 1 with b_e = sqrt(1 - 4 m_e^2/s) (exact, no small-mass expansion)."""
    a = 4.0 * M_E * M_E / s
    b = math.sqrt(1.0 - a)
    # (1+b)/(1-b) = (1+b)^2/a : numerically safe for tiny a
    return math.log((1.0 + b) * (1.0 + b) / a) - 1.0


@kernel
def w_lo(s, x):
    """Lowest-order radiator integrated over the photon angle, physics.md eq. (1.2).

    W_LO = alpha/(pi x) (2 - 2x + x^2) [ln((1+b_e)/(1-b_e)) - 1]. Diverges like beta/x.
    """
    return ALPHA / (math.pi * x) * (2.0 - 2.0 * x + x * x) * _log_term(s)


@kernel
def w_kf(s, x):
    """Kuraev-Fadin radiator with O(alpha^2) soft+virtual terms, physics.md eq. (1.3).

    W = Delta beta x^(beta-1) - (beta/2)(2-x)
        + (beta^2/8)[(2-x)(3 ln(1-x) - 4 ln x) - 4 ln(1-x)/x - 6 + x],
    Delta = 1 + (alpha/pi)(3L/2 + pi^2/3 - 2) + (alpha/pi)^2 delta_2, L = ln(s/m_e^2).
    Source: hep-ph/9910523 eq. (8), as coded in BESIII EvtConExc::Rad2.
    """
    L = math.log(s / (M_E * M_E))
    beta = 2.0 * ALPHA / math.pi * (L - 1.0)
    ap = ALPHA / math.pi
    delta2 = ((9.0 / 8.0 - 2.0 * ZETA2) * L * L
              - (45.0 / 16.0 - 5.5 * ZETA2 - 3.0 * ZETA3) * L
              - 1.2 * ZETA2 * ZETA2 - 4.5 * ZETA3 - 6.0 * ZETA2 * _LN2 + 0.375 * ZETA2 + 57.0 / 12.0)
    delta = 1.0 + ap * (1.5 * L + 2.0 * ZETA2 - 2.0) + ap * ap * delta2
    lx = math.log(x)
    l1x = math.log1p(-x)
    return (delta * beta * math.exp((beta - 1.0) * lx)
            - 0.5 * beta * (2.0 - x)
            + beta * beta / 8.0 * ((2.0 - x) * (3.0 * l1x - 4.0 * lx) - 4.0 * l1x / x - 6.0 + x))


@kernel
def radiator(s, x, code):
    """W(s, x) for a radiator code (0 = LO eq. 1.2, 1 = KF eq. 1.3)."""
    if code == 0:
        return w_lo(s, x)
    return w_kf(s, x)


@kernel
def dw_dc(s, x, c):
    """Differential O(alpha) radiator dW/dcos(theta_gamma) with electron-mass terms, eq. (1.6).

    dW/dc = alpha/(pi x) {(2-2x+x^2)[b/D - (a/2)(1+b^2c^2)/D^2] - (x^2/2)[1 - a(1+b^2c^2)/D^2]},
    a = 4 m_e^2/s, b^2 = 1 - a, D = 1 - b^2 c^2. Its integral over -1 < c < 1 is ``w_lo``.
    """
    a = 4.0 * M_E * M_E / s
    b2 = 1.0 - a
    bc2 = b2 * c * c
    d = 1.0 - bc2
    # D = 1 - b^2 c^2 loses precision near |c| = 1: use D = a + b^2 (1 - c^2) = a + b^2 (1-c)(1+c)
    d = a + b2 * (1.0 - c) * (1.0 + c)
    q = (1.0 + bc2) / (d * d)
    return ALPHA / (math.pi * x) * ((2.0 - 2.0 * x + x * x) * (math.sqrt(b2) / d - 0.5 * a * q)
                                    - 0.5 * x * x * (1.0 - a * q))


@kernel
def h_primitive(s, x, c):
    """Primitive of eq. (1.6) in c, up to the factor alpha/(pi x)(2-2x+x^2): physics.md 1.4.

    h(c) = (1/2)(ln((1+b)/(1-b)) - 1) + (a/2) c/D - (1/2) ln((1+bc)/(1-bc))
           + [x^2/(2(x^2-2x+2))] c (1 - a/D),
    decreasing, with h(+1) = 0 and h(-1) = ln((1+b)/(1-b)) - 1 (Benayoun et al. eq. 11).
    """
    a = 4.0 * M_E * M_E / s
    b2 = 1.0 - a
    b = math.sqrt(b2)
    d = a + b2 * (1.0 - c) * (1.0 + c)
    k = x * x / (2.0 * (x * x - 2.0 * x + 2.0))
    omb = a / (1.0 + b)  # 1 - b without cancellation
    log_ratio = math.log(((1.0 + c) - c * omb) / ((1.0 - c) + c * omb))  # ln((1+bc)/(1-bc))
    return (0.5 * _log_term(s) + 0.5 * a * c / d - 0.5 * log_ratio
            + k * c * (1.0 - a / d))


@kernel
def angular_fraction(s, x, c1, c2):
    """Fraction of O(alpha) ISR photons (eq. 1.6) with c1 < cos(theta_gamma) < c2 at fixed x."""
    return (h_primitive(s, x, c1) - h_primitive(s, x, c2)) / _log_term(s)
