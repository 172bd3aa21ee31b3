"""Readers of request fields: each refusal names the field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidArgument
from gateway.keys import fields as f
from gateway.keys.model import RateLimit, Visibility


@pytest.mark.parametrize(("text", "us"), [
    ("1970-01-01T00:00:00Z", 0),
    ("2039-02-12T08:14:18.032902Z", 2_181_111_258_032_902),
    ("2039-02-12T08:14:18.032902+00:00", 2_181_111_258_032_902),
    ("2039-02-12T08:14:18.032902", 2_181_111_258_032_902),
    ("2039-02-12T09:14:18.032902+01:00", 2_181_111_258_032_902),
    ("2038-03-11T11:56:28.040096Z", 2_151_921_388_040_096),
])
def test_timestamps_parse_to_the_exact_microsecond(text: str, us: int) -> None:
    assert f.timestamp(text, "expire_time") == us


@pytest.mark.parametrize("value", ["tomorrow", "", 5, None])
def test_bad_timestamps_are_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"^expire_time: "):
        f.timestamp(value, "expire_time")


def test_unspecified_enum_reads_as_not_provided() -> None:
    assert f.enum_value({"v": "KEY_VISIBILITY_UNSPECIFIED"}, "v", Visibility) is None
    assert f.enum_value({}, "v", Visibility) is None
    assert f.enum_value({"v": "KEY_VISIBILITY_PUBLIC"}, "v", Visibility) is Visibility.PUBLIC


def test_unknown_enum_lists_the_allowed_values_but_not_unspecified() -> None:
    with pytest.raises(InvalidArgument) as info:
        f.enum_value({"v": "PUBLIC"}, "v", Visibility)
    assert "KEY_VISIBILITY_PUBLIC" in info.value.message
    assert "UNSPECIFIED" not in info.value.message


def test_scopes_are_deduplicated_in_order() -> None:
    assert f.string_list({"s": ["b", "a", "b"]}, "s") == ("b", "a")


@pytest.mark.parametrize(("policy", "expected"), [
    ({"quota": "100", "window": "60s"}, RateLimit(100, 60)),
    ({"quota": 100, "window": "1h", "unit": "requests"}, RateLimit(100, 3600)),
    ({}, None),
])
def test_rate_limit_policy_reads_int64_strings_and_durations(policy: dict[str, Any],
                                                             expected: RateLimit | None) -> None:
    assert f.rate_limit({"rate_limit_policy": policy}) == expected


@pytest.mark.parametrize("quota", ["9223372036854775808", "-1", "0", True, 1.5])
def test_rate_limit_quota_out_of_range_or_wrong_type_is_refused(quota: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"rate_limit_policy\.quota"):
        f.rate_limit({"rate_limit_policy": {"quota": quota, "window": "60s"}})


def test_cidrs_are_normalised_and_host_bits_refused() -> None:
    assert f.ip_restriction({"ip_restriction": {"allowed_cidrs": ["2001:DB8::/32"]}}) == (
        "2001:db8::/32",)
    with pytest.raises(InvalidArgument, match=r"allowed_cidrs\[0\]"):
        f.ip_restriction({"ip_restriction": {"allowed_cidrs": ["10.0.0.1/8"]}})


def test_metadata_limit_counts_serialized_bytes() -> None:
    at_limit = {"k": "\u00e9" * ((f.MAX_METADATA_BYTES - 8) // 2)}
    assert f.metadata({"metadata": at_limit}) == at_limit
    with pytest.raises(InvalidArgument, match=r"^metadata: "):
        f.metadata({"metadata": {"k": "\u00e9" * (f.MAX_METADATA_BYTES // 2)}})


def test_with_seq_copies_every_field_and_sets_seq() -> None:
    from dataclasses import fields

    from gateway.keys.model import ApiKey, Kind, RateLimit

    key = ApiKey(key_id="k", kind=Kind.IMPORTED, digest="d", create_time=1, update_time=2,
                 name="n", actor_id="a", scopes=("s",), metadata={"m": 1},
                 allowed_cidrs=("10.0.0.0/8",), rate_limit=RateLimit(5, 60), expire_time=3,
                 last_used_time=4, revoke_time=5, revocation_description="r",
                 request_id="q", request_fingerprint="f", seq=7)
    stored = key.with_seq(42)
    assert stored.seq == 42
    assert all(getattr(stored, f.name) == getattr(key, f.name)
               for f in fields(ApiKey) if f.name != "seq")
    assert stored == key.with_changes(seq=42)
