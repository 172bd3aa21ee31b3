"""Durations as the wire carries them: ``3600s``, Go style ``1h30m``, and ``d``/``w``/``mo``/``y``.

Go-style strings (``[+-]`` then one or more ``<decimal><unit>``, units ns us µs ms s m h) are
parsed exactly here, together with the calendar units Go lacks (d, w, 1mo = 30d, 1y = 365d).
Arithmetic is exact (fractions), so ``0.9999999s`` stays below one second.
"""

from __future__ import annotations

import re
from fractions import Fraction

from gateway.errors import InvalidArgument

MIN_TTL_S = 1
MAX_TTL_S = 315_360_000
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:ns|us|\u00b5s|\u03bcs|ms|s|mo|m|h|d|w|y)"
_DURATION = re.compile(rf"([+-]?)((?:{_NUMBER}{_UNIT})+)")
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_UNIT_S = {"ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "\u00b5s": Fraction(1, 10**6),
           "\u03bcs": Fraction(1, 10**6), "ms": Fraction(1, 1000), "s": Fraction(1),
           "m": Fraction(60), "h": Fraction(3600), "d": Fraction(86_400),
           "w": Fraction(604_800), "mo": Fraction(2_592_000), "y": Fraction(31_536_000)}


def parse_duration(value: object, field: str) -> float:
    """Seconds in ``value``; raises InvalidArgument naming ``field``."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a duration string such as \"3600s\"")
    text = value.strip()
    match = _DURATION.fullmatch(text)
    if text == "0":
        return 0.0
    if match is None or len(text) > 64:
        raise InvalidArgument(
            f"{field}: {value!r} is not a duration (use e.g. \"3600s\", \"24h\", \"1h30m\", "
            "\"1d\", \"1w\", \"1mo\", \"1y\")"
        )
    seconds = sum((Fraction(number) * _UNIT_S[unit]
                   for number, unit in _PART.findall(match.group(2))), Fraction(0))
    if match.group(1) == "-" and seconds:
        raise InvalidArgument(f"{field}: must not be negative")
    return float(seconds)


def parse_ttl(value: object, field: str = "ttl") -> float | None:
    """A TTL within 1s … 315360000s; ``None`` when unset or zero."""
    if value is None or value == "":
        return None
    seconds = parse_duration(value, field)
    if seconds == 0:
        return None
    if not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise InvalidArgument(
            f"{field}: {value!r} is out of range; allowed 1s to {MAX_TTL_S}s"
        )
    return seconds


def format_seconds(seconds: int) -> str:
    return f"{seconds}s"
