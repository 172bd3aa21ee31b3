"""Redis is a cache, never an authority: the gateway keeps answering while its Redis is
killed or cut off, counts the failures, goes back to L2 once Redis returns, and never
lets an entry cached before an outage undo a revocation made during it.

Each test runs its own ``redis-server`` (no persistence) on a free port. L1 is off
(``GATEWAY_L1_TTL=0``) so every verify shows whether L2 answered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Gateway, start_gateway
from verify_helpers import (
    DECISIONS,
    VERIFY,
    RedisServer,
    TcpProxy,
    avoid_window_edge,
    batch,
    decide,
    digest_hex,
    issue,
    metric,
    revoke,
    scrape,
    verify,
    wait_until,
)

from gateway.cache.entry import Entry


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def _gateway(tmp: Path, redis_url: str) -> Gateway:
    return start_gateway(tmp, {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_L1_TTL": "0"})


def _redis_errors(gw: Gateway) -> float:
    return metric(scrape(gw), "gateway_redis_errors_total")


def _x_cache(gw: Gateway, secret: str) -> str:
    r = verify(gw, secret)
    assert r.status_code == 200, r.text
    assert r.json()["is_valid"] is True
    return str(r.headers["x-cache"])


def test_a_second_verify_is_answered_from_l2(redis_server: RedisServer, tmp_path: Path
                                             ) -> None:
    gw = _gateway(tmp_path, redis_server.url)
    try:
        secret, _ = issue(gw)
        assert _x_cache(gw, secret) == "STORE"
        assert _x_cache(gw, secret) == "L2"
        key = f"gw:k:hs256:{digest_hex(secret)}"
        assert redis_server.client().exists(key) == 1
    finally:
        gw.stop()


def _hammer(gw: Gateway, secret: str, stop: threading.Event,
            out: list[tuple[int, bool]]) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        while not stop.is_set():
            r = client.post(VERIFY, headers=gw.auth, json={"credential": secret})
            out.append((r.status_code, r.status_code == 200 and r.json()["is_valid"]))
            r = client.get(DECISIONS, headers={"X-API-Key": secret})
            out.append((r.status_code, r.status_code == 200))


def test_verify_survives_redis_being_killed_and_uses_l2_again_after_restart(
        redis_server: RedisServer, tmp_path: Path) -> None:
    gw = _gateway(tmp_path, redis_server.url)
    answers: list[tuple[int, bool]] = []
    stop = threading.Event()
    hammer: threading.Thread | None = None
    try:
        secret, _ = issue(gw)
        other, other_key = issue(gw)
        assert _x_cache(gw, secret) == "STORE"
        assert _x_cache(gw, secret) == "L2"
        errors_before = _redis_errors(gw)
        hammer = threading.Thread(target=_hammer, args=(gw, secret, stop, answers),
                                  daemon=True)
        hammer.start()
        wait_until(lambda: len(answers) > 20, message="the hammer to run")

        redis_server.kill()
        seen = len(answers)
        for _ in range(10):
            r = verify(gw, secret)
            assert r.status_code == 200 and r.json()["is_valid"] is True
            assert r.headers["x-cache"] == "STORE"
            assert batch(gw, [secret, "unknown-credential"]).status_code == 200
        assert verify(gw, "unknown-credential").json()["error_code"] == (
            "VERIFICATION_ERROR_NOT_FOUND")
        # admin calls work too, and a revocation takes effect
        fresh, _ = issue(gw)
        assert verify(gw, fresh).json()["is_valid"] is True
        revoke(gw, other_key["key_id"])
        assert verify(gw, other).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
        assert _redis_errors(gw) > errors_before
        errors_during = _redis_errors(gw)
        wait_until(lambda: verify(gw, secret).status_code == 200
                   and _redis_errors(gw) > errors_during,
                   message="the error counter to keep rising while Redis is down")
        wait_until(lambda: len(answers) > seen + 50, message="the hammer to run on")

        redis_server.start()  # same port, empty
        wait_until(lambda: _x_cache(gw, secret) == "L2", message="L2 to answer again")
        seen = len(answers)
        wait_until(lambda: len(answers) > seen + 50, message="the hammer to run on")
        assert verify(gw, other).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
        assert _x_cache(gw, fresh) in ("STORE", "L2")
        assert _x_cache(gw, fresh) == "L2"
    finally:
        stop.set()
        if hammer is not None:
            hammer.join(15)
        gw.stop()
    assert answers and all(status == 200 and yes for status, yes in answers), (
        {status for status, _ in answers})
    assert "Traceback" not in gw.logs()


def test_a_revocation_during_a_redis_partition_is_not_undone_when_it_heals(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Redis keeps its data while the gateway cannot reach it: the L2 entry written
    before the partition says "valid" and must never be believed again."""
    proxy = TcpProxy(redis_server.port)
    gw = _gateway(tmp_path, f"redis://127.0.0.1:{proxy.port}/0")
    try:
        secret, key = issue(gw)
        probe, _ = issue(gw)
        assert _x_cache(gw, secret) == "STORE"
        assert _x_cache(gw, secret) == "L2"
        l2_key = f"gw:k:hs256:{digest_hex(secret)}"
        assert Entry.loads(redis_server.client().get(l2_key)).revoked is False

        proxy.partition()
        revoke(gw, key["key_id"])
        assert verify(gw, secret).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
        assert Entry.loads(redis_server.client().get(l2_key)).revoked is False  # stale

        proxy.heal()
        _x_cache(gw, probe)
        wait_until(lambda: _x_cache(gw, probe) == "L2", message="L2 to answer again")
        for _ in range(20):
            r = verify(gw, secret)
            assert r.json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
            assert decide(gw, secret).status_code == 401
        stale = redis_server.client().get(l2_key)
        assert stale is None or Entry.loads(stale).revoked
    finally:
        gw.stop()
        proxy.close()


def test_rate_limits_are_enforced_in_process_while_redis_is_down(
        redis_server: RedisServer, tmp_path: Path) -> None:
    gw = _gateway(tmp_path, redis_server.url)
    try:
        secret, _ = issue(gw, rate_limit_policy={"quota": "3", "window": "60s"})
        redis_server.kill()
        avoid_window_edge(60)
        answers = [verify(gw, secret).json() for _ in range(5)]
        assert [a["is_valid"] for a in answers] == [True, True, True, False, False]
        assert [a["rate_limit_remaining"] for a in answers] == ["2", "1", "0", "0", "0"]
        assert answers[3]["error_code"] == "VERIFICATION_ERROR_RATE_LIMITED"
        r = decide(gw, secret)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    finally:
        gw.stop()
