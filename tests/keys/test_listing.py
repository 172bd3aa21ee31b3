"""The list filter subset (AIP-160), page sizes and opaque page tokens."""

from __future__ import annotations

import base64

import pytest

from gateway.errors import InvalidArgument
from gateway.keys.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Filter,
    make_page_token,
    parse_filter,
    parse_page_size,
    parse_page_token,
)
from gateway.keys.model import KeyStatus


@pytest.mark.parametrize(("expression", "actor", "status"), [
    ('actor_id="user_123"', "user_123", None),
    ("actor_id=user_123", "user_123", None),
    ("status=KEY_STATUS_ACTIVE", None, KeyStatus.ACTIVE),
    ("status=KEY_STATUS_REVOKED", None, KeyStatus.REVOKED),
    ("status=KEY_STATUS_EXPIRED", None, KeyStatus.EXPIRED),
    ('status="KEY_STATUS_REVOKED"', None, KeyStatus.REVOKED),
    ("status=ACTIVE", None, KeyStatus.ACTIVE),
    ('actor_id="u1" AND status=KEY_STATUS_ACTIVE', "u1", KeyStatus.ACTIVE),
    ('  status = KEY_STATUS_REVOKED   AND  actor_id = "u1"  ', "u1", KeyStatus.REVOKED),
    (r'actor_id="say \"hi\""', 'say "hi"', None),
    ('actor_id="team OR ops"', "team OR ops", None),
    ('actor_id="a AND b" AND status=ACTIVE', "a AND b", KeyStatus.ACTIVE),
    ('actor_id="svc (prod)"', "svc (prod)", None),
    ('actor_id="NOT me"', "NOT me", None),
])
def test_filter_accepts_actor_and_status_terms_joined_by_and(
    expression: str, actor: str | None, status: KeyStatus | None
) -> None:
    flt = parse_filter(expression)
    assert (flt.actor_id, flt.status) == (actor, status)


@pytest.mark.parametrize("expression", [None, "", "   "])
def test_empty_filter_matches_everything(expression: str | None) -> None:
    assert parse_filter(expression) == Filter()


@pytest.mark.parametrize(("expression", "complaint"), [
    ('name="x"', "field 'name' cannot be filtered on"),
    ('actor_id="a" OR actor_id="b"', "only terms joined by AND"),
    ('NOT actor_id="a"', "only terms joined by AND"),
    ('-actor_id="a"', "only terms joined by AND"),
    ('(actor_id="a")', "only terms joined by AND"),
    ("status=KEY_STATUS_BOGUS", "status 'KEY_STATUS_BOGUS' is unknown"),
    ("status=KEY_STATUS_UNSPECIFIED", "is unknown"),
    ('actor_id!="a"', "operator '!=' is not supported"),
    ('actor_id:"a"', "operator ':' is not supported"),
    ('actor_id="a" AND actor_id="b"', "appears twice"),
    ('actor_id="a" and status=ACTIVE', "expected AND"),
    ('actor_id="a" AND', "AND must be followed by another term"),
    ("actor_id", "cannot parse"),
    ('actor_id="unterminated', "cannot parse"),
    ("x" * 2049, "longer than 2048"),
])
def test_bad_filter_is_refused_naming_the_problem(expression: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(expression)
    assert info.value.message.startswith("filter: ")
    assert complaint in info.value.message


@pytest.mark.parametrize(("raw", "size"), [
    (None, DEFAULT_PAGE_SIZE), ("0", DEFAULT_PAGE_SIZE),
    ("1", 1), ("1000", 1000), ("1001", MAX_PAGE_SIZE), ("999999", MAX_PAGE_SIZE),
])
def test_page_size_defaults_to_50_and_is_clamped_to_1000(raw: str | None, size: int) -> None:
    assert parse_page_size(raw) == size


@pytest.mark.parametrize("raw", ["-1", "ten", "1.5", ""])  # "": no integer at all
def test_bad_page_size_is_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        parse_page_size(raw)


def test_page_token_round_trips_the_position() -> None:
    flt = parse_filter('actor_id="u1"')
    assert parse_page_token(make_page_token(1234, flt), flt) == 1234


def test_no_page_token_means_the_first_page() -> None:
    assert parse_page_token(None, Filter()) == 0
    assert parse_page_token("", Filter()) == 0


def test_page_token_is_opaque_text() -> None:
    token = make_page_token(42, Filter())
    assert "42" not in token
    assert token.isascii() and "=" not in token


def test_page_token_from_another_filter_is_refused() -> None:
    token = make_page_token(7, parse_filter('actor_id="u1"'))
    with pytest.raises(InvalidArgument, match="different filter"):
        parse_page_token(token, parse_filter('actor_id="u2"'))


def _encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "garbage!", "AAAA", _encode("v2:5:" + Filter().fingerprint), _encode("v1:-5:"
                                                                       + Filter().fingerprint),
    _encode("v1:five:" + Filter().fingerprint), _encode("v1:5"), "\u00e9t\u00e9",
])
def test_page_token_not_made_here_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        parse_page_token(token, Filter())
