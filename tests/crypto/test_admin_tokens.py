"""Admin bearer tokens: plain or argon2id, with argon2 paid once per distinct token."""

from __future__ import annotations

import pytest

from gateway.crypto import admin_tokens
from gateway.crypto.admin_tokens import AdminTokens, hash_token
from gateway.secret import Secret


@pytest.fixture(scope="module")
def hashed() -> str:
    return hash_token("hashed-admin-token", "test")


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification the checker performs, by presented token."""
    calls: list[str] = []
    real = admin_tokens.PasswordHasher.verify

    def counting(self: object, stored: str, presented: str) -> bool:
        calls.append(presented)
        return real(self, stored, presented)  # type: ignore[arg-type]

    monkeypatch.setattr(admin_tokens.PasswordHasher, "verify", counting)
    return calls


def test_test_profile_makes_a_cheap_argon2id_hash(hashed: str) -> None:
    assert hashed.startswith("$argon2id$")
    assert "m=8,t=1,p=1" in hashed


def test_plain_token_is_accepted_and_others_refused() -> None:
    tokens = AdminTokens((Secret("plain-admin-token"),))
    assert tokens.configured
    assert tokens.check("plain-admin-token")
    assert not tokens.check("plain-admin-token ")
    assert not tokens.check("plain-admin-tokeN")
    assert not tokens.check("")


def test_argon2id_hashed_token_is_accepted_and_others_refused(hashed: str) -> None:
    tokens = AdminTokens((Secret(hashed),))
    assert tokens.check("hashed-admin-token")
    assert not tokens.check("wrong-token")
    assert not tokens.check(hashed)


def test_plain_and_hashed_tokens_work_side_by_side(hashed: str) -> None:
    tokens = AdminTokens((Secret("plain-admin-token"), Secret(hashed)))
    assert tokens.check("plain-admin-token")
    assert tokens.check("hashed-admin-token")
    assert not tokens.check("neither")


def test_no_tokens_means_not_configured_and_nothing_accepted() -> None:
    tokens = AdminTokens(())
    assert not tokens.configured
    assert not tokens.check("anything")


def test_argon2_runs_once_per_distinct_accepted_token(hashed: str, verify_calls: list[str]
                                                      ) -> None:
    tokens = AdminTokens((Secret(hashed),))
    for _ in range(5):
        assert tokens.check("hashed-admin-token")
    assert verify_calls == ["hashed-admin-token"]


def test_argon2_runs_once_per_distinct_refused_token(hashed: str, verify_calls: list[str]
                                                     ) -> None:
    tokens = AdminTokens((Secret(hashed),))
    for _ in range(5):
        assert not tokens.check("wrong-token")
        assert not tokens.check("other-wrong-token")
    assert sorted(verify_calls) == ["other-wrong-token", "wrong-token"]


def test_a_plain_match_never_pays_for_argon2(hashed: str, verify_calls: list[str]) -> None:
    tokens = AdminTokens((Secret("plain-admin-token"), Secret(hashed)))
    assert tokens.check("plain-admin-token")
    assert verify_calls == []


def test_the_memo_is_bounded(hashed: str, verify_calls: list[str]) -> None:
    tokens = AdminTokens((Secret(hashed),), memo_size=2)
    for token in ("a", "b", "c", "a"):
        tokens.check(token)
    assert verify_calls == ["a", "b", "c", "a"]


def test_a_broken_stored_hash_refuses_instead_of_raising() -> None:
    tokens = AdminTokens((Secret("$argon2id$v=19$m=8,t=1,p=1$garbage"),))
    assert not tokens.check("anything")


def test_repr_of_configured_tokens_does_not_leak_them() -> None:
    secret = Secret("plain-admin-token")
    assert "plain-admin-token" not in repr(secret) + str(secret)
