"""``:verify`` and ``:batchVerify`` through the official ``ory-client`` SDK, on SQLite and
PostgreSQL: every verdict a caller can get, with the fields the SDK parses."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import secret_format
from ory_client import (
    AdminRevokeImportedApiKeyBody,
    AdminRevokeIssuedApiKeyBody,
    BatchVerifyApiKeysRequest,
    ImportApiKeyRequest,
    IPRestriction,
    IssueApiKeyRequest,
    KeyStatus,
    KeyVisibility,
    RateLimitPolicy,
    RevocationReason,
    VerificationErrorCode,
    VerifyApiKeyRequest,
)
from ory_client.exceptions import BadRequestException, UnauthorizedException
from verify_helpers import forge

NOT_FOUND = VerificationErrorCode.VERIFICATION_ERROR_NOT_FOUND
NO_ERROR = VerificationErrorCode.VERIFICATION_ERROR_UNSPECIFIED


def _issue(api: Any, **fields: Any) -> Any:
    fields.setdefault("name", "verify-sdk")
    fields.setdefault("actor_id", f"actor-{secrets.token_hex(4)}")
    return api.admin_issue_api_key(IssueApiKeyRequest(**fields))


def _import(api: Any, raw: str | None = None, **fields: Any) -> tuple[str, Any]:
    raw = raw or f"sk_live_{secrets.token_hex(20)}"
    fields.setdefault("name", "verify-sdk-imported")
    fields.setdefault("actor_id", f"actor-{secrets.token_hex(4)}")
    return raw, api.admin_import_api_key(ImportApiKeyRequest(raw_key=raw, **fields))


def _verify(api: Any, credential: str, **fields: Any) -> Any:
    return api.admin_verify_api_key(VerifyApiKeyRequest(credential=credential, **fields))


def _full_fields() -> dict[str, Any]:
    return {
        "scopes": ["orders:read", "orders:write"],
        "metadata": {"team": "payments", "tier": 2, "nested": {"ok": True}},
        "ttl": "3600s",
        "rate_limit_policy": RateLimitPolicy(quota="1000", window="3600s"),
        "ip_restriction": IPRestriction(allowed_cidrs=["127.0.0.1/32", "::1/128"]),
    }


def _assert_valid_with_every_field(resp: Any, key: Any) -> None:
    assert resp.is_valid is True
    assert resp.error_code == NO_ERROR
    assert not resp.error_message
    assert resp.key_id == key.key_id
    assert resp.actor_id == key.actor_id
    assert resp.scopes == ["orders:read", "orders:write"]
    assert resp.status == KeyStatus.KEY_STATUS_ACTIVE
    assert resp.visibility in (KeyVisibility.KEY_VISIBILITY_SECRET,
                               KeyVisibility.KEY_VISIBILITY_UNSPECIFIED)
    assert resp.metadata == {"team": "payments", "tier": 2, "nested": {"ok": True}}
    assert resp.expire_time == key.expire_time
    assert resp.expire_time > datetime.now(UTC)
    assert resp.rate_limit_policy is not None
    assert resp.rate_limit_policy.quota == "1000"
    assert resp.rate_limit_policy.window == "3600s"
    assert isinstance(resp.rate_limit_remaining, str)
    assert int(resp.rate_limit_remaining) < 1000
    assert resp.rate_limit_reset_time is not None
    assert resp.rate_limit_reset_time > datetime.now(UTC)
    assert resp.issuer
    assert resp.audiences == []


def test_an_issued_key_verifies_with_every_field(ory_keys: Any) -> None:
    created = _issue(ory_keys, **_full_fields())
    resp = _verify(ory_keys, created.secret)
    _assert_valid_with_every_field(resp, created.issued_api_key)
    assert resp.rate_limit_remaining == "999"
    again = _verify(ory_keys, created.secret)  # from the cache: the same answer
    _assert_valid_with_every_field(again, created.issued_api_key)
    assert again.rate_limit_remaining == "998"


def test_an_imported_key_verifies_with_every_field(ory_keys: Any) -> None:
    raw, key = _import(ory_keys, **_full_fields())
    assert key.key_id == hashlib.new("sha512_256", raw.encode()).hexdigest()
    resp = _verify(ory_keys, raw)
    _assert_valid_with_every_field(resp, key)
    _assert_valid_with_every_field(_verify(ory_keys, raw), key)


def test_a_key_without_optional_fields_verifies_without_them(ory_keys: Any) -> None:
    created = _issue(ory_keys)
    resp = _verify(ory_keys, created.secret)
    assert resp.is_valid is True
    assert resp.key_id == created.issued_api_key.key_id
    assert resp.rate_limit_remaining is None
    assert resp.rate_limit_policy is None
    assert resp.scopes in (None, [])


def test_a_public_key_verifies_and_says_so(ory_keys: Any) -> None:
    created = _issue(ory_keys, visibility=KeyVisibility.KEY_VISIBILITY_PUBLIC)
    assert created.secret.startswith("ory_pk_")
    resp = _verify(ory_keys, created.secret)
    assert resp.is_valid is True
    assert resp.visibility == KeyVisibility.KEY_VISIBILITY_PUBLIC
    unknown = _verify(ory_keys, secret_format().new_secret("ory_pk")).to_dict()
    assert _verify(ory_keys, forge(created.secret)).to_dict() == unknown


def test_an_unknown_credential_is_not_found_with_http_200(ory_keys: Any) -> None:
    unknown = secret_format().new_secret("ory_ak")
    for credential in (unknown, f"sk_live_{secrets.token_hex(20)}", "x"):
        info = ory_keys.admin_verify_api_key_with_http_info(
            VerifyApiKeyRequest(credential=credential))
        assert info.status_code == 200
        assert info.data.is_valid is False
        assert info.data.error_code == NOT_FOUND
        assert info.data.key_id is None and info.data.actor_id is None


def test_a_forged_checksum_answers_exactly_like_an_unknown_key(ory_keys: Any) -> None:
    real = _issue(ory_keys).secret
    unknown = _verify(ory_keys, secret_format().new_secret("ory_ak")).to_dict()
    assert unknown["is_valid"] is False
    for position in (len("ory_ak_v2_") + 3, -10, -1):  # random part, and the checksum
        forged = forge(real, position)
        assert forged != real
        for _ in range(2):  # the first answer and the cached one
            assert _verify(ory_keys, forged).to_dict() == unknown
    raw, _ = _import(ory_keys)
    assert _verify(ory_keys, forge(raw)).to_dict() == unknown
    assert _verify(ory_keys, real).is_valid is True


def test_a_revoked_key_is_revoked(ory_keys: Any) -> None:
    created = _issue(ory_keys)
    assert _verify(ory_keys, created.secret).is_valid is True
    ory_keys.admin_revoke_issued_api_key(
        created.issued_api_key.key_id,
        AdminRevokeIssuedApiKeyBody(reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    resp = _verify(ory_keys, created.secret)
    assert resp.is_valid is False
    assert resp.error_code == VerificationErrorCode.VERIFICATION_ERROR_REVOKED
    assert resp.key_id == created.issued_api_key.key_id

    raw, key = _import(ory_keys)
    assert _verify(ory_keys, raw).is_valid is True
    ory_keys.admin_revoke_imported_api_key(
        key.key_id,
        AdminRevokeImportedApiKeyBody(reason=RevocationReason.REVOCATION_REASON_SUPERSEDED))
    assert _verify(ory_keys, raw).error_code == VerificationErrorCode.VERIFICATION_ERROR_REVOKED


def test_an_expired_key_is_expired(ory_keys: Any) -> None:
    created = _issue(ory_keys, ttl="1s")
    raw, _ = _import(ory_keys, ttl="1s")
    deadline = time.monotonic() + 15
    answers: list[Any] = []
    while time.monotonic() < deadline:
        answers = [_verify(ory_keys, created.secret), _verify(ory_keys, raw)]
        if not any(a.is_valid for a in answers):
            break
        time.sleep(0.1)
    for resp in answers:
        assert resp.is_valid is False
        assert resp.error_code == VerificationErrorCode.VERIFICATION_ERROR_EXPIRED
        assert resp.status == KeyStatus.KEY_STATUS_EXPIRED
    assert answers[0].key_id == created.issued_api_key.key_id


def test_a_client_outside_the_ip_restriction_is_refused(ory_keys: Any) -> None:
    allowed = _issue(ory_keys, ip_restriction=IPRestriction(allowed_cidrs=["127.0.0.1/32"]))
    denied = _issue(ory_keys, ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]))
    raw, _ = _import(ory_keys, ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]))
    assert _verify(ory_keys, allowed.secret).is_valid is True
    for credential in (denied.secret, raw):
        for _ in range(2):
            resp = _verify(ory_keys, credential)
            assert resp.is_valid is False
            assert resp.error_code == VerificationErrorCode.VERIFICATION_ERROR_IP_NOT_ALLOWED
    assert _verify(ory_keys, denied.secret).key_id == denied.issued_api_key.key_id


def test_expected_audiences_on_a_plain_key_is_an_audience_mismatch(ory_keys: Any) -> None:
    created = _issue(ory_keys)
    resp = _verify(ory_keys, created.secret, expected_audiences=["https://api.example.com"])
    assert resp.is_valid is False
    assert resp.error_code == VerificationErrorCode.VERIFICATION_ERROR_AUDIENCE_MISMATCH
    assert _verify(ory_keys, created.secret, expected_audiences=[]).is_valid is True
    assert _verify(ory_keys, created.secret).is_valid is True


def test_batch_verify_answers_each_credential_in_input_order(ory_keys: Any) -> None:
    valid = _issue(ory_keys, scopes=["a"])
    revoked = _issue(ory_keys)
    ory_keys.admin_revoke_issued_api_key(
        revoked.issued_api_key.key_id,
        AdminRevokeIssuedApiKeyBody(reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    raw, imported = _import(ory_keys, scopes=["b"])
    ip_denied = _issue(ory_keys, ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]))
    _verify(ory_keys, valid.secret)  # one of them is cached already
    credentials = [secret_format().new_secret("ory_ak"), valid.secret, revoked.secret, raw,
                   forge(valid.secret), ip_denied.secret, valid.secret, "garbage"]
    expected = [NOT_FOUND, NO_ERROR, VerificationErrorCode.VERIFICATION_ERROR_REVOKED,
                NO_ERROR, NOT_FOUND, VerificationErrorCode.VERIFICATION_ERROR_IP_NOT_ALLOWED,
                NO_ERROR, NOT_FOUND]
    resp = ory_keys.admin_batch_verify_api_keys(BatchVerifyApiKeysRequest(
        requests=[VerifyApiKeyRequest(credential=c) for c in credentials]))
    assert [r.error_code for r in resp.results] == expected
    assert [r.is_valid for r in resp.results] == [c == NO_ERROR for c in expected]
    assert resp.results[1].key_id == valid.issued_api_key.key_id
    assert resp.results[1].scopes == ["a"]
    assert resp.results[3].key_id == imported.key_id
    assert resp.results[3].scopes == ["b"]
    assert resp.results[6].key_id == valid.issued_api_key.key_id


def test_batch_verify_takes_at_most_100_credentials(ory_keys: Any) -> None:
    secret = _issue(ory_keys).secret
    full = BatchVerifyApiKeysRequest(
        requests=[VerifyApiKeyRequest(credential=secret) for _ in range(100)])
    resp = ory_keys.admin_batch_verify_api_keys(full)
    assert len(resp.results) == 100 and all(r.is_valid for r in resp.results)
    over = BatchVerifyApiKeysRequest(
        requests=[VerifyApiKeyRequest(credential=secret) for _ in range(101)])
    with pytest.raises(BadRequestException):
        ory_keys.admin_batch_verify_api_keys(over)


def test_batch_verify_with_expected_audiences_per_item(ory_keys: Any) -> None:
    secret = _issue(ory_keys).secret
    resp = ory_keys.admin_batch_verify_api_keys(BatchVerifyApiKeysRequest(requests=[
        VerifyApiKeyRequest(credential=secret, expected_audiences=["aud"]),
        VerifyApiKeyRequest(credential=secret)]))
    assert [r.error_code for r in resp.results] == [
        VerificationErrorCode.VERIFICATION_ERROR_AUDIENCE_MISMATCH, NO_ERROR]


def test_verify_without_a_credential_is_a_bad_request(ory_keys: Any) -> None:
    with pytest.raises(BadRequestException):
        ory_keys.admin_verify_api_key(VerifyApiKeyRequest())
    with pytest.raises(BadRequestException):
        ory_keys.admin_verify_api_key(VerifyApiKeyRequest(credential=""))
    with pytest.raises(BadRequestException):
        ory_keys.admin_verify_api_key(VerifyApiKeyRequest(credential="k" * 8193))


def test_verify_needs_the_admin_token(gateway: Any) -> None:
    import ory_client

    for token in (None, "wrong-token"):
        config = ory_client.Configuration(host=gateway.url, access_token=token)
        with ory_client.ApiClient(config) as client:
            api = ory_client.ApiKeysApi(client)
            with pytest.raises(UnauthorizedException):
                api.admin_verify_api_key(VerifyApiKeyRequest(credential="anything"))
            with pytest.raises(UnauthorizedException):
                api.admin_batch_verify_api_keys(BatchVerifyApiKeysRequest(
                    requests=[VerifyApiKeyRequest(credential="anything")]))
