"""Dark photon A' (kinetically mixed, coupling eps e Q_f): widths, branching ratios, lifetime and
the e+e- -> gamma A' production cross section.

Sources: ``shared/physics.md`` sections 6.1-6.3 and the BESIII 2017 paper (arXiv:1705.04265,
``shared/seeds/000_317a4439d15978e4.txt``) eqs. (1)-(3):

* Gamma(A' -> l+l-) = (alpha eps^2/(3 m^2)) (m^2 + 2 m_l^2) sqrt(m^2 - 4 m_l^2)      (eq. 2; 6.3)
* Gamma(A' -> hadrons) = Gamma_mumu(m) R(m)  (BESIII 2017 convention, eq. 3; 6.3), with R from
  :mod:`isrsim.physics.rratio` evaluated at sqrt(s) = m (the A' mass, physics.md 6.2 pitfall ii).
  The alternative (alpha eps^2 m/3) R(m) differs by <= 1.3 % for m >= 0.5 GeV.
* Gamma_tot = Gamma_ee + Gamma_mumu (1 + R(m)) + Gamma_tautau                          (eq. 3; 6.3)
* N_f = Gamma_tot/Gamma_ee (physics.md 6.3 table convention) and the paper's per-channel
  N_f^{ll} = Gamma_tot/Gamma_ll (:func:`n_f_ll`). Both are eps-independent.
* c tau = hbar c / Gamma_tot (6.3).

Validity: 2 m_e < m < 10.5 GeV, 0 < eps < 1 (narrow A': the widths are O(eps^2)); anything else
raises :class:`~isrsim.exceptions.ConfigError`. All masses and widths in GeV, cross sections in
nb, lengths in cm. All production formulas are CM-frame, photon angle to the e- beam.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import (
    ALPHA,
    C_CM_PER_NS,
    HBARC2_GEV2_NB,
    HBARC_GEV_CM,
    M_E,
    M_MU,
    M_TAU,
    SQRT_S_MAX,
)
from ..exceptions import ConfigError
from .born import FINAL_STATES, dsigma_dm_isr_nb
from .radiator import RADIATORS, angular_fraction, w_lo
from .rratio import r_ratio

__all__ = [
    "M_MAX",
    "M_MIN",
    "branching_ratios",
    "ctau_cm",
    "describe",
    "gamma_ee",
    "gamma_had",
    "gamma_ll",
    "gamma_mumu",
    "gamma_tautau",
    "gamma_total",
    "n_f",
    "n_f_ll",
    "sigma_aprime_gamma_isr_nb",
    "sigma_aprime_gamma_nb",
]

#: Lower end of the supported A' mass range [GeV] (exclusive): the e+e- threshold.
M_MIN = 2.0 * M_E
#: Upper end of the supported A' mass range [GeV] (exclusive): below the Upsilon(4S)/bb threshold.
M_MAX = 10.5
#: Smallest kinetic mixing accepted (eps^2 = 1e-24; c tau ~ 5e12 m at 17 MeV). Far below any
#: physics interest, and far above where eps^2 underflows (eps < 1e-154 made c tau infinite).
EPSILON_MIN = 1e-12
#: The allowed range of eps, as error messages state it.
EPSILON_ALLOWED = f"{EPSILON_MIN:g} <= epsilon < 1"

_LEPTON_MASS = {"e": M_E, "mu": M_MU, "tau": M_TAU}


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _scalar_or_array(x: np.ndarray):
    return float(x) if x.ndim == 0 else x


def _check_mass(m) -> np.ndarray:
    arr = np.asarray(m, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr <= M_MIN) | (arr >= M_MAX)
    if np.any(bad):
        msg = (f"m={float(arr[bad].ravel()[0])!r} GeV outside the allowed range "
               f"({M_MIN:.9g}, {M_MAX}) GeV (2 m_e < m < 10.5 GeV)")
        raise ConfigError(msg)
    return arr


def _check_eps(eps) -> np.ndarray:
    arr = np.asarray(eps, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr < EPSILON_MIN) | (arr >= 1.0)
    if np.any(bad):
        msg = f"eps={float(arr[bad].ravel()[0])!r} outside the allowed range {EPSILON_ALLOWED}"
        raise ConfigError(msg)
    return arr


def _check_flavour(flavour: str) -> float:
    try:
        return _LEPTON_MASS[flavour]
    except KeyError:
        msg = f"flavour={flavour!r} not allowed; allowed: {sorted(_LEPTON_MASS)}"
        raise ConfigError(msg) from None


# --------------------------------------------------------------------------------------------
# widths
# --------------------------------------------------------------------------------------------
def _mass_factor(m: np.ndarray, m_l: float) -> np.ndarray:
    """(1 + 2 m_l^2/m^2) sqrt(1 - 4 m_l^2/m^2), 0 below threshold (= beta (3 - beta^2)/2)."""
    r = m_l * m_l / (m * m)
    root = np.sqrt(np.clip(1.0 - 4.0 * r, 0.0, None))
    return np.where(4.0 * r < 1.0, (1.0 + 2.0 * r) * root, 0.0)


def _gamma_ll_unchecked(m: np.ndarray, eps: np.ndarray, m_l: float) -> np.ndarray:
    return ALPHA * eps * eps * m / 3.0 * _mass_factor(m, m_l)


def gamma_ll(m, eps, m_l):
    """Partial width Gamma(A' -> l+l-) [GeV], BESIII 2017 eq. (2), physics.md eq. (6.3).

    Gamma_ll = (alpha eps^2/(3 m^2)) (m^2 + 2 m_l^2) sqrt(m^2 - 4 m_l^2), 0 below 2 m_l.

    Parameters
    ----------
    m : float or array_like
        A' mass [GeV], 2 m_e < m < 10.5.
    eps : float or array_like
        Kinetic-mixing parameter, 0 < eps < 1.
    m_l : float
        Lepton mass [GeV], >= 0.

    Returns
    -------
    float or numpy.ndarray
        The width [GeV] (broadcast shape of ``m`` and ``eps``).
    """
    if not (np.isfinite(m_l) and m_l >= 0.0):
        msg = f"m_l={m_l!r} GeV outside the allowed range [0, inf) GeV"
        raise ConfigError(msg)
    return _scalar_or_array(_gamma_ll_unchecked(_check_mass(m), _check_eps(eps), float(m_l)))


def gamma_ee(m, eps):
    """Gamma(A' -> e+e-) [GeV]: :func:`gamma_ll` with m_l = m_e."""
    return gamma_ll(m, eps, M_E)


def gamma_mumu(m, eps):
    """Gamma(A' -> mu+mu-) [GeV]: :func:`gamma_ll` with m_l = m_mu (0 below 2 m_mu)."""
    return gamma_ll(m, eps, M_MU)


def gamma_tautau(m, eps):
    """Gamma(A' -> tau+tau-) [GeV]: :func:`gamma_ll` with m_l = m_tau (0 below 3.554 GeV)."""
    return gamma_ll(m, eps, M_TAU)


def gamma_had(m, eps, *, include_narrow: bool = True):
    """Gamma(A' -> hadrons) [GeV] = Gamma_mumu(m) R(m) (BESIII 2017 eq. 3, physics.md 6.3).

    This is the BESIII convention (the muon mass factor multiplies R; R from
    :func:`isrsim.physics.rratio.r_ratio` at sqrt(s) = m). It vanishes below 2 m_mu, where R = 0
    anyway (R starts at 2 m_pi).

    Parameters
    ----------
    m, eps : float or array_like
        A' mass [GeV] (2 m_e < m < 10.5) and mixing (0 < eps < 1).
    include_narrow : bool
        Include the narrow J/psi, psi(2S), Upsilon(1S-3S) in R (physics.md 6.5 pitfall 5: near them
        the width is dominated by the resonance; experiments veto those windows).
    """
    mm, ee = _check_mass(m), _check_eps(eps)
    return _scalar_or_array(_gamma_had_unchecked(mm, ee, include_narrow))


def _gamma_had_unchecked(m: np.ndarray, eps: np.ndarray, include_narrow: bool) -> np.ndarray:
    return _gamma_ll_unchecked(m, eps, M_MU) * r_ratio(m, include_narrow=include_narrow)


def _widths(m: np.ndarray, eps: np.ndarray, include_narrow: bool) -> dict[str, np.ndarray]:
    w = {
        "ee": _gamma_ll_unchecked(m, eps, M_E),
        "mumu": _gamma_ll_unchecked(m, eps, M_MU),
        "tautau": _gamma_ll_unchecked(m, eps, M_TAU),
        "hadrons": _gamma_had_unchecked(m, eps, include_narrow),
    }
    w["total"] = w["ee"] + w["mumu"] + w["tautau"] + w["hadrons"]
    return w


def gamma_total(m, eps, *, include_narrow: bool = True):
    """Total width [GeV] = Gamma_ee + Gamma_mumu (1 + R(m)) + Gamma_tautau (BESIII eq. 3; 6.3)."""
    return _scalar_or_array(_widths(_check_mass(m), _check_eps(eps), include_narrow)["total"])


def n_f(m, *, include_narrow: bool = True):
    """Number of final states N_f = Gamma_tot/Gamma_ee (eps-independent; physics.md 6.3 table).

    This is the N_f for which the ISR relation physics.md (6.2) is an identity (see
    :func:`sigma_aprime_gamma_isr_nb`). Continuous in m (the muon and tau channels open like
    sqrt(1 - 4 m_l^2/m^2)).
    """
    mm = _check_mass(m)
    w = _widths(mm, np.ones_like(mm), include_narrow)
    return _scalar_or_array(w["total"] / w["ee"])


def n_f_ll(m, flavour: str, *, include_narrow: bool = True):
    """Per-channel N_f^{ll} = Gamma_tot/Gamma_ll of the BESIII 2017 paper (``flavour`` "e", "mu", "tau").

    Raises
    ------
    ConfigError
        If m is at or below the l+l- threshold (Gamma_ll = 0).
    """
    m_l = _check_flavour(flavour)
    mm = _check_mass(m)
    if np.any(mm <= 2.0 * m_l):
        msg = f"m={float(mm.min())!r} GeV outside the allowed range (2 m_{flavour} = {2 * m_l:.9g}, {M_MAX}) GeV"
        raise ConfigError(msg)
    w = _widths(mm, np.ones_like(mm), include_narrow)
    return _scalar_or_array(w["total"] / _gamma_ll_unchecked(mm, np.ones_like(mm), m_l))


def branching_ratios(m, *, include_narrow: bool = True) -> dict[str, float | np.ndarray]:
    """Branching ratios {"ee", "mumu", "tautau", "hadrons"} (eps-independent, sum to 1)."""
    mm = _check_mass(m)
    w = _widths(mm, np.ones_like(mm), include_narrow)
    return {k: _scalar_or_array(w[k] / w["total"]) for k in ("ee", "mumu", "tautau", "hadrons")}


def ctau_cm(m, eps, *, include_narrow: bool = True):
    """Proper decay length c tau = hbar c/Gamma_tot [cm] (physics.md 6.3).

    17 MeV: 4.77 um at eps = 1e-3, 477 um at eps = 1e-4 (physics.md 6.3 table).
    """
    return _scalar_or_array(HBARC_GEV_CM / _widths(_check_mass(m), _check_eps(eps), include_narrow)["total"])


# --------------------------------------------------------------------------------------------
# production e+e- -> gamma A'
# --------------------------------------------------------------------------------------------
def _check_production(m, eps, sqrt_s, cos_theta_range) -> tuple[float, float, float, float, float]:
    mm = _check_mass(m)
    ee = _check_eps(eps)
    if mm.ndim or ee.ndim:
        msg = "m and eps must be scalars for the production cross sections"
        raise ConfigError(msg)
    w = float(np.asarray(sqrt_s, dtype=np.float64))
    if not (math.isfinite(w) and float(mm) < w <= SQRT_S_MAX):
        msg = f"sqrt_s={w!r} GeV outside the allowed range (m = {float(mm)!r}, {SQRT_S_MAX:g}] GeV"
        raise ConfigError(msg)
    if cos_theta_range is None:
        c1, c2 = -1.0, 1.0
    else:
        try:
            c1, c2 = (float(c) for c in cos_theta_range)
        except (TypeError, ValueError):
            msg = f"cos_theta_range={cos_theta_range!r} must be a pair (c1, c2) with -1 <= c1 < c2 <= 1"
            raise ConfigError(msg) from None
        if not (-1.0 <= c1 < c2 <= 1.0):
            msg = f"cos_theta_range={cos_theta_range!r} outside the allowed range -1 <= c1 < c2 <= 1"
            raise ConfigError(msg)
    return float(mm), float(ee), w, c1, c2


def sigma_aprime_gamma_nb(m, eps, sqrt_s, *, cos_theta_range=None) -> float:
    """Tree-level sigma(e+e- -> gamma A') [nb], all A' decays, physics.md eq. (6.1).

    The ISR formula with a narrow-resonance sigma_0 = 12 pi^2 Gamma_ee^0/m delta(s' - m^2),
    Gamma_ee^0 = alpha eps^2 m/3 (massless coupling):

        sigma = (4 pi^2 alpha eps^2/s) (hbar c)^2 W_LO(s, x0) A(x0; c1, c2),   x0 = 1 - m^2/s,

    with W_LO the angle-integrated O(alpha) radiator, physics.md eq. (1.2), and A the fraction of
    the electron-mass regulated photon-angle distribution (1.6) inside c1 < cos(theta_gamma) < c2
    (CM frame, angle to the e- beam; A = 1 for ``cos_theta_range=None``). For m -> 0 this is
    2 eps^2 sigma(gamma gamma).

    Parameters
    ----------
    m : float
        A' mass [GeV], 2 m_e < m < 10.5.
    eps : float
        Kinetic mixing, 0 < eps < 1.
    sqrt_s : float
        CM energy [GeV], > m.
    cos_theta_range : tuple of float, optional
        (c1, c2), -1 <= c1 < c2 <= 1: photon polar-angle window in the CM frame.

    Returns
    -------
    float
        sigma(e+e- -> gamma A') [nb] summed over all A' decays. Multiply by
        ``branching_ratios(m)[...]`` for one channel: sigma * BR(ll) is the quantity returned by
        :func:`sigma_aprime_gamma_isr_nb` (physics.md 6.2).
    """
    mm, ee, w, c1, c2 = _check_production(m, eps, sqrt_s, cos_theta_range)
    s = w * w
    x0 = 1.0 - mm * mm / s
    acc = 1.0 if (c1 == -1.0 and c2 == 1.0) else angular_fraction(s, x0, c1, c2)
    return 4.0 * math.pi**2 * ALPHA * ee * ee / s * w_lo(s, x0) * acc * HBARC2_GEV2_NB


_FS_OF_FLAVOUR = {"e": "ee", "mu": "mumu"}


def sigma_aprime_gamma_isr_nb(m, eps, sqrt_s, *, flavour: str = "mu", cos_theta_range=None,
                              radiator: str = "lo", n_f_convention: str = "ee") -> float:
    """sigma(e+e- -> gamma A' -> gamma l+l-) [nb] from the QED ISR yield: BESIII 2017 eq. (1),
    physics.md eq. (6.2):

        sigma = (3 pi eps^2 m/(2 N_f alpha)) dsigma(e+e- -> gamma_ISR l+l-)_QED/dM |_(M = m),

    with dsigma/dM = (2M/s) W(s, 1 - M^2/s) sigma(e+e- -> l+l-)(M^2) A (physics.md 1.1 and 2.1,
    :func:`isrsim.physics.born.dsigma_dm_isr_nb`, s-channel only for l = e) and the photon-angle
    acceptance A of eq. (1.6) in ``cos_theta_range`` (the same A as the A', physics.md 6.2
    pitfall i).

    Parameters
    ----------
    m, eps, sqrt_s, cos_theta_range
        As in :func:`sigma_aprime_gamma_nb`.
    flavour : {"mu", "e"}
        Lepton pair l+l- of the QED yield (and of the A' decay). m > 2 m_l required.
    radiator : {"lo", "kf"}
        ISR radiator of the QED yield: "lo" = W_LO eq. (1.2), the same as the tree-level A' cross
        section, so that with ``n_f_convention="ee"`` the result equals
        ``sigma_aprime_gamma_nb(...) * branching_ratios(m)[ll]`` (up to O(m_e^4/m^4)); "kf" = W_KF
        eq. (1.3) (higher-order ISR, higher by W_KF/W_LO, physics.md 1.3).
    n_f_convention : {"ee", "ll"}
        N_f = Gamma_tot/Gamma_ee ("ee", the identity above, physics.md 6.3) or the paper's
        N_f^{ll} = Gamma_tot/Gamma_ll ("ll"); they differ by the l mass factor
        (1 + 2 m_l^2/m^2) sqrt(1 - 4 m_l^2/m^2): < 1e-3 for mu mu above 1 GeV, 11 % at 0.3 GeV.

    Returns
    -------
    float
        sigma(e+e- -> gamma A') * BR(A' -> l+l-) [nb] inside ``cos_theta_range``.
    """
    mm, ee, w, c1, c2 = _check_production(m, eps, sqrt_s, cos_theta_range)
    if flavour not in _FS_OF_FLAVOUR:
        msg = f"flavour={flavour!r} not allowed; allowed: {sorted(_FS_OF_FLAVOUR)}"
        raise ConfigError(msg)
    if radiator not in RADIATORS:
        msg = f"radiator={radiator!r} not allowed; allowed: {sorted(RADIATORS)}"
        raise ConfigError(msg)
    if n_f_convention == "ee":
        nf = float(n_f(mm))
    elif n_f_convention == "ll":
        nf = float(n_f_ll(mm, flavour))
    else:
        msg = f"n_f_convention={n_f_convention!r} not allowed; allowed: ['ee', 'll']"
        raise ConfigError(msg)
    m_l = _LEPTON_MASS[flavour]
    if mm <= 2.0 * m_l:
        msg = f"m={mm!r} GeV outside the allowed range (2 m_{flavour} = {2 * m_l:.9g}, {M_MAX}) GeV"
        raise ConfigError(msg)
    code = FINAL_STATES[_FS_OF_FLAVOUR[flavour]][0]
    dsdm = dsigma_dm_isr_nb(w * w, mm, code, RADIATORS[radiator], np.array([c1]), np.array([c2]))
    return 3.0 * math.pi * ee * ee * mm / (2.0 * nf * ALPHA) * dsdm


def describe(m, eps, sqrt_s) -> dict[str, float]:
    """Summary of the A' at (m, eps) produced at ``sqrt_s`` (used by ``isrsim darkphoton``).

    Returns a JSON-serialisable dict of floats: ``m_GeV``, ``eps``, ``sqrt_s_GeV``, ``R`` (at
    sqrt(s) = m), the widths ``gamma_ee_GeV``, ``gamma_mumu_GeV``, ``gamma_tautau_GeV``,
    ``gamma_had_GeV``, ``gamma_total_GeV``, the branching ratios ``br_ee``, ``br_mumu``,
    ``br_tautau``, ``br_had``, ``n_f`` (Gamma_tot/Gamma_ee), ``ctau_cm``, ``tau_ns``,
    ``betagamma_cms`` (A' p/m in the CM frame), ``mean_decay_length_cms_cm``,
    ``sigma_gamma_aprime_nb`` (full photon angle, all decays, eq. 6.1) and
    ``sigma_gamma_aprime_<ll>_nb`` = sigma * BR for ee and mumu.
    """
    mm, ee, w, _, _ = _check_production(m, eps, sqrt_s, None)
    mm_a, ee_a = np.asarray(mm), np.asarray(ee)
    wd = {k: float(v) for k, v in _widths(mm_a, ee_a, True).items()}
    sigma = sigma_aprime_gamma_nb(mm, ee, w)
    ctau = HBARC_GEV_CM / wd["total"]
    s = w * w
    e_a = (s + mm * mm) / (2.0 * w)  # physics.md 6.1
    betagamma = math.sqrt(max(e_a * e_a - mm * mm, 0.0)) / mm
    out = {
        "m_GeV": mm,
        "eps": ee,
        "sqrt_s_GeV": w,
        "R": float(r_ratio(mm)),
        "gamma_ee_GeV": wd["ee"],
        "gamma_mumu_GeV": wd["mumu"],
        "gamma_tautau_GeV": wd["tautau"],
        "gamma_had_GeV": wd["hadrons"],
        "gamma_total_GeV": wd["total"],
        "br_ee": wd["ee"] / wd["total"],
        "br_mumu": wd["mumu"] / wd["total"],
        "br_tautau": wd["tautau"] / wd["total"],
        "br_had": wd["hadrons"] / wd["total"],
        "n_f": wd["total"] / wd["ee"],
        "ctau_cm": ctau,
        "tau_ns": ctau / C_CM_PER_NS,
        "betagamma_cms": betagamma,
        "mean_decay_length_cms_cm": betagamma * ctau,
        "sigma_gamma_aprime_nb": sigma,
    }
    out["sigma_gamma_aprime_ee_nb"] = sigma * out["br_ee"]
    out["sigma_gamma_aprime_mumu_nb"] = sigma * out["br_mumu"]
    return out

