"""Where Ory Talos answers differently from Ory's published OpenAPI alone, the gateway
answers as Talos does (issue 17): creates name their resource, lifetimes are bounded,
conflicts are 409, derived tokens are refused exactly. The SDK cases are in
test_keys_sdk.py and test_derived_tokens.py; here, what the SDK does not show (headers,
bodies of refusals) and the settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ory_client
import pytest
from conftest import Gateway, start_gateway

from gateway.crypto import tokens
from gateway.errors import ConfigError
from gateway.settings import load_settings

ISSUED = "/v2alpha1/admin/issuedApiKeys"
IMPORTED = "/v2alpha1/admin/importedApiKeys"
VERIFY = "/v2alpha1/admin/apiKeys:verify"
SELF_REVOKE = "/v2alpha1/apiKeys:selfRevoke"
COMPROMISE = {"reason": "REVOCATION_REASON_KEY_COMPROMISE"}


def _post(gw: Gateway, path: str, body: Any) -> Any:
    with gw.client() as client:
        return client.post(path, json=body, headers=gw.auth)


def test_creates_answer_201_with_the_location_of_the_new_key(gateway: Gateway,
                                                             unique: str) -> None:
    issued = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"})
    assert issued.status_code == 201
    key_id = issued.json()["issued_api_key"]["key_id"]
    assert issued.headers["location"] == f"{ISSUED}/{key_id}"
    imported = _post(gateway, IMPORTED, {"name": "i", "actor_id": f"a-{unique}",
                                         "raw_key": f"legacy-{unique}-0123456789"})
    assert imported.status_code == 201
    assert imported.headers["location"] == f"{IMPORTED}/{imported.json()['key_id']}"
    with gateway.client() as client:  # the Location answers
        got = client.get(imported.headers["location"], headers=gateway.auth)
    assert got.status_code == 200 and got.json()["key_id"] == imported.json()["key_id"]


def test_self_revoking_a_derived_token_is_a_400(gateway: Gateway, unique: str) -> None:
    secret = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"}).json()["secret"]
    for algorithm in ("TOKEN_ALGORITHM_JWT", "TOKEN_ALGORITHM_MACAROON"):
        token = _post(gateway, "/v2alpha1/admin/apiKeys:derive",
                      {"credential": secret, "algorithm": algorithm}).json()["token"]["token"]
        with gateway.client() as client:
            resp = client.post(SELF_REVOKE, json={"credential": token, **COMPROMISE})
        assert resp.status_code == 400, resp.text
        assert "derived tokens cannot be revoked" in resp.json()["message"]


@pytest.mark.parametrize("credential", [
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",  # a foreign HS256 JWT
    "eyJub3QganNvbg.eyJ4Ijox.sig",  # not even JSON
    tokens.MACAROON_PREFIX + "AAAA",  # a macaroon that does not parse
    tokens.MACAROON_PREFIX + "not-base64!",
])
def test_any_token_that_does_not_verify_is_signature_invalid(gateway: Gateway,
                                                             credential: str) -> None:
    config = ory_client.Configuration(host=gateway.url, access_token=gateway.token)
    with ory_client.ApiClient(config) as client:
        result = ory_client.ApiKeysApi(client).admin_verify_api_key(
            ory_client.VerifyApiKeyRequest(credential=credential))
    assert result.is_valid is False
    assert result.error_code == (
        ory_client.VerificationErrorCode.VERIFICATION_ERROR_SIGNATURE_INVALID)


def test_the_limit_off_lets_keys_without_a_ttl_never_expire(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_MAX_KEY_TTL": "0"})
    try:
        body = _post(gw, ISSUED, {"name": "k", "actor_id": "a"}).json()
        assert "expire_time" not in body["issued_api_key"]
        long = _post(gw, ISSUED, {"name": "k", "actor_id": "a", "ttl": "87600h"})
        assert long.status_code == 201  # only the duration format's own bound (10y) holds
    finally:
        gw.stop()


@pytest.mark.parametrize(("env", "words"), [
    ({"GATEWAY_MAX_KEY_TTL": "24h", "GATEWAY_DEFAULT_KEY_TTL": "48h"}, "longer than"),
    ({"GATEWAY_MAX_KEY_TTL": "soon"}, "GATEWAY_MAX_KEY_TTL"),
])
def test_key_lifetime_settings_are_checked_at_start(env: dict[str, str], words: str) -> None:
    base = {"GATEWAY_PEPPER": "p" * 32}
    with pytest.raises(ConfigError) as info:
        load_settings({**base, **env})
    assert words in str(info.value)


SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'"}


def test_every_response_carries_the_security_headers(gateway: Gateway, unique: str) -> None:
    secret = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"}).json()["secret"]
    with gateway.client() as client:
        answers = [
            client.get("/health/alive"), client.get("/version"), client.get("/nowhere"),
            client.get(VERIFY, headers=gateway.auth),  # 405 from the hot routes
            client.post(VERIFY, headers={"Authorization": "Bearer wrong"}, json={}),
            *(client.post(VERIFY, headers=gateway.auth, json={"credential": secret})
              for _ in range(2)),  # the store, then the fast path
            *(client.get("/v2alpha1/decisions", headers={"X-API-Key": secret})
              for _ in range(2)),
            client.get("/v2alpha1/decisions"),  # 401
        ]
    for resp in answers:
        assert {k: resp.headers.get(k) for k in SECURITY} == SECURITY, (resp.url, resp.status_code)
    assert answers[1].json()["version"]


def test_verify_answers_say_how_the_cache_answered(gateway: Gateway, unique: str) -> None:
    secret = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"}).json()["secret"]
    guarded = _post(gateway, ISSUED, {"name": "g", "actor_id": f"a-{unique}",
                                      "ip_restriction": {"allowed_cidrs": ["0.0.0.0/0"]}}
                    ).json()["secret"]
    with gateway.client() as client:
        def verify(credential: str, **headers: str) -> Any:
            return client.post(VERIFY, headers={**gateway.auth, **headers},
                               json={"credential": credential})

        assert verify(secret).headers["ory-talos-cache"] == "MISS"
        assert verify(secret).headers["ory-talos-cache"] == "HIT"
        assert verify(secret, **{"Cache-Control": "no-cache"}).headers[
            "ory-talos-cache"] == "SKIP"
        assert verify(secret).headers.get("cache-control") is None
        first, second = verify(guarded), verify(guarded)
        assert first.json()["is_valid"] is True and second.headers["ory-talos-cache"] == "HIT"
        assert first.headers["cache-control"] == second.headers["cache-control"] == "no-store"


def test_a_rate_limited_key_says_its_policy_and_when_to_retry(gateway: Gateway,
                                                              unique: str) -> None:
    secret = _post(gateway, ISSUED, {"name": "r", "actor_id": f"a-{unique}",
                                     "rate_limit_policy": {"quota": "2", "window": "60s"}}
                   ).json()["secret"]
    with gateway.client() as client:
        answers = [client.post(VERIFY, headers=gateway.auth, json={"credential": secret})
                   for _ in range(3)]
        decision = client.get("/v2alpha1/decisions", headers={"X-API-Key": secret})
    assert [a.json()["is_valid"] for a in answers] == [True, True, False]
    for resp in (*answers, decision):
        assert resp.headers["ratelimit-policy"] == '"key";q=2;w=60'
    assert "ratelimit" not in answers[0].headers and "retry-after" not in answers[0].headers
    for limited in (answers[2], decision):
        retry = int(limited.headers["retry-after"])
        assert 0 < retry <= 60
        assert limited.headers["ratelimit"] == f'"key";r=0;t={retry}'
    assert decision.status_code == 429


def test_protojson_lower_camel_case_names_are_accepted_as_grpc_gateway_does(
        gateway: Gateway, unique: str) -> None:
    actor = f"a-{unique}"
    issued = _post(gateway, ISSUED, {
        "name": "k", "actorId": actor, "requestId": f"r-{unique}",
        "rateLimitPolicy": {"quota": "5", "window": "60s"},
        "ipRestriction": {"allowedCidrs": ["10.0.0.0/8"]},
        "metadata": {"someKey": 1}})  # a Struct's own keys stay as they are
    assert issued.status_code == 201, issued.text
    key = issued.json()["issued_api_key"]
    assert key["actor_id"] == actor and key["rate_limit_policy"]["quota"] == "5"
    assert key["ip_restriction"] == {"allowed_cidrs": ["10.0.0.0/8"]}
    assert key["metadata"] == {"someKey": 1}
    with gateway.client() as client:
        patched = client.patch(f"{ISSUED}/{key['key_id']}", headers=gateway.auth,
                               params={"update_mask": "rateLimitPolicy,ipRestriction.allowedCidrs"},
                               json={"rateLimitPolicy": {"quota": "9", "window": "60s"},
                                     "ipRestriction": {"allowedCidrs": ["127.0.0.0/8"]}})
        assert patched.status_code == 200, patched.text
        assert patched.json()["rate_limit_policy"]["quota"] == "9"
        assert patched.json()["ip_restriction"] == {"allowed_cidrs": ["127.0.0.0/8"]}
        verified = client.post(VERIFY, headers=gateway.auth, json={
            "credential": issued.json()["secret"], "expectedAudiences": ["billing"]})
        assert verified.json()["error_code"] == "VERIFICATION_ERROR_AUDIENCE_MISMATCH"
    batch = _post(gateway, f"{IMPORTED}:batchCreate", {"requests": [
        {"rawKey": f"legacy-{unique}-camel-0001", "name": "b", "actorId": actor}]})
    assert batch.json()["success_count"] == 1, batch.text
    twice = _post(gateway, ISSUED, {"name": "k", "actor_id": actor, "actorId": actor})
    assert twice.status_code == 400 and "given twice" in twice.json()["message"]


def _serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--port", "1"],
                          env={**base, "GATEWAY_PEPPER": "p" * 32,
                               "GATEWAY_ADMIN_TOKENS": "t" * 32, **env},
                          capture_output=True, text=True, timeout=60)


def test_start_up_failures_are_one_line_that_names_what_to_fix(
        fresh_pg_database: str) -> None:
    dead = fresh_pg_database.rsplit("/", 1)[0].replace(":5432", ":1") + "/test"
    missing = fresh_pg_database.rsplit("/", 1)[0] + "/no_such_database_here"
    for url, words in ((dead, "cannot connect to PostgreSQL at 127.0.0.1:1"),
                       (missing, "no database 'no_such_database_here'"),
                       (fresh_pg_database, "run `gateway migrate`")):
        out = _serve_once({"GATEWAY_DATABASE_URL": url})
        assert out.returncode == 2, out
        assert out.stderr.count("\n") == 1 and words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr + out.stdout


def test_gateway_version_prints_the_version() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("gateway ")


def test_cors_is_off_by_default_and_allows_the_configured_origins(
        gateway: Gateway, tmp_path: Path) -> None:
    with gateway.client() as client:  # off: no browser origin is allowed anything
        resp = client.post(VERIFY, headers={**gateway.auth, "Origin": "https://app.example"},
                           json={"credential": "x"})
        assert "access-control-allow-origin" not in resp.headers
    gw = start_gateway(tmp_path, {"GATEWAY_CORS_ORIGINS": "https://app.example"})
    try:
        with gw.client() as client:
            preflight = client.options(VERIFY, headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type"})
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            answer = client.post(VERIFY, headers={**gw.auth, "Origin": "https://app.example"},
                                 json={"credential": "x"})
            assert answer.headers["access-control-allow-origin"] == "https://app.example"
            assert "ory-talos-cache" in answer.headers["access-control-expose-headers"].lower()
            # a key's answers too: from the store, then from L1 (a fast answer, whose
            # head our server would write as rendered, without the CORS headers)
            secret = client.post(ISSUED, headers=gw.auth, json={"name": "c"}).json()["secret"]
            for level in ("STORE", "L1"):
                answer = client.post(VERIFY, json={"credential": secret},
                                     headers={**gw.auth, "Origin": "https://app.example"})
                assert answer.headers["x-cache"] == level
                assert answer.headers["access-control-allow-origin"] == "https://app.example"
            other = client.options(VERIFY, headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
            assert other.status_code == 400
            assert "access-control-allow-origin" not in other.headers
    finally:
        gw.stop()


def test_the_served_openapi_says_what_the_server_enforces(gateway: Gateway) -> None:
    with gateway.client() as client:
        doc = client.get("/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, method in ((ISSUED, "post"), (IMPORTED, "post"),
                         (f"{ISSUED}/{{key_id}}:rotate", "post")):
        created = paths[path][method]["responses"]["201"]
        assert "Location" in created["headers"], path
    for path in (f"{ISSUED}/{{key_id}}:revoke", f"{ISSUED}/{{key_id}}:rotate"):
        assert "409" in paths[path]["post"]["responses"]
    assert "Allow" in paths[VERIFY]["post"]["responses"]["405"]["headers"]
    assert schemas["AdminRevokeApiKeyBody"]["required"] == ["reason"]
    assert "REVOCATION_REASON_UNSPECIFIED" not in schemas["GivenRevocationReason"]["enum"]
    assert schemas["VerifyApiKeyRequest"]["properties"]["credential"]["minLength"] == 1
    assert "/version" in paths and "/v2alpha1/decisions/{path}" in paths
    okta = next(ops for path, ops in paths.items() if path.startswith("/api/v1/"))
    assert {"oktaApiToken": []} in next(iter(okta.values()))["security"]
    assert doc["components"]["securitySchemes"]["oktaApiToken"]["description"].startswith(
        "SSWS")


def test_of_concurrent_revokes_of_one_key_one_answers_204_the_rest_409(
        gateway: Gateway, unique: str) -> None:
    import asyncio

    import httpx

    key_id = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"}
                   ).json()["issued_api_key"]["key_id"]

    async def revoke_all() -> list[int]:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.auth) as client:
            answers = await asyncio.gather(*(
                client.post(f"{ISSUED}/{key_id}:revoke", json=COMPROMISE) for _ in range(12)))
        return sorted(a.status_code for a in answers)

    assert asyncio.run(revoke_all()) == [204] + [409] * 11


def test_an_update_keeps_the_expiry_within_the_longest_lifetime(gateway: Gateway,
                                                                 unique: str) -> None:
    key_id = _post(gateway, ISSUED, {"name": "k", "actor_id": f"a-{unique}"}
                   ).json()["issued_api_key"]["key_id"]
    with gateway.client() as client:
        cleared = client.patch(f"{ISSUED}/{key_id}", json={},
                               params={"update_mask": "expire_time"}, headers=gateway.auth)
        beyond = client.patch(f"{ISSUED}/{key_id}", json={"expire_time": "2099-01-01T00:00:00Z"},
                              params={"update_mask": "expire_time"}, headers=gateway.auth)
        malformed = client.patch(f"{ISSUED}/{key_id}", json={"expire_time": {}, "name": "x"},
                                 params={"update_mask": "name"}, headers=gateway.auth)
    assert cleared.status_code == 400 and "cannot be cleared" in cleared.json()["message"]
    assert beyond.status_code == 400 and "GATEWAY_MAX_KEY_TTL" in beyond.json()["message"]
    # outside the mask, but malformed all the same
    assert malformed.status_code == 400 and "expire_time" in malformed.json()["message"]
