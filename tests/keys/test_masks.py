"""Update masks parsed into whole fields and sub-paths (AIP-134, AIP-161 map keys)."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidArgument
from gateway.keys.masks import MUTABLE, Mask, merge, parse_mask


def test_an_omitted_mask_names_every_populated_field() -> None:
    body = {"name": "n", "scopes": [], "visibility": "KEY_VISIBILITY_UNSPECIFIED",
            "metadata": {"a": 1}}
    assert parse_mask(None, body) == parse_mask("  ", body) == Mask(("name", "metadata"))


def test_a_star_names_every_updatable_field() -> None:
    assert parse_mask("*", {}).fields == (*MUTABLE, "actor_id", "visibility")


def test_sub_paths_are_grouped_by_field_in_mask_order_without_repeats() -> None:
    mask = parse_mask("rate_limit_policy.window, name,metadata.b,metadata.`a.b`,"
                      "rate_limit_policy.quota,metadata.b", {})
    assert mask == Mask(("name",), {"rate_limit_policy": ("window", "quota"),
                                    "metadata": ("b", "a.b")})


def test_a_whole_field_absorbs_its_sub_paths() -> None:
    assert parse_mask("metadata.a,metadata,rate_limit_policy.quota", {}) == Mask(
        ("metadata",), {"rate_limit_policy": ("quota",)})


def test_the_only_field_of_a_message_names_the_whole_message() -> None:
    assert parse_mask("ip_restriction.allowed_cidrs", {}) == Mask(("ip_restriction",))


@pytest.mark.parametrize(("mask", "words"), [
    ("colour", ("unknown field", "'colour'")),
    ("update_time", ("output only",)),
    ("ip_restriction.cidrs", ("unknown field", "allowed_cidrs")),
    ("scopes.0", ("no subfields",)),
    ("metadata.`a`b`", ("backticks",)),
    ("metadata.9lives", ("backticks",)),
])
def test_bad_paths_are_refused_with_what_was_wrong(mask: str, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mask(mask, {})
    assert all(w in str(info.value) for w in ("update_mask", *words)), str(info.value)


def test_merge_sets_named_parts_clears_absent_ones_and_keeps_the_rest() -> None:
    current = {"a": 1, "b": 2, "c": 3}
    assert merge(current, {"a": 9, "z": 0}, ("a", "b"), "metadata") == {"a": 9, "c": 3}
    assert merge(None, None, ("a",), "metadata") == {}
    assert current == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(InvalidArgument, match="metadata: expected a JSON object"):
        merge(current, ["a"], ("a",), "metadata")
