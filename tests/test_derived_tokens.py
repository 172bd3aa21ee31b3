"""Derived tokens end to end: :derive, verification through every path, JWKS, rotation."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import jwt
import ory_client
import pytest
from ory_client.exceptions import ApiException

from gateway.crypto import tokens

JWT = ory_client.TokenAlgorithm.TOKEN_ALGORITHM_JWT
MACAROON = ory_client.TokenAlgorithm.TOKEN_ALGORITHM_MACAROON
OK = ory_client.VerificationErrorCode.VERIFICATION_ERROR_UNSPECIFIED


def _issue(ory_keys, unique: str, **extra) -> ory_client.IssueApiKeyResponse:
    return ory_keys.admin_issue_api_key(ory_client.IssueApiKeyRequest(
        name="parent", actor_id=f"actor-{unique}", scopes=["read", "write"], **extra))


def _derive(ory_keys, secret: str, algorithm, **extra) -> ory_client.DeriveTokenResponse:
    return ory_keys.admin_derive_token(ory_client.DeriveTokenRequest(
        credential=secret, algorithm=algorithm, **extra))


def _verify(ory_keys, credential: str, **extra) -> ory_client.VerifyApiKeyResponse:
    return ory_keys.admin_verify_api_key(ory_client.VerifyApiKeyRequest(
        credential=credential, **extra))


@pytest.mark.parametrize("algorithm", [JWT, MACAROON])
def test_derived_token_verifies_with_narrowed_scopes_and_the_parent_identity(
        ory_keys, unique, algorithm):
    parent = _issue(ory_keys, unique)
    derived = _derive(ory_keys, parent.secret, algorithm, scopes=["read"], ttl="10m")
    assert derived.token.scopes == ["read"]
    if algorithm == MACAROON:
        assert derived.token.token.startswith("mc_")
    else:
        assert derived.token.token.count(".") == 2
    result = _verify(ory_keys, derived.token.token)
    assert result.is_valid is True
    assert result.error_code == OK
    assert result.key_id == parent.issued_api_key.key_id
    assert result.actor_id == f"actor-{unique}"
    assert result.scopes == ["read"]


@pytest.mark.parametrize("algorithm", [JWT, MACAROON])
def test_derived_token_stops_verifying_when_its_parent_is_revoked(ory_keys, unique, algorithm):
    parent = _issue(ory_keys, unique)
    token = _derive(ory_keys, parent.secret, algorithm).token.token
    assert _verify(ory_keys, token).is_valid is True
    ory_keys.admin_revoke_issued_api_key(parent.issued_api_key.key_id,
                                         ory_client.AdminRevokeIssuedApiKeyBody(
                                             reason="REVOCATION_REASON_KEY_COMPROMISE"))
    result = _verify(ory_keys, token)
    assert result.is_valid is False
    assert result.error_code == ory_client.VerificationErrorCode.VERIFICATION_ERROR_REVOKED


def test_derive_refuses_scopes_the_parent_does_not_hold(ory_keys, unique):
    parent = _issue(ory_keys, unique)
    with pytest.raises(ApiException) as err:
        _derive(ory_keys, parent.secret, JWT, scopes=["admin"])
    assert err.value.status == 403  # as Ory Talos answers
    assert "admin" in err.value.body


@pytest.mark.parametrize("case", ["revoked", "unknown", "derived", "expired"])
def test_derive_refuses_bad_parents(ory_keys, unique, case):
    parent = _issue(ory_keys, unique, ttl="1s" if case == "expired" else None)
    credential = parent.secret
    if case == "expired":
        time.sleep(1.1)
    elif case == "revoked":
        ory_keys.admin_revoke_issued_api_key(parent.issued_api_key.key_id,
                                             ory_client.AdminRevokeIssuedApiKeyBody(
                                                 reason="REVOCATION_REASON_SUPERSEDED"))
    elif case == "unknown":
        credential = "an-unknown-legacy-key-" + unique
    else:
        credential = _derive(ory_keys, parent.secret, JWT).token.token
    with pytest.raises(ApiException) as err:
        _derive(ory_keys, credential, JWT)
    # as Ory Talos answers: a credential that does not authenticate is a 401, a known key
    # that may not derive a 403
    assert err.value.status == {"revoked": 403, "unknown": 401, "derived": 400,
                                "expired": 401}[case]


def test_a_derived_ttl_is_exact_or_refused_never_cut_short(ory_keys, unique):
    parent = _issue(ory_keys, unique, ttl="120s")
    with pytest.raises(ApiException) as err:  # beyond the parent's remaining life
        _derive(ory_keys, parent.secret, JWT, ttl="24h")
    assert err.value.status == 400 and "remaining lifetime" in err.value.body
    with pytest.raises(ApiException) as err:  # beyond GATEWAY_MAX_KEY_TTL (8760h)
        _derive(ory_keys, _issue(ory_keys, unique + "b").secret, JWT, ttl="8761h")
    assert err.value.status == 400 and "GATEWAY_MAX_KEY_TTL" in err.value.body
    before = datetime.now(UTC)
    derived = _derive(ory_keys, parent.secret, JWT, ttl="60s")
    assert abs((derived.token.expire_time - before).total_seconds() - 60) < 3


def test_imported_keys_derive_tokens_too(ory_keys, unique):
    raw = f"legacy-key-{unique}-0123456789"
    ory_keys.admin_import_api_key(ory_client.ImportApiKeyRequest(
        raw_key=raw, name="legacy", actor_id=f"actor-{unique}", scopes=["read"]))
    token = _derive(ory_keys, raw, MACAROON).token.token
    assert _verify(ory_keys, token).is_valid is True


@pytest.mark.parametrize("algorithm", [JWT, MACAROON])
def test_audiences_bind_a_derived_token(ory_keys, unique, algorithm):
    parent = _issue(ory_keys, unique)
    token = _derive(ory_keys, parent.secret, algorithm, audiences=["billing"]).token.token
    assert _verify(ory_keys, token, expected_audiences=["billing"]).is_valid is True
    other = _verify(ory_keys, token, expected_audiences=["shipping"])
    assert other.error_code == \
        ory_client.VerificationErrorCode.VERIFICATION_ERROR_AUDIENCE_MISMATCH
    assert _verify(ory_keys, token).is_valid is False  # bound token, caller expects none


def test_a_holder_can_narrow_a_macaroon_offline_but_not_widen_it(ory_keys, unique):
    parent = _issue(ory_keys, unique)
    token = _derive(ory_keys, parent.secret, MACAROON).token.token
    narrowed = tokens.attenuate(token, tokens.caveat("scopes", "=", ["read"]))
    result = _verify(ory_keys, narrowed)
    assert result.is_valid is True and result.scopes == ["read"]
    widened = tokens.attenuate(token, tokens.caveat("scopes", "=", ["read", "write", "admin"]))
    assert _verify(ory_keys, widened).scopes == ["read", "write"]
    unknown = tokens.attenuate(token, "colour = blue")
    assert _verify(ory_keys, unknown).is_valid is False
    tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    assert _verify(ory_keys, tampered).is_valid is False


def test_forward_auth_accepts_derived_tokens_and_checks_their_scopes(gateway, ory_keys, unique):
    parent = _issue(ory_keys, unique)
    token = _derive(ory_keys, parent.secret, JWT, scopes=["read"]).token.token
    with gateway.client() as http:
        ok = http.get("/v2alpha1/decisions", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ok.headers["x-key-id"] == parent.issued_api_key.key_id
        assert ok.headers["x-scopes"] == "read"
        denied = http.get("/v2alpha1/decisions?scope=write",
                          headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403


def test_batch_verify_mixes_keys_and_derived_tokens(ory_keys, unique):
    parent = _issue(ory_keys, unique)
    jwt_token = _derive(ory_keys, parent.secret, JWT).token.token
    mac = _derive(ory_keys, parent.secret, MACAROON).token.token
    batch = ory_keys.admin_batch_verify_api_keys(ory_client.BatchVerifyApiKeysRequest(
        requests=[ory_client.VerifyApiKeyRequest(credential=c)
                  for c in (jwt_token, "eyJ.bad.token", parent.secret, mac)]))
    assert [r.is_valid for r in batch.results] == [True, False, True, True]


def test_a_derived_jwt_verifies_with_pyjwt_using_only_the_published_jwks(gateway, ory_keys,
                                                                          unique):
    parent = _issue(ory_keys, unique)
    token = _derive(ory_keys, parent.secret, JWT, audiences=["svc"]).token.token
    jwks = httpx.get(f"{gateway.url}/v2alpha1/derivedKeys/jwks.json").json()["jwks"]
    assert all("d" not in key for key in jwks["keys"])
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="svc")
    assert claims["sub"] == f"actor-{unique}"
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_rotating_the_default_server_keeps_old_tokens_valid_and_signs_new_ones_with_new_kid(
        gateway, ory_keys, unique):
    parent = _issue(ory_keys, unique)
    before = _derive(ory_keys, parent.secret, JWT, ttl="30m").token.token
    old_kid = jwt.get_unverified_header(before)["kid"]
    with gateway.client() as http:
        rotated = http.post("/api/v1/authorizationServers/default/credentials/lifecycle/"
                            "keyRotate", json={"use": "sig"},
                            headers={"Authorization": f"SSWS {gateway.token}"})
        assert rotated.status_code == 200
        jwks = http.get("/v2alpha1/derivedKeys/jwks.json").json()["jwks"]["keys"]
    after = _derive(ory_keys, parent.secret, JWT).token.token
    new_kid = jwt.get_unverified_header(after)["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in jwks}
    assert {old_kid, new_kid} <= kids
    assert _verify(ory_keys, before).is_valid is True
    assert _verify(ory_keys, after).is_valid is True
