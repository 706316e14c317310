"""Statistics for the bump hunt: spectra, background fits, limits, epsilon, significance.

What to use when
----------------
* :func:`make_histogram` -> :func:`fit_background` for spectra and polynomial fits
  (physics.md 7.1 step 1; residuals/pulls for BESIII-2017-Fig.-2-style plots).
* :class:`Channel` + :func:`scan_limits` (full-range profiled polynomial; ``signal="shape"``
  or ``"bin"``) or :func:`sliding_scan` (BaBar-style windows) for limits on a yield POI, in
  the conventions of :data:`CONVENTIONS` (physics.md 7.2, 7.3).
* :func:`scan_epsilon` for eps limits with e e + mu mu combined (BESIII 2017 Eq. 1).
* :func:`toy_upper_limit` / :func:`counting_toy_upper_limit` for limits from
  pseudo-experiments (Neyman construction in q~_mu, or CLs) where the background under the
  signal is below ~10 events and the asymptotic conventions under-cover (physics.md 7.2);
  :func:`counting_exact_upper_limit` for their closed form with a known background.
* :func:`pseudo_experiments` for expected bands and the trials factor;
  :func:`global_significance_toys` / :func:`gross_vitells` for the global significance.
* :mod:`isrsim.stats.plotting` for plots (imports matplotlib lazily).
"""

from __future__ import annotations

from .background import BackgroundFit, chebyshev_bin_basis, fit_background
from .epsilon import EpsilonScan, epsilon_channels, resolve_n_f, scan_epsilon, yield_per_epsilon2
from .histogram import JPSI_WINDOW, Histogram, make_histogram, window_mask
from .limits import (
    CONVENTIONS,
    Channel,
    LimitScan,
    SignalFit,
    SpuriousSignal,
    UpperLimit,
    bin_containment,
    counting_upper_limit,
    fit_signal,
    gaussian_shape,
    scan_limits,
    sliding_scan,
    spurious_signal,
    threshold,
    upper_limit,
)
from .toylimits import (
    TOY_METHODS,
    ToyUpperLimit,
    counting_exact_upper_limit,
    counting_toy_upper_limit,
    toy_upper_limit,
)
from .toys import (
    ExpectedLimits,
    GlobalSignificance,
    count_upcrossings,
    global_significance_toys,
    gross_vitells,
    pseudo_experiments,
)

__all__ = [
    "CONVENTIONS",
    "JPSI_WINDOW",
    "BackgroundFit",
    "Channel",
    "EpsilonScan",
    "ExpectedLimits",
    "GlobalSignificance",
    "Histogram",
    "LimitScan",
    "SignalFit",
    "SpuriousSignal",
    "TOY_METHODS",
    "ToyUpperLimit",
    "UpperLimit",
    "bin_containment",
    "chebyshev_bin_basis",
    "count_upcrossings",
    "counting_exact_upper_limit",
    "counting_toy_upper_limit",
    "counting_upper_limit",
    "epsilon_channels",
    "fit_background",
    "fit_signal",
    "gaussian_shape",
    "global_significance_toys",
    "gross_vitells",
    "make_histogram",
    "pseudo_experiments",
    "resolve_n_f",
    "scan_epsilon",
    "scan_limits",
    "sliding_scan",
    "spurious_signal",
    "threshold",
    "toy_upper_limit",
    "upper_limit",
    "window_mask",
    "yield_per_epsilon2",
]


def __dir__() -> list[str]:
    return __all__
