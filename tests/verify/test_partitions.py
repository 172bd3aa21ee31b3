"""A success answer to a change means every replica honours it, also when a replica's link
to Redis is cut (a TCP forwarder the test controls, both directions): the change reaches
the others through the store's change log, and the changing replica answers only once it
has. Two replicas on PostgreSQL, their own Redis server, each link cut in turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gateway, start_gateway
from verify_helpers import RedisServer, TcpProxy, decide, issue, revoke, verify


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
        yes += verify(gw, secret).json()["is_valid"] is True
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
