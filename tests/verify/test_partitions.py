"""A success answer to a change means every replica honours it, also when a replica's link
to Redis or to the store is cut (a TCP forwarder the test controls, both directions): the
change reaches the others through Redis or the store's change log, and the changing
replica answers success only once every replica has confirmed it; else it answers 503, and
a replica that cannot read the change log stops answering from its caches within its lease.
Two replicas on PostgreSQL, their own Redis server, each link cut in turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Gateway, start_gateway
from verify_helpers import (
    ISSUED,
    RedisServer,
    TcpProxy,
    decide,
    http,
    issue,
    psql,
    revoke,
    verify,
    wait_until,
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def _pair(tmp: Path, pg: str, url_a: str, url_b: str) -> tuple[Gateway, Gateway]:
    a = start_gateway(tmp / "a", {"GATEWAY_DATABASE_URL": pg, "GATEWAY_REDIS_URL": url_a},
                      migrate=True)
    b = start_gateway(tmp / "b", {"GATEWAY_DATABASE_URL": pg, "GATEWAY_REDIS_URL": url_b})
    return a, b


def _said_yes(gw: Gateway, secret: str, rounds: int = 30) -> int:
    yes = 0
    for _ in range(rounds):
        yes += verify(gw, secret).json().get("is_valid") is True  # a 503 is not a yes
        yes += decide(gw, secret).status_code == 200
    return yes


@pytest.mark.parametrize("cut", ["changing-replica", "other-replica"])
def test_a_revocation_holds_on_every_replica_when_one_cannot_reach_redis(
        cut: str, tmp_path: Path, redis_server: RedisServer, fresh_pg_database: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proxy = TcpProxy(redis_server.port)
    direct = f"redis://127.0.0.1:{redis_server.port}/0"
    through = f"redis://127.0.0.1:{proxy.port}/0"
    a, b = _pair(tmp_path, fresh_pg_database, *((through, direct) if cut == "changing-replica"
                                                else (direct, through)))
    try:
        secret, key = issue(b)
        for _ in range(3):  # B caches it: L1 and L2
            assert verify(b, secret).json()["is_valid"] is True
        assert verify(b, secret).headers["x-cache"] == "L1"
        proxy.partition()
        started = time.monotonic()
        revoke(a, key["key_id"])  # 204, or the helper fails
        took = time.monotonic() - started
        assert _said_yes(b, secret) == 0, f"B said yes after the revoke returned ({cut})"
        assert _said_yes(a, secret, 5) == 0
        assert took < 5.0
    finally:
        a.stop()
        b.stop()
        proxy.close()


def _through(dsn: str, proxy: TcpProxy) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}")
                          ).geturl()


GRACE = 6.0  # GATEWAY_STORE_GRACE of the replicas below: longer than CONFIRM_S


@pytest.mark.parametrize("changing_redis", ["reachable", "cut"])
def test_a_replica_cut_off_from_the_store_confirms_through_redis_or_the_change_fails(
        changing_redis: str, tmp_path: Path, redis_server: RedisServer,
        fresh_pg_database: str) -> None:
    """B loses the store (its Redis is fine). A revoke on A is confirmed by B's Redis ack
    when A reaches Redis; when A cannot, nothing reaches B, and A answers 503 naming B,
    and B stops answering from its caches once its lease (the grace) is over."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store_link = TcpProxy(urlsplit(fresh_pg_database).port or 5432)
    redis_link = TcpProxy(redis_server.port)
    direct = f"redis://127.0.0.1:{redis_server.port}/0"
    grace = {"GATEWAY_STORE_GRACE": str(GRACE)}
    a = start_gateway(tmp_path / "a", {
        "GATEWAY_DATABASE_URL": fresh_pg_database,
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_link.port}/0", **grace}, migrate=True)
    b = start_gateway(tmp_path / "b", {
        "GATEWAY_DATABASE_URL": _through(fresh_pg_database, store_link),
        "GATEWAY_REDIS_URL": direct, **grace})
    try:
        secret, key = issue(b)
        for _ in range(3):
            assert verify(b, secret).json()["is_valid"] is True
        assert verify(b, secret).headers["x-cache"] == "L1"
        # both replicas have read the log with their Redis subscription up: leases of GRACE
        wait_until(lambda: [r[0] for r in psql(
            "SELECT trusted_until - followed_at FROM replicas", fresh_pg_database)]
            == [GRACE * 1e6] * 2, timeout=10)
        store_link.partition()
        if changing_redis == "cut":
            redis_link.partition()
        started = time.monotonic()
        r = http().post(f"{a.url}{ISSUED}/{key['key_id']}:revoke", headers=a.auth,
                        json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
        if changing_redis == "reachable":
            assert r.status_code == 204, r.text
            assert _said_yes(b, secret) == 0
            return
        assert r.status_code == 503, r.text
        assert "did not confirm" in r.json()["message"], r.text
        assert 2.5 <= time.monotonic() - started < 6
        # B, which heard nothing, keeps its cached answer no longer than its lease
        wait_until(lambda: _said_yes(b, secret, 1) == 0, timeout=GRACE + 2)
        assert time.monotonic() - started < GRACE + 2
        assert _said_yes(b, secret) == 0
        store_link.heal()  # B reads the log again, and the revocation with it
        wait_until(lambda: verify(b, secret).status_code == 200, timeout=10)
        assert _said_yes(b, secret) == 0
    finally:
        a.stop()
        b.stop()
        store_link.close()
        redis_link.close()


def test_without_redis_a_change_waits_for_the_other_replicas_reading_of_the_log(
        tmp_path: Path, fresh_pg_database: str) -> None:
    """No Redis at all: B hears of a revoke on A only through the store. A answers once B
    has read the log past it (within a follow interval); when B cannot read it, A answers
    once B's lease is over (B stops answering from its caches by then)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store_link = TcpProxy(urlsplit(fresh_pg_database).port or 5432)
    a = start_gateway(tmp_path / "a", {"GATEWAY_DATABASE_URL": fresh_pg_database},
                      migrate=True)
    b = start_gateway(tmp_path / "b",
                      {"GATEWAY_DATABASE_URL": _through(fresh_pg_database, store_link)})
    try:
        first, key1 = issue(a)
        second, key2 = issue(a)
        for secret in (first, second, first, second):
            assert verify(b, secret).json()["is_valid"] is True
        assert verify(b, first).headers["x-cache"] == "L1"
        started = time.monotonic()
        revoke(a, key1["key_id"])
        assert time.monotonic() - started < 1.5  # B's next read of the log, 0.5 s apart
        assert _said_yes(b, first) == 0
        store_link.partition()
        started = time.monotonic()
        revoke(a, key2["key_id"])  # 204: by then B no longer answers from its caches
        assert 0.5 < time.monotonic() - started < 3.0
        assert _said_yes(b, second) == 0
    finally:
        a.stop()
        b.stop()
        store_link.close()
