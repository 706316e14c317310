"""matplotlib helpers for limit plots and background-fit residuals.

What to use when
----------------
* :func:`plot_epsilon_limits`: eps vs mass on a log y axis, observed line, expected median
  and +-1/2 sigma bands, optional comparison curves read with :func:`read_overlay_csv`.
* :func:`plot_residuals`: data - fit per bin with errors and an optional limit histogram,
  like Fig. 2 of BESIII 2017 (arXiv:1705.04265).

matplotlib is imported inside the functions; callers choose the backend (Agg in scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..exceptions import ConfigError, InputFileError

__all__ = ["plot_epsilon_limits", "plot_residuals", "read_overlay_csv"]


def read_overlay_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a comparison curve: two columns (mass in GeV, epsilon), comma separated.

    Lines starting with ``#`` and one non-numeric header line are skipped.
    """
    p = Path(path)
    if not p.is_file():
        msg = f"overlay file {str(p)!r} does not exist"
        raise InputFileError(msg)
    rows = []
    for k, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = [x.strip() for x in s.split(",")]
        try:
            m, e = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            if rows or k > 1:
                msg = f"overlay file {str(p)!r} line {k + 1}: expected 'mass,epsilon', got {s!r}"
                raise InputFileError(msg) from None
            continue
        if not (np.isfinite(m) and np.isfinite(e) and m > 0 and e > 0):
            msg = (f"overlay file {str(p)!r} line {k + 1}: {s!r}; allowed: finite mass > 0 GeV and "
                   "epsilon > 0")
            raise InputFileError(msg)
        rows.append((m, e))
    if not rows:
        msg = f"overlay file {str(p)!r} has no (mass, epsilon) rows"
        raise InputFileError(msg)
    a = np.array(rows)
    return a[:, 0], a[:, 1]


def plot_epsilon_limits(mass: np.ndarray, observed: np.ndarray | None = None, *,
                        expected_bands: np.ndarray | None = None,
                        overlays: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
                        ax=None, label: str = "observed 90% CL", title: str | None = None):
    """Plot epsilon upper limits vs mass on a log scale.

    Parameters
    ----------
    mass : ndarray
        Masses in GeV.
    observed : ndarray, optional
        Observed epsilon limits.
    expected_bands : ndarray, shape (5, n), optional
        Expected epsilon quantiles (-2, -1, 0, +1, +2 sigma), e.g. sqrt of
        :attr:`ExpectedLimits.bands` for an eps^2 POI.
    overlays : sequence of (label, mass, epsilon)
        Extra curves (e.g. from :func:`read_overlay_csv`).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    m = np.asarray(mass, dtype=np.float64)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    if expected_bands is not None:
        b = np.asarray(expected_bands, dtype=np.float64)
        if b.shape != (5, m.size):
            msg = f"expected_bands has shape {b.shape}, must be (5, {m.size})"
            raise ConfigError(msg)
    # masked windows (e.g. J/psi) leave gaps in the scan: break the curves there
    gaps = np.flatnonzero(np.diff(m) > 1.5 * np.median(np.diff(m))) + 1 if m.size > 2 else np.array([], int)
    if gaps.size:
        pos = gaps
        m = np.insert(m, pos, np.nan)
        if observed is not None:
            observed = np.insert(np.asarray(observed, dtype=np.float64), pos, np.nan)
        if expected_bands is not None:
            b = np.insert(b, pos, np.nan, axis=1)
    if expected_bands is not None:
        ax.fill_between(m, b[0], b[4], color="#ffdd44", label=r"expected $\pm2\sigma$", step=None)
        ax.fill_between(m, b[1], b[3], color="#44bb44", label=r"expected $\pm1\sigma$")
        ax.plot(m, b[2], "k--", lw=1, label="expected median")
    if observed is not None:
        ax.plot(m, np.asarray(observed), "k-", lw=1.2, label=label)
    for name, om, oe in overlays:
        ax.plot(om, oe, lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(r"$m_{A'}$ [GeV]")
    ax.set_ylabel(r"$\varepsilon$ upper limit")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_residuals(fit, *, limit_mass: np.ndarray | None = None, limit_yield: np.ndarray | None = None,
                   ax=None):
    """Data - fit per bin with sqrt(variance) errors (BESIII 2017 Fig. 2 style).

    Parameters
    ----------
    fit : BackgroundFit
    limit_mass, limit_yield : ndarray, optional
        Upper limit on the in-bin signal yield per hypothesis, drawn as a step line.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    h = fit.hist
    res = fit.residuals()
    err = np.sqrt(h.variances)
    keep = h.mask
    ax.errorbar(h.centers[keep], res[keep], yerr=err[keep], fmt=".", ms=3, color="k", label="data - fit")
    ax.axhline(0.0, color="0.5", lw=0.8)
    if limit_mass is not None and limit_yield is not None:
        ax.step(limit_mass, limit_yield, where="mid", color="C3", label="90% CL limit")
    ax.set_xlabel(r"$m_{\ell\ell}$ [GeV]")
    ax.set_ylabel(f"events / {1e3 * float(np.mean(h.widths)):.0f} MeV")
    ax.legend(fontsize=8)
    return ax
