"""The batchVerify's cached-yes path in C (``gateway.cache._plain``) and its Python
fallbacks give the same answers and record the same uses, case by case."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import built

from gateway.cache import entry
from gateway.cache.entry import NOT_FOUND, Entry, _plain_answers
from gateway.cache.l1 import L1
from gateway.crypto import tokens
from gateway.http import l1_answers
from gateway.keys.fields import MAX_CREDENTIAL_LENGTH
from gateway.keys.model import RateLimit

try:
    from gateway.cache import _plain
except ImportError:  # not built (setup.py)
    _plain = None  # type: ignore[assignment]


def _native() -> Any:
    return built(_plain, "gateway.cache._plain",
                 "batchVerify would run its cached-yes loop in Python")


def _packed(key_id: str, *, expire_time: int | None = None, cidrs: tuple[str, ...] = (),
            rate_limit: RateLimit | None = None, revoked: bool = False) -> Any:
    e = Entry(key_id, "actor", ("read",), "VISIBILITY_PRIVATE", None, expire_time, revoked,
              cidrs, rate_limit)
    e.render("https://issuer.example")
    e.plain = not cidrs and rate_limit is None and not revoked
    return e.packed()


def _cases(now: float, wall_us: int) -> tuple[dict[str, Any], list[str]]:
    table: dict[str, Any] = {
        "plain": (now + 10, _packed("k-plain"), now + 20),
        "plain-2": (now + 10, _packed("k-two"), now + 20),
        "unexpired": (now + 10, _packed("k-later", expire_time=wall_us + 60_000_000), now + 20),
        # beyond a C long long: unexpired, as in Python
        "far-future": (now + 10, (True, 10**30, *_packed("k-far")[2:]), now + 20),
        "expired": (now + 10, _packed("k-expired", expire_time=wall_us - 1), now + 20),
        "due": (now - 1, _packed("k-due"), now + 20),
        "refresh-now": (now, _packed("k-edge"), now + 20),
        "gone": (now - 2, _packed("k-gone"), now),  # at its expiry in L1
        "due-limited": (now - 1, _packed("k-due-rl", rate_limit=RateLimit(5, 60, "minute")),
                        now + 20),
        "ip-bound": (now + 10, _packed("k-ip", cidrs=("10.0.0.0/8",)), now + 20),
        "limited": (now + 10, _packed("k-rl", rate_limit=RateLimit(5, 60, "minute")),
                    now + 20),
        "revoked": (now + 10, _packed("k-revoked", revoked=True), now + 20),
        "not-found": (now + 10, NOT_FOUND, now + 20),
        "none-value": (now + 10, None, now + 20),
    }
    return table, [*table, "absent", "plain", "plain-2", "plain"]


def test_native_answers_match_python_case_by_case() -> None:
    native = _native()
    now = time.monotonic()
    wall_us = time.time_ns() // 1000
    table, digests = _cases(now, wall_us)
    seen: list[tuple[Any, ...]] = []
    for answers in (native.answers, _plain_answers):
        # a later use recorded already is kept; an earlier one moves forwards
        used, valid, due = {"k-plain": now + 5, "k-two": now - 5}, {"k-plain": 7}, []
        left: list[int] = []
        seen.append((answers(table, digests, now, wall_us, used, valid, due, left), used,
                     valid, due, left))
    assert seen[0] == seen[1]
    out, used, valid, due, left = seen[0]
    assert left == [i for i, answer in enumerate(out) if answer is None]
    by_digest = dict(zip(digests, out, strict=True))
    answered = {d for d, a in by_digest.items() if a is not None}
    assert answered == {"plain", "plain-2", "unexpired", "far-future", "due", "refresh-now"}
    assert by_digest["plain"] == table["plain"][1][3] + table["plain"][1][4]
    assert due == ["due", "refresh-now"]  # answered at or past their refresh time
    assert used == {"k-plain": now + 5, "k-two": now, "k-later": now, "k-far": now,
                    "k-due": now, "k-edge": now}
    assert valid == {"k-plain": 10, "k-two": 2, "k-later": 1, "k-far": 1,  # 3 and 2 asks
                     "k-due": 1, "k-edge": 1}


def test_native_answers_leaves_what_it_does_not_recognise_to_python() -> None:
    native = _native()
    now = time.monotonic()
    table = {"junk": ("not a time", _packed("k"), now + 20), "short": (now + 10, _packed("k")),
             "list": [now + 10, _packed("k"), now + 20],
             "bad-entry": (now + 10, (True, "soon", "k", b"h", b"t"), now + 20),
             "bytes-id": (now + 10, (True, None, b"k", b"h", b"t"), now + 20)}
    used: dict[str, float] = {}
    valid: dict[str, int] = {}
    due: list[str] = []
    left: list[int] = []
    assert native.answers(table, [*table, 42], now, 0, used, valid, due, left) == [None] * 6
    assert used == {} and valid == {} and due == [] and left == [0, 1, 2, 3, 4, 5]


def test_native_answers_refuses_wrong_types() -> None:
    native = _native()
    with pytest.raises(TypeError):
        native.answers({}, ("a",), 1.0, 0, {}, {}, [], [])
    with pytest.raises(TypeError):
        native.answers({}, [], 1, 0, {}, {}, [], [])  # now: a float, as the loop's clock gives
    with pytest.raises(TypeError):
        native.answers({}, [], 1.0, 0, {}, {}, [])
    assert native.answers({}, [], 1.0, 0, {}, {}, [], []) == []


@pytest.mark.parametrize("implementation", ["native", "python"])
def test_l1_table_is_empty_past_the_lease(implementation: str) -> None:
    answers: Callable[..., list[bytes | None]] = (
        _native().answers if implementation == "native" else _plain_answers)
    l1: L1[Any] = L1(100, 30.0, negative=NOT_FOUND)
    now = time.monotonic()
    l1.put("d", _packed("k"), 30.0, now)
    wall_us = time.time_ns() // 1000
    assert answers(l1.table(now), ["d"], now, wall_us, {}, {}, [], []) != [None]
    l1.trusted_until = now
    left: list[int] = []
    assert answers(l1.table(now), ["d"], now, wall_us, {}, {}, [], left) == [None]
    assert left == [0]


def test_entry_uses_the_native_answers_when_built() -> None:
    native = _native()
    assert entry.plain_answers is native.answers


def _items() -> list[Any]:
    token = tokens.TOKEN_STARTS[0] + "abc"
    return [
        {"credential": "ory_ak_plain"},
        {"credential": "x" * MAX_CREDENTIAL_LENGTH},
        {"credential": "x" * (MAX_CREDENTIAL_LENGTH + 1)},
        {"credential": ""},
        {"credential": token},
        {"credential": "ory_ak_a", "expected_audiences": []},
        {"credential": 5},
        {"credential": None},
        {"other": "ory_ak_b"},
        {},
        ["credential"],
        "ory_ak_c",
        None,
        {"credential": "ключ-ünïcode"},
        {"credential": "\ud800"},  # a lone surrogate: bare here, refused by the digest
    ]


def test_native_bare_matches_python() -> None:
    native = _native()
    items = _items()
    others: list[int] = []
    out = native.bare(items, MAX_CREDENTIAL_LENGTH, tokens.TOKEN_STARTS, others)
    python_others: list[int] = []
    assert out == l1_answers._bare_many(items, python_others)
    assert out == ["ory_ak_plain", "x" * MAX_CREDENTIAL_LENGTH, None, None, None, None, None,
                   None, None, None, None, None, None, "ключ-ünïcode", "\ud800"]
    assert others == python_others == list(range(2, 13))
    assert l1_answers.bare_many(items, []) == out
    assert all(c is None or l1_answers.bare(c) for c in out)


def test_native_bare_refuses_wrong_types() -> None:
    native = _native()
    with pytest.raises(TypeError):
        native.bare((), 10, (), [])
    with pytest.raises(TypeError):
        native.bare([], 10, ("a", 1), [])
    with pytest.raises(TypeError):
        native.bare([], 10, ())
    assert native.bare([], 10, (), []) == []
