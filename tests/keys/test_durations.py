"""Durations as the wire carries them, and the TTL bounds."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidArgument
from gateway.keys.durations import MAX_TTL_S, format_seconds, parse_duration, parse_ttl


@pytest.mark.parametrize(("text", "seconds"), [
    ("3600s", 3600),
    ("1s", 1),
    ("24h", 86_400),
    ("30m", 1800),
    ("1h30m", 5400),
    ("1.5h", 5400),
    ("1d", 86_400),
    ("1w", 604_800),
    ("1mo", 30 * 86_400),
    ("1y", 365 * 86_400),
    ("1d12h", 86_400 + 12 * 3600),
    ("+5s", 5),
    ("315360000s", MAX_TTL_S),
    ("10y", MAX_TTL_S),
])
def test_ttl_accepts_protobuf_go_and_calendar_units(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0.5s", "0.9999999999s", "999ms", "11y", "315360001s"])
def test_ttl_outside_one_second_to_ten_years_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="out of range"):
        parse_ttl(text)


@pytest.mark.parametrize("text", ["-1s", "-1h30m"])
def test_negative_ttl_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        parse_ttl(text)


@pytest.mark.parametrize("text", ["abc", "3600", "1e3s", "5 s", "1h 30m", "1h-30m", "1M",
                                  "1Y", "s", "1x", "--1s"])
def test_text_that_is_not_a_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not a duration") as info:
        parse_ttl(text)
    assert "ttl" in info.value.message and "3600s" in info.value.message


@pytest.mark.parametrize("value", [None, "", "0", "0s", "-0s"])
def test_unset_or_zero_ttl_means_the_default(value: object) -> None:
    assert parse_ttl(value) is None


@pytest.mark.parametrize("value", [3600, 1.5, ["1h"], {"seconds": 1}])
def test_a_duration_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidArgument, match="expected a duration string"):
        parse_ttl(value)


def test_errors_name_the_field_they_are_about() -> None:
    with pytest.raises(InvalidArgument, match=r"^rate_limit_policy\.window: "):
        parse_duration("soon", "rate_limit_policy.window")


def test_sub_second_durations_are_exact() -> None:
    assert parse_duration("1500ms", "d") == 1.5
    assert parse_duration("1h0.5s", "d") == 3600.5


def test_format_seconds_is_the_canonical_protobuf_form() -> None:
    assert format_seconds(60) == "60s"
    assert parse_duration(format_seconds(86_400), "d") == 86_400
