"""Shared helpers of the workflows (``limit``, ``project``, ``run``, ``inject``, ``sideband``).

What to use when
----------------
* :func:`read_candidate_tables` reads and cross-checks candidate tables (flat Parquet written
  with :func:`isrsim.io.write_table_atomic`, columns of :data:`isrsim.reco.selection.COLUMNS`)
  and gives one :class:`CandidateSet` with per-candidate expected-count weights at a target
  luminosity.
* :func:`fit_resolution` turns (m_true, m_reco) pairs into a linear sigma(m) model
  (:class:`Resolution`); :data:`BESIII_RESOLUTION` is the documented fallback (5 -> 12 MeV
  over 1.5-3.4 GeV, BESIII 2017 / physics.md 7.1 and 10).
* :func:`parse_luminosities` reads ``"314/fb,1/ab"`` lists; :func:`write_csv_atomic` writes
  CSV files atomically; :func:`stream_rng` gives independent, reproducible generators per
  (seed, label, stream, block); :func:`card_hash` hashes a card for caches.

Everything here is stable API for the other workflow modules.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._numba import source_digest  # noqa: F401 - re-exported for the workflows' caches
from ..exceptions import ConfigError, InputFileError, OutputError

__all__ = [
    "BESIII_RESOLUTION",
    "CandidateSet",
    "Resolution",
    "card_hash",
    "fit_resolution",
    "parse_luminosities",
    "read_candidate_tables",
    "stream_rng",
    "write_csv_atomic",
]

#: Metadata keys that must agree between candidate tables analysed together.
_MATCH_KEYS = ("selection", "sqrt_s_GeV", "detector")


# ---------------------------------------------------------------------------------------
# small utilities


def progress(cfg: dict[str, Any], command: str, text: str) -> None:
    """A progress line ``isrsim COMMAND: text`` on stderr (stdout stays the JSON summary),
    unless the workflow config has ``quiet`` set (``--quiet``)."""
    if not cfg.get("quiet"):
        print(f"isrsim {command}: {text}", file=sys.stderr, flush=True)


def stream_rng(seed: int, label: str, stream: int, block: int = 0) -> np.random.Generator:
    """Independent Generator for (``seed``, ``label``, ``stream``, ``block``).

    ``label`` (e.g. a process name) enters through its CRC32 so that two processes generated
    with the same seed never share random numbers.
    """
    key = zlib.crc32(label.encode())
    ss = np.random.SeedSequence([int(seed), key], spawn_key=(int(stream), int(block)))
    return np.random.Generator(np.random.PCG64(ss))


def card_hash(card: dict[str, Any]) -> str:
    """SHA-256 (hex) of a card's canonical JSON form (sorted keys)."""
    return hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()


def parse_luminosities(text: str | float | Sequence[Any], *, field: str = "luminosity") -> list[float]:
    """Parse ``"314/fb,1/ab"`` (or a list of such items) into luminosities in nb^-1.

    Raises ConfigError naming ``field`` for an empty list or a malformed / non-positive item.
    """
    from ..units import parse_luminosity

    if isinstance(text, (int, float)):
        items: list[Any] = [text]
    elif isinstance(text, str):
        items = [t for t in (x.strip() for x in text.split(",")) if t]
    else:
        items = list(text)
    if not items:
        msg = f"{field} = {text!r} is empty: give e.g. '2.93/fb' or '314/fb,1/ab'"
        raise ConfigError(msg)
    return [parse_luminosity(x, field=field) for x in items]


def write_csv_atomic(path: str | os.PathLike[str], header: Sequence[str],
                     rows: Iterable[Sequence[Any]], *, comments: Sequence[str] = ()) -> Path:
    """Write a CSV file atomically (temporary name, fsync, rename).

    ``comments`` are written first as ``# ...`` lines (provenance, scaling notes).
    """
    p = Path(path)
    if p.parent and not p.parent.exists():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"output = {str(p)!r}: cannot create directory ({exc.strerror or exc})"
            raise OutputError(msg) from None
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            for c in comments:
                fh.write(f"# {c}\n")
            fh.write(",".join(header) + "\n")
            for row in rows:
                fh.write(",".join(_fmt(v) for v in row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as exc:  # Ctrl-C included: no temporary left behind
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        msg = f"output = {str(p)!r} cannot be written ({exc.strerror or exc})"
        raise OutputError(msg) from None
    return p


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


def save_figure_atomic(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, p)
    except BaseException as exc:  # Ctrl-C included: no temporary left behind
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        msg = f"plot = {str(p)!r} cannot be written ({exc.strerror or exc})"
        raise OutputError(msg) from None
    return p


# ---------------------------------------------------------------------------------------
# resolution model


@dataclass(frozen=True)
class Resolution:
    """Linear mass-resolution model sigma(m) = a + b (m - m_ref) [GeV], floored at ``floor``.

    Attributes
    ----------
    a, b : float
        Intercept at ``m_ref`` [GeV] and slope.
    m_ref : float
        Reference mass [GeV].
    floor : float
        Smallest sigma returned [GeV].
    source : str
        ``"truth"`` (fitted from m_true vs m_reco) or ``"parameterisation"``.
    points : tuple
        (mass, sigma, error) of the slices used in the fit (empty for a parameterisation).
    """

    a: float
    b: float
    m_ref: float
    floor: float = 1e-4
    source: str = "parameterisation"
    points: tuple[tuple[float, float, float], ...] = field(default=())

    def __call__(self, m: float | np.ndarray) -> float | np.ndarray:
        out = np.maximum(self.a + self.b * (np.asarray(m, dtype=np.float64) - self.m_ref), self.floor)
        return float(out) if np.ndim(out) == 0 else out


#: BESIII 2017 resolution, 5 MeV at 1.5 GeV rising linearly to 12 MeV at 3.4 GeV
#: (arXiv:1705.04265 text; physics.md 7.1 and 10: "parameterise ... linearly in m").
BESIII_RESOLUTION = Resolution(a=0.005, b=(0.012 - 0.005) / (3.4 - 1.5), m_ref=1.5, floor=1e-3,
                               source="parameterisation (BESIII 2017: 5 -> 12 MeV, linear)")


def _robust_sigma(d: np.ndarray) -> float:
    """Core Gaussian width from the interquartile range (IQR / 1.349), insensitive to the
    radiative tails of the e e channel."""
    q1, q3 = np.percentile(d, [25.0, 75.0])
    return float((q3 - q1) / 1.3489795)


def fit_resolution(m_true: np.ndarray, m_reco: np.ndarray, lo: float, hi: float, *,
                   n_slices: int = 8, min_per_slice: int = 50) -> Resolution | None:
    """Fit sigma(m) = a + b (m - lo) from truth-matched candidates.

    The core width (IQR / 1.349) of m_reco - m_true is measured in ``n_slices`` equal slices
    of m_true in [lo, hi] and fitted with a straight line (weighted by the slice errors
    sigma / sqrt(2 (n - 1))). Returns None with fewer than two usable slices.
    """
    mt = np.asarray(m_true, dtype=np.float64)
    mr = np.asarray(m_reco, dtype=np.float64)
    ok = np.isfinite(mt) & np.isfinite(mr) & (mt > lo) & (mt < hi)
    mt, mr = mt[ok], mr[ok]
    edges = np.linspace(lo, hi, n_slices + 1)
    pts = []
    for a, b in zip(edges[:-1], edges[1:]):
        s = (mt >= a) & (mt < b)
        n = int(s.sum())
        if n < min_per_slice:
            continue
        sig = _robust_sigma(mr[s] - mt[s])
        if sig > 0:
            pts.append((float(np.mean(mt[s])), sig, sig / math.sqrt(2.0 * (n - 1))))
    if len(pts) < 2:
        return None
    x, y, e = (np.array(v) for v in zip(*pts))
    w = 1.0 / e**2
    sw, sx, sy = w.sum(), (w * (x - lo)).sum(), (w * y).sum()
    sxx, sxy = (w * (x - lo) ** 2).sum(), (w * (x - lo) * y).sum()
    det = sw * sxx - sx * sx
    if det <= 0:
        return None
    b = (sw * sxy - sx * sy) / det
    a = (sy - b * sx) / sw
    return Resolution(a=float(a), b=float(b), m_ref=float(lo), floor=0.25 * float(np.min(y)),
                      source="truth", points=tuple(pts))


# ---------------------------------------------------------------------------------------
# candidate tables


@dataclass
class CandidateSet:
    """Candidates of several tables, with expected-count weights at the target luminosity.

    Attributes
    ----------
    channel : ndarray of str
    m_ll : ndarray
        Candidate mass [GeV] (after the selection's kinematic fit).
    m_true : ndarray
        Truth mass of the matched pair [GeV] (NaN if unknown).
    weight : ndarray
        Expected events per candidate at ``luminosity_invnb``.
    scaled : bool
        True if any table is Monte Carlo whose luminosity differs from the target (weights
        were rescaled; the spectrum is then an expectation, not a Poisson sample).
    notes : list of str
        Human-readable provenance and scaling notes (one per table).
    metadata : list of dict
        The tables' isrsim metadata.
    """

    channel: np.ndarray
    m_ll: np.ndarray
    m_true: np.ndarray
    weight: np.ndarray
    luminosity_invnb: float | None
    scaled: bool
    notes: list[str]
    metadata: list[dict[str, Any]]

    def select(self, channel: str) -> np.ndarray:
        """Boolean mask of the candidates of ``channel``."""
        return self.channel == channel

    @property
    def channels(self) -> list[str]:
        """Channels present, in a fixed order (mumu first, then ee, then others sorted)."""
        present = set(np.unique(self.channel).tolist())
        order = [c for c in ("mumu", "ee") if c in present]
        return order + sorted(present - set(order))


def _meta_value(meta: dict[str, Any], key: str) -> Any:
    if key == "sqrt_s_GeV":
        beam = meta.get("beam") or {}
        v = beam.get("sqrt_s_GeV")
        return None if v is None else round(float(v), 4)
    if key == "detector":
        det = meta.get("detector")
        return det.get("name") if isinstance(det, dict) else det
    return meta.get(key)


def _table_scale(meta: dict[str, Any], n_rows_weight_sum: float, lumi: float | None,
                 path: str) -> tuple[float, bool, str]:
    """Factor turning the table's ``weight`` column into expected events at ``lumi``."""
    weighted = bool(meta.get("weighted", False))
    proc = meta.get("process", "?")
    if weighted:
        # weights in nb per event (runner contract): expected events = w * L
        if lumi is None:
            msg = f"{path}: weighted Monte Carlo (weights in nb) needs --luminosity to give event counts"
            raise ConfigError(msg)
        return lumi, True, f"{path}: weighted MC ({proc}), weights [nb] x L = {lumi:.4g}/nb"
    l_mc = meta.get("luminosity_invnb") or meta.get("equivalent_luminosity_invnb")
    if lumi is None or not l_mc:
        return 1.0, False, f"{path}: {proc}, candidates counted as observed events"
    scale = float(lumi) / float(l_mc)
    if abs(scale - 1.0) < 1e-6:
        return 1.0, False, f"{path}: {proc} at the target luminosity ({lumi:.4g}/nb), used as pseudo-data"
    return scale, True, (f"{path}: {proc} MC luminosity {float(l_mc):.4g}/nb differs from the target "
                         f"{lumi:.4g}/nb: expected counts scaled by {scale:.4g}")


def read_candidate_tables(paths: Sequence[str | os.PathLike[str]], *,
                          luminosity_invnb: float | None = None,
                          channels: Sequence[str] | None = None) -> CandidateSet:
    """Read candidate tables and weight them to expected events at ``luminosity_invnb``.

    Per table: weighted MC (metadata ``weighted``) -> weight [nb] x L; unweighted MC with
    ``luminosity_invnb`` or ``equivalent_luminosity_invnb`` in its metadata -> weight x
    L / L_MC (no scaling when they agree); otherwise the candidates are observed events.

    Raises
    ------
    InputFileError
        Missing, unreadable, empty or mismatched tables (different selection, beam energy
        or detector), or tables without the columns ``channel``, ``m_ll``.
    """

    from ..io import read_metadata, read_table

    if not paths:
        msg = "no candidate tables given"
        raise InputFileError(msg)
    if luminosity_invnb is not None and not (np.isfinite(luminosity_invnb) and luminosity_invnb > 0):
        msg = f"luminosity = {luminosity_invnb} nb^-1 must be > 0"
        raise ConfigError(msg)
    chans, masses, truths, weights, notes, metas = [], [], [], [], [], []
    scaled = False
    ref: dict[str, Any] | None = None
    ref_path = ""
    for p in paths:
        path = str(p)
        if not Path(path).exists():
            msg = f"candidate table {path!r} does not exist"
            raise InputFileError(msg)
        meta = read_metadata(path)
        table = read_table(path)  # page checksums verified: bit rot is an error, not new physics
        missing = {"channel", "m_ll"} - set(table.column_names)
        if missing:
            msg = (f"{path!r} is not a candidate table: missing column(s) {sorted(missing)} "
                   "(run 'isrsim reconstruct' first)")
            raise InputFileError(msg)
        if table.num_rows == 0:
            msg = f"candidate table {path!r} is empty (no selected candidates)"
            raise InputFileError(msg)
        if ref is None:
            ref, ref_path = meta, path
        else:
            for key in _MATCH_KEYS:
                a, b = _meta_value(ref, key), _meta_value(meta, key)
                if a is not None and b is not None and a != b:
                    msg = (f"candidate tables do not match: {key} = {a!r} in {ref_path!r} but "
                           f"{b!r} in {path!r}")
                    raise InputFileError(msg)
        ch, m, w, mt = _candidate_columns(table, path)
        scale, sc, note = _table_scale(meta, float(w.sum()), luminosity_invnb, path)
        scaled |= sc
        chans.append(ch)
        masses.append(m)
        truths.append(mt)
        weights.append(w * scale)
        notes.append(note)
        metas.append(meta)
    cs = CandidateSet(np.concatenate(chans), np.concatenate(masses), np.concatenate(truths),
                      np.concatenate(weights), luminosity_invnb, scaled, notes, metas)
    if channels is not None:
        keep = np.isin(cs.channel, list(channels))
        if not keep.any():
            msg = f"no candidates in channels {list(channels)}; tables hold {cs.channels}"
            raise InputFileError(msg)
        cs = CandidateSet(cs.channel[keep], cs.m_ll[keep], cs.m_true[keep], cs.weight[keep],
                          cs.luminosity_invnb, cs.scaled, cs.notes, cs.metadata)
    if not np.all(np.isfinite(cs.weight)):
        msg = "candidate weights contain non-finite values"
        raise InputFileError(msg)
    return cs


#: Channels the candidate tables may hold (isrsim.reco.selection writes these).
CANDIDATE_CHANNELS = ("mumu", "ee")


def _candidate_columns(table: Any, path: str) -> tuple[np.ndarray, ...]:
    """(channel, m_ll, weight, truth_m) of a candidate table, checked: string channels among
    :data:`CANDIDATE_CHANNELS`, numeric columns, finite masses in [0, 1 TeV), finite
    non-negative weights (truth_m may be NaN: not truth-matched)."""
    import pyarrow as pa

    def numeric(name: str, default: float) -> np.ndarray:
        if name not in table.column_names:
            return np.full(table.num_rows, default)
        col = table.column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            msg = f"candidate table {path!r}: column {name!r} has type {col.type}; allowed: numbers"
            raise InputFileError(msg)
        return col.to_numpy(zero_copy_only=False).astype(np.float64)

    col = table.column("channel")
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            or pa.types.is_dictionary(col.type)):
        msg = f"candidate table {path!r}: column 'channel' has type {col.type}; allowed: strings"
        raise InputFileError(msg)
    ch = np.asarray(col.to_pylist(), dtype=object).astype(str)
    bad = sorted(str(x) for x in set(np.unique(ch)) - set(CANDIDATE_CHANNELS))
    if bad:
        msg = f"candidate table {path!r}: channel(s) {bad}; allowed: {list(CANDIDATE_CHANNELS)}"
        raise InputFileError(msg)
    m = numeric("m_ll", np.nan)
    w = numeric("weight", 1.0)
    mt = numeric("truth_m", np.nan)
    if not np.all(np.isfinite(m) & (m >= 0) & (m < 1000.0)):
        msg = (f"candidate table {path!r}: m_ll has non-finite or out-of-range values; allowed: "
               "0 <= m_ll < 1000 GeV")
        raise InputFileError(msg)
    if not np.all(np.isfinite(w) & (w >= 0)):
        msg = (f"candidate table {path!r}: weight has non-finite or negative values; allowed: "
               "finite weights >= 0")
        raise InputFileError(msg)
    return ch, m, w, mt


# ---------------------------------------------------------------------------------------
# card validation (every workflow checks its whole card before any work or output)


def check_int(field: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer in [lo, hi] (a float such as 6.0 that is one is accepted; 6.5, a string or a
    bool is not): ConfigError ``field = value is invalid: allowed ...`` otherwise."""
    from ..config import _int

    return _int(field, value, lo, hi)


def check_float(field: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, allowed: str | None = None) -> float:
    """A finite number in the range (not a string or bool): see
    :func:`isrsim.processes.base.check_number`."""
    from ..processes.base import check_number

    return check_number(field, value, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, allowed=allowed)


def check_choice(field: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        msg = f"{field} = {value!r} is invalid: allowed {', '.join(choices)}"
        raise ConfigError(msg)
    return value


def check_number_list(field: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                      lo_open: bool = False, hi_open: bool = False, min_len: int = 1,
                      what: str = "numbers") -> list[float]:
    """A list of at least ``min_len`` finite numbers in the range."""
    if not isinstance(value, (list, tuple)) or len(value) < min_len:
        msg = f"{field} = {value!r} is invalid: allowed a list of at least {min_len} {what}"
        raise ConfigError(msg)
    return [check_float(f"{field}[{i}]", v, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)
            for i, v in enumerate(value)]


def check_mass_windows(field: str, value: Any) -> list[tuple[float, float]]:
    """A list of [lo, hi] windows [GeV] with 0 <= lo < hi (e.g. masked resonances)."""
    allowed = "a list of [MIN, MAX] windows in GeV with 0 <= MIN < MAX, e.g. [[2.95, 3.20]]"
    if not isinstance(value, (list, tuple)):
        msg = f"{field} = {value!r} is invalid: allowed {allowed}"
        raise ConfigError(msg)
    out = []
    for i, w in enumerate(value):
        if not isinstance(w, (list, tuple)) or len(w) != 2:
            msg = f"{field}[{i}] = {w!r} is invalid: allowed {allowed}"
            raise ConfigError(msg)
        a = check_float(f"{field}[{i}][0]", w[0], lo=0.0, allowed=allowed)
        b = check_float(f"{field}[{i}][1]", w[1], lo=0.0, allowed=allowed)
        if not a < b:
            msg = f"{field}[{i}] = {w!r} is invalid (empty or inverted window): allowed {allowed}"
            raise ConfigError(msg)
        out.append((a, b))
    return out


def check_channels(field: str, value: Any) -> list[str]:
    """A non-empty list of candidate channels (:data:`CANDIDATE_CHANNELS`), each once."""
    allowed = f"a non-empty list of channels among {list(CANDIDATE_CHANNELS)}, e.g. ['mumu', 'ee']"
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(c, str) or c not in CANDIDATE_CHANNELS for c in value)
            or len(set(value)) != len(value)):
        msg = f"{field} = {value!r} is invalid: allowed {allowed}"
        raise ConfigError(msg)
    return list(value)


def check_process_name(field: str, value: Any) -> str:
    """A process name of the registry (:data:`isrsim.processes.PROCESS_NAMES`)."""
    from ..processes import PROCESS_NAMES

    if not isinstance(value, str) or value not in PROCESS_NAMES:
        msg = f"{field} = {value!r} is invalid: allowed {', '.join(PROCESS_NAMES)}"
        raise ConfigError(msg)
    return value


def check_output_dir(output: Any) -> Path:
    """The output directory of a workflow: a path that is not an existing file (checked before
    any work; the directory is created only when the work starts)."""
    if not isinstance(output, (str, os.PathLike)) or not str(output):
        msg = f"output = {output!r} is invalid: allowed a directory path"
        raise ConfigError(msg)
    out = Path(output)
    if out.exists() and not out.is_dir():
        msg = f"output = {str(out)!r} is an existing file: allowed a directory path"
        raise OutputError(msg)
    return out


def merge_workflow_card(args: Any, defaults: dict[str, Any], bundled: str, what: str,
                        flags: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Defaults <- card ([run] and [analysis] tables; ``--card`` or the bundled ``bundled``)
    <- command-line flags (``(attribute, key)`` pairs, applied when not None). Unknown sections
    or keys are ConfigErrors naming the card table; ``output`` is always accepted."""
    from ..config import bundled_card, load_card

    card = load_card(args.card) if getattr(args, "card", None) else bundled_card(bundled)
    cfg = dict(defaults)
    unknown = set(card) - {"run", "analysis"}
    if unknown:
        msg = f"{what} card: unknown section(s) {sorted(unknown)}; allowed [run], [analysis]"
        raise ConfigError(msg)
    for sec in ("run", "analysis"):
        table = card.get(sec) or {}
        if not isinstance(table, dict):
            msg = f"{what} card [{sec}] = {table!r} is invalid: allowed a table"
            raise ConfigError(msg)
        for k, v in table.items():
            if k != "output" and k not in defaults:
                msg = f"{what} card [{sec}]: unknown key {k!r}; allowed {sorted(defaults)} (and output)"
                raise ConfigError(msg)
            cfg[k] = v
    for flag, key in flags:
        v = getattr(args, flag, None)
        if v is not None:
            cfg[key] = v
    return cfg
