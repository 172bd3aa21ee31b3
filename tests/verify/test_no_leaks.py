"""No secret, no digest and no raw imported key leaves the gateway through its logs, its
metrics, its error bodies or its verify answers, and metric labels carry only closed
vocabularies (outcome, cache level, route, operation).

The gateway runs with ``GATEWAY_LOG_LEVEL=debug`` against Redis, and is driven through
every verdict, malformed requests and failing backends.
"""

from __future__ import annotations

import platform
import re
import secrets
import sys
from collections.abc import Iterator

import httpx
import pytest
from conftest import ADMIN_TOKEN, PEPPER, Gateway, free_port, secret_format, start_gateway
from prometheus_client.parser import text_string_to_metric_families
from verify_helpers import (
    BATCH_VERIFY,
    DECISIONS,
    IMPORTED,
    VERIFY,
    digest_hex,
    forge,
    http,
    issue,
    revoke,
)

from gateway.http.openapi import document
from gateway.verify.outcomes import Outcome
from gateway.version import VERSION

LABEL_VALUES = {
    "outcome": {o.value for o in Outcome} | {"missing"},
    "cache": {"L1", "L2", "STORE", "NONE", "BYPASS"},
    "level": {"L1", "L2"},
    "result": {"hit", "miss"},
    # the hot routes and gRPC Check by name, every other route by its template
    "route": {"verify", "batch_verify", "forward_auth", "grpc_check", "unmatched"}
    | set(document()["paths"]),
    "method": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"},
    # gateway_build_info, python_info (prometheus-client's PlatformCollector)
    "version": {VERSION, platform.python_version()},
    "python": {platform.python_version()},
    "implementation": {platform.python_implementation()},
    "major": {str(sys.version_info.major)},
    "minor": {str(sys.version_info.minor)},
    "patchlevel": {str(sys.version_info.micro)},
    "kind": {"jwt", "macaroon"},
    "generation": {"0", "1", "2"},
    "algorithm": {"jwt", "macaroon", "TOKEN_ALGORITHM_JWT", "TOKEN_ALGORITHM_MACAROON"},
}
STATUS = re.compile(r"^[1-5][0-9][0-9]$")
OPERATION = re.compile(r"^[a-z][a-z_]{1,30}$")  # the op label: a fixed operation name


class Recorder:
    """Everything the gateway sent back, as text."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def send(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        r = http().request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
        self.seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        return r


@pytest.fixture(scope="module")
def gateways(redis_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Gateway, Gateway]]:
    """One gateway with a working Redis, one whose Redis is a closed port."""
    debug = {"GATEWAY_LOG_LEVEL": "debug"}
    good = start_gateway(tmp_path_factory.mktemp("leaks"),
                         {**debug, "GATEWAY_REDIS_URL": redis_url})
    try:
        broken = start_gateway(tmp_path_factory.mktemp("leaks-broken"), {
            **debug, "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    except Exception:
        good.stop()
        raise
    yield good, broken
    good.stop()
    broken.stop()


def _exercise(gw: Gateway, rec: Recorder) -> list[str]:
    """Drive ``gw`` through every verdict; return every secret it was shown."""
    valid, _ = issue(gw, scopes=["read"], metadata={"m": 1},
                     rate_limit_policy={"quota": "2", "window": "60s"})
    plain, _ = issue(gw)
    revoked, key = issue(gw)
    revoke(gw, key["key_id"])
    ip_denied, _ = issue(gw, ip_restriction={"allowed_cidrs": ["10.0.0.0/8"]})
    expiring, _ = issue(gw, ttl="1s")
    raw = f"sk_live_{secrets.token_hex(20)}"
    r = http().post(gw.url + IMPORTED, headers=gw.auth, timeout=10,
                   json={"raw_key": raw, "name": "imported", "actor_id": "a"})
    assert r.status_code == 201
    raw_revoked = f"pk_test_{secrets.token_hex(20)}"
    r = http().post(gw.url + IMPORTED, headers=gw.auth, timeout=10,
                   json={"raw_key": raw_revoked, "name": "imported", "actor_id": "a"})
    http().post(f"{gw.url}{IMPORTED}/{r.json()['key_id']}:revoke", headers=gw.auth,
               json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"}, timeout=10)
    unknown_raw = f"sk_live_{secrets.token_hex(20)}"
    shown = [valid, plain, revoked, ip_denied, expiring, raw, raw_revoked, unknown_raw,
             secret_format().new_secret("ory_ak"), forge(valid), forge(plain, 12), forge(raw)]

    for credential in shown:
        for headers in ({}, {"Cache-Control": "no-cache"}, {"Cache-Control": "no-store"}):
            for _ in range(2):
                rec.send("POST", gw.url + VERIFY, headers={**gw.auth, **headers},
                         json={"credential": credential})
            rec.send("POST", gw.url + VERIFY, headers={**gw.auth, **headers},
                     json={"credential": credential, "expected_audiences": ["aud"]})
        rec.send("GET", gw.url + DECISIONS, headers={"Authorization": f"Bearer {credential}"})
        rec.send("POST", gw.url + DECISIONS + "/x", headers={"X-API-Key": credential,
                                                           "X-Required-Scope": "admin"})
        rec.send("GET", gw.url + DECISIONS, headers={"X-API-Key": credential,
                                                     "X-Forwarded-For": "198.51.100.1"})
        # malformed requests that carry the secret
        rec.send("POST", gw.url + VERIFY, headers=gw.auth,
                 json={"credential": credential, "unexpected": True})
        rec.send("POST", gw.url + VERIFY, headers=gw.auth,
                 content=b'{"credential": "' + credential.encode() + b'"')
        rec.send("POST", gw.url + VERIFY, headers=gw.auth,
                 json={"credential": credential, "expected_audiences": "not-a-list"})
        rec.send("POST", gw.url + VERIFY, headers=gw.auth, json=[credential])
        rec.send("POST", gw.url + VERIFY, headers={"Authorization": f"Bearer {credential}"},
                 json={"credential": credential})
        rec.send("POST", gw.url + BATCH_VERIFY, headers=gw.auth,
                 json={"requests": [{"credential": credential}, {"credential": 5},
                                    credential]})
        rec.send("POST", gw.url + BATCH_VERIFY, headers=gw.auth,
                 json={"requests": [{"credential": credential}] * 101})
        rec.send("POST", gw.url + "/v2alpha1/apiKeys:selfRevoke",
                 json={"credential": forge(credential), "reason": "REVOCATION_REASON_SUPERSEDED"})
    rec.send("POST", gw.url + VERIFY, headers=gw.auth, json={"credential": "k" * 9000})
    rec.send("POST", gw.url + BATCH_VERIFY, headers=gw.auth,
             json={"requests": [{"credential": c} for c in shown]})
    return shown


def test_nothing_secret_leaves_the_gateway(gateways: tuple[Gateway, Gateway]) -> None:
    rec = Recorder()
    shown: list[str] = []
    for gw in gateways:
        shown += _exercise(gw, rec)
    metrics = [http().get(gw.url + "/metrics", timeout=10).text for gw in gateways]
    logs = [gw.logs() for gw in gateways]
    assert any("redis" in log.lower() for log in logs)  # the broken Redis was logged
    secrets_ = [*shown, ADMIN_TOKEN, PEPPER]
    digests = [digest_hex(s) for s in shown]
    for name, text in [*(("log", log) for log in logs), *(("metrics", m) for m in metrics),
                       *(("response", r) for r in rec.seen)]:
        for secret in secrets_:
            assert secret not in text, f"a secret appears in a {name}"
        for digest in digests:
            assert digest not in text and digest[:32] not in text, (
                f"a digest appears in a {name}")


def test_metric_labels_are_closed_vocabularies(gateways: tuple[Gateway, Gateway]) -> None:
    rec = Recorder()
    for gw in gateways:
        _exercise(gw, rec)
    for gw in gateways:
        seen: set[tuple[str, str]] = set()
        for family in text_string_to_metric_families(
                http().get(gw.url + "/metrics", timeout=10).text):
            for sample in family.samples:
                for label, value in sample.labels.items():
                    seen.add((label, value))
                    if label == "le":
                        continue
                    if label == "status":
                        assert STATUS.match(value), (family.name, value)
                        continue
                    if label == "op":
                        assert OPERATION.match(value), (family.name, value)
                        continue
                    assert label in LABEL_VALUES, (family.name, label)
                    assert value in LABEL_VALUES[label], (family.name, label, value)
        assert ("route", "verify") in seen and ("route", "forward_auth") in seen
        assert ("outcome", "revoked") in seen and ("outcome", "not_found") in seen
    _, broken = gateways
    text = http().get(broken.url + "/metrics", timeout=10).text
    assert any(s.labels.get("op") for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "gateway_redis_errors_total")
