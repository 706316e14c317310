"""Binned spectra of candidate masses.

What to use when
----------------
* :func:`make_histogram` turns candidate masses (GeV) and optional weights into a
  :class:`Histogram` with sum-of-weights-squared variances and a mask of vetoed windows
  (the J/psi window 2.95-3.20 GeV by default, physics.md section 7.1 step 1).
* :func:`window_mask` gives the boolean "bin is used" mask for any list of windows.

Histograms are plain frozen dataclasses of numpy arrays; nothing here is channel-specific.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..exceptions import ConfigError

__all__ = ["JPSI_WINDOW", "Histogram", "make_histogram", "window_mask"]

#: J/psi veto window in GeV (BESIII 2017, physics.md section 7.1 step 1 and section 10).
JPSI_WINDOW: tuple[float, float] = (2.95, 3.20)


def _check_windows(windows: Sequence[Sequence[float]] | None) -> tuple[tuple[float, float], ...]:
    if windows is None:
        return ()
    out = []
    for k, w in enumerate(windows):
        try:
            lo, hi = (float(w[0]), float(w[1]))
        except (TypeError, ValueError, IndexError):
            msg = f"mask_windows[{k}] = {w!r} must be a pair (lo, hi) in GeV"
            raise ConfigError(msg) from None
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            msg = f"mask_windows[{k}] = ({lo}, {hi}) must be finite with hi > lo"
            raise ConfigError(msg)
        out.append((lo, hi))
    return tuple(out)


def window_mask(edges: np.ndarray, windows: Sequence[Sequence[float]] | None) -> np.ndarray:
    """Boolean array, True for bins that do *not* overlap any of ``windows``.

    Parameters
    ----------
    edges : ndarray
        Bin edges in GeV, shape (n + 1,).
    windows : sequence of (lo, hi)
        Mass windows in GeV to exclude; a bin is excluded if it overlaps a window by more
        than 1e-9 GeV.
    """
    edges = np.asarray(edges, dtype=np.float64)
    keep = np.ones(edges.size - 1, dtype=bool)
    for lo, hi in _check_windows(windows):
        overlap = np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo)
        keep &= ~(overlap > 1e-9)
    return keep


@dataclass(frozen=True)
class Histogram:
    """A binned mass spectrum.

    Attributes
    ----------
    edges : ndarray
        Bin edges in GeV, shape (n + 1,), strictly increasing.
    counts : ndarray
        Sum of weights per bin (event counts for unweighted input).
    variances : ndarray
        Sum of squared weights per bin (equal to ``counts`` for unweighted input).
    mask : ndarray of bool
        True for bins used in fits (bins overlapping a masked window are False).
    weighted : bool
        True if any weight differs from 1; fits then use a weighted chi2 instead of the
        Poisson likelihood.
    name : str
        Channel label (e.g. ``"mumu"``, ``"ee"``).
    """

    edges: np.ndarray
    counts: np.ndarray
    variances: np.ndarray
    mask: np.ndarray
    weighted: bool = False
    name: str = ""
    mask_windows: tuple[tuple[float, float], ...] = field(default=())

    @property
    def centers(self) -> np.ndarray:
        """Bin centres in GeV."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def widths(self) -> np.ndarray:
        """Bin widths in GeV."""
        return np.diff(self.edges)

    @property
    def nbins(self) -> int:
        """Number of bins."""
        return self.counts.size

    @property
    def lo(self) -> float:
        """Lower edge of the spectrum in GeV."""
        return float(self.edges[0])

    @property
    def hi(self) -> float:
        """Upper edge of the spectrum in GeV."""
        return float(self.edges[-1])

    def with_counts(self, counts: np.ndarray, variances: np.ndarray | None = None) -> Histogram:
        """Copy with new counts (e.g. a pseudo-experiment); variances default to counts."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != self.counts.shape:
            msg = f"counts has shape {counts.shape}, must be {self.counts.shape}"
            raise ConfigError(msg)
        var = counts.copy() if variances is None else np.asarray(variances, dtype=np.float64)
        return Histogram(self.edges, counts, var, self.mask, variances is not None and self.weighted,
                         self.name, self.mask_windows)


#: Most bins of a mass histogram (a bin width typed 1e-9 for 1e-2 would need ~10 GB).
MAX_BINS = 100_000


def make_histogram(
    masses: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    lo: float = 1.5,
    hi: float = 3.4,
    bin_width: float = 0.010,
    mask_windows: Sequence[Sequence[float]] | None = (JPSI_WINDOW,),
    name: str = "",
) -> Histogram:
    """Histogram candidate masses with sum-of-weights-squared errors.

    Defaults follow the BESIII 2017 recipe (physics.md section 7.1): 1.5-3.4 GeV, 10 MeV
    bins, J/psi window 2.95-3.20 GeV masked.

    Parameters
    ----------
    masses : array_like
        Candidate invariant masses in GeV.
    weights : array_like, optional
        Per-candidate weights (same length); None means unit weights.
    lo, hi : float
        Spectrum range in GeV; ``(hi - lo) / bin_width`` is rounded to the nearest integer
        number of bins (the bin width is then adjusted to fit exactly).
    bin_width : float
        Bin width in GeV (default 10 MeV).
    mask_windows : sequence of (lo, hi) or None
        Windows in GeV excluded from fits.
    name : str
        Channel label.

    Returns
    -------
    Histogram

    Raises
    ------
    ConfigError
        Empty or non-finite input, mismatched lengths, bad range or bin width.
    """
    m = np.asarray(masses, dtype=np.float64).ravel()
    if m.size == 0:
        msg = f"masses{' (' + name + ')' if name else ''} is empty: need at least one candidate"
        raise ConfigError(msg)
    if not np.all(np.isfinite(m)):
        msg = "masses contains non-finite values"
        raise ConfigError(msg)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo and lo >= 0):
        msg = f"histogram range (lo, hi) = ({lo}, {hi}) must satisfy 0 <= lo < hi"
        raise ConfigError(msg)
    if not (bin_width >= (hi - lo) / MAX_BINS and bin_width <= hi - lo):
        msg = (f"bin_width = {bin_width} GeV is invalid: allowed {(hi - lo) / MAX_BINS:.6g} <= "
               f"bin_width <= {hi - lo:.6g} GeV (at most {MAX_BINS} bins in {lo:g}-{hi:g} GeV)")
        raise ConfigError(msg)
    if weights is None:
        w = None
        weighted = False
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != m.shape:
            msg = f"weights has length {w.size}, masses has length {m.size}: must match"
            raise ConfigError(msg)
        if not np.all(np.isfinite(w)):
            msg = "weights contains non-finite values"
            raise ConfigError(msg)
        weighted = bool(np.any(w != 1.0))
    nbins = max(1, round((hi - lo) / bin_width))
    edges = np.linspace(lo, hi, nbins + 1)
    counts, _ = np.histogram(m, bins=edges, weights=w)
    if w is None:
        variances = counts.astype(np.float64)
    else:
        variances, _ = np.histogram(m, bins=edges, weights=w * w)
    windows = _check_windows(mask_windows)
    return Histogram(edges, counts.astype(np.float64), variances.astype(np.float64),
                     window_mask(edges, windows), weighted, name, windows)
