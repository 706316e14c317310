"""Process framework: the base class, sampling statistics and input-validation helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..beam import Beam
from ..events import TruthChunk
from ..exceptions import ConfigError

__all__ = ["Process", "SampleStats", "check_number", "check_range_pair"]


@dataclass
class SampleStats:
    """Bookkeeping of one call to :meth:`Process.sample`.

    The cross section inside the generator cuts is ``sigma_prop_nb * sum_w / n_trials``
    (importance sampling with proposal integral ``sigma_prop_nb``; weights w = f/q).
    """

    n_trials: int = 0
    sum_w: float = 0.0
    sum_w2: float = 0.0
    n_overweight: int = 0
    sigma_prop_nb: float = 0.0

    def __iadd__(self, other: SampleStats) -> SampleStats:
        if self.sigma_prop_nb and other.sigma_prop_nb and not math.isclose(
            self.sigma_prop_nb, other.sigma_prop_nb, rel_tol=1e-12
        ):
            msg = "cannot merge statistics of different proposals"
            raise ValueError(msg)
        self.n_trials += other.n_trials
        self.sum_w += other.sum_w
        self.sum_w2 += other.sum_w2
        self.n_overweight += other.n_overweight
        self.sigma_prop_nb = other.sigma_prop_nb or self.sigma_prop_nb
        return self

    @property
    def sigma_nb(self) -> float:
        """Cross-section estimate inside the cuts [nb]."""
        return self.sigma_prop_nb * self.sum_w / self.n_trials if self.n_trials else float("nan")

    @property
    def sigma_err_nb(self) -> float:
        """Monte Carlo standard error of :attr:`sigma_nb` [nb]."""
        if self.n_trials < 2:
            return float("nan")
        mean = self.sum_w / self.n_trials
        var = max(self.sum_w2 / self.n_trials - mean * mean, 0.0)
        return self.sigma_prop_nb * math.sqrt(var / self.n_trials)

    @property
    def unweighting_efficiency(self) -> float:
        """Fraction of proposals kept by accept/reject (= <w> for weights in [0, 1])."""
        return self.sum_w / self.n_trials if self.n_trials else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {
            "n_trials": self.n_trials, "sum_w": self.sum_w, "sum_w2": self.sum_w2,
            "n_overweight": self.n_overweight, "sigma_prop_nb": self.sigma_prop_nb,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleStats:
        return cls(int(d["n_trials"]), float(d["sum_w"]), float(d["sum_w2"]),
                   int(d["n_overweight"]), float(d["sigma_prop_nb"]))


class Process:
    """Base class of event generators. Subclasses set ``name``, ``k``, ``extra_fields`` and
    implement ``sample`` and ``config``; ``__init__`` validates every parameter."""

    name: ClassVar[str] = ""
    #: maximum number of truth particles per event (an instance may need more, e.g. with FSR)
    k: int = 0
    #: names of process-specific event-level truth fields (float64)
    extra_fields: tuple[str, ...] = ()

    def __init__(self, beam: Beam) -> None:
        if not isinstance(beam, Beam):
            msg = f"beam must be an isrsim.beam.Beam, got {type(beam).__name__}"
            raise ConfigError(msg)
        self.beam = beam

    def sample(self, rng: np.random.Generator, n: int, *, weighted: bool = False
               ) -> tuple[TruthChunk, SampleStats]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


def check_fsr(fsr: Any, fsr_x_min: Any) -> tuple[bool, float]:
    """Validate the final-state-radiation parameters shared by the processes with a gamma*/A'
    -> f fbar decay (:mod:`isrsim.physics.fsr`)."""
    if not isinstance(fsr, bool):
        msg = f"fsr = {fsr!r} is invalid: allowed true or false"
        raise ConfigError(msg)
    return fsr, check_number("fsr_x_min", fsr_x_min, lo=1e-12, hi=0.1)


def check_number(field: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, allowed: str | None = None) -> float:
    """Validate a finite number in [lo, hi] (open ends optional); ConfigError naming ``field``.

    Booleans and strings are not numbers here (a TOML ``"3.773"`` is a typo, not a value); an
    integer too large for a float (a TOML integer of 310 digits) is out of range."""
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = float("nan")
    bad = not math.isfinite(v)
    if not bad and lo is not None:
        bad = v <= lo if lo_open else v < lo
    if not bad and hi is not None:
        bad = v >= hi if hi_open else v > hi
    if bad:
        if allowed is None:
            parts = []
            if lo is not None:
                parts.append(f"{'>' if lo_open else '>='} {lo:g}")
            if hi is not None:
                parts.append(f"{'<' if hi_open else '<='} {hi:g}")
            allowed = "a finite number " + " and ".join(parts) if parts else "a finite number"
        msg = f"{field} = {value!r} is invalid: allowed {allowed}"
        raise ConfigError(msg)
    return v


#: Narrowest window [GeV] :func:`check_range_pair` accepts: the samplers' tables are built over
#: the window, and a width near the double-precision spacing of its edges leaves them undefined.
MIN_WINDOW_WIDTH = 1e-6


def check_range_pair(field: str, value: Any, lo: float, hi: float, unit: str = "GeV") -> tuple[float, float]:
    """Validate a window [a, b] with lo < a < b < hi and b - a >= :data:`MIN_WINDOW_WIDTH`."""
    allowed = (f"two numbers {lo:.6g} < min < max < {hi:.6g} {unit} with max - min >= "
               f"{MIN_WINDOW_WIDTH:g} {unit}")
    try:
        if isinstance(value, (str, bytes)) or any(isinstance(v, (bool, str, bytes)) for v in value):
            raise TypeError
        a, b = (float(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        msg = f"{field} = {value!r} is invalid: allowed {allowed}"
        raise ConfigError(msg) from None
    if not (math.isfinite(a) and math.isfinite(b)) or not (lo < a < b < hi) or b - a < MIN_WINDOW_WIDTH:
        if a >= b:
            what = "empty or inverted window"
        elif lo < a and b < hi and b - a < MIN_WINDOW_WIDTH:
            what = "window too narrow"
        else:
            what = "window outside the kinematic limits"
        msg = f"{field} = [{a:.12g}, {b:.12g}] is invalid ({what}): allowed {allowed}"
        raise ConfigError(msg)
    return a, b
