"""A key's ``rate_limit_policy`` is enforced on verify (fixed windows aligned to the epoch):
``quota`` valid answers per window, then VERIFICATION_ERROR_RATE_LIMITED; forward auth
answers 429 with Retry-After; with Redis the counter is shared by all replicas."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Gateway, start_gateway
from ory_client import (
    BatchVerifyApiKeysRequest,
    IssueApiKeyRequest,
    RateLimitPolicy,
    VerificationErrorCode,
    VerifyApiKeyRequest,
)
from verify_helpers import avoid_window_edge, batch, decide, issue, verify

RATE_LIMITED = VerificationErrorCode.VERIFICATION_ERROR_RATE_LIMITED


def _window_end(window_s: int) -> datetime:
    now = time.time()
    return datetime.fromtimestamp((now // window_s + 1) * window_s, UTC)


def test_three_valid_answers_then_rate_limited(ory_keys: Any) -> None:
    created = ory_keys.admin_issue_api_key(IssueApiKeyRequest(
        name="limited", actor_id=f"actor-{secrets.token_hex(4)}",
        rate_limit_policy=RateLimitPolicy(quota="3", window="60s")))
    avoid_window_edge(60)
    window_end = _window_end(60)
    request = VerifyApiKeyRequest(credential=created.secret)
    answers = [ory_keys.admin_verify_api_key(request) for _ in range(5)]
    assert [a.is_valid for a in answers] == [True, True, True, False, False]
    assert [a.rate_limit_remaining for a in answers] == ["2", "1", "0", "0", "0"]
    for a in answers[3:]:
        assert a.error_code == RATE_LIMITED
        assert a.error_message
        assert a.key_id == created.issued_api_key.key_id
    for a in answers:
        assert a.rate_limit_reset_time == window_end
    assert answers[0].rate_limit_policy.quota == "3"
    assert answers[0].rate_limit_policy.window == "60s"


def test_a_batch_counts_every_item(gateway: Gateway) -> None:
    secret, _ = issue(gateway, rate_limit_policy={"quota": "2", "window": "60s"})
    avoid_window_edge(60)
    results = batch(gateway, [secret, secret, secret]).json()["results"]
    assert sorted(r["is_valid"] for r in results) == [False, True, True]
    assert verify(gateway, secret).json()["error_code"] == "VERIFICATION_ERROR_RATE_LIMITED"


def test_the_sdk_reads_a_rate_limited_batch(ory_keys: Any) -> None:
    created = ory_keys.admin_issue_api_key(IssueApiKeyRequest(
        name="limited", actor_id="a", rate_limit_policy=RateLimitPolicy(quota="1",
                                                                        window="3600s")))
    avoid_window_edge(3600)
    request = VerifyApiKeyRequest(credential=created.secret)
    ory_keys.admin_verify_api_key(request)
    resp = ory_keys.admin_batch_verify_api_keys(BatchVerifyApiKeysRequest(requests=[request]))
    assert resp.results[0].error_code == RATE_LIMITED
    assert resp.results[0].rate_limit_remaining == "0"


def test_forward_auth_answers_429_with_retry_after(gateway: Gateway) -> None:
    secret, _ = issue(gateway, rate_limit_policy={"quota": "2", "window": "60s"})
    avoid_window_edge(60)
    first = decide(gateway, secret)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert decide(gateway, secret).status_code == 200
    limited = decide(gateway, secret)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) == int(_window_end(60).timestamp())
    assert "x-key-id" not in limited.headers
    assert limited.json()["error"] == "rate_limited"
    # the verify API sees the same counter
    assert verify(gateway, secret).json()["error_code"] == "VERIFICATION_ERROR_RATE_LIMITED"


def test_keys_are_counted_separately(gateway: Gateway) -> None:
    a, _ = issue(gateway, rate_limit_policy={"quota": "1", "window": "60s"})
    b, _ = issue(gateway, rate_limit_policy={"quota": "1", "window": "60s"})
    avoid_window_edge(60)
    assert verify(gateway, a).json()["is_valid"] is True
    assert verify(gateway, b).json()["is_valid"] is True
    assert verify(gateway, a).json()["is_valid"] is False


def test_a_key_without_a_policy_is_never_rate_limited(gateway: Gateway) -> None:
    secret, _ = issue(gateway)
    answers = [verify(gateway, secret).json() for _ in range(50)]
    assert all(a["is_valid"] for a in answers)
    assert all("rate_limit_remaining" not in a for a in answers)


@pytest.fixture(scope="module")
def two_replicas(pg_database: str, redis_url: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    env = {"GATEWAY_DATABASE_URL": pg_database, "GATEWAY_REDIS_URL": redis_url}
    a = start_gateway(tmp_path_factory.mktemp("rl-a"), env, migrate=True)
    try:
        b = start_gateway(tmp_path_factory.mktemp("rl-b"), env)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def test_replicas_share_one_counter(two_replicas: tuple[Gateway, Gateway]) -> None:
    a, b = two_replicas
    secret, _ = issue(a, rate_limit_policy={"quota": "4", "window": "60s"})
    avoid_window_edge(60)
    answers = [verify(gw, secret).json() for gw in (a, b, a, b, a, b)]
    assert [x["is_valid"] for x in answers] == [True, True, True, True, False, False]
    assert [x["rate_limit_remaining"] for x in answers] == ["3", "2", "1", "0", "0", "0"]
    assert decide(a, secret).status_code == 429
    assert decide(b, secret).status_code == 429


def test_replicas_share_one_counter_for_forward_auth(two_replicas: tuple[Gateway, Gateway]
                                                     ) -> None:
    a, b = two_replicas
    secret, _ = issue(b, rate_limit_policy={"quota": "3", "window": "60s"})
    avoid_window_edge(60)
    statuses = [decide(gw, secret).status_code for gw in (a, b, a, b)]
    assert statuses == [200, 200, 200, 429]
