"""Issue 10 item 6: property-based tests (hypothesis, bounded by the profile chosen with
``HYPOTHESIS_PROFILE``, see conftest.py). Random invalid run cards, card texts and detector
files always give ConfigError/IsrsimError (never another exception); random valid run cards and
random valid detector files always give a readable file with the requested events."""

from __future__ import annotations

import copy
import math
import re
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from isrsim.config import build_spec, load_card
from isrsim.constants import M_E, M_MU, M_PI
from isrsim.exceptions import ConfigError, IsrsimError
from isrsim.io import content_hash, read_events
from isrsim.runner import run

from .conftest import BASE_CARD

# ---------------------------------------------------------------------------------------------
# invalid run cards
# ---------------------------------------------------------------------------------------------
junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(-10, 10), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(-3, 3), max_size=3),
)


def _paths(card: dict, prefix=()) -> list[tuple]:
    out = []
    for k, v in card.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


CARD_WITH_EVERYTHING = {
    "run": {"process": "isr_mumu", "events": 100, "seed": 3, "output": "x.parquet", "chunk_size": 10_000,
            "workers": 1, "weighted": False, "compression": "zstd", "progress": False, "resume": False},
    "beam": {"sqrt_s": 3.773, "crossing_half_angle": 0.011, "sqrt_s_spread": 0.001,
             "sigma_xyz_cm": [0.01, 0.001, 1.0]},
    "process": {"mass_range": [1.5, 3.4], "radiator": "kf", "grid_points": 512,
                "photon_cut": {"mode": "untagged", "theta_max": 0.3}},
}
FIELD_PATHS = _paths(CARD_WITH_EVERYTHING)


def _set(card: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        card = card[k]
    card[path[-1]] = value


def _delete(card: dict, path: tuple) -> None:
    for k in path[:-1]:
        card = card[k]
    del card[path[-1]]


@given(path=st.sampled_from(FIELD_PATHS), value=junk)
def test_random_field_values_never_crash(path, value):
    """Any value in any field: a valid spec or a one-line IsrsimError naming the problem."""
    card = copy.deepcopy(CARD_WITH_EVERYTHING)
    _set(card, path, value)
    try:
        build_spec(card)
    except IsrsimError as exc:
        assert "\n" not in str(exc)
        assert str(exc)


@given(path=st.sampled_from(FIELD_PATHS))
def test_deleted_fields_never_crash(path):
    card = copy.deepcopy(CARD_WITH_EVERYTHING)
    _delete(card, path)
    required = {("run",), ("run", "process"), ("run", "events"), ("run", "output"), ("beam",),
                ("beam", "sqrt_s"), ("process",), ("process", "mass_range"),
                ("process", "photon_cut", "mode"), ("process", "photon_cut", "theta_max")}
    if path in required:
        with pytest.raises(IsrsimError):
            build_spec(card)
    else:
        build_spec(card)


@given(section=st.sampled_from([(), ("run",), ("beam",), ("process",), ("process", "photon_cut")]),
       key=st.text(min_size=1, max_size=10), value=junk)
def test_unknown_keys_are_refused(section, key, value):
    card = copy.deepcopy(CARD_WITH_EVERYTHING)
    table = card
    for k in section:
        table = table[k]
    assume(key not in table and key not in {"conversions", "project", "analysis"})
    table[key] = value
    with pytest.raises(IsrsimError, match="unknown"):
        build_spec(card)


@given(section=st.sampled_from(["run", "beam", "process", "conversions", "project", "analysis"]),
       value=junk.filter(lambda v: not isinstance(v, dict)))
def test_non_table_sections_are_refused(section, value):
    card = copy.deepcopy(CARD_WITH_EVERYTHING)
    card[section] = value
    with pytest.raises(ConfigError):
        build_spec(card)


VALID_CARD_TEXT = """
[run]
process = "isr_mumu"
events = 100
output = "x.parquet"
[beam]
sqrt_s = 3.773
[process]
mass_range = [1.5, 3.4]
photon_cut = { mode = "untagged", theta_max = 0.3 }
"""


@given(data=st.data())
def test_random_card_text_never_crashes(data, tmp_path_factory):
    """Random edits of a card's text (delete/insert/replace characters, truncate)."""
    text = VALID_CARD_TEXT
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
        if op == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 5)):]
        elif op == "insert":
            text = text[:i] + data.draw(st.text(alphabet='[]{}=",.#\n -0123456789eaxnf', max_size=5)) + text[i:]
        else:
            text = text[:i]
    path = tmp_path_factory.mktemp("card") / "card.toml"
    path.write_text(text)
    try:
        build_spec(load_card(path))
    except IsrsimError as exc:
        assert "\n" not in str(exc).strip() or "TOML" in str(exc)


# ---------------------------------------------------------------------------------------------
# valid run cards -> readable files
# ---------------------------------------------------------------------------------------------
THRESHOLD = {"isr_mumu": 2 * M_MU, "isr_ee": 2 * M_E, "isr_pipi": 2 * M_PI}


@st.composite
def valid_cards(draw):
    process = draw(st.sampled_from(sorted(THRESHOLD)))
    detector = draw(st.sampled_from([None, None, "besiii", "belle2"]))
    if detector == "besiii":
        sqrt_s = 3.773
    elif detector == "belle2":
        sqrt_s = 2 * math.sqrt(7.0 * 4.0)  # 7 on 4 GeV head-on (crossing angle small)
    else:
        sqrt_s = draw(st.floats(1.2, 11.0))
    lo_lim = max(THRESHOLD[process], 0.3) * 1.01
    hi_lim = 0.9 * sqrt_s
    a = draw(st.floats(lo_lim, hi_lim - 0.1))
    b = draw(st.floats(a + 0.05, hi_lim))
    cut = draw(st.sampled_from(["all", "untagged", "tagged"]))
    if cut == "all":
        photon_cut = {"mode": "all"}
    elif cut == "untagged":
        photon_cut = {"mode": "untagged", "theta_max": draw(st.floats(0.02, 1.5))}
    else:
        t1 = draw(st.floats(0.1, 2.5))
        photon_cut = {"mode": "tagged", "theta_min": t1, "theta_max": draw(st.floats(t1 + 0.05, 3.0))}
    dataset = draw(st.booleans())
    run_cfg = {"process": process, "events": draw(st.integers(1, 2500)),
               "seed": draw(st.integers(0, 2**63 - 1)), "chunk_size": draw(st.sampled_from([10_000, 20_000])),
               "weighted": draw(st.booleans()), "progress": False,
               "compression": draw(st.sampled_from(["zstd", "snappy", "lz4", "gzip", "none"])),
               "output": "out" if dataset else "out.parquet"}
    card = {"run": run_cfg, "process": {"mass_range": [a, b], "photon_cut": photon_cut,
                                        "radiator": draw(st.sampled_from(["kf", "lo"]))}}
    if detector is None:
        card["beam"] = {"sqrt_s": sqrt_s}
    else:
        run_cfg["detector"] = detector
    return card


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(card=valid_cards())
def test_random_valid_cards_give_readable_files(card, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("valid")
    card["run"]["output"] = str(out_dir / card["run"]["output"])
    try:
        spec = build_spec(card)
    except ConfigError as exc:  # the sampled window can miss a process-specific limit
        assume("mass_range" not in str(exc))
        raise
    res = run(spec)
    ev, meta = read_events(res.output, require_process=card["run"]["process"])
    n = card["run"]["events"]
    assert len(ev) == n == meta["n_events"]
    assert np.array_equal(ev.event_id.to_numpy(), np.arange(n))
    w = ev.weight.to_numpy()
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    if not card["run"]["weighted"]:
        assert np.all(w == 1.0)
    assert ("tracks" in ev.fields) == ("detector" in card["run"])
    assert meta["cross_section_nb"] > 0
    assert len(content_hash(res.output)) == 64


# ---------------------------------------------------------------------------------------------
# detector files
# ---------------------------------------------------------------------------------------------
DET_TEXT = (resources.files("isrsim") / "detectors" / "besiii.toml").read_text()
DET_LINES = DET_TEXT.splitlines(keepends=True)
ASSIGN = [i for i, line in enumerate(DET_LINES) if re.match(r"^\s*[A-Za-z_][\w]*\s*=\s*[^\[]", line)]
NUMERIC = [i for i in ASSIGN if re.match(r"^\s*\w+\s*=\s*-?[\d.]+(e-?\d+)?\s*(#.*)?$", DET_LINES[i])]
toml_junk = st.sampled_from(["-1", "0", "1e400", "-1e-300", "nan", "inf", "-inf", '"x"', "true", "[]",
                             "[1, 2]", "{}", "1000000", "0.5", "", "=", "[[", '"', "1 2"])


def _load_text(text: str):
    from isrsim.detector import load_detector

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "det.toml"
        p.write_text(text)
        return load_detector(p)


def _simulate_small(det) -> None:
    """Simulation of 300 ISR mu mu events with ``det`` gives finite, writable output."""
    from isrsim.detector.simulate import simulate
    from isrsim.io import chunk_to_table
    from isrsim.processes import make_process

    hi = 0.9 * det.beam.sqrt_s
    proc = make_process("isr_mumu", det.beam, mass_range=[0.5, hi])
    truth, _ = proc.sample(np.random.default_rng(5), 300, weighted=False)
    reco = simulate(truth, det, np.random.default_rng(6))
    assert chunk_to_table(truth, 0, "isr_mumu", reco).num_rows == 300


@given(line=st.sampled_from(ASSIGN), value=toml_junk)
def test_random_detector_value_never_crashes(line, value):
    """Replace one value of the BESIII file: either ConfigError, or a detector that simulates."""
    lines = list(DET_LINES)
    key = lines[line].split("=", 1)[0]
    lines[line] = f"{key}= {value}\n"
    try:
        det = _load_text("".join(lines))
    except ConfigError as exc:
        assert str(exc)
        return
    _simulate_small(det)


@given(data=st.data())
def test_random_detector_edits_never_crash(data):
    """Delete lines or truncate the file: ConfigError or a working detector."""
    lines = list(DET_LINES)
    for _ in range(data.draw(st.integers(1, 3))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        if data.draw(st.booleans()):
            del lines[i]
        else:
            lines = lines[:i]
    try:
        det = _load_text("".join(lines))
    except ConfigError:
        return
    _simulate_small(det)


@given(data=st.data())
def test_random_valid_detector_files_simulate(data):
    """Scale numeric detector parameters by factors in [0.5, 2]; whenever the loader accepts the
    file, a short generation + simulation gives a readable file."""
    lines = list(DET_LINES)
    for i in data.draw(st.lists(st.sampled_from(NUMERIC), min_size=1, max_size=6, unique=True)):
        key, rest = lines[i].split("=", 1)
        number = rest.split("#")[0].strip()
        factor = data.draw(st.floats(0.5, 2.0))
        lines[i] = f"{key}= {float(number) * factor!r}\n"
    try:
        det = _load_text("".join(lines))
    except ConfigError:
        assume(False)
    with tempfile.TemporaryDirectory() as d:
        dpath = Path(d) / "det.toml"
        dpath.write_text("".join(lines))
        out = Path(d) / "o.parquet"
        run(build_spec({"run": {"process": "isr_mumu", "events": 400, "detector": str(dpath),
                                "output": str(out), "progress": False},
                        "process": {"mass_range": [1.0, 0.9 * det.beam.sqrt_s]}}))
        ev, meta = read_events(out)
        assert len(ev) == 400 and "tracks" in ev.fields
        assert meta["detector"]["sha256"] == det.sha256


def test_base_card_is_valid():
    """The fixtures' reference card itself passes (guards the property tests above)."""
    build_spec(copy.deepcopy(BASE_CARD))
    build_spec(copy.deepcopy(CARD_WITH_EVERYTHING))
    assert len(NUMERIC) > 40 and len(ASSIGN) > len(NUMERIC)
