"""PostgreSQL unreachable: a cached key keeps answering, an uncached credential gets 503
(Ory Status code 14 on ``:verify``; 503 on forward auth) and never a yes; after the
database is back the gateway recovers by itself.

The store is taken away with ``ALTER DATABASE … ALLOW_CONNECTIONS false`` and the
gateway's sessions are terminated, then given back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gateway, secret_format, start_gateway
from verify_helpers import batch, decide, http, issue, psql, verify, wait_until


def _db_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def _cut(name: str) -> None:
    psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def _restore(name: str) -> None:
    psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


@pytest.fixture
def store_gateway(fresh_pg_database: str, redis_url: str, tmp_path: Path
                  ) -> Iterator[tuple[Gateway, str]]:
    # With its Redis subscription up, a replica trusts its caches for GATEWAY_STORE_GRACE
    # (15 s) without the store; alone, for 2 s (gateway.cache.changes): a loaded machine
    # could take longer than that over the cached checks below.
    name = _db_name(fresh_pg_database)
    gw = start_gateway(tmp_path, {"GATEWAY_DATABASE_URL": fresh_pg_database,
                                  "GATEWAY_REDIS_URL": redis_url,
                                  "GATEWAY_L1_TTL": "300"}, migrate=True)
    try:
        yield gw, name
    finally:
        _restore(name)
        gw.stop()


def test_cached_keys_answer_and_uncached_ones_get_503_while_the_store_is_down(
        store_gateway: tuple[Gateway, str]) -> None:
    gw, name = store_gateway
    cached, cached_key = issue(gw, scopes=["read"])
    uncached, _ = issue(gw)
    revoked_cached, revoked_key = issue(gw)
    unknown_cached = secret_format().new_secret("ory_ak")
    assert verify(gw, cached).json()["is_valid"] is True
    assert verify(gw, unknown_cached).json()["is_valid"] is False
    r = http().post(f"{gw.url}/v2alpha1/admin/issuedApiKeys/{revoked_key['key_id']}:revoke",
                   headers=gw.auth, json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"},
                   timeout=10)
    assert r.status_code == 204
    # every replica also reads the change from the store's log (every 0.5 s) and drops the
    # key's cache entries then: the revoked answer is cached once that has happened
    time.sleep(1.5)
    assert verify(gw, revoked_cached).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"

    _cut(name)
    try:
        # cached answers still come from L1
        r = verify(gw, cached)
        assert r.status_code == 200 and r.json()["is_valid"] is True
        assert r.json()["key_id"] == cached_key["key_id"]
        assert decide(gw, cached).status_code == 200
        assert verify(gw, revoked_cached).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
        assert verify(gw, unknown_cached).json()["is_valid"] is False

        # an uncached credential cannot be checked: 503, never a yes
        # (a made-up string is no key's: refused in memory, store or not)
        assert verify(gw, "sk_live_never_seen").json()["error_code"] == (
            "VERIFICATION_ERROR_NOT_FOUND")
        for credential in (uncached, secret_format().new_secret("ory_ak")):
            for _ in range(2):
                r = verify(gw, credential)
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["code"] == 14
                assert set(body) == {"code", "message", "details"}
                r = decide(gw, credential)
                assert r.status_code == 503
                assert "x-key-id" not in r.headers
        # no-cache must reach the store, so it cannot answer either
        r = verify(gw, cached, headers={"Cache-Control": "no-cache"})
        assert r.status_code == 503
        # a batch answers per item: the cached one, and INTERNAL (not valid) for the other
        r = batch(gw, [cached, uncached])
        assert r.status_code == 200
        results = r.json()["results"]
        assert results[0]["is_valid"] is True
        assert results[1]["is_valid"] is False
        assert results[1]["error_code"] == "VERIFICATION_ERROR_INTERNAL"
        assert http().get(gw.url + "/health/ready", timeout=10).status_code == 503
        # the outage did not get cached as "not found"
        assert verify(gw, uncached).status_code == 503
    finally:
        _restore(name)

    wait_until(lambda: verify(gw, uncached).status_code == 200, message="the store to return")
    assert verify(gw, uncached).json()["is_valid"] is True
    assert verify(gw, cached).json()["is_valid"] is True
    assert gw.proc.poll() is None
