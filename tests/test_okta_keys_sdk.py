"""Okta authorization-server keys through the official ``okta`` SDK (3.4.6), against a running
gateway; and the derived-token keys those credential keys rotate with.

The SDK's calls return ``(items, response, error)`` tuples and do not raise on HTTP errors,
so the error slot is checked explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import ory_client
import pytest
from conftest import start_gateway
from okta.client import Client as OktaClient
from okta.models import JwkUse
from okta.models import OAuth2ResourceServerJsonWebKeyRequestBody as ResourceKeyBody

from gateway.crypto import jwk
from gateway.crypto import tokens as t
from gateway.crypto.digests import Digester
from gateway.settings import load_settings
from gateway.signing import Keyring, sealer_for
from gateway.store import build_store

KEYS = "/api/v1/authorizationServers/{server}/credentials/keys"


@pytest.fixture
def okta(gateway, monkeypatch) -> OktaClient:
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")
    return OktaClient({"orgUrl": gateway.url, "token": gateway.token,
                       "authorizationMode": "SSWS"})


@pytest.fixture
async def replica(gateway) -> AsyncIterator[Keyring]:
    """A second keyring on the gateway's own store: another replica, in this process."""
    settings = load_settings(gateway.env)
    assert settings.pepper is not None
    store = build_store(settings)
    await store.open()
    ring = Keyring(store, sealer=sealer_for(Digester(settings.pepper)), refresh_interval=0)
    await ring.start()
    try:
        yield ring
    finally:
        await ring.stop()
        await store.close()


def ok(result: tuple[Any, ...]) -> Any:
    """The data of an SDK call, failing the test with the error slot's message otherwise."""
    assert result[-1] is None, result[-1]
    return result[0]


def err(result: tuple[Any, ...]) -> Any:
    assert result[-1] is not None, "expected an error"
    return result[-1]


def derived_jwks(gateway) -> dict[str, Any]:
    r = httpx.get(f"{gateway.url}/v2alpha1/derivedKeys/jwks.json")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body["jwks"]


def rsa_members() -> dict[str, str]:
    public = jwk.generate("RS256").to_dict(private=False) or {}
    return {"n": public["n"], "e": public["e"]}


def mint(ring: Keyring, issuer: str, **kw: Any) -> str:
    spec = t.DeriveSpec(issuer=issuer, subject="actor", parent_key_id="parent-key",
                        expire_time=2_000_000_000, **kw)
    return t.mint_jwt(spec, ring.active_signer(), now=1_900_000_000).token


# -- credential keys -------------------------------------------------------------------


async def test_list_shows_one_active_and_one_next_rsa_key(okta, gateway):
    keys = ok(await okta.list_authorization_server_keys("default"))
    statuses = [k.status for k in keys]
    assert statuses.count("ACTIVE") == 1 and statuses.count("NEXT") == 1
    assert set(statuses) <= {"ACTIVE", "NEXT", "EXPIRED"}
    for key in keys:
        assert (key.kty, key.alg, key.use, key.e) == ("RSA", "RS256", "sig", "AQAB")
        assert key.n and key.links.var_self.href == (
            gateway.url + KEYS.format(server="default") + f"/{key.kid}")


async def test_get_by_kid(okta):
    keys = ok(await okta.list_authorization_server_keys("default"))
    got = ok(await okta.get_authorization_server_key("default", keys[0].kid))
    assert (got.kid, got.n, got.status) == (keys[0].kid, keys[0].n, keys[0].status)
    error = err(await okta.get_authorization_server_key("default", "no-such-kid"))
    assert (error.status, error.error_code) == (404, "E0000007")


async def test_an_unknown_authorization_server_is_404(okta):
    for call in (okta.list_authorization_server_keys("nope"),
                 okta.rotate_authorization_server_keys("nope", JwkUse(use="sig")),
                 okta.list_o_auth2_resource_server_json_web_keys("nope")):
        error = err(await call)
        assert (error.status, error.error_code) == (404, "E0000007")


async def test_rotate_moves_each_key_one_step_and_makes_a_fresh_next(okta):
    before = {k.status: k.kid for k in ok(await okta.list_authorization_server_keys("default"))
              if k.status != "EXPIRED"}
    rotated = ok(await okta.rotate_authorization_server_keys("default", JwkUse(use="sig")))
    status = {k.kid: k.status for k in rotated}
    assert status[before["ACTIVE"]] == "EXPIRED"
    assert status[before["NEXT"]] == "ACTIVE"
    fresh = [kid for kid, s in status.items() if s == "NEXT"]
    assert len(fresh) == 1 and fresh[0] not in before.values()
    listed = {k.kid: k.status for k in ok(await okta.list_authorization_server_keys("default"))}
    assert listed == status


def _schedule(gateway) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(gateway.url + "/metrics").text
    return {f.name: f.samples[0].value for f in text_string_to_metric_families(text)
            if f.name.startswith("gateway_signing_key_")}


async def test_metrics_show_when_the_active_key_became_active(okta, gateway):
    before = _schedule(gateway)
    assert set(before) == {"gateway_signing_key_activated_timestamp_seconds"}  # MANUAL
    ok(await okta.rotate_authorization_server_keys("default", JwkUse(use="sig")))
    after = _schedule(gateway)
    assert (after["gateway_signing_key_activated_timestamp_seconds"]
            > before["gateway_signing_key_activated_timestamp_seconds"])


def test_auto_rotation_publishes_its_next_rotation(tmp_path):
    gw = start_gateway(tmp_path, {"GATEWAY_SIGNING_ROTATION": "AUTO",
                                  "GATEWAY_SIGNING_ROTATION_PERIOD": "30d"})
    try:
        schedule = _schedule(gw)
    finally:
        gw.stop()
    activated = schedule["gateway_signing_key_activated_timestamp_seconds"]
    due = schedule["gateway_signing_key_next_rotation_timestamp_seconds"]
    assert due - activated == pytest.approx(30 * 86_400)


def test_rotate_needs_use_sig(gateway):
    r = httpx.post(gateway.url + "/api/v1/authorizationServers/default/credentials/lifecycle/"
                   "keyRotate", json={"use": "enc"}, headers=gateway.auth)
    assert r.status_code == 400 and r.json()["errorCode"] == "E0000001"


@pytest.mark.parametrize("scheme", ["SSWS {}", "SSWS{}", "Bearer {}", "ssws {}"])
def test_admin_auth_accepts_ssws_and_bearer(gateway, scheme):
    r = httpx.get(gateway.url + KEYS.format(server="default"),
                  headers={"Authorization": scheme.format(gateway.token)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("header", [None, "SSWS wrong", "Basic abc"])
def test_without_a_valid_token_the_answer_is_an_okta_401(gateway, header):
    headers = {"Authorization": header} if header else {}
    r = httpx.get(gateway.url + KEYS.format(server="default"), headers=headers)
    assert r.status_code == 401
    body = r.json()
    assert body["errorCode"] == "E0000011" and body["errorId"] and "errorCauses" in body


# -- derived tokens follow the rotation --------------------------------------------------


async def test_tokens_signed_before_a_rotation_still_verify_after_it(okta, gateway, replica):
    issuer = gateway.env.get("GATEWAY_ISSUER", "http://127.0.0.1:4470")
    await replica.refresh()
    assert derived_jwks(gateway)["keys"][0]["kid"] == replica.active_signer().kid
    before = mint(replica, issuer)

    ok(await okta.rotate_authorization_server_keys("default", JwkUse(use="sig")))

    published = derived_jwks(gateway)
    kids = [k["kid"] for k in published["keys"]]
    assert t.jwt_key_id(before) in kids and kids[0] != t.jwt_key_id(before)
    # the old token verifies with nothing but the published JWKS …
    key = jwt.PyJWKSet.from_dict(published)[t.jwt_key_id(before)]
    assert jwt.decode(before, key.key, algorithms=[key.algorithm_name],
                      options={"verify_exp": False, "verify_nbf": False,
                               "verify_iat": False})["sub"] == "actor"
    # … and through the keyring of a replica that has not refreshed yet
    result = t.verify_jwt(before, await replica.resolve(t.jwt_key_id(before) or ""),
                          issuer=issuer, now=1_900_000_060)
    assert result.ok
    # after refreshing, the replica signs with the new key, which the JWKS lists first
    assert await replica.refresh() is True
    after = mint(replica, issuer)
    assert t.jwt_key_id(after) == kids[0] != t.jwt_key_id(before)
    assert t.verify_jwt(after, await replica.resolve(kids[0]), issuer=issuer,
                        now=1_900_000_060).ok


async def test_a_replica_meeting_an_unknown_kid_refreshes_and_finds_it(okta, gateway, replica):
    stale_signer = replica.active_signer().kid
    ok(await okta.rotate_authorization_server_keys("default", JwkUse(use="sig")))
    ok(await okta.rotate_authorization_server_keys("default", JwkUse(use="sig")))
    newest = derived_jwks(gateway)["keys"][0]["kid"]
    assert replica.public_key(newest) is None  # made after this replica last read
    assert await replica.resolve(newest) is not None
    assert replica.active_signer().kid not in (stale_signer,)


def test_a_derived_jwt_verifies_with_only_the_published_jwks(gateway, replica):
    issuer = "https://issuer.test"
    token = mint(replica, issuer, audiences=["api"], scopes=["read"])
    jwks = derived_jwks(gateway)
    assert all("d" not in k for k in jwks["keys"])
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="api", issuer=issuer,
                        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    assert (claims["sub"], claims["key_id"], claims["scopes"]) == ("actor", "parent-key",
                                                                   ["read"])


def test_the_jwks_parses_with_the_ory_sdk_and_the_admin_path_needs_the_token(gateway):
    config = ory_client.Configuration(host=gateway.url)
    with ory_client.ApiClient(config) as client:
        got = ory_client.ApiKeysApi(client).get_jwks()
    assert got.jwks.keys and all(k.kty == "OKP" and k.crv == "Ed25519" for k in got.jwks.keys)
    admin = f"{gateway.url}/v2alpha1/admin/derivedKeys/jwks.json"
    assert httpx.get(admin).status_code == 401
    r = httpx.get(admin, headers=gateway.auth)
    assert r.status_code == 200 and r.json()["jwks"]["keys"]


# -- resource-server keys --------------------------------------------------------------


async def add(okta, kid: str, **extra: Any):
    fields = {"kid": kid, "kty": "RSA", "use": "enc", "status": "INACTIVE", **rsa_members(),
              **extra}
    body = ResourceKeyBody(**fields)
    return await okta.add_o_auth2_resource_server_json_web_key("default", body)


async def test_an_added_resource_key_is_inactive_with_okta_fields(okta, gateway, unique):
    key = ok(await add(okta, f"enc-{unique}"))
    assert key.id.startswith("apk") and len(key.id) == 20
    assert (key.kid, key.status, key.kty, key.use) == (f"enc-{unique}", "INACTIVE", "RSA",
                                                       "enc")
    assert key.created.endswith("Z") and len(key.created) == len("2023-04-06T21:32:33.000Z")
    assert key.links.activate.href.endswith(f"/{key.id}/lifecycle/activate")
    assert key.links.delete.href.endswith(f"/resourceservercredentials/keys/{key.id}")
    got = ok(await okta.get_o_auth2_resource_server_json_web_key("default", key.id))
    assert (got.id, got.n) == (key.id, key.n)
    listed = ok(await okta.list_o_auth2_resource_server_json_web_keys("default"))
    assert key.id in [k.id for k in listed]


async def test_adding_an_active_key_or_one_without_kid_is_400(okta, unique):
    error = err(await add(okta, f"enc-{unique}", status="ACTIVE"))
    assert (error.status, error.error_code) == (400, "E0000001")
    body = ResourceKeyBody(kty="RSA", use="enc", status="INACTIVE", **rsa_members())
    error = err(await okta.add_o_auth2_resource_server_json_web_key("default", body))
    assert (error.status, error.error_code) == (400, "E0000001")
    ok(await add(okta, f"dup-{unique}"))
    assert err(await add(okta, f"dup-{unique}")).status == 400


def test_a_key_that_is_not_rsa_2048_is_refused(gateway, unique):
    small = {"kid": f"small-{unique}", "kty": "RSA", "use": "enc", "status": "INACTIVE",
             "e": "AQAB", "n": jwk.b64url(b"\xff" * 128)}
    r = httpx.post(gateway.url + "/api/v1/authorizationServers/default/"
                   "resourceservercredentials/keys", json=small, headers=gateway.auth)
    assert r.status_code == 400 and r.json()["errorCode"] == "E0000001"


async def test_at_most_one_resource_key_is_active(okta, unique):
    first = ok(await add(okta, f"one-{unique}"))
    second = ok(await add(okta, f"two-{unique}"))
    assert ok(await okta.activate_o_auth2_resource_server_json_web_key(
        "default", first.id)).status == "ACTIVE"
    assert ok(await okta.activate_o_auth2_resource_server_json_web_key(
        "default", second.id)).status == "ACTIVE"
    listed = ok(await okta.list_o_auth2_resource_server_json_web_keys("default"))
    assert [k.id for k in listed if k.status == "ACTIVE"] == [second.id]
    assert ok(await okta.get_o_auth2_resource_server_json_web_key(
        "default", first.id)).status == "INACTIVE"


async def test_only_inactive_keys_can_be_deleted(okta, unique):
    key = ok(await add(okta, f"del-{unique}"))
    ok(await okta.activate_o_auth2_resource_server_json_web_key("default", key.id))
    error = err(await okta.delete_o_auth2_resource_server_json_web_key("default", key.id))
    assert (error.status, error.error_code) == (400, "E0000001")
    assert ok(await okta.deactivate_o_auth2_resource_server_json_web_key(
        "default", key.id)).status == "INACTIVE"
    result = await okta.delete_o_auth2_resource_server_json_web_key("default", key.id)
    assert result[-1] is None and result[1].status_code == 204
    error = err(await okta.get_o_auth2_resource_server_json_web_key("default", key.id))
    assert (error.status, error.error_code) == (404, "E0000007")
