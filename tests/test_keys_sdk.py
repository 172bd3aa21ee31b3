"""The key lifecycle driven through the official ``ory-client`` SDK, on SQLite and PostgreSQL.

Every admin route of the Ory API-keys v2alpha1 family (and the public self-revoke route) is
called exactly as a user of ``ory_client.ApiKeysApi`` would call it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import ory_client
import pytest
from conftest import checksum_ok
from ory_client import (
    AdminRevokeImportedApiKeyBody,
    AdminRevokeIssuedApiKeyBody,
    AdminRotateIssuedApiKeyBody,
    AdminUpdateImportedApiKeyRequest,
    AdminUpdateIssuedApiKeyRequest,
    BatchCreateImportedApiKeysErrorCode,
    BatchCreateImportedApiKeysRequest,
    DeriveTokenRequest,
    ImportApiKeyRequest,
    IPRestriction,
    IssueApiKeyRequest,
    KeyStatus,
    KeyVisibility,
    RateLimitPolicy,
    RevocationReason,
    SelfRevokeApiKeyRequest,
)
from ory_client.exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)

ACTIVE = KeyStatus.KEY_STATUS_ACTIVE
REVOKED = KeyStatus.KEY_STATUS_REVOKED


@pytest.fixture
def ory_public(gateway: Any) -> Iterator[ory_client.ApiKeysApi]:
    """The SDK with no credential at all (public routes only)."""
    config = ory_client.Configuration(host=gateway.url)
    with ory_client.ApiClient(config) as client:
        yield ory_client.ApiKeysApi(client)


@pytest.fixture
def actor(unique: str) -> str:
    return f"actor-{unique}"


def status_code(exc: ApiException) -> int:
    """The gRPC code of the Status body the error carries."""
    body = json.loads(exc.body)
    assert set(body) == {"code", "message", "details"}
    return int(body["code"])


def issue(api: Any, actor: str, **fields: Any) -> Any:
    fields.setdefault("name", "key")
    return api.admin_issue_api_key(IssueApiKeyRequest(actor_id=actor, **fields))


def import_key(api: Any, actor: str, raw: str | None = None, **fields: Any) -> Any:
    fields.setdefault("name", "imported")
    raw = raw or f"sk_test_{secrets.token_hex(16)}"
    return api.admin_import_api_key(ImportApiKeyRequest(raw_key=raw, actor_id=actor, **fields))


def raw_key() -> str:
    return f"sk_test_{secrets.token_hex(16)}"


def list_all_issued(api: Any, flt: str, page_size: int) -> list[Any]:
    keys: list[Any] = []
    token: str | None = None
    for _ in range(100):
        page = api.admin_list_issued_api_keys(page_size=page_size, page_token=token, filter=flt)
        assert len(page.issued_api_keys or []) <= page_size
        keys += page.issued_api_keys or []
        if not page.next_page_token:
            return keys
        token = page.next_page_token
    raise AssertionError("pagination did not end")


# -- issue ---------------------------------------------------------------------------------


def test_issue_answers_201_with_a_secret_in_the_ory_format(ory_keys: Any, actor: str) -> None:
    resp = ory_keys.admin_issue_api_key_with_http_info(
        IssueApiKeyRequest(name="ci", actor_id=actor, scopes=["read", "write"], ttl="3600s"))
    assert resp.status_code == 201
    secret = resp.data.secret
    key = resp.data.issued_api_key
    assert secret.startswith("ory_ak_v2_") and checksum_ok(secret)
    assert key.actor_id == actor and key.name == "ci" and key.scopes == ["read", "write"]
    assert key.status == ACTIVE
    assert key.visibility == KeyVisibility.KEY_VISIBILITY_SECRET
    assert (key.expire_time - key.create_time).total_seconds() == 3600


def test_the_secret_is_never_shown_again(ory_keys: Any, gateway: Any, actor: str) -> None:
    issued = issue(ory_keys, actor)
    key_id = issued.issued_api_key.key_id
    body_start = issued.secret[len("ory_ak_v2_"):]
    with gateway.client() as http:
        got = http.get(f"/v2alpha1/admin/issuedApiKeys/{key_id}", headers=gateway.auth).text
        listed = http.get("/v2alpha1/admin/issuedApiKeys", headers=gateway.auth,
                          params={"filter": f'actor_id="{actor}"'}).text
    assert key_id in got and key_id in listed
    assert body_start not in got and body_start not in listed


def test_issue_of_a_public_key_uses_the_public_prefix(ory_keys: Any, actor: str) -> None:
    resp = issue(ory_keys, actor, visibility=KeyVisibility.KEY_VISIBILITY_PUBLIC)
    assert resp.secret.startswith("ory_pk_v2_") and checksum_ok(resp.secret)
    assert resp.issued_api_key.visibility == KeyVisibility.KEY_VISIBILITY_PUBLIC


def test_issue_stores_every_optional_field(ory_keys: Any, actor: str) -> None:
    resp = issue(
        ory_keys, actor, metadata={"env": "prod", "tags": ["a", "b"], "n": 1},
        ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"]),
        rate_limit_policy=RateLimitPolicy(quota="100", window="60s"), ttl="1d")
    got = ory_keys.admin_get_issued_api_key(resp.issued_api_key.key_id)
    assert got.metadata == {"env": "prod", "tags": ["a", "b"], "n": 1}
    assert got.ip_restriction.allowed_cidrs == ["10.0.0.0/8", "2001:db8::/32"]
    assert (got.rate_limit_policy.quota, got.rate_limit_policy.window,
            got.rate_limit_policy.unit) == ("100", "60s", "requests")
    assert (got.expire_time - got.create_time).total_seconds() == 86_400


def test_issue_without_ttl_gets_the_default_lifetime(ory_keys: Any, actor: str) -> None:
    """GATEWAY_DEFAULT_KEY_TTL, by default GATEWAY_MAX_KEY_TTL (8760h), as Ory Talos."""
    key = issue(ory_keys, actor).issued_api_key
    assert (key.expire_time - key.create_time).total_seconds() == 8760 * 3600


def test_issue_repeated_with_the_same_request_id_returns_the_same_key_and_secret(
    ory_keys: Any, actor: str, unique: str
) -> None:
    first = issue(ory_keys, actor, scopes=["read"], request_id=f"req-{unique}")
    again = issue(ory_keys, actor, scopes=["read"], request_id=f"req-{unique}")
    assert again.issued_api_key.key_id == first.issued_api_key.key_id
    assert again.secret == first.secret
    listed = ory_keys.admin_list_issued_api_keys(filter=f'actor_id="{actor}"')
    assert len(listed.issued_api_keys) == 1


def test_issue_reusing_a_request_id_for_a_different_request_conflicts(
    ory_keys: Any, actor: str, unique: str
) -> None:
    issue(ory_keys, actor, scopes=["read"], request_id=f"req-{unique}")
    with pytest.raises(ConflictException) as info:
        issue(ory_keys, actor, scopes=["write"], request_id=f"req-{unique}")
    assert info.value.status == 409 and status_code(info.value) == 6
    listed = ory_keys.admin_list_issued_api_keys(filter=f'actor_id="{actor}"')
    assert len(listed.issued_api_keys) == 1


def test_issued_request_ids_are_independent_of_imported_request_ids(
    ory_keys: Any, actor: str, unique: str
) -> None:
    issue(ory_keys, actor, request_id=f"req-{unique}")
    imported = import_key(ory_keys, actor, request_id=f"req-{unique}")
    assert imported.status == ACTIVE


def test_admin_routes_refuse_a_wrong_token(gateway: Any) -> None:
    config = ory_client.Configuration(host=gateway.url, access_token="not-the-token")
    with ory_client.ApiClient(config) as client:
        api = ory_client.ApiKeysApi(client)
        with pytest.raises(UnauthorizedException) as info:
            api.admin_list_issued_api_keys()
    assert status_code(info.value) == 16


# -- import and batch create ---------------------------------------------------------------


def test_import_answers_201_with_the_sha512_256_key_id(ory_keys: Any, actor: str) -> None:
    raw = raw_key()
    resp = ory_keys.admin_import_api_key_with_http_info(ImportApiKeyRequest(
        raw_key=raw, name="legacy", actor_id=actor, scopes=["read"], ttl="8760h"))
    assert resp.status_code == 201
    key = resp.data
    assert key.key_id == hashlib.new("sha512_256", raw.encode()).hexdigest()
    assert key.status == ACTIVE and key.actor_id == actor and key.scopes == ["read"]
    assert (key.expire_time - key.create_time).total_seconds() == 8760 * 3600
    assert raw not in json.dumps(key.to_dict(), default=str)
    got = ory_keys.admin_get_imported_api_key(key.key_id)
    assert got.key_id == key.key_id and got.name == "legacy"


def test_import_of_the_same_raw_key_twice_conflicts(ory_keys: Any, actor: str) -> None:
    raw = raw_key()
    import_key(ory_keys, actor, raw)
    with pytest.raises(ConflictException) as info:
        import_key(ory_keys, actor, raw)
    assert status_code(info.value) == 6


def test_import_repeated_with_the_same_request_id_returns_the_same_key(
    ory_keys: Any, actor: str, unique: str
) -> None:
    raw = raw_key()
    first = import_key(ory_keys, actor, raw, request_id=f"req-{unique}")
    again = import_key(ory_keys, actor, raw, request_id=f"req-{unique}")
    assert again.key_id == first.key_id and again.create_time == first.create_time


@pytest.mark.parametrize("missing", ["actor_id", "name", "raw_key"])
def test_import_requires_raw_key_name_and_actor(ory_keys: Any, actor: str, missing: str
                                                ) -> None:
    fields = {"raw_key": raw_key(), "name": "n", "actor_id": actor, missing: None}
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_import_api_key(ImportApiKeyRequest(**fields))
    assert missing in json.loads(info.value.body)["message"]


def test_import_refuses_a_key_in_this_gateways_issued_format(ory_keys: Any, actor: str
                                                              ) -> None:
    """An issued secret, a JWT or a macaroon could never verify as an imported key: 409
    (FAILED_PRECONDITION, as Ory Talos), alone and per item in a batch."""
    parent = issue(ory_keys, actor)
    jwt_token = ory_keys.admin_derive_token(DeriveTokenRequest(
        credential=parent.secret, algorithm="TOKEN_ALGORITHM_JWT")).token.token
    macaroon = ory_keys.admin_derive_token(DeriveTokenRequest(
        credential=parent.secret, algorithm="TOKEN_ALGORITHM_MACAROON")).token.token
    shapes = [parent.secret, jwt_token, macaroon]
    for raw in shapes:
        with pytest.raises(ConflictException) as info:
            import_key(ory_keys, actor, raw)
        assert status_code(info.value) == 9
    resp = ory_keys.admin_batch_create_imported_api_keys(BatchCreateImportedApiKeysRequest(
        requests=[*(ImportApiKeyRequest(raw_key=r, name="x", actor_id=actor) for r in shapes),
                  ImportApiKeyRequest(raw_key=raw_key(), name="ok", actor_id=actor)]))
    assert [r.error_code for r in resp.results][:3] == [
        "BATCH_CREATE_IMPORTED_API_KEYS_ERROR_FAILED_PRECONDITION"] * 3
    assert resp.success_count == 1


def test_batch_create_reports_each_item_and_answers_200_when_any_succeeded(
    ory_keys: Any, actor: str
) -> None:
    raw = raw_key()
    resp = ory_keys.admin_batch_create_imported_api_keys_with_http_info(
        BatchCreateImportedApiKeysRequest(requests=[
            ImportApiKeyRequest(raw_key=raw, name="a", actor_id=actor),
            ImportApiKeyRequest(raw_key=raw, name="duplicate in batch", actor_id=actor),
            ImportApiKeyRequest(raw_key=raw_key(), name="bad ttl", actor_id=actor, ttl="abc"),
            ImportApiKeyRequest(raw_key=raw_key(), name="b", actor_id=actor),
        ]))
    assert resp.status_code == 200
    body = resp.data
    assert (body.success_count, body.failure_count) == (2, 2)
    assert [r.index for r in body.results] == [0, 1, 2, 3]
    codes = [r.error_code for r in body.results]
    assert codes == [
        BatchCreateImportedApiKeysErrorCode.BATCH_CREATE_IMPORTED_API_KEYS_ERROR_UNSPECIFIED,
        BatchCreateImportedApiKeysErrorCode.BATCH_CREATE_IMPORTED_API_KEYS_ERROR_ALREADY_EXISTS,
        BatchCreateImportedApiKeysErrorCode.BATCH_CREATE_IMPORTED_API_KEYS_ERROR_INVALID_ARGUMENT,
        BatchCreateImportedApiKeysErrorCode.BATCH_CREATE_IMPORTED_API_KEYS_ERROR_UNSPECIFIED,
    ]
    first, dup, bad, last = body.results
    assert first.imported_api_key.key_id == hashlib.new("sha512_256", raw.encode()).hexdigest()
    assert dup.imported_api_key is None and dup.error_message
    assert bad.imported_api_key is None and "ttl" in bad.error_message
    assert last.imported_api_key.name == "b"
    listed = ory_keys.admin_list_imported_api_keys(filter=f'actor_id="{actor}"')
    assert sorted(k.name for k in listed.imported_api_keys) == ["a", "b"]


def test_batch_create_in_which_every_item_fails_is_an_error(ory_keys: Any, actor: str) -> None:
    existing = raw_key()
    import_key(ory_keys, actor, existing)
    with pytest.raises(ConflictException):
        ory_keys.admin_batch_create_imported_api_keys(BatchCreateImportedApiKeysRequest(
            requests=[ImportApiKeyRequest(raw_key=existing, name="again", actor_id=actor)]))
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_batch_create_imported_api_keys(BatchCreateImportedApiKeysRequest(
            requests=[ImportApiKeyRequest(raw_key=existing, name="again", actor_id=actor),
                      ImportApiKeyRequest(raw_key=raw_key(), name="x", actor_id=actor,
                                          ttl="-1s")]))
    assert status_code(info.value) == 3
    listed = ory_keys.admin_list_imported_api_keys(filter=f'actor_id="{actor}"')
    assert len(listed.imported_api_keys) == 1


# -- get and list --------------------------------------------------------------------------


def test_get_of_an_unknown_key_is_404(ory_keys: Any) -> None:
    with pytest.raises(NotFoundException) as info:
        ory_keys.admin_get_issued_api_key("01NOSUCHKEY0000000000000000")
    assert status_code(info.value) == 5
    with pytest.raises(NotFoundException):
        ory_keys.admin_get_imported_api_key("0" * 64)


def test_issued_and_imported_keys_live_in_separate_collections(ory_keys: Any, actor: str
                                                                ) -> None:
    issued_id = issue(ory_keys, actor).issued_api_key.key_id
    imported_id = import_key(ory_keys, actor).key_id
    with pytest.raises(NotFoundException):
        ory_keys.admin_get_imported_api_key(issued_id)
    with pytest.raises(NotFoundException):
        ory_keys.admin_get_issued_api_key(imported_id)
    issued = ory_keys.admin_list_issued_api_keys(filter=f'actor_id="{actor}"')
    imported = ory_keys.admin_list_imported_api_keys(filter=f'actor_id="{actor}"')
    assert [k.key_id for k in issued.issued_api_keys] == [issued_id]
    assert [k.key_id for k in imported.imported_api_keys] == [imported_id]


def test_list_pages_through_every_key_in_a_stable_order_without_duplicates(
    ory_keys: Any, actor: str
) -> None:
    made = [issue(ory_keys, actor, name=f"k{i}").issued_api_key.key_id for i in range(7)]
    flt = f'actor_id="{actor}"'
    for page_size in (1, 3, 7, 50):
        assert [k.key_id for k in list_all_issued(ory_keys, flt, page_size)] == made
    first = ory_keys.admin_list_issued_api_keys(page_size=3, filter=flt)
    assert len(first.issued_api_keys) == 3 and first.next_page_token
    last = ory_keys.admin_list_issued_api_keys(page_size=7, filter=flt)
    assert len(last.issued_api_keys) == 7 and last.next_page_token == ""


def test_list_pagination_is_not_disturbed_by_keys_issued_meanwhile(
    ory_keys: Any, actor: str
) -> None:
    made = [issue(ory_keys, actor).issued_api_key.key_id for _ in range(4)]
    flt = f'actor_id="{actor}"'
    page = ory_keys.admin_list_issued_api_keys(page_size=2, filter=flt)
    made.append(issue(ory_keys, actor).issued_api_key.key_id)
    seen = [k.key_id for k in page.issued_api_keys]
    while page.next_page_token:
        page = ory_keys.admin_list_issued_api_keys(page_size=2, filter=flt,
                                                   page_token=page.next_page_token)
        seen += [k.key_id for k in page.issued_api_keys]
    assert seen == made


def test_list_without_filter_pages_through_every_key(ory_keys: Any, actor: str) -> None:
    mine = {issue(ory_keys, actor).issued_api_key.key_id for _ in range(3)}
    everything = [k.key_id for k in list_all_issued(ory_keys, "", 1000)]
    assert len(everything) == len(set(everything))
    assert mine <= set(everything)


def test_list_filters_by_status_and_actor_joined_by_and(ory_keys: Any, actor: str,
                                                         unique: str) -> None:
    active = issue(ory_keys, actor).issued_api_key.key_id
    revoked = issue(ory_keys, actor).issued_api_key.key_id
    other_actor = issue(ory_keys, f"other-{unique}").issued_api_key.key_id
    ory_keys.admin_revoke_issued_api_key(revoked, AdminRevokeIssuedApiKeyBody(
        reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))

    def ids(flt: str) -> list[str]:
        return [k.key_id for k in list_all_issued(ory_keys, flt, 1000)]

    assert ids(f'actor_id="{actor}"') == [active, revoked]
    assert ids(f'actor_id="{actor}" AND status=KEY_STATUS_ACTIVE') == [active]
    assert ids(f'status=KEY_STATUS_REVOKED AND actor_id="{actor}"') == [revoked]
    assert active in ids("status=KEY_STATUS_ACTIVE")
    assert revoked not in ids("status=KEY_STATUS_ACTIVE")
    assert revoked in ids("status=KEY_STATUS_REVOKED")
    assert other_actor not in ids(f'actor_id="{actor}"')
    page = ory_keys.admin_list_issued_api_keys(filter=f'actor_id="{actor}"')
    assert {k.key_id: k.status for k in page.issued_api_keys} == {active: ACTIVE,
                                                                  revoked: REVOKED}


def test_list_of_imported_keys_filters_and_pages(ory_keys: Any, actor: str) -> None:
    made = [import_key(ory_keys, actor).key_id for _ in range(3)]
    flt = f'actor_id="{actor}" AND status=KEY_STATUS_ACTIVE'
    page = ory_keys.admin_list_imported_api_keys(page_size=2, filter=flt)
    seen = [k.key_id for k in page.imported_api_keys]
    assert page.next_page_token
    page = ory_keys.admin_list_imported_api_keys(page_size=2, filter=flt,
                                                 page_token=page.next_page_token)
    seen += [k.key_id for k in page.imported_api_keys]
    assert seen == made and page.next_page_token == ""


def test_list_refuses_a_bad_filter(ory_keys: Any) -> None:
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_list_issued_api_keys(filter='name="x"')
    assert "name" in json.loads(info.value.body)["message"]


# -- update --------------------------------------------------------------------------------


def test_update_with_a_mask_changes_only_the_named_fields(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor, name="before", scopes=["read"],
                metadata={"keep": True}).issued_api_key
    resp = ory_keys.admin_update_issued_api_key_with_http_info(
        key.key_id,
        AdminUpdateIssuedApiKeyRequest(name="after", scopes=["read", "write"],
                                       metadata={"ignored": True}),
        update_mask="name,scopes")
    assert resp.status_code == 200
    updated = resp.data
    assert (updated.name, updated.scopes, updated.metadata) == (
        "after", ["read", "write"], {"keep": True})
    assert updated.update_time > key.update_time and updated.create_time == key.create_time
    got = ory_keys.admin_get_issued_api_key(key.key_id)
    assert (got.name, got.scopes, got.metadata) == ("after", ["read", "write"], {"keep": True})


def test_update_clears_a_field_named_in_the_mask_but_left_empty(ory_keys: Any, actor: str
                                                                 ) -> None:
    key = issue(ory_keys, actor, name="n", scopes=["read"], metadata={"a": 1},
                ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]),
                rate_limit_policy=RateLimitPolicy(quota="5", window="1s"),
                ttl="1h").issued_api_key
    updated = ory_keys.admin_update_issued_api_key(
        key.key_id, AdminUpdateIssuedApiKeyRequest(name=""),
        update_mask="name,scopes,metadata,ip_restriction,rate_limit_policy")
    assert updated.name == "" and updated.scopes == []
    assert updated.metadata is None and updated.ip_restriction is None
    assert updated.rate_limit_policy is None and updated.expire_time == key.expire_time
    got = ory_keys.admin_get_issued_api_key(key.key_id)
    assert got.to_dict() == updated.to_dict()


def test_update_without_a_mask_applies_every_populated_field(ory_keys: Any, actor: str
                                                             ) -> None:
    key = issue(ory_keys, actor, name="before", scopes=["read"],
                metadata={"a": 1}).issued_api_key
    updated = ory_keys.admin_update_issued_api_key(
        key.key_id, AdminUpdateIssuedApiKeyRequest(
            name="after", rate_limit_policy=RateLimitPolicy(quota="10", window="1m")))
    assert updated.name == "after"
    assert (updated.rate_limit_policy.quota, updated.rate_limit_policy.window) == ("10", "60s")
    assert updated.scopes == ["read"] and updated.metadata == {"a": 1}
    assert updated.status == ACTIVE
    assert updated.visibility == KeyVisibility.KEY_VISIBILITY_SECRET


def test_update_with_nested_mask_paths(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor, metadata={"team": "a", "tier": 1},
                rate_limit_policy=RateLimitPolicy(quota="5", window="1m")).issued_api_key
    updated = ory_keys.admin_update_issued_api_key(
        key.key_id, AdminUpdateIssuedApiKeyRequest(
            metadata={"team": "b"}, rate_limit_policy=RateLimitPolicy(quota="8")),
        update_mask="metadata.team,metadata.tier,rate_limit_policy.quota")
    assert updated.metadata == {"team": "b"}
    assert (updated.rate_limit_policy.quota, updated.rate_limit_policy.window) == ("8", "60s")
    assert ory_keys.admin_get_issued_api_key(key.key_id).to_dict() == updated.to_dict()


def test_update_accepts_the_resource_read_back_from_get(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor, name="before", scopes=["read"], ttl="1h").issued_api_key
    body = AdminUpdateIssuedApiKeyRequest.from_dict(
        {k: v for k, v in key.to_dict().items() if k != "key_id"})
    body.name = "after"
    updated = ory_keys.admin_update_issued_api_key(key.key_id, body)
    assert updated.name == "after" and updated.scopes == ["read"]
    assert updated.expire_time == key.expire_time


def test_update_moves_the_expiry(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor, ttl="1h").issued_api_key
    later = key.expire_time + timedelta(days=30)  # within GATEWAY_MAX_KEY_TTL (8760h)
    updated = ory_keys.admin_update_issued_api_key(
        key.key_id, AdminUpdateIssuedApiKeyRequest(expire_time=later),
        update_mask="expire_time")
    assert updated.expire_time == later


@pytest.mark.parametrize("field", ["status", "create_time", "update_time", "key_id",
                                   "last_used_time", "revocation_reason"])
def test_update_refuses_an_output_only_field_in_the_mask(ory_keys: Any, actor: str,
                                                         field: str) -> None:
    key = issue(ory_keys, actor, name="before").issued_api_key
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_update_issued_api_key(
            key.key_id, AdminUpdateIssuedApiKeyRequest(name="x"),
            update_mask=f"name,{field}")
    message = json.loads(info.value.body)["message"]
    assert field in message and "output only" in message
    assert ory_keys.admin_get_issued_api_key(key.key_id).name == "before"


def test_update_refuses_to_change_the_actor(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor).issued_api_key
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_update_issued_api_key(
            key.key_id, AdminUpdateIssuedApiKeyRequest(actor_id="someone-else"))
    assert "actor_id" in json.loads(info.value.body)["message"]
    assert ory_keys.admin_get_issued_api_key(key.key_id).actor_id == actor


def test_update_of_an_unknown_key_is_404(ory_keys: Any) -> None:
    with pytest.raises(NotFoundException):
        ory_keys.admin_update_issued_api_key(
            "01NOSUCHKEY0000000000000000", AdminUpdateIssuedApiKeyRequest(name="x"))


def test_a_revoked_key_cannot_be_updated(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor, name="before").issued_api_key
    ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody(
        reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    with pytest.raises(ConflictException) as info:
        ory_keys.admin_update_issued_api_key(
            key.key_id, AdminUpdateIssuedApiKeyRequest(name="after"), update_mask="name")
    assert status_code(info.value) == 9 and "revoked" in json.loads(info.value.body)["message"]
    assert ory_keys.admin_get_issued_api_key(key.key_id).name == "before"


def test_update_of_an_imported_key(ory_keys: Any, actor: str) -> None:
    key = import_key(ory_keys, actor, scopes=["read"])
    updated = ory_keys.admin_update_imported_api_key(
        key.key_id, AdminUpdateImportedApiKeyRequest(scopes=["admin"], metadata={"x": "y"}),
        update_mask="scopes,metadata")
    assert updated.key_id == key.key_id
    assert (updated.scopes, updated.metadata) == (["admin"], {"x": "y"})
    assert ory_keys.admin_get_imported_api_key(key.key_id).scopes == ["admin"]


# -- revoke --------------------------------------------------------------------------------


def test_revoke_answers_204_and_the_key_stays_readable(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor).issued_api_key
    resp = ory_keys.admin_revoke_issued_api_key_with_http_info(
        key.key_id, AdminRevokeIssuedApiKeyBody(
            reason=RevocationReason.REVOCATION_REASON_AFFILIATION_CHANGED))
    assert resp.status_code == 204
    got = ory_keys.admin_get_issued_api_key(key.key_id)
    assert got.status == REVOKED
    assert got.revocation_reason == RevocationReason.REVOCATION_REASON_AFFILIATION_CHANGED
    assert got.revocation_description is None


def test_revoke_with_privilege_withdrawn_keeps_the_description(ory_keys: Any, actor: str
                                                               ) -> None:
    key = issue(ory_keys, actor).issued_api_key
    ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody(
        reason=RevocationReason.REVOCATION_REASON_PRIVILEGE_WITHDRAWN,
        description="left the project"))
    got = ory_keys.admin_get_issued_api_key(key.key_id)
    assert got.revocation_reason == RevocationReason.REVOCATION_REASON_PRIVILEGE_WITHDRAWN
    assert got.revocation_description == "left the project"


def test_revoke_description_is_only_allowed_with_privilege_withdrawn(ory_keys: Any,
                                                                     actor: str) -> None:
    key = issue(ory_keys, actor).issued_api_key
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody(
            reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE, description="why"))
    assert "description" in json.loads(info.value.body)["message"]
    assert ory_keys.admin_get_issued_api_key(key.key_id).status == ACTIVE


def test_revoke_requires_a_reason(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor).issued_api_key
    with pytest.raises(BadRequestException) as info:
        ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody())
    assert "reason" in json.loads(info.value.body)["message"]
    assert ory_keys.admin_get_issued_api_key(key.key_id).status == ACTIVE


def test_revoke_twice_is_409_and_the_first_revocation_stands(ory_keys: Any, actor: str
                                                            ) -> None:
    key = issue(ory_keys, actor).issued_api_key
    ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody(
        reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    first = ory_keys.admin_get_issued_api_key(key.key_id)
    with pytest.raises(ConflictException) as info:  # as Ory Talos
        ory_keys.admin_revoke_issued_api_key(key.key_id, AdminRevokeIssuedApiKeyBody(
            reason=RevocationReason.REVOCATION_REASON_SUPERSEDED))
    assert status_code(info.value) == 9
    again = ory_keys.admin_get_issued_api_key(key.key_id)
    assert again.status == REVOKED
    assert again.revocation_reason == RevocationReason.REVOCATION_REASON_KEY_COMPROMISE
    assert again.update_time == first.update_time


def test_revoke_of_an_unknown_key_is_404(ory_keys: Any) -> None:
    with pytest.raises(NotFoundException):
        ory_keys.admin_revoke_issued_api_key("01NOSUCHKEY0000000000000000",
                                             AdminRevokeIssuedApiKeyBody(
            reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))


def test_revoke_of_an_imported_key(ory_keys: Any, actor: str) -> None:
    key = import_key(ory_keys, actor)
    resp = ory_keys.admin_revoke_imported_api_key_with_http_info(
        key.key_id, AdminRevokeImportedApiKeyBody(
            reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    assert resp.status_code == 204
    got = ory_keys.admin_get_imported_api_key(key.key_id)
    assert got.status == REVOKED
    assert got.revocation_reason == RevocationReason.REVOCATION_REASON_KEY_COMPROMISE


def test_revoke_routes_do_not_cross_collections(ory_keys: Any, actor: str) -> None:
    issued = issue(ory_keys, actor).issued_api_key
    imported = import_key(ory_keys, actor)
    reason = RevocationReason.REVOCATION_REASON_KEY_COMPROMISE
    with pytest.raises(NotFoundException):
        ory_keys.admin_revoke_imported_api_key(issued.key_id,
                                               AdminRevokeImportedApiKeyBody(reason=reason))
    with pytest.raises(NotFoundException):
        ory_keys.admin_revoke_issued_api_key(imported.key_id,
                                             AdminRevokeIssuedApiKeyBody(reason=reason))
    assert ory_keys.admin_get_issued_api_key(issued.key_id).status == ACTIVE
    assert ory_keys.admin_get_imported_api_key(imported.key_id).status == ACTIVE


# -- rotate --------------------------------------------------------------------------------


def test_rotate_answers_201_with_a_new_key_and_revokes_the_old(ory_keys: Any, actor: str
                                                               ) -> None:
    old = issue(ory_keys, actor, name="svc", scopes=["read"], ttl="1h")
    resp = ory_keys.admin_rotate_issued_api_key_with_http_info(
        old.issued_api_key.key_id, AdminRotateIssuedApiKeyBody())
    assert resp.status_code == 201
    new_key, old_key, secret = (resp.data.issued_api_key, resp.data.old_issued_api_key,
                                resp.data.secret)
    assert {k.lower(): v for k, v in resp.headers.items()}["location"] == (
        f"/v2alpha1/admin/issuedApiKeys/{new_key.key_id}")
    assert new_key.key_id != old.issued_api_key.key_id
    assert secret != old.secret and secret.startswith("ory_ak_v2_") and checksum_ok(secret)
    assert new_key.status == ACTIVE and new_key.actor_id == actor
    assert old_key.key_id == old.issued_api_key.key_id and old_key.status == REVOKED
    assert old_key.revocation_reason == RevocationReason.REVOCATION_REASON_SUPERSEDED
    got_old = ory_keys.admin_get_issued_api_key(old_key.key_id)
    assert got_old.status == REVOKED
    assert got_old.revocation_reason == RevocationReason.REVOCATION_REASON_SUPERSEDED
    assert ory_keys.admin_get_issued_api_key(new_key.key_id).status == ACTIVE
    # the same end as the old key: a rotation does not extend a key's life
    assert new_key.expire_time == old.issued_api_key.expire_time


def test_rotate_inherits_every_absent_field(ory_keys: Any, actor: str) -> None:
    old = issue(ory_keys, actor, name="svc", scopes=["read"], metadata={"a": 1},
                ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]),
                rate_limit_policy=RateLimitPolicy(quota="7", window="60s"),
                visibility=KeyVisibility.KEY_VISIBILITY_PUBLIC).issued_api_key
    resp = ory_keys.admin_rotate_issued_api_key(old.key_id, AdminRotateIssuedApiKeyBody())
    new = resp.issued_api_key
    assert (new.name, new.scopes, new.metadata) == ("svc", ["read"], {"a": 1})
    assert new.ip_restriction.allowed_cidrs == ["10.0.0.0/8"]
    assert new.rate_limit_policy.quota == "7"
    assert new.visibility == KeyVisibility.KEY_VISIBILITY_PUBLIC
    assert resp.secret.startswith("ory_pk_v2_")


def test_rotate_overrides_every_present_field_even_when_empty(ory_keys: Any, actor: str
                                                              ) -> None:
    old = issue(ory_keys, actor, name="svc", scopes=["read"], metadata={"a": 1},
                ip_restriction=IPRestriction(allowed_cidrs=["10.0.0.0/8"]),
                rate_limit_policy=RateLimitPolicy(quota="7", window="60s")).issued_api_key
    new = ory_keys.admin_rotate_issued_api_key(old.key_id, AdminRotateIssuedApiKeyBody(
        name="", scopes=[], metadata={}, ip_restriction=IPRestriction(allowed_cidrs=[]),
        rate_limit_policy=RateLimitPolicy())).issued_api_key
    assert (new.name, new.scopes, new.metadata) == ("", [], {})
    assert new.ip_restriction is None and new.rate_limit_policy is None


def test_rotate_overrides_with_new_values(ory_keys: Any, actor: str) -> None:
    old = issue(ory_keys, actor, name="svc", scopes=["read"]).issued_api_key
    resp = ory_keys.admin_rotate_issued_api_key(old.key_id, AdminRotateIssuedApiKeyBody(
        scopes=["write"], visibility=KeyVisibility.KEY_VISIBILITY_PUBLIC))
    assert resp.issued_api_key.name == "svc" and resp.issued_api_key.scopes == ["write"]
    assert resp.secret.startswith("ory_pk_v2_")


def test_a_revoked_key_cannot_be_rotated(ory_keys: Any, actor: str) -> None:
    old = issue(ory_keys, actor).issued_api_key
    ory_keys.admin_rotate_issued_api_key(old.key_id, AdminRotateIssuedApiKeyBody())
    with pytest.raises(ConflictException) as info:
        ory_keys.admin_rotate_issued_api_key(old.key_id, AdminRotateIssuedApiKeyBody())
    assert status_code(info.value) == 9
    listed = ory_keys.admin_list_issued_api_keys(filter=f'actor_id="{actor}"')
    assert len(listed.issued_api_keys) == 2


def test_rotate_of_an_unknown_key_is_404(ory_keys: Any) -> None:
    with pytest.raises(NotFoundException):
        ory_keys.admin_rotate_issued_api_key("01NOSUCHKEY0000000000000000",
                                             AdminRotateIssuedApiKeyBody())


# -- delete --------------------------------------------------------------------------------


def test_delete_of_an_imported_key_answers_204_then_it_is_gone(ory_keys: Any, actor: str
                                                               ) -> None:
    raw = raw_key()
    key = import_key(ory_keys, actor, raw)
    resp = ory_keys.admin_delete_imported_api_key_with_http_info(key.key_id)
    assert resp.status_code == 204
    with pytest.raises(NotFoundException):
        ory_keys.admin_get_imported_api_key(key.key_id)
    with pytest.raises(NotFoundException):
        ory_keys.admin_delete_imported_api_key(key.key_id)
    assert import_key(ory_keys, actor, raw).key_id == key.key_id


def test_delete_does_not_reach_issued_keys(ory_keys: Any, actor: str) -> None:
    key = issue(ory_keys, actor).issued_api_key
    with pytest.raises(NotFoundException):
        ory_keys.admin_delete_imported_api_key(key.key_id)
    assert ory_keys.admin_get_issued_api_key(key.key_id).status == ACTIVE


# -- self-revoke ---------------------------------------------------------------------------


def test_self_revoke_needs_no_admin_token(ory_keys: Any, ory_public: Any, actor: str) -> None:
    issued = issue(ory_keys, actor)
    result = ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
        credential=issued.secret, reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    assert result == {}
    got = ory_keys.admin_get_issued_api_key(issued.issued_api_key.key_id)
    assert got.status == REVOKED
    assert got.revocation_reason == RevocationReason.REVOCATION_REASON_KEY_COMPROMISE


def test_self_revoke_of_an_imported_key(ory_keys: Any, ory_public: Any, actor: str) -> None:
    raw = raw_key()
    key = import_key(ory_keys, actor, raw)
    ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
        credential=raw, reason=RevocationReason.REVOCATION_REASON_AFFILIATION_CHANGED))
    assert ory_keys.admin_get_imported_api_key(key.key_id).status == REVOKED


def test_self_revoke_refuses_privilege_withdrawn(ory_keys: Any, ory_public: Any, actor: str
                                                 ) -> None:
    issued = issue(ory_keys, actor)
    with pytest.raises(BadRequestException) as info:
        ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
            credential=issued.secret,
            reason=RevocationReason.REVOCATION_REASON_PRIVILEGE_WITHDRAWN))
    assert status_code(info.value) == 3
    assert ory_keys.admin_get_issued_api_key(issued.issued_api_key.key_id).status == ACTIVE


def test_self_revoke_requires_a_reason(ory_keys: Any, ory_public: Any, actor: str) -> None:
    issued = issue(ory_keys, actor)
    with pytest.raises(BadRequestException):
        ory_public.revoke_api_key(SelfRevokeApiKeyRequest(credential=issued.secret))
    assert ory_keys.admin_get_issued_api_key(issued.issued_api_key.key_id).status == ACTIVE


def test_self_revoke_of_a_public_key_is_forbidden(ory_keys: Any, ory_public: Any, actor: str
                                                  ) -> None:
    issued = issue(ory_keys, actor, visibility=KeyVisibility.KEY_VISIBILITY_PUBLIC)
    with pytest.raises(ForbiddenException) as info:
        ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
            credential=issued.secret,
            reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    assert status_code(info.value) == 7
    assert ory_keys.admin_get_issued_api_key(issued.issued_api_key.key_id).status == ACTIVE


def test_self_revoke_of_an_already_revoked_key_succeeds(ory_keys: Any, ory_public: Any,
                                                        actor: str) -> None:
    issued = issue(ory_keys, actor)
    request = SelfRevokeApiKeyRequest(credential=issued.secret,
                                      reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE)
    ory_public.revoke_api_key(request)
    assert ory_public.revoke_api_key(request) == {}
    rotated = issue(ory_keys, actor)
    ory_keys.admin_rotate_issued_api_key(rotated.issued_api_key.key_id,
                                         AdminRotateIssuedApiKeyBody())
    assert ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
        credential=rotated.secret,
        reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE)) == {}
    got = ory_keys.admin_get_issued_api_key(rotated.issued_api_key.key_id)
    assert got.revocation_reason == RevocationReason.REVOCATION_REASON_SUPERSEDED


@pytest.mark.parametrize("credential", ["ory_ak_v1_" + "A" * 49, "sk_test_never_imported"])
def test_self_revoke_of_an_unknown_credential_is_404(ory_public: Any, credential: str) -> None:
    with pytest.raises(NotFoundException):
        ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
            credential=credential, reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))


def test_self_revoke_with_a_mistyped_secret_revokes_nothing(ory_keys: Any, ory_public: Any,
                                                            actor: str) -> None:
    issued = issue(ory_keys, actor)
    last = issued.secret[-1]
    mistyped = issued.secret[:-1] + ("0" if last != "0" else "1")
    with pytest.raises(NotFoundException):
        ory_public.revoke_api_key(SelfRevokeApiKeyRequest(
            credential=mistyped, reason=RevocationReason.REVOCATION_REASON_KEY_COMPROMISE))
    assert ory_keys.admin_get_issued_api_key(issued.issued_api_key.key_id).status == ACTIVE
