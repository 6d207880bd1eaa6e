"""Physical durations with units on the command line (``10ps``, ``1ns``, ``2.5 us``)."""

from __future__ import annotations

import re

from starmd.errors import StarmdInputError

_TO_PS = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, "us": 1e6, "µs": 1e6}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]+)\s*$")


def parse_duration_ps(text: str, what: str = "--dt") -> float:
    """``"1ns"`` -> 1000.0 (picoseconds). A unit is required; the value must be > 0."""
    match = _PATTERN.match(str(text))
    if not match or match.group(2) not in _TO_PS:
        raise StarmdInputError(
            f"{what} {text!r}: expected a number with a unit ({', '.join(_TO_PS)}), e.g. 1ns"
        )
    value = float(match.group(1)) * _TO_PS[match.group(2)]
    if value <= 0:
        raise StarmdInputError(f"{what} {text!r}: must be > 0")
    return value


def format_ps(ps: float) -> str:
    """A short human-readable duration: 1000.0 -> '1 ns'."""
    for unit, scale in (("us", 1e6), ("ns", 1e3), ("ps", 1.0)):
        if ps >= scale:
            return f"{ps / scale:g} {unit}"
    return f"{ps * 1e3:g} fs"
