"""Units and luminosity strings (src/isrsim/units.py).

Independent values: the SI prefixes (1 b = 1e-24 cm^2; nano, pico, femto, atto = 1e-9 ... 1e-18),
so 1 fb^-1 = 1e6 nb^-1 and 1 ab^-1 = 1e9 nb^-1; the BESIII psi(3770) sample of 2.93 fb^-1
(arXiv:1705.04265) and the Belle II target of 50 ab^-1.
"""

from __future__ import annotations

import pytest

from isrsim import units
from isrsim.exceptions import ConfigError
from isrsim.units import format_luminosity, parse_luminosity


@pytest.mark.parametrize(("text", "invnb"), [
    ("2.93/fb", 2.93e6), ("314/fb", 3.14e8), ("1/ab", 1e9), ("50/ab", 5e10), ("0.5/pb", 500.0),
    ("12 /nb", 12.0), ("1 invfb", 1e6), ("2.5e3", 2.5e3), (4.0e6, 4.0e6),
])
def test_parse_luminosity_prefixes(text, invnb):
    """Exact powers of ten (rel 1e-12: float parsing only)."""
    assert parse_luminosity(text) == pytest.approx(invnb, rel=1e-12)


def test_unit_constants_are_si_prefixes():
    """Cross sections in nb and lengths in cm, energies in GeV: the prefixes are exact powers of
    ten, and a cross section times a luminosity is a number of events (1 pb x 1 fb^-1 = 1000)."""
    assert units.pb == pytest.approx(1e-3) and units.fb == pytest.approx(1e-6)
    assert units.ab == pytest.approx(1e-9)
    assert units.invab == pytest.approx(1e9) and units.invfb == pytest.approx(1e6)
    assert units.invpb == pytest.approx(1e3)
    assert 1.0 * units.pb * (1.0 * units.invfb) == pytest.approx(1000.0)
    assert units.MeV == pytest.approx(1e-3) and units.um == pytest.approx(1e-4)
    assert units.mm == pytest.approx(0.1) and units.m == pytest.approx(100.0)


@pytest.mark.parametrize(("invnb", "text"), [(2.93e6, "2.93/fb"), (1e9, "1/ab"), (3.14e8, "314/fb"),
                                             (500.0, "500/nb"), (2e3, "2/pb")])
def test_format_luminosity_round_trip(invnb, text):
    """The largest unit with a value >= 1, and parse_luminosity reads it back."""
    assert format_luminosity(invnb) == text
    assert parse_luminosity(format_luminosity(invnb)) == pytest.approx(invnb, rel=1e-12)


@pytest.mark.parametrize("bad", ["-1/fb", "0/ab", "abc", "1/mb", True, float("nan"), float("inf"), 0.0])
def test_bad_luminosity_names_the_field(bad):
    with pytest.raises(ConfigError, match="project.luminosity"):
        parse_luminosity(bad, field="project.luminosity")
