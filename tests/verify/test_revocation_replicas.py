"""Two gateway replicas on one PostgreSQL and one Redis: a change made through either
replica's admin API holds on both before the admin call returns.

The hammer test records, for every verify, when it was sent and what it answered; after a
revocation returns, no verify sent later may say yes, on either replica, through any
cache configuration (L1+L2, L2 only, no cache at all: concurrent misses then share reads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import Gateway, start_gateway
from verify_helpers import (
    DECISIONS,
    IMPORTED,
    ISSUED,
    VERIFY,
    decide,
    http,
    import_key,
    issue,
    revoke,
    verify,
    wait_until,
)

CONFIGS = {
    "l1-and-l2": {},
    "l2-only": {"GATEWAY_L1_TTL": "0"},
    "no-cache": {"GATEWAY_L1_TTL": "0", "GATEWAY_L2_TTL": "0"},
}


@pytest.fixture(scope="module")
def replica_sets(pg_database: str, redis_url: str,
                 tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[dict[str, tuple[Gateway, Gateway]]]:
    started: dict[str, tuple[Gateway, Gateway]] = {}
    try:
        for name, overrides in CONFIGS.items():
            env = {"GATEWAY_DATABASE_URL": pg_database, "GATEWAY_REDIS_URL": redis_url,
                   **overrides}
            a = start_gateway(tmp_path_factory.mktemp(f"{name}-a"), env, migrate=True)
            b = start_gateway(tmp_path_factory.mktemp(f"{name}-b"), env)
            started[name] = (a, b)
        yield started
    finally:
        for a, b in started.values():
            a.stop()
            b.stop()


@pytest.fixture
def replicas(replica_sets: dict[str, tuple[Gateway, Gateway]]) -> tuple[Gateway, Gateway]:
    return replica_sets["l1-and-l2"]


@dataclass(frozen=True)
class Sample:
    replica: int
    route: str
    sent: float
    status: int
    said_yes: bool


def _hammer(gw: Gateway, replica: int, route: str, secret: str, stop: threading.Event,
            out: list[Sample]) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        while not stop.is_set():
            sent = time.monotonic()
            if route == "verify":
                r = client.post(VERIFY, headers=gw.auth, json={"credential": secret})
                yes = r.status_code == 200 and r.json().get("is_valid") is True
            else:
                r = client.get(DECISIONS, headers={"X-API-Key": secret})
                yes = r.status_code == 200
            out.append(Sample(replica, route, sent, r.status_code, yes))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("revoke_on", [0, 1], ids=["revoke-on-a", "revoke-on-b"])
def test_no_verify_sent_after_a_revocation_returned_says_yes(
        replica_sets: dict[str, tuple[Gateway, Gateway]], config: str, revoke_on: int) -> None:
    gws = replica_sets[config]
    secret, key = issue(gws[0])
    samples: list[Sample] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(gw, i, route, secret, stop, samples),
                                daemon=True)
               for i, gw in enumerate(gws)
               for route in ("verify", "verify", "verify", "decide")]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(sum(s.said_yes and s.replica == i for s in samples) >= 30
                               for i in range(2)), message="both replicas to say yes")
        revoke(gws[revoke_on], key["key_id"])
        revoked_at = time.monotonic()
        wait_until(lambda: all(sum(s.sent > revoked_at and s.replica == i for s in samples)
                               >= 100 for i in range(2)),
                   message="verifies on both replicas after the revocation")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    after = [s for s in samples if s.sent > revoked_at]
    assert {s.replica for s in after} == {0, 1}
    assert {s.route for s in after} == {"verify", "decide"}
    late_yes = [s for s in after if s.said_yes]
    assert not late_yes, f"{len(late_yes)} verifies sent after the revocation said yes"
    assert all(s.status in (200, 401) for s in samples), {s.status for s in samples}


def test_a_revocation_holds_on_the_other_replica_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    secret, key = issue(a)
    verify(b, secret)
    assert verify(b, secret).headers["x-cache"] == "L1"
    revoke(a, key["key_id"])
    r = verify(b, secret)
    assert r.json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
    assert decide(b, secret).status_code == 401


def test_a_rotation_holds_on_the_other_replica_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    old, key = issue(a, scopes=["read"])
    verify(b, old)
    assert verify(b, old).headers["x-cache"] == "L1"
    r = http().post(f"{a.url}{ISSUED}/{key['key_id']}:rotate", headers=a.auth, json={},
                   timeout=10)
    assert r.status_code == 201, r.text
    new = r.json()["secret"]
    assert verify(b, old).json()["error_code"] == "VERIFICATION_ERROR_REVOKED"
    assert decide(b, old).status_code == 401
    answer = verify(b, new).json()
    assert answer["is_valid"] is True
    assert answer["key_id"] == r.json()["issued_api_key"]["key_id"]
    assert answer["scopes"] == ["read"]


def test_an_update_holds_on_the_other_replica_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    secret, key = issue(a, scopes=["read"], metadata={"v": 1})
    verify(b, secret)
    assert verify(b, secret).headers["x-cache"] == "L1"
    assert decide(b, secret, headers={"X-Required-Scope": "write"}).status_code == 403
    r = http().patch(f"{a.url}{ISSUED}/{key['key_id']}", headers=a.auth,
                    params={"update_mask": "scopes,metadata"},
                    json={"scopes": ["read", "write"], "metadata": {"v": 2}}, timeout=10)
    assert r.status_code == 200, r.text
    answer = verify(b, secret).json()
    assert answer["scopes"] == ["read", "write"]
    assert answer["metadata"] == {"v": 2}
    assert decide(b, secret, headers={"X-Required-Scope": "write"}).status_code == 200


def test_an_ip_restriction_added_holds_on_the_other_replica_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    secret, key = issue(a)
    verify(b, secret)
    assert verify(b, secret).headers["x-cache"] == "L1"
    r = http().patch(f"{a.url}{ISSUED}/{key['key_id']}", headers=a.auth,
                    params={"update_mask": "ip_restriction"},
                    json={"ip_restriction": {"allowed_cidrs": ["10.0.0.0/8"]}}, timeout=10)
    assert r.status_code == 200, r.text
    assert verify(b, secret).json()["error_code"] == "VERIFICATION_ERROR_IP_NOT_ALLOWED"


def test_deleting_an_imported_key_holds_on_the_other_replica_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    raw, key = import_key(a)
    verify(b, raw)
    assert verify(b, raw).headers["x-cache"] == "L1"
    r = http().delete(f"{a.url}{IMPORTED}/{key['key_id']}", headers=a.auth, timeout=10)
    assert r.status_code == 204, r.text
    assert verify(b, raw).json()["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
    assert decide(b, raw).status_code == 401


def test_a_key_imported_on_one_replica_verifies_on_the_other_at_once(
        replicas: tuple[Gateway, Gateway]) -> None:
    """Before the import no key has its digest, so b refuses it without a lookup; the
    import's invalidation tells b the digest before the import returns."""
    a, b = replicas
    raw = "sk_live_" + "7" * 30 + str(time.time_ns())
    assert verify(b, raw).json()["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
    assert verify(b, raw).headers["x-cache"] == "NONE"  # refused in memory, not looked up
    import_key(a, raw)
    assert verify(b, raw).json()["is_valid"] is True


def test_the_replicas_share_l2(replica_sets: dict[str, tuple[Gateway, Gateway]]) -> None:
    a, b = replica_sets["l2-only"]
    secret, _ = issue(a)
    assert verify(a, secret).headers["x-cache"] == "STORE"
    assert verify(b, secret).headers["x-cache"] == "L2"
    assert verify(a, secret).headers["x-cache"] == "L2"
