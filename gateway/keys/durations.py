"""Durations as the wire carries them: ``3600s``, Go style ``1h30m``, and ``d``/``w``/``mo``/``y``.

Go-style strings are parsed by durationpy; the calendar units (1mo = 30d, 1y = 365d) that
Go lacks are handled here.
"""

from __future__ import annotations

import re

import durationpy

from gateway.errors import InvalidArgument

MIN_TTL_S = 1
MAX_TTL_S = 315_360_000
_CALENDAR = re.compile(r"^(\d+)(d|w|mo|y)$")
_UNIT_S = {"d": 86_400, "w": 604_800, "mo": 2_592_000, "y": 31_536_000}


def parse_duration(value: object, field: str) -> float:
    """Seconds in ``value``; raises InvalidArgument naming ``field``."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a duration string such as \"3600s\"")
    text = value.strip()
    match = _CALENDAR.match(text)
    if match:
        return float(int(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        seconds = durationpy.from_str(text).total_seconds()
    except Exception:
        raise InvalidArgument(
            f"{field}: {value!r} is not a duration (use e.g. \"3600s\", \"24h\", \"1h30m\", "
            "\"1d\", \"1w\", \"1mo\", \"1y\")"
        ) from None
    if seconds < 0:
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
