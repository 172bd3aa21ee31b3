"""Ory's JWK admin API through the official ``ory-client`` JwkApi, against a running gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ory_client
import pytest
from ory_client.exceptions import (
    BadRequestException,
    ConflictException,
    NotFoundException,
    UnauthorizedException,
)

from gateway.crypto import jwk

PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "k"}


@pytest.fixture
def jwk_api(gateway) -> Iterator[ory_client.JwkApi]:
    config = ory_client.Configuration(host=gateway.url, access_token=gateway.token)
    with ory_client.ApiClient(config) as client:
        yield ory_client.JwkApi(client)


def create(api: ory_client.JwkApi, set_id: str, alg: str, kid: str) -> ory_client.JsonWebKeySet:
    return api.create_json_web_key_set(
        set_id, ory_client.CreateJsonWebKeySet(alg=alg, kid=kid, use="sig"))


def sdk_key(key: jwk.Jwk, *, private: bool = True) -> ory_client.JsonWebKey:
    return ory_client.JsonWebKey.from_dict(key.to_dict(private=private))


def assert_public(keys) -> None:
    for key in keys:
        assert not PRIVATE & {k for k, v in key.to_dict().items() if v is not None}


@pytest.mark.parametrize(("alg", "kty"), [("RS256", "RSA"), ("ES256", "EC"), ("ES512", "EC"),
                                          ("EdDSA", "OKP")])
def test_create_returns_201_with_the_public_key_only(jwk_api, unique, alg, kty):
    created = create(jwk_api, f"set-{unique}", alg, "k1")
    assert [(k.kid, k.alg, k.kty, k.use) for k in created.keys] == [("k1", alg, kty, "sig")]
    assert_public(created.keys)


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_symmetric_keys_are_created_but_never_shown(jwk_api, unique, alg):
    assert create(jwk_api, f"set-{unique}", alg, "h1").keys == []
    create(jwk_api, f"set-{unique}", "ES256", "e1")
    assert [k.kid for k in jwk_api.get_json_web_key_set(f"set-{unique}").keys] == ["e1"]
    assert jwk_api.get_json_web_key(f"set-{unique}", "h1").keys == []


def test_create_adds_to_an_existing_set_and_keeps_the_old_keys(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "old")
    create(jwk_api, f"set-{unique}", "ES256", "new")
    got = jwk_api.get_json_web_key_set(f"set-{unique}")
    assert sorted(k.kid for k in got.keys) == ["new", "old"]
    assert_public(got.keys)


def test_create_with_a_taken_kid_conflicts(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "k1")
    with pytest.raises(ConflictException):
        create(jwk_api, f"set-{unique}", "ES256", "k1")


def test_create_with_an_unsupported_alg_is_a_400_error_oauth2(jwk_api, unique):
    with pytest.raises(BadRequestException) as info:
        create(jwk_api, f"set-{unique}", "RS1", "k1")
    body = json.loads(info.value.body)
    assert body["error"] == "invalid_request" and body["status_code"] == 400
    assert "error_description" in body


def test_get_key_returns_a_set_holding_that_key(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "RS256", "a")
    create(jwk_api, f"set-{unique}", "ES512", "b")
    got = jwk_api.get_json_web_key(f"set-{unique}", "b")
    assert isinstance(got, ory_client.JsonWebKeySet)
    assert [(k.kid, k.alg, k.crv) for k in got.keys] == [("b", "ES512", "P-521")]
    assert_public(got.keys)


def test_missing_sets_and_keys_are_404(jwk_api, unique):
    with pytest.raises(NotFoundException):
        jwk_api.get_json_web_key_set(f"none-{unique}")
    create(jwk_api, f"set-{unique}", "ES256", "a")
    with pytest.raises(NotFoundException):
        jwk_api.get_json_web_key(f"set-{unique}", "zzz")


def test_put_set_replaces_the_whole_set_and_echoes_what_was_stored(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "gone")
    private = jwk.generate("EdDSA", kid="p1")
    public = jwk.generate("RS256", kid="r1")
    stored = jwk_api.set_json_web_key_set(f"set-{unique}", ory_client.JsonWebKeySet(
        keys=[sdk_key(private), sdk_key(public, private=False)]))
    by_kid = {k.kid: k for k in stored.keys}
    assert set(by_kid) == {"p1", "r1"}
    assert by_kid["p1"].d is not None  # the request carried it, so the echo does too
    assert by_kid["r1"].d is None
    got = jwk_api.get_json_web_key_set(f"set-{unique}")
    assert sorted(k.kid for k in got.keys) == ["p1", "r1"]
    assert_public(got.keys)


def test_put_set_without_any_private_key_is_refused(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "a")
    public = jwk.generate("ES256", kid="pub")
    with pytest.raises(BadRequestException):
        jwk_api.set_json_web_key_set(f"set-{unique}", ory_client.JsonWebKeySet(
            keys=[sdk_key(public, private=False)]))
    assert [k.kid for k in jwk_api.get_json_web_key_set(f"set-{unique}").keys] == ["a"]


def test_put_set_with_a_malformed_key_is_refused(jwk_api, unique):
    bad = ory_client.JsonWebKey(kid="x", kty="EC", alg="ES256", use="sig", crv="P-256",
                                x="AAAA", y="AAAA", d="AAAA")
    with pytest.raises(BadRequestException):
        jwk_api.set_json_web_key_set(f"set-{unique}", ory_client.JsonWebKeySet(keys=[bad]))


def test_put_key_returns_the_bare_stored_key(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "a")
    key = jwk.generate("ES256", kid="b")
    stored = jwk_api.set_json_web_key(f"set-{unique}", "b", sdk_key(key))
    assert isinstance(stored, ory_client.JsonWebKey)
    assert stored.kid == "b" and stored.d is not None
    got = jwk_api.get_json_web_key(f"set-{unique}", "b")
    assert got.keys[0].x == stored.x and got.keys[0].d is None


def test_put_key_path_kid_is_authoritative(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "a")
    key = jwk.generate("ES256", kid="body-kid")
    with pytest.raises(BadRequestException) as info:
        jwk_api.set_json_web_key(f"set-{unique}", "path-kid", sdk_key(key))
    assert json.loads(info.value.body)["status_code"] == 400


def test_put_key_without_kid_takes_the_path_kid(gateway, unique):
    key = jwk.generate("ES256", kid="ignored").to_dict() or {}
    key.pop("kid")
    r = httpx.put(f"{gateway.url}/admin/keys/set-{unique}/from-path", json=key,
                  headers=gateway.auth)
    assert r.status_code == 200 and r.json()["kid"] == "from-path"


def test_overwriting_the_last_private_key_with_a_public_one_is_refused(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "only")
    replacement = jwk.generate("ES256", kid="only")
    with pytest.raises(BadRequestException):
        jwk_api.set_json_web_key(f"set-{unique}", "only", sdk_key(replacement, private=False))
    create(jwk_api, f"set-{unique}", "ES256", "other")  # now another private key remains
    stored = jwk_api.set_json_web_key(f"set-{unique}", "only",
                                      sdk_key(replacement, private=False))
    assert stored.d is None


def test_delete_key_and_delete_set_answer_204(jwk_api, unique):
    create(jwk_api, f"set-{unique}", "ES256", "a")
    create(jwk_api, f"set-{unique}", "ES256", "b")
    assert jwk_api.delete_json_web_key(f"set-{unique}", "a") is None
    with pytest.raises(NotFoundException):
        jwk_api.get_json_web_key(f"set-{unique}", "a")
    assert [k.kid for k in jwk_api.get_json_web_key_set(f"set-{unique}").keys] == ["b"]
    assert jwk_api.delete_json_web_key_set(f"set-{unique}") is None
    with pytest.raises(NotFoundException):
        jwk_api.get_json_web_key_set(f"set-{unique}")
    with pytest.raises(NotFoundException):
        jwk_api.delete_json_web_key_set(f"set-{unique}")


def test_every_route_needs_the_admin_token(gateway, unique):
    config = ory_client.Configuration(host=gateway.url, access_token="wrong")
    with ory_client.ApiClient(config) as client:
        api = ory_client.JwkApi(client)
        with pytest.raises(UnauthorizedException) as info:
            api.get_json_web_key_set(f"set-{unique}")
    assert json.loads(info.value.body)["error"] == "unauthorized"
    for method, path in [("POST", "/admin/keys/s"), ("PUT", "/admin/keys/s"),
                         ("DELETE", "/admin/keys/s"), ("GET", "/admin/keys/s/k"),
                         ("PUT", "/admin/keys/s/k"), ("DELETE", "/keys/s/k")]:
        assert httpx.request(method, gateway.url + path).status_code == 401


def test_the_older_keys_paths_serve_the_same_api(gateway, unique):
    with gateway.client() as c:
        r = c.post(f"/keys/old-{unique}", json={"alg": "ES256", "kid": "k", "use": "sig"},
                   headers=gateway.auth)
        assert r.status_code == 201
        assert c.get(f"/admin/keys/old-{unique}", headers=gateway.auth).json() == r.json()
        assert c.get(f"/keys/old-{unique}/k", headers=gateway.auth).json() == r.json()
        assert c.delete(f"/keys/old-{unique}", headers=gateway.auth).status_code == 204


def test_well_known_jwks_is_public_and_holds_the_derived_token_keys(gateway):
    config = ory_client.Configuration(host=gateway.url)
    with ory_client.ApiClient(config) as client:
        got = ory_client.WellknownApi(client).discover_json_web_keys()
    assert got.keys and all(k.alg == "EdDSA" and k.d is None for k in got.keys)


def test_private_key_material_never_reaches_the_logs(jwk_api, gateway, unique):
    key = jwk.generate("ES256", kid="secret")
    private = key.to_dict() or {}
    jwk_api.set_json_web_key_set(f"set-{unique}", ory_client.JsonWebKeySet(keys=[sdk_key(key)]))
    with pytest.raises(BadRequestException):  # an error path too
        jwk_api.set_json_web_key(f"set-{unique}", "other", sdk_key(jwk.generate("ES256",
                                                                               kid="x")))
    assert private["d"] not in gateway.logs()
