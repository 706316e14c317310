"""R(s) = sigma(e+e- -> hadrons) / sigma_pointlike(e+e- -> mu+mu-), bundled parameterisation.

Convention
----------
R is the ratio to the lowest-order point-like muon-pair cross section 4 pi alpha^2/(3 s) with
massless muons ("bare" R, no vacuum polarisation: the PDG compilation quotes R in this sense).
The dark-photon hadronic width uses it as Gamma(A' -> hadrons) = Gamma_mumu(m) R(m), the BESIII 2017
convention (arXiv:1705.04265 eq. 3; physics.md 6.3). The alternative (alpha eps^2 m/3) R(m)
differs by <= 1.3 % for m >= 0.5 GeV.

Model, piece by piece (sqrt_s = W in GeV; physics.md 6.5 "recommended parameterisation")
-----------------------------------------------------------------------------------------
0. ``W <= 2 m_pi``: R = 0 (the Breit-Wigner tails are cut too).
1. ``W < 0.40``: the pi+pi- channel alone, R_pipi = beta_pi^3 |F_pi|^2/4 with the Gounaris-Sakurai
   form factor of :mod:`isrsim.physics.formfactor` (physics.md 2.2, whose table shows it agrees
   with the PDG compilation at 0.40 GeV: 0.196 vs 0.17-0.22). pi0 gamma (R ~ 1e-2 near the omega
   only) and other channels are neglected.
2. ``0.40 <= W < 2.0``: monotone cubic (PCHIP) interpolation in ln R of the node table
   :data:`LOW_ENERGY_NODES`, whose values are points of the PDG compilation "R in the
   light-flavour, charm and beauty threshold regions" (rpp2020-hadronicrpp_page1001) as quoted in
   physics.md 2.2 (table row "R (PDG, all)") and 6.5. The phi(1020) is added as a relativistic
   Breit-Wigner (M = 1.01946 GeV, Gamma = 4.26 MeV, physics.md 6.5 [V: DarkCast]); the interpolated
   nodes are the PDG values minus that Breit-Wigner at the node, so the sum reproduces each PDG
   point exactly. Structure narrower than the node spacing (the omega spike on the rho peak, the
   1.0-1.5 GeV rho'/omega'/phi' region) is not resolved: expect +-10-20 % locally between nodes.
   The node at 2.0 GeV is the pQCD value of item 3 (2.20) instead of the PDG point (2.18, 1 %
   lower) so that R is continuous at 2 GeV.
3. ``W >= 2.0``: perturbative QCD with quark-mass threshold factors,
   R = 3 sum_q e_q^2 K_q(W) (1 + a + c2(n_R) a^2),  a = alpha_s(W)/pi,
   c2(n) = 1.9857 - 0.1152 n [U: PDG QCD review], n_R = 3 + K_c + K_b (the number of open
   flavours, weighted by their threshold factor so that R stays continuous).
   u, d, s are massless (uds continuum 2.0 (1 + a + c2 a^2) ~ 2.2). Charm and beauty open at the
   physical open-flavour thresholds with K_q = v (3 - v^2)/2, v = sqrt(1 - 4 m_H^2/s), m_H = m_D0 =
   1.86484 GeV and m_B = 5.27966 GeV [U: PDG masses from memory]. That is a phenomenological
   stand-in for the PDG open-charm data of physics.md 6.5 item 4 (not available here); together with
   the broad states of item 4 it is good to ~15 % in 3.73-4.6 GeV and to a few % above 4.6 GeV.
   alpha_s: alpha_s(M_Z) = 0.1179 (PDG 2022 world average [U: from memory]), 3-loop MSbar running
   (beta_0..beta_2 of the PDG QCD review), integrated numerically (RK4) with flavour thresholds at
   m_b(m_b) = 4.18 GeV and m_c(m_c) = 1.27 GeV and continuous matching (the O(alpha_s^2) matching
   steps, < 0.3 %, are neglected). This gives alpha_s(2 GeV) = 0.30, alpha_s(10 GeV) = 0.18.
4. Broad vector resonances (always included) as relativistic Breit-Wigners
   R_V(s) = 9 s Gamma_ee Gamma_had / (alpha^2 [(s - M^2)^2 + M^2 Gamma^2])  (physics.md 6.5 item 3):
   phi(1020), psi(3770), psi(4040), psi(4160), psi(4415), Upsilon(4S), parameters in
   :data:`BROAD_RESONANCES`. Apart from the phi mass and width ([V], DarkCast pars.py) these are
   [U] (PDG values from memory, not checked against the current RPP).
5. Narrow resonances (``include_narrow=True``): J/psi, psi(2S), Upsilon(1S), Upsilon(2S),
   Upsilon(3S) with the physics.md 6.5 item 3 parameters, **[U]** there ("PDG values from memory,
   check the current RPP"). Gamma_had = Gamma - n_l Gamma_ee (lepton universality, n_l = 2 or 3
   open lepton flavours). R at the J/psi peak is 8.9e3. The PDG compilation excludes these states,
   so the continuum is not double counted.

Accuracy against the PDG checkpoints of physics.md 6.5 (0.5 ... 10 GeV): within 10 % everywhere,
exact at the nodes; pQCD sits 8-9 % under the isolated points at 2.5 and 3.4 GeV but within 3 % of
their neighbours (2.22 at 2.543, 2.19 at 3.418), inside the quoted +-5-10 % scatter.

Two implementations of the same model: :func:`r_ratio` (numpy, evaluates every piece directly)
and the scalar kernels :func:`r_ratio_scalar` / :func:`r_ratio_continuum_scalar`, which
interpolate the smooth non-resonant pieces (|F_pi|^2-like continuum below 2 GeV, alpha_s above)
linearly on fine grids (0.25 MeV below 2 GeV, 1 MeV above) and evaluate the threshold factors and all Breit-Wigners analytically
(agreement < 1e-5 relative, tested).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator

from .._numba import kernel
from ..constants import ALPHA, M_PI
from ..exceptions import ConfigError
from .formfactor import fpi2_array, r_pipi

__all__ = [
    "ALPHA_S_MZ",
    "BROAD_RESONANCES",
    "LOW_ENERGY_NODES",
    "NARROW_RESONANCES",
    "SQRT_S_MAX",
    "alpha_s",
    "r_continuum",
    "r_ratio",
    "r_ratio_continuum_scalar",
    "r_ratio_scalar",
    "r_resonances",
]

#: Upper end of the tabulated range [GeV].
SQRT_S_MAX = 12.0

#: alpha_s(M_Z) used for the pQCD continuum (PDG 2022 world average) [U].
ALPHA_S_MZ = 0.1179
_M_Z = 91.1876
_M_C_MSBAR = 1.27
_M_B_MSBAR = 4.18
_M_D0 = 1.86484
_M_B_MESON = 5.27966

#: (sqrt_s [GeV], R_PDG) nodes of the low-energy interpolation, with their physics.md source.
#: The 0.40 GeV node is set to the GS pi pi model (0.1955, inside the PDG 0.17-0.22 band) for
#: continuity with region 1; the 2.0 GeV node is replaced by the pQCD value at run time.
LOW_ENERGY_NODES = (
    (0.40, float("nan")),  # physics.md 2.2 table: PDG 0.17-0.22; R_pipi(GS) used (continuity)
    (0.50, 0.474),  # physics.md 6.5 (and 6.3 table)
    (0.60, 1.31),  # physics.md 2.2 table
    (0.70, 4.8),  # physics.md 2.2 table
    (0.775, 12.0),  # physics.md 2.2 table ("~12", rho + omega)
    (0.85, 3.2),  # physics.md 2.2 table
    (0.95, 1.16),  # physics.md 2.2 table
    (0.98, 0.99),  # physics.md 6.5 ("0.99 at 0.98")
    (1.00, 1.32),  # physics.md 6.5 ("phi shoulder"; 6.3 table: 1.322)
    (1.50, 2.10),  # physics.md 6.5 (6.3 table: 2.096)
    (2.00, float("nan")),  # PDG 2.18 (physics.md 6.5); pQCD value used (continuity)
)

#: Narrow vector resonances (name, M [GeV], Gamma [GeV], Gamma_ee [GeV], n_lepton_channels).
#: physics.md 6.5 item 3, tagged [U] there.
NARROW_RESONANCES = (
    ("J/psi", 3.0969, 92.6e-6, 5.53e-6, 2),
    ("psi(2S)", 3.6861, 294e-6, 2.33e-6, 3),
    ("Upsilon(1S)", 9.4603, 54.0e-6, 1.34e-6, 3),
    ("Upsilon(2S)", 10.0233, 32.0e-6, 0.61e-6, 3),
    ("Upsilon(3S)", 10.3552, 20.3e-6, 0.44e-6, 3),
)

#: Broad vector resonances (name, M [GeV], Gamma [GeV], Gamma_ee [GeV], n_lepton_channels).
#: phi: M, Gamma [V] (physics.md 6.5, DarkCast pars.py), Gamma_ee [U]; all others [U] (PDG values
#: from memory).
BROAD_RESONANCES = (
    ("phi(1020)", 1.01946, 4.26e-3, 1.27e-6, 2),
    ("psi(3770)", 3.7737, 27.2e-3, 0.262e-6, 3),
    ("psi(4040)", 4.039, 80e-3, 0.86e-6, 3),
    ("psi(4160)", 4.191, 70e-3, 0.48e-6, 3),
    ("psi(4415)", 4.421, 62e-3, 0.58e-6, 3),
    ("Upsilon(4S)", 10.5794, 20.5e-3, 0.272e-6, 3),
)


def _res_array(table) -> np.ndarray:
    """(n, 4) array of M, Gamma, Gamma_ee, Gamma_had with Gamma_had = Gamma - n_l Gamma_ee."""
    return np.array([(m, g, gee, g - n_l * gee) for _, m, g, gee, n_l in table], dtype=np.float64)


_NARROW = _res_array(NARROW_RESONANCES)
#: R = 0 at and below the pi+pi- threshold (the Breit-Wigner tails are cut there too).
_W_HAD_MIN = 2.0 * M_PI
_BROAD = _res_array(BROAD_RESONANCES)
_INV_ALPHA2 = 1.0 / (ALPHA * ALPHA)


# --------------------------------------------------------------------------------------------
# alpha_s running (3 loops, MSbar), tabulated once in ln(mu)
# --------------------------------------------------------------------------------------------
def _beta_coeffs(nf: int) -> tuple[float, float, float]:
    """b_i of mu^2 d alpha_s/d mu^2 = -(b0 a^2 + b1 a^3 + b2 a^4), a = alpha_s (PDG QCD review)."""
    pi = math.pi
    b0 = (33.0 - 2.0 * nf) / (12.0 * pi)
    b1 = (153.0 - 19.0 * nf) / (24.0 * pi**2)
    b2 = (2857.0 - 5033.0 / 9.0 * nf + 325.0 / 27.0 * nf**2) / (128.0 * pi**3)
    return b0, b1, b2


def _rk4_path(a0: float, t_grid: np.ndarray, nf: int, substeps: int = 4) -> np.ndarray:
    """alpha_s along ``t_grid`` (t = ln mu^2) by RK4 of d a/dt = -(b0 a^2 + b1 a^3 + b2 a^4)."""
    b0, b1, b2 = _beta_coeffs(nf)

    def f(a: float) -> float:
        return -(b0 * a * a + b1 * a**3 + b2 * a**4)

    out = np.empty(t_grid.size)
    a = a0
    out[0] = a
    for i in range(1, t_grid.size):
        h = (t_grid[i] - t_grid[i - 1]) / substeps
        for _ in range(substeps):
            k1 = f(a)
            k2 = f(a + 0.5 * h * k1)
            k3 = f(a + 0.5 * h * k2)
            k4 = f(a + h * k3)
            a += h * (k1 + 2 * k2 + 2 * k3 + k4) / 6.0
        out[i] = a
    return out


def _build_alpha_s_splines() -> list[tuple[float, float, CubicSpline]]:
    """One cubic spline in t = ln mu^2 per flavour region (the slope jumps at thresholds).

    Runs down from M_Z (nf = 5) to m_b, then nf = 4 to m_c, then nf = 3 to 1 GeV; alpha_s is
    continuous at the thresholds. Returns (t_lo, t_hi, spline) from high to low scale.
    """
    regions = ((_M_Z_RUN_MAX, _M_B_MSBAR, 5), (_M_B_MSBAR, _M_C_MSBAR, 4), (_M_C_MSBAR, 1.0, 3))
    # first run from M_Z up to the top of the table with nf = 5
    t_z = math.log(_M_Z**2)
    a_top = _rk4_path(ALPHA_S_MZ, np.linspace(t_z, math.log(_M_Z_RUN_MAX**2), 400), 5)[-1]
    a = a_top
    splines = []
    for mu_hi, mu_lo, nf in regions:
        t = np.linspace(math.log(mu_hi**2), math.log(mu_lo**2), 801)
        path = _rk4_path(a, t, nf)
        splines.append((t[-1], t[0], CubicSpline(t[::-1], path[::-1])))
        a = path[-1]
    return splines


_M_Z_RUN_MAX = 200.0
_AS_SPLINES = _build_alpha_s_splines()


def alpha_s(mu) -> np.ndarray:
    """Strong coupling alpha_s(mu): MSbar, 3-loop running from alpha_s(M_Z) = 0.1179.

    Parameters
    ----------
    mu : array_like
        Renormalisation scale [GeV], 1 <= mu <= 200.

    Returns
    -------
    numpy.ndarray
        alpha_s; cubic spline (relative error < 1e-8) of an RK4 solution, continuous matching at
        m_c = 1.27 GeV and m_b = 4.18 GeV.

    Raises
    ------
    ConfigError
        If ``mu`` is outside [1, 200] GeV.
    """
    m = np.asarray(mu, dtype=np.float64)
    bad = ~np.isfinite(m) | (m < 1.0) | (m > _M_Z_RUN_MAX)
    if np.any(bad):
        msg = f"mu={float(m[bad].ravel()[0])!r} GeV outside the allowed range [1, {_M_Z_RUN_MAX}] GeV"
        raise ConfigError(msg)
    t = np.log(m * m)
    out = np.empty_like(t)
    for t_lo, t_hi, spline in _AS_SPLINES:
        sel = (t >= t_lo) & (t <= t_hi)
        out[sel] = spline(t[sel])
    return out


# --------------------------------------------------------------------------------------------
# continuum (no Breit-Wigners)
# --------------------------------------------------------------------------------------------
def _threshold_factor(w: np.ndarray, m_h: float) -> np.ndarray:
    """v (3 - v^2)/2 with v = sqrt(1 - 4 m_h^2/W^2), 0 below 2 m_h."""
    v2 = np.clip(1.0 - 4.0 * m_h * m_h / np.maximum(w, 1e-300) ** 2, 0.0, None)
    v = np.sqrt(v2)
    return v * (3.0 - v2) / 2.0


def _r_pqcd(w: np.ndarray) -> np.ndarray:
    """pQCD continuum with open-flavour thresholds, W >= 2 GeV (module docstring item 3)."""
    a = alpha_s(w) / math.pi
    k_c = _threshold_factor(w, _M_D0)
    k_b = _threshold_factor(w, _M_B_MESON)
    n_r = 3.0 + k_c + k_b  # effective flavour number: keeps c2 (and R) continuous at thresholds
    qcd = 1.0 + a + (1.9857 - 0.1152 * n_r) * a * a
    return 3.0 * (2.0 / 3.0 + 4.0 / 9.0 * k_c + 1.0 / 9.0 * k_b) * qcd


def _bw_sum(w: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Sum of relativistic Breit-Wigners R_V (physics.md 6.5 item 3) for the rows of ``res``."""
    s = w * w
    out = np.zeros_like(s)
    for m, g, gee, ghad in res:
        m2 = m * m
        out += 9.0 * s * gee * ghad * _INV_ALPHA2 / ((s - m2) ** 2 + m2 * g * g)
    return out


def _build_low_energy_interpolator() -> PchipInterpolator:
    x = np.array([n[0] for n in LOW_ENERGY_NODES])
    y = np.array([n[1] for n in LOW_ENERGY_NODES])
    y_nonres = y - _bw_sum(x, _BROAD)
    # continuity with regions 1 and 3, whose continuum carries no phi subtraction
    y_nonres[0] = float(r_pipi(x[0]))
    y_nonres[-1] = float(_r_pqcd(np.array([x[-1]]))[0])
    if np.any(y_nonres <= 0.0):  # pragma: no cover - guards the node table
        raise AssertionError("phi Breit-Wigner exceeds a PDG node")
    return PchipInterpolator(x, np.log(y_nonres))


_LOW = _build_low_energy_interpolator()
_W_LOW_MIN = LOW_ENERGY_NODES[0][0]
_W_PQCD_MIN = LOW_ENERGY_NODES[-1][0]


def _check_sqrt_s(sqrt_s) -> np.ndarray:
    w = np.asarray(sqrt_s, dtype=np.float64)
    bad = ~np.isfinite(w) | (w < 0.0) | (w > SQRT_S_MAX)
    if np.any(bad):
        msg = f"sqrt_s={float(w[bad].ravel()[0])!r} GeV outside the allowed range [0, {SQRT_S_MAX}] GeV"
        raise ConfigError(msg)
    return w


def _continuum_unchecked(w: np.ndarray) -> np.ndarray:
    out = np.zeros_like(w)
    lo = w < _W_LOW_MIN
    if np.any(lo):
        out[lo] = r_pipi(w[lo])
    mid = (w >= _W_LOW_MIN) & (w < _W_PQCD_MIN)
    if np.any(mid):
        out[mid] = np.exp(_LOW(w[mid]))
    hi = w >= _W_PQCD_MIN
    if np.any(hi):
        out[hi] = _r_pqcd(w[hi])
    return out


def r_continuum(sqrt_s) -> np.ndarray:
    """Non-resonant part of R (items 1-3 of the module docstring, no Breit-Wigners).

    Parameters
    ----------
    sqrt_s : array_like
        CM energy [GeV], 0 <= sqrt_s <= 12.
    """
    return _continuum_unchecked(np.atleast_1d(_check_sqrt_s(sqrt_s))).reshape(np.shape(sqrt_s))


def r_resonances(sqrt_s, *, include_narrow: bool = True) -> np.ndarray:
    """Breit-Wigner part of R: broad states (item 4) plus, optionally, the narrow ones (item 5)."""
    w = np.atleast_1d(_check_sqrt_s(sqrt_s))
    out = _bw_sum(w, _BROAD)
    if include_narrow:
        out = out + _bw_sum(w, _NARROW)
    out[w <= _W_HAD_MIN] = 0.0
    return out.reshape(np.shape(sqrt_s))


def r_ratio(sqrt_s, *, include_narrow: bool = True) -> np.ndarray:
    """Hadronic R ratio at CM energy ``sqrt_s`` (see the module docstring for model and sources).

    Parameters
    ----------
    sqrt_s : array_like
        CM energy (or dark-photon mass) [GeV], 0 <= sqrt_s <= 12. R = 0 below 2 m_pi.
    include_narrow : bool
        Add the narrow J/psi, psi(2S), Upsilon(1S-3S) Breit-Wigners (physics.md 6.5 item 3, [U]).

    Returns
    -------
    numpy.ndarray
        R(sqrt_s), same shape as ``sqrt_s`` (a 0-d array for a scalar input).

    Raises
    ------
    ConfigError
        If any ``sqrt_s`` is outside [0, 12] GeV or not finite.
    """
    w = np.atleast_1d(_check_sqrt_s(sqrt_s))
    out = _continuum_unchecked(w) + _bw_sum(w, _BROAD)
    if include_narrow:
        out = out + _bw_sum(w, _NARROW)
    out[w <= _W_HAD_MIN] = 0.0
    return out.reshape(np.shape(sqrt_s))


# --------------------------------------------------------------------------------------------
# scalar kernels: 1 MeV grids + analytic threshold factors and Breit-Wigners
# --------------------------------------------------------------------------------------------
# Below 0.40 GeV a grid of |F_pi|^2/4 (= R_pipi/beta^3, smooth at threshold), 0.40-2 GeV a
# 0.25 MeV grid of the continuum; above 2 GeV the kernel evaluates the pQCD formula with
# alpha_s interpolated on a grid and the open-flavour threshold factors computed exactly.
_STEP_LOW = 2.5e-4  # below 2 GeV (PCHIP curvature at the rho node)
_STEP_HIGH = 1.0e-3  # alpha_s above 2 GeV
_GRID_LOW_N = round(_W_PQCD_MIN / _STEP_LOW) + 1
_GRID_PIPI_N = round(_W_LOW_MIN / _STEP_LOW) + 2
_GRID_HIGH_N = round((SQRT_S_MAX - _W_PQCD_MIN) / _STEP_HIGH) + 1


def _build_kernel_grids() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w_low = np.linspace(0.0, _W_PQCD_MIN, _GRID_LOW_N)
    r_low = _continuum_unchecked(w_low)
    # |F_pi|^2/4 = R_pipi/beta^3 on [0, 0.40 + 1 step], smooth through the pi pi threshold
    w_pp = np.arange(_GRID_PIPI_N) * _STEP_LOW
    f2_4 = fpi2_array(w_pp * w_pp) / 4.0
    w_high = np.linspace(_W_PQCD_MIN, SQRT_S_MAX, _GRID_HIGH_N)
    return r_low, f2_4, alpha_s(w_high)


_GRID_R_LOW, _GRID_F2_4, _GRID_AS = _build_kernel_grids()
_MPI2_4 = 4.0 * M_PI * M_PI


@kernel
def _bw_sum_scalar(w, res):
    s = w * w
    acc = 0.0
    for i in range(res.shape[0]):
        m2 = res[i, 0] * res[i, 0]
        g = res[i, 1]
        acc += 9.0 * s * res[i, 2] * res[i, 3] * _INV_ALPHA2 / ((s - m2) * (s - m2) + m2 * g * g)
    return acc


@kernel
def _interp(grid, x0, step, w):
    u = (w - x0) / step
    if u <= 0.0:
        return grid[0]
    i = int(u)
    if i >= grid.shape[0] - 1:
        return grid[grid.shape[0] - 1]
    f = u - i
    return (1.0 - f) * grid[i] + f * grid[i + 1]


@kernel
def _threshold_factor_scalar(w, m_h):
    v2 = 1.0 - 4.0 * m_h * m_h / (w * w)
    if v2 <= 0.0:
        return 0.0
    v = math.sqrt(v2)
    return v * (3.0 - v2) / 2.0


@kernel
def _continuum_scalar(w):
    if w <= _W_HAD_MIN:
        return 0.0
    if w < _W_LOW_MIN:
        beta2 = 1.0 - _MPI2_4 / (w * w)
        return _interp(_GRID_F2_4, 0.0, _STEP_LOW, w) * beta2 * math.sqrt(beta2)
    if w < _W_PQCD_MIN:
        return _interp(_GRID_R_LOW, 0.0, _STEP_LOW, w)
    a = _interp(_GRID_AS, _W_PQCD_MIN, _STEP_HIGH, w) / math.pi
    k_c = _threshold_factor_scalar(w, _M_D0)
    k_b = _threshold_factor_scalar(w, _M_B_MESON)
    qcd = 1.0 + a + (1.9857 - 0.1152 * (3.0 + k_c + k_b)) * a * a
    return 3.0 * (2.0 / 3.0 + 4.0 / 9.0 * k_c + 1.0 / 9.0 * k_b) * qcd


@kernel
def r_ratio_continuum_scalar(sqrt_s):
    """R without the narrow resonances (continuum + broad Breit-Wigners), scalar kernel.

    ``sqrt_s`` [GeV] must be validated by the caller (0 <= sqrt_s <= 12).
    """
    if sqrt_s <= _W_HAD_MIN:
        return 0.0
    return _continuum_scalar(sqrt_s) + _bw_sum_scalar(sqrt_s, _BROAD)


@kernel
def r_ratio_scalar(sqrt_s):
    """R(sqrt_s) including the narrow resonances, scalar kernel (same model as :func:`r_ratio`).

    ``sqrt_s`` [GeV] must be validated by the caller (0 <= sqrt_s <= 12).
    """
    if sqrt_s <= _W_HAD_MIN:
        return 0.0
    return _continuum_scalar(sqrt_s) + _bw_sum_scalar(sqrt_s, _BROAD) + _bw_sum_scalar(sqrt_s, _NARROW)
