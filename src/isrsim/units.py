"""Units: isrsim's base units are GeV, cm, ns and nb (cross sections).

Define dimensioned values by multiplying by a unit and report them by dividing
(``lumi = 314 * invfb``; ``sigma / pb``), so storage units never leak into user code.
"""

from __future__ import annotations

import re

from .exceptions import ConfigError

__all__ = [
    "GeV", "MeV", "keV", "TeV", "cm", "mm", "um", "m", "ns", "ps",
    "nb", "pb", "fb", "ab", "invnb", "invpb", "invfb", "invab",
    "parse_luminosity", "format_luminosity",
]

GeV = 1.0
MeV = 1e-3
keV = 1e-6
TeV = 1e3
cm = 1.0
mm = 0.1
um = 1e-4
m = 100.0
ns = 1.0
ps = 1e-3
nb = 1.0
pb = 1e-3
fb = 1e-6
ab = 1e-9
invnb = 1.0
invpb = 1e3
invfb = 1e6
invab = 1e9

_LUMI_UNITS = {"nb": invnb, "pb": invpb, "fb": invfb, "ab": invab}
_LUMI_RE = re.compile(r"^\s*([0-9.eE+-]+)\s*(?:/|\s*inv)\s*(nb|pb|fb|ab)\s*$")


def parse_luminosity(text: str | float, *, field: str = "luminosity") -> float:
    """Convert a luminosity such as ``"314/fb"``, ``"2.93/fb"`` or ``"1/ab"`` to nb^-1.

    A bare number is taken to be in nb^-1. Raises :class:`ConfigError` naming ``field``
    for malformed or non-positive values.
    """
    if isinstance(text, bool):
        msg = f"{field} = {text!r} is not a luminosity; write e.g. '2.93/fb', '314/fb', '1/ab'"
        raise ConfigError(msg)
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:  # an integer beyond the float range
            value = float("inf")
    else:
        match = _LUMI_RE.match(str(text))
        if match is None:
            try:
                value = float(text)
            except ValueError:
                msg = (f"{field} = {text!r} is not a luminosity; write e.g. '2.93/fb', "
                       "'314/fb', '1/ab' (units nb, pb, fb, ab)")
                raise ConfigError(msg) from None
        else:
            try:
                value = float(match.group(1)) * _LUMI_UNITS[match.group(2)]
            except ValueError:
                msg = f"{field} = {text!r}: cannot read the number {match.group(1)!r}"
                raise ConfigError(msg) from None
    if not value > 0 or value != value or value == float("inf"):
        msg = f"{field} = {text!r} must be a finite luminosity > 0"
        raise ConfigError(msg)
    return value


def format_luminosity(lumi_invnb: float) -> str:
    """Human-readable form of a luminosity in nb^-1, e.g. ``'314/fb'``."""
    for unit, scale in (("ab", invab), ("fb", invfb), ("pb", invpb)):
        if lumi_invnb >= scale:
            return f"{lumi_invnb / scale:g}/{unit}"
    return f"{lumi_invnb:g}/nb"
