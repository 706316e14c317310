"""Conversion of event-yield limits into the kinetic-mixing strength epsilon.

What to use when
----------------
* :func:`yield_per_epsilon2` is Eq. (1) of BESIII 2017 (arXiv:1705.04265) / physics.md
  eq. (6.2) and section 7.1 step 4 solved for the A' yield:
  N_A' = eps^2 * N_QED(bin) * 3 pi m / (2 N_f alpha delta_m).
* :func:`epsilon_channels` turns yield :class:`~isrsim.stats.limits.Channel` objects into
  channels whose POI is eps^2 (N_QED(bin) taken from the channel's polynomial background fit
  at m, times a user-supplied Bhabha correction for e e; a fit that did not converge is an
  error), so that
  :func:`~isrsim.stats.limits.scan_limits` combines e e and mu mu at likelihood level with a
  common eps^2 (physics.md 7.1 step 4).
* :func:`scan_epsilon` does both and returns an :class:`EpsilonScan`.

Efficiency and luminosity cancel in the ratio (physics.md 7.1 step 4): the luminosity is
not needed here; a luminosity passed for bookkeeping is only checked to be positive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..constants import ALPHA
from ..exceptions import ConfigError
from .background import fit_background
from .limits import Channel, LimitScan, _check_channels, scan_limits

__all__ = ["EpsilonScan", "epsilon_channels", "resolve_n_f", "scan_epsilon", "yield_per_epsilon2"]

FloatFn = float | Callable[[float], float]


def resolve_n_f(n_f: FloatFn | None) -> Callable[[float], float]:
    """Return N_f(m) as a callable.

    ``None`` uses ``isrsim.physics.darkphoton.n_f`` = Gamma_tot / Gamma_ee (physics.md section
    6.3 table), the N_f for which Eq. (1) / physics.md (6.2) is exact with lepton masses; the
    paper's per-channel Gamma_tot / Gamma_ll differs from it by < 1e-3 above 1 GeV
    (:func:`isrsim.physics.darkphoton.n_f_ll`). A float is a constant; a callable is used as is.
    """
    if n_f is None:
        try:
            from ..physics.darkphoton import n_f as default_n_f  # type: ignore[import-not-found]
        except ImportError:
            msg = ("n_f = None but isrsim.physics.darkphoton.n_f is not available; "
                   "pass n_f as a number or a callable of the mass in GeV")
            raise ConfigError(msg) from None
        return lambda m: float(np.asarray(default_n_f(m)))
    if callable(n_f):
        return n_f
    value = float(n_f)
    if not (np.isfinite(value) and value >= 1.0):
        msg = f"n_f = {n_f} must be >= 1 (Gamma_tot / Gamma_ee)"
        raise ConfigError(msg)
    return lambda m: value


def yield_per_epsilon2(mass: float | np.ndarray, n_qed_bin: float | np.ndarray,
                       n_f: float | np.ndarray, bin_width: float = 0.010) -> np.ndarray:
    """Total A' -> l l yield per unit eps^2 (BESIII 2017 Eq. 1; physics.md eq. 6.2).

    Parameters
    ----------
    mass : float or ndarray
        A' mass in GeV.
    n_qed_bin : float or ndarray
        QED ISR l l gamma yield (annihilation only) in the bin of width ``bin_width`` at
        ``mass``, after the same selection as the signal.
    n_f : float or ndarray
        N_f = Gamma_tot / Gamma_ee at the A' mass (see :func:`resolve_n_f`).
    bin_width : float
        delta_m in GeV (10 MeV in BESIII 2017).

    Returns
    -------
    ndarray
        N_A' / eps^2 = N_QED * 3 pi m / (2 N_f alpha delta_m).
    """
    return np.asarray(n_qed_bin) * 3.0 * np.pi * np.asarray(mass) / (
        2.0 * np.asarray(n_f) * ALPHA * bin_width)


def epsilon_channels(channels: Channel | Sequence[Channel], *, n_f: FloatFn | None = None,
                     bhabha_correction: Mapping[str, FloatFn] | None = None) -> tuple[Channel, ...]:
    """Channels whose POI is eps^2 (physics.md 7.1 step 4).

    Parameters
    ----------
    channels : Channel or sequence of Channel
        Yield channels (their ``signal_scale`` is replaced).
    n_f : float, callable or None
        N_f(m); None uses ``isrsim.physics.darkphoton.n_f``.
    bhabha_correction : mapping of channel name to float or callable, optional
        Fraction of the e e gamma yield from annihilation, N_ann / (N_ann + N_Bhabha), in
        (0, 1] (BESIII 2017: a 2-8 % correction); multiplies N_QED(bin) of that channel.
        Channels not listed get 1.

    Returns
    -------
    tuple of Channel
    """
    chans = _check_channels(channels)
    nf = resolve_n_f(n_f)
    corr = dict(bhabha_correction or {})
    unknown = set(corr) - {c.name for c in chans}
    if unknown:
        msg = (f"bhabha_correction names unknown channels {sorted(unknown)}; channels are "
               f"{[c.name for c in chans]}")
        raise ConfigError(msg)
    out = []
    for ch in chans:
        fit = fit_background(ch.hist, ch.order)
        if not fit.valid:
            msg = (f"{ch.name}: the order-{ch.order} background fit did not converge (chi2 = "
                   f"{fit.chi2:.6g}); N_QED(bin) of Eq. 1 would come from it: choose another "
                   "Channel.order (0-12)")
            raise ConfigError(msg)
        width = float(np.mean(ch.hist.widths))
        cfun = corr.get(ch.name, 1.0)

        def scale(m: float, fit=fit, width=width, cfun=cfun, name=ch.name) -> float:
            c = float(cfun(m)) if callable(cfun) else float(cfun)
            if not (0.0 < c <= 1.0):
                msg = f"bhabha_correction[{name!r}]({m}) = {c} must be in (0, 1]"
                raise ConfigError(msg)
            nfv = float(nf(m))
            if not (np.isfinite(nfv) and nfv >= 1.0):
                msg = f"n_f({m}) = {nfv} must be >= 1"
                raise ConfigError(msg)
            n_qed = float(fit.density(m)) * width * c
            if not n_qed > 0:
                msg = f"{name}: fitted QED yield at m = {m} GeV is {n_qed} <= 0"
                raise ConfigError(msg)
            return float(yield_per_epsilon2(m, n_qed, nfv, width))

        out.append(replace(ch, signal_scale=scale))
    return tuple(out)


@dataclass(frozen=True)
class EpsilonScan:
    """eps limits over a mass scan.

    Attributes
    ----------
    limits : LimitScan
        The underlying scan with POI = eps^2 (``upper_limit``, ``poi_hat``, ...).
    epsilon2_ul : ndarray
        Upper limit on eps^2.
    epsilon_ul : ndarray
        sqrt(epsilon2_ul).
    yield_ul : ndarray
        Upper limit on the total A' yield per channel, shape (n_mass, n_channels).
    """

    limits: LimitScan
    epsilon2_ul: np.ndarray
    epsilon_ul: np.ndarray
    yield_ul: np.ndarray

    @property
    def mass(self) -> np.ndarray:
        """Hypothesis masses in GeV."""
        return self.limits.mass

    @classmethod
    def from_scan(cls, scan: LimitScan) -> EpsilonScan:
        """The eps view of a scan whose POI is eps^2 (channels from :func:`epsilon_channels`)."""
        return cls(scan, scan.upper_limit, np.sqrt(scan.upper_limit),
                   scan.upper_limit[:, None] * scan.yield_per_poi)


def scan_epsilon(channels: Channel | Sequence[Channel], masses: Sequence[float] | np.ndarray, *,
                 n_f: FloatFn | None = None, bhabha_correction: Mapping[str, FloatFn] | None = None,
                 convention: str = "qtilde_asymptotic", cl: float = 0.90, signal: str = "shape",
                 luminosity: float | None = None) -> EpsilonScan:
    """Upper limits on eps at each mass, channels combined with a common eps^2.

    ``luminosity`` (nb^-1) is optional bookkeeping and only validated (> 0): it cancels in
    Eq. (1). See :func:`epsilon_channels` and :func:`~isrsim.stats.limits.scan_limits`.
    """
    if luminosity is not None and not (np.isfinite(luminosity) and luminosity > 0):
        msg = f"luminosity = {luminosity} nb^-1 must be > 0"
        raise ConfigError(msg)
    chans = epsilon_channels(channels, n_f=n_f, bhabha_correction=bhabha_correction)
    return EpsilonScan.from_scan(scan_limits(chans, masses, convention=convention, cl=cl, signal=signal))
