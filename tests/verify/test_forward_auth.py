"""Forward auth at ``/v2alpha1/decisions[/...]``, the way Envoy ext_authz, Traefik
ForwardAuth and nginx auth_request call it: any method, any sub-path, the credential in
``Authorization: Bearer`` or ``X-API-Key``; 200 with identity headers, 401 with
``WWW-Authenticate``, 403 for an address or scope the key does not allow.

The test client connects from 127.0.0.1, a trusted proxy by default, so its
``X-Forwarded-For`` names the client; a second gateway trusts no such proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import Gateway, secret_format, start_gateway
from verify_helpers import DECISIONS, forge, http, issue, revoke


@dataclass
class Keys:
    valid: str
    key_id: str
    actor_id: str
    revoked: str
    only_net: str  # allowed from 203.0.113.0/24 only
    only_local: str  # allowed from 127.0.0.1 only
    unknown: str = field(default_factory=lambda: secret_format().new_secret("ory_ak"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("fa"), {})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def gw_untrusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Trusts only a proxy at 10.255.255.1 (not the test client), reads X-Custom-Key."""
    gateway = start_gateway(tmp_path_factory.mktemp("fa-untrusting"), {
        "GATEWAY_TRUSTED_PROXIES": "10.255.255.1",
        "GATEWAY_CREDENTIAL_HEADER": "X-Custom-Key",
    })
    yield gateway
    gateway.stop()


def _keys(gateway: Gateway) -> Keys:
    valid, key = issue(gateway, scopes=["orders:read", "profile"])
    revoked, gone = issue(gateway)
    revoke(gateway, gone["key_id"])
    only_net, _ = issue(gateway, ip_restriction={"allowed_cidrs": ["203.0.113.0/24"]})
    only_local, _ = issue(gateway, ip_restriction={"allowed_cidrs": ["127.0.0.1/32"]})
    return Keys(valid=valid, key_id=key["key_id"], actor_id=key["actor_id"], revoked=revoked,
                only_net=only_net, only_local=only_local)


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> Keys:
    return _keys(gw)


@pytest.fixture(scope="module")
def keys_untrusting(gw_untrusting: Gateway) -> Keys:
    return _keys(gw_untrusting)


@dataclass
class Case:
    id: str
    status: int
    credential: str | None = "valid"  # which Keys field, or None
    via: str = "bearer"  # bearer | x-api-key | x-custom-key
    method: str = "GET"
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None


def _request(gateway: Gateway, keys: Keys, case: Case) -> httpx.Response:
    headers = {k: v.replace("{valid}", keys.valid) for k, v in case.headers.items()}
    if case.credential is not None:
        secret = getattr(keys, case.credential) if hasattr(keys, case.credential) else (
            forge(keys.valid) if case.credential == "forged" else case.credential)
        if case.via == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        else:
            headers[case.via] = secret
    return http().request(case.method, gateway.url + DECISIONS + case.path, headers=headers,
                         params=case.params, content=case.body, timeout=10)


def _check(r: httpx.Response, case: Case, keys: Keys) -> None:
    assert r.status_code == case.status, r.text
    if r.status_code == 200:
        assert r.headers["x-key-id"] and r.headers["x-actor-id"]
        assert "x-scopes" in r.headers
        if case.credential == "valid":
            assert r.headers["x-key-id"] == keys.key_id
            assert r.headers["x-actor-id"] == keys.actor_id
            assert r.headers["x-scopes"] == "orders:read,profile"
    else:
        assert "x-key-id" not in r.headers and "x-actor-id" not in r.headers
    if r.status_code == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


CASES = [
    Case("bearer", 200),
    Case("bearer-scheme-is-case-insensitive", 200, credential=None,
         headers={"Authorization": "bearer {valid}"}),
    Case("x-api-key", 200, via="X-API-Key"),
    Case("x-api-key-lower-case", 200, via="x-api-key"),
    Case("missing", 401, credential=None),
    Case("basic-auth-is-not-a-credential", 401, credential=None,
         headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    Case("empty-bearer", 401, credential=None, headers={"Authorization": "Bearer"}),
    Case("unknown", 401, credential="unknown"),
    Case("forged", 401, credential="forged"),
    Case("revoked", 401, credential="revoked"),
    Case("revoked-via-x-api-key", 401, credential="revoked", via="X-API-Key"),
    Case("xff-allowed", 200, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7"}),
    Case("xff-not-allowed", 403, credential="only_net",
         headers={"X-Forwarded-For": "198.51.100.7"}),
    Case("no-xff-peer-not-allowed", 403, credential="only_net"),
    Case("xff-chain-through-trusted-proxy", 200, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}),
    Case("xff-spoofed-left-hop-ignored", 403, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.9"}),
    Case("xff-garbage", 403, credential="only_net", headers={"X-Forwarded-For": "not-an-ip"}),
    Case("x-real-ip", 200, credential="only_net", headers={"X-Real-IP": "203.0.113.9"}),
    Case("xff-moves-client-out-of-local-only", 403, credential="only_local",
         headers={"X-Forwarded-For": "198.51.100.7"}),
    Case("scope-header-held", 200, headers={"X-Required-Scope": "orders:read"}),
    Case("scope-header-missing", 403, headers={"X-Required-Scope": "orders:write"}),
    Case("scope-header-all-required", 403,
         headers={"X-Required-Scope": "orders:read orders:write"}),
    Case("scope-header-list-held", 200, headers={"X-Required-Scope": "orders:read,profile"}),
    Case("scope-query-held", 200, params={"scope": "orders:read"}),
    Case("scope-query-missing", 403, params={"scope": "admin"}),
    Case("scope-query-repeated", 200, params={"scope": ["orders:read", "profile"]}),
    Case("scope-query-repeated-one-missing", 403, params={"scope": ["orders:read", "admin"]}),
    # below the bare path the query string is the client's own (Envoy): not a requirement
    Case("scope-query-ignored-on-sub-path", 200, path="/orders/42", params={"scope": "admin"}),
    Case("scope-header-on-sub-path", 403, path="/orders/42",
         headers={"X-Required-Scope": "admin"}),
    Case("post", 200, method="POST"),
    Case("put", 200, method="PUT"),
    Case("patch", 200, method="PATCH"),
    Case("delete", 200, method="DELETE"),
    Case("head", 200, method="HEAD"),
    Case("options", 200, method="OPTIONS"),
    Case("envoy-prefix-sub-path", 200, path="/orders/42"),
    Case("envoy-prefix-sub-path-delete", 200, method="DELETE", path="/orders/42"),
    Case("envoy-sub-path-revoked", 401, credential="revoked", path="/orders/42"),
    Case("traefik-forwarded-headers", 200, headers={
        "X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/orders/42?expand=items",
        "X-Forwarded-Host": "shop.example.com", "X-Forwarded-Proto": "https"}),
    Case("traefik-forwarded-headers-revoked", 401, credential="revoked", headers={
        "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/orders/42"}),
    Case("post-with-body", 200, method="POST", path="/orders",
         headers={"Content-Type": "application/json"}, body=b'{"item": 42, "qty": 1}'),
    Case("post-with-large-body", 200, method="POST", body=b"x" * 300_000),
    Case("put-with-body-revoked", 401, credential="revoked", method="PUT", body=b"{}"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_auth(gw: Gateway, keys: Keys, case: Case) -> None:
    for _ in range(2):  # the first answer and the cached one
        _check(_request(gw, keys, case), case, keys)


UNTRUSTING_CASES = [
    Case("custom-credential-header", 200, via="X-Custom-Key"),
    Case("x-api-key-not-configured", 401, via="X-API-Key"),
    Case("bearer-still-accepted", 200),
    Case("xff-ignored-from-untrusted-peer", 403, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7"}),
    Case("x-real-ip-ignored-from-untrusted-peer", 403, credential="only_net",
         headers={"X-Real-IP": "203.0.113.7"}),
    Case("xff-cannot-move-client-out", 200, credential="only_local",
         headers={"X-Forwarded-For": "198.51.100.7"}),
]


@pytest.mark.parametrize("case", UNTRUSTING_CASES, ids=lambda c: c.id)
def test_forward_auth_behind_no_trusted_proxy(gw_untrusting: Gateway, keys_untrusting: Keys,
                                              case: Case) -> None:
    for _ in range(2):
        _check(_request(gw_untrusting, keys_untrusting, case), case, keys_untrusting)


def test_a_body_does_not_break_the_next_request_on_the_connection(gw: Gateway,
                                                                  keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {keys.valid}"}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(3):
            r = client.post(DECISIONS + "/upload", headers=headers, content=b"y" * 70_000)
            assert r.status_code == 200
            r = client.get(DECISIONS, headers=headers)
            assert r.status_code == 200
            r = client.post(DECISIONS, headers={"Authorization": f"Bearer {keys.revoked}"},
                            content=b"z" * 1000)
            assert r.status_code == 401


def test_a_401_does_not_say_why_and_403_429_do(gw: Gateway, keys: Keys) -> None:
    """Anyone can call /decisions: revoked, unknown, forged and malformed read alike."""
    bodies = set()
    for credential in (keys.revoked, keys.unknown, forge(keys.valid), "x", "ory_ak_v2_"):
        r = http().get(gw.url + DECISIONS, headers={"Authorization": f"Bearer {credential}"},
                       timeout=10)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="gateway", error="invalid_token"'
        bodies.add(r.content)
    assert bodies == {b'{"error":"invalid_token","error_description":"the credential is not '
                      b'valid"}'}
    r = _request(gw, keys, Case("ip", 403, credential="only_net"))
    assert r.json()["error"] == "ip_not_allowed"
    r = _request(gw, keys, Case("scope", 403, headers={"X-Required-Scope": "admin"}))
    assert r.json()["error"] == "scope_missing"
    r = http().get(gw.url + DECISIONS, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_the_decisions_prefix_is_not_matched_loosely(gw: Gateway, keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {keys.valid}"}
    r = http().get(gw.url + "/v2alpha1/decisionsX", headers=headers, timeout=10)
    assert r.status_code == 404


@pytest.fixture(scope="module")
def gw_cidr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Trusts a proxy *range* (as a Kubernetes ingress needs), which holds the test client."""
    gateway = start_gateway(tmp_path_factory.mktemp("fa-cidr"),
                            {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.0/8"})
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("case", [
    Case("xff-believed-from-a-trusted-range", 200, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7"}),
    Case("xff-outside-the-allow-list", 403, credential="only_net",
         headers={"X-Forwarded-For": "198.51.100.7"}),
    Case("trusted-hops-are-skipped", 200, credential="only_net",
         headers={"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}),
], ids=lambda c: c.id)
def test_trusted_proxies_may_be_cidr_ranges(gw_cidr: Gateway, case: Case) -> None:
    keys = _keys(gw_cidr)
    _check(_request(gw_cidr, keys, case), case, keys)


@pytest.mark.parametrize("directive", [{"Cache-Control": "no-store"}, {"Pragma": "no-cache"}])
def test_forward_auth_ignores_the_clients_cache_directives(gw: Gateway, keys: Keys,
                                                            directive: dict[str, str]) -> None:
    headers = {"X-API-Key": keys.valid}
    http().get(gw.url + DECISIONS, headers=headers)
    r = http().get(gw.url + DECISIONS, headers={**headers, **directive})
    assert r.status_code == 200
    assert r.headers["x-cache"] == "L1"
