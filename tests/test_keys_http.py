"""The key-lifecycle routes over plain HTTP: errors and shapes the official SDK cannot produce.

Every refusal is checked for its HTTP status *and* its Ory ``Status`` body
(``{"code": <gRPC code>, "message": …, "details": […]}``) whose message names the problem.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import start_gateway

ISSUED = "/v2alpha1/admin/issuedApiKeys"
IMPORTED = "/v2alpha1/admin/importedApiKeys"
LEGACY = "/v2alpha1/admin/apiKeys"
SELF_REVOKE = "/v2alpha1/apiKeys:selfRevoke"
COMPROMISE = {"reason": "REVOCATION_REASON_KEY_COMPROMISE"}

INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, UNAUTHENTICATED = 3, 5, 6, 9, 16


class Admin:
    """An httpx client that sends the admin token, with a few lifecycle shortcuts."""

    def __init__(self, http: httpx.Client, auth: dict[str, str]) -> None:
        self.http = http
        self.auth = auth

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, headers={**self.auth, **kw.pop("headers", {})},
                                 **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.request("POST", path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, json=body, **kw)

    def issue(self, actor: str, **fields: Any) -> dict[str, Any]:
        resp = self.post(ISSUED, {"name": "k", "actor_id": actor, **fields})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def import_(self, actor: str, raw: str | None = None, **fields: Any) -> dict[str, Any]:
        raw = raw or raw_key()
        resp = self.post(IMPORTED, {"raw_key": raw, "name": "i", "actor_id": actor, **fields})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def count(self, collection: str, actor: str) -> int:
        resp = self.get(collection, params={"filter": f'actor_id="{actor}"',
                                            "page_size": "1000"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return len(body["issued_api_keys" if collection == ISSUED else "imported_api_keys"])


@pytest.fixture
def http(gateway: Any) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


@pytest.fixture
def admin(http: httpx.Client, gateway: Any) -> Admin:
    return Admin(http, gateway.auth)


@pytest.fixture
def actor(unique: str) -> str:
    return f"actor-{unique}"


def raw_key() -> str:
    return f"sk_test_{secrets.token_hex(16)}"


def assert_status(resp: httpx.Response, http_status: int, code: int, *words: str
                  ) -> dict[str, Any]:
    """The response is an Ory Status error with ``code`` whose message holds ``words``."""
    assert resp.status_code == http_status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    assert all("@type" in d for d in body["details"])
    for word in words:
        assert word in body["message"], (word, body["message"])
    return dict(body)


# -- malformed bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [
    (ISSUED, b"{not json"),
    (IMPORTED, b'{"raw_key": "x",'),
    (f"{IMPORTED}:batchCreate", b"[1, 2"),
    (SELF_REVOKE, b"\xff\xfe"),
])
def test_malformed_json_is_refused(admin: Admin, path: str, body: bytes) -> None:
    resp = admin.post(path, content=body, headers={"content-type": "application/json"})
    assert_status(resp, 400, INVALID_ARGUMENT, "not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"5", b"null"])
@pytest.mark.parametrize("path", [ISSUED, IMPORTED, SELF_REVOKE])
def test_a_body_that_is_not_an_object_is_refused(admin: Admin, path: str, body: bytes) -> None:
    resp = admin.post(path, content=body, headers={"content-type": "application/json"})
    assert_status(resp, 400, INVALID_ARGUMENT, "expected a JSON object")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("name", 5, ("name", "expected a string")),
    ("actor_id", ["a"], ("actor_id", "expected a string")),
    ("scopes", "read", ("scopes", "expected an array")),
    ("scopes", ["read", 1], ("scopes[1]",)),
    ("metadata", [1, 2], ("metadata", "expected a JSON object")),
    ("metadata", "text", ("metadata", "expected a JSON object")),
    ("ttl", 3600, ("ttl", "duration string")),
    ("ip_restriction", {"allowed_cidrs": "10.0.0.0/8"}, ("allowed_cidrs",)),
    ("ip_restriction", {"allowed_cidrs": ["10.0.0.300/8"]}, ("ip_restriction.allowed_cidrs",)),
    ("ip_restriction", {"allowed_cidrs": ["10.0.0.1/8"]}, ("ip_restriction.allowed_cidrs",)),
    ("rate_limit_policy", {"quota": "many", "window": "60s"}, ("rate_limit_policy.quota",)),
    ("rate_limit_policy", {"quota": "10"}, ("rate_limit_policy.window",)),
    ("rate_limit_policy", {"quota": "10", "window": "1.5s"}, ("rate_limit_policy.window",)),
    ("rate_limit_policy", {"quota": "10", "window": "60s", "unit": "content-bytes"},
     ("rate_limit_policy.unit",)),
    ("rate_limit_policy", {"quota": "10", "window": "60s", "burst": 1}, ("burst",)),
    ("request_id", 7, ("request_id", "expected a string")),
    ("visibility", 1, ("visibility", "enum")),
])
def test_wrong_types_are_refused_naming_the_field(admin: Admin, actor: str, field: str,
                                                  value: Any, words: tuple[str, ...]) -> None:
    resp = admin.post(ISSUED, {"name": "n", "actor_id": actor, field: value})
    assert_status(resp, 400, INVALID_ARGUMENT, *words)
    assert admin.count(ISSUED, actor) == 0


@pytest.mark.parametrize(("path", "field", "value"), [
    (ISSUED, "visibility", "PUBLIC"),
    (ISSUED, "visibility", "KEY_VISIBILITY_PRIVATE"),
    (IMPORTED, "visibility", "key_visibility_public"),
])
def test_unknown_enum_values_are_refused_listing_the_allowed_ones(
    admin: Admin, actor: str, path: str, field: str, value: str
) -> None:
    resp = admin.post(path, {"raw_key": raw_key(), "name": "n", "actor_id": actor,
                             field: value} if path == IMPORTED else {"actor_id": actor,
                                                                       field: value})
    assert_status(resp, 400, INVALID_ARGUMENT, field, value, "KEY_VISIBILITY_PUBLIC")


def test_unknown_revocation_reason_is_refused(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.post(f"{ISSUED}/{key_id}:revoke", {"reason": "REVOCATION_REASON_BORED"})
    assert_status(resp, 400, INVALID_ARGUMENT, "reason", "REVOCATION_REASON_BORED")


@pytest.mark.parametrize(("path", "body", "what"), [
    (ISSUED, {"nme": "typo"}, "'nme'"),
    (ISSUED, {"name": "n", "raw_key": "x"}, "'raw_key'"),
    (IMPORTED, {"raw_key": "sk_x_123", "name": "n", "actor_id": "a", "secret": "s"},
     "'secret'"),
    (f"{IMPORTED}:batchCreate", {"requests": [], "dry_run": True}, "'dry_run'"),
    (SELF_REVOKE, {"credential": "x", "reason": "REVOCATION_REASON_KEY_COMPROMISE",
                   "force": True}, "'force'"),
])
def test_unknown_fields_are_refused_naming_the_field(admin: Admin, path: str,
                                                     body: dict[str, Any], what: str) -> None:
    assert_status(admin.post(path, body), 400, INVALID_ARGUMENT, "unknown field", what)


def test_unknown_fields_in_revoke_and_rotate_bodies_are_refused(admin: Admin, actor: str
                                                                ) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.post(f"{ISSUED}/{key_id}:revoke", {**COMPROMISE, "note": "x"})
    assert_status(resp, 400, INVALID_ARGUMENT, "'note'")
    resp = admin.post(f"{ISSUED}/{key_id}:rotate", {"ttl": "1h"})
    assert_status(resp, 400, INVALID_ARGUMENT, "'ttl'")
    assert admin.get(f"{ISSUED}/{key_id}").json()["status"] == "KEY_STATUS_ACTIVE"
    assert admin.count(ISSUED, actor) == 1


# -- size limits ---------------------------------------------------------------------------


def _metadata_of_size(size: int) -> dict[str, str]:
    return {"k": "x" * (size - len('{"k":""}'))}


def test_metadata_up_to_64_kib_is_accepted(admin: Admin, actor: str) -> None:
    metadata = _metadata_of_size(64 * 1024)
    key = admin.issue(actor, metadata=metadata)["issued_api_key"]
    assert key["metadata"] == metadata


def test_metadata_over_64_kib_is_refused_and_nothing_is_created(admin: Admin, actor: str
                                                                ) -> None:
    resp = admin.post(ISSUED, {"actor_id": actor, "metadata": _metadata_of_size(64 * 1024 + 1)})
    assert_status(resp, 400, INVALID_ARGUMENT, "metadata", "65536")
    resp = admin.post(IMPORTED, {"raw_key": raw_key(), "name": "n", "actor_id": actor,
                                 "metadata": _metadata_of_size(100_000)})
    assert_status(resp, 400, INVALID_ARGUMENT, "metadata")
    assert admin.count(ISSUED, actor) == 0 and admin.count(IMPORTED, actor) == 0


def test_metadata_over_64_kib_is_refused_on_update(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, metadata={"a": 1})["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"metadata": _metadata_of_size(70_000)})
    assert_status(resp, 400, INVALID_ARGUMENT, "metadata")
    assert admin.get(f"{ISSUED}/{key_id}").json()["metadata"] == {"a": 1}


def test_raw_key_of_8192_bytes_is_accepted(admin: Admin, actor: str) -> None:
    raw = "\u00e9" * 4096  # two UTF-8 bytes each
    key = admin.import_(actor, raw)
    assert key["key_id"] == hashlib.new("sha512_256", raw.encode()).hexdigest()


@pytest.mark.parametrize("raw", ["x" * 8193, "\u00e9" * 8193])
def test_raw_key_over_8192_characters_is_refused(admin: Admin, actor: str, raw: str) -> None:
    resp = admin.post(IMPORTED, {"raw_key": raw, "name": "n", "actor_id": actor})
    assert_status(resp, 400, INVALID_ARGUMENT, "raw_key", "8192")
    assert admin.count(IMPORTED, actor) == 0


def test_credential_over_8192_bytes_is_refused_by_self_revoke(http: httpx.Client) -> None:
    resp = http.post(SELF_REVOKE, json={"credential": "x" * 8193, **COMPROMISE})
    assert_status(resp, 400, INVALID_ARGUMENT, "credential", "8192")


# -- TTL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "seconds"), [
    ("3600s", 3600), ("24h", 86_400), ("1h30m", 5400), ("1d", 86_400), ("1w", 604_800),
    ("1mo", 2_592_000), ("1y", 31_536_000), ("8760h", 31_536_000),
])
def test_ttl_formats_are_accepted(admin: Admin, actor: str, ttl: str, seconds: int) -> None:
    from datetime import datetime

    key = admin.issue(actor, ttl=ttl)["issued_api_key"]
    created = datetime.fromisoformat(key["create_time"])
    expires = datetime.fromisoformat(key["expire_time"])
    assert (expires - created).total_seconds() == seconds


@pytest.mark.parametrize(("ttl", "why"), [
    ("0.5s", "out of range"), ("-1s", "negative"), ("11y", "out of range"),
    ("315360001s", "out of range"), ("abc", "not a duration"), ("3600", "not a duration"),
])
def test_ttl_out_of_bounds_or_malformed_is_refused(admin: Admin, actor: str, ttl: str,
                                                   why: str) -> None:
    resp = admin.post(ISSUED, {"actor_id": actor, "ttl": ttl})
    assert_status(resp, 400, INVALID_ARGUMENT, "ttl", why)
    resp = admin.post(IMPORTED, {"raw_key": raw_key(), "name": "n", "actor_id": actor,
                                 "ttl": ttl})
    assert_status(resp, 400, INVALID_ARGUMENT, "ttl", why)
    assert admin.count(ISSUED, actor) == 0 and admin.count(IMPORTED, actor) == 0


@pytest.mark.parametrize("ttl", ["", None])
def test_no_ttl_gives_the_default_lifetime(admin: Admin, actor: str, ttl: str | None) -> None:
    """GATEWAY_DEFAULT_KEY_TTL, by default GATEWAY_MAX_KEY_TTL (8760h): no key is
    non-expiring unless an operator turns the limit off (as Ory Talos)."""
    from datetime import datetime

    for key in (admin.issue(actor, ttl=ttl)["issued_api_key"],
                admin.post(IMPORTED, {"raw_key": f"legacy-{actor}-{ttl!r}", "name": "i",
                                      "actor_id": actor, "ttl": ttl}).json()):
        created = datetime.fromisoformat(key["create_time"])
        expires = datetime.fromisoformat(key["expire_time"])
        assert (expires - created).total_seconds() == 8760 * 3600


@pytest.mark.parametrize(("ttl", "why"), [
    ("0s", "at least 1s"), ("0", "at least 1s"), ("8761h", "GATEWAY_MAX_KEY_TTL"),
    ("315360000s", "longest key lifetime"),
])
def test_a_zero_ttl_or_one_beyond_the_longest_lifetime_is_refused(
        admin: Admin, actor: str, ttl: str, why: str) -> None:
    for path, body in ((ISSUED, {"name": "k", "actor_id": actor}),
                       (IMPORTED, {"raw_key": f"legacy-{actor}", "name": "i",
                                   "actor_id": actor})):
        assert_status(admin.post(path, {**body, "ttl": ttl}), 400, INVALID_ARGUMENT, "ttl",
                      why)
    assert admin.count(ISSUED, actor) == 0 and admin.count(IMPORTED, actor) == 0


# -- *_UNSPECIFIED enums -------------------------------------------------------------------


def test_unspecified_visibility_reads_as_secret(admin: Admin, actor: str) -> None:
    resp = admin.issue(actor, visibility="KEY_VISIBILITY_UNSPECIFIED")
    assert resp["issued_api_key"]["visibility"] == "KEY_VISIBILITY_SECRET"
    assert resp["secret"].startswith("ory_ak_v2_")


def test_unspecified_enums_do_not_change_an_idempotent_request(admin: Admin, actor: str,
                                                               unique: str) -> None:
    first = admin.issue(actor, request_id=f"req-{unique}")
    again = admin.issue(actor, request_id=f"req-{unique}",
                        visibility="KEY_VISIBILITY_UNSPECIFIED", ttl=None, metadata=None)
    assert again["issued_api_key"]["key_id"] == first["issued_api_key"]["key_id"]
    assert again["secret"] == first["secret"]


@pytest.mark.parametrize("path", [ISSUED, IMPORTED])
def test_unspecified_revocation_reason_is_refused(admin: Admin, actor: str, path: str) -> None:
    key_id = (admin.issue(actor)["issued_api_key"]["key_id"] if path == ISSUED
              else admin.import_(actor)["key_id"])
    resp = admin.post(f"{path}/{key_id}:revoke", {"reason": "REVOCATION_REASON_UNSPECIFIED"})
    assert_status(resp, 400, INVALID_ARGUMENT, "reason")
    assert_status(admin.post(f"{path}/{key_id}:revoke", {}), 400, INVALID_ARGUMENT, "reason")
    assert admin.get(f"{path}/{key_id}").json()["status"] == "KEY_STATUS_ACTIVE"


def test_patch_with_unspecified_enums_changes_nothing_but_the_named_fields(
    admin: Admin, actor: str
) -> None:
    key = admin.issue(actor, name="before", visibility="KEY_VISIBILITY_PUBLIC")["issued_api_key"]
    resp = admin.patch(f"{ISSUED}/{key['key_id']}", {
        "name": "after", "status": "KEY_STATUS_UNSPECIFIED",
        "visibility": "KEY_VISIBILITY_UNSPECIFIED",
        "revocation_reason": "REVOCATION_REASON_UNSPECIFIED"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "after" and body["visibility"] == "KEY_VISIBILITY_PUBLIC"
    assert body["status"] == "KEY_STATUS_ACTIVE" and "revocation_reason" not in body


# -- list: filter, page token, page size ---------------------------------------------------


@pytest.mark.parametrize(("flt", "words"), [
    ('name="x"', ("'name'", "actor_id, status")),
    ('actor_id="a" OR actor_id="b"', ("AND",)),
    ("status=KEY_STATUS_SLEEPING", ("status", "KEY_STATUS_SLEEPING")),
    ("status=KEY_STATUS_UNSPECIFIED", ("status",)),
    ('actor_id>"a"', ("operator",)),
    ("garbage", ("cannot parse",)),
])
@pytest.mark.parametrize("path", [ISSUED, IMPORTED])
def test_bad_filter_is_refused_naming_the_problem(admin: Admin, path: str, flt: str,
                                                  words: tuple[str, ...]) -> None:
    resp = admin.get(path, params={"filter": flt})
    assert_status(resp, 400, INVALID_ARGUMENT, "filter", *words)


@pytest.mark.parametrize("token", ["not-a-token", "djE6MTA6", "djI6MTA6YWJj", "%%%"])
def test_bad_page_token_is_refused(admin: Admin, token: str) -> None:
    assert_status(admin.get(ISSUED, params={"page_token": token}), 400, INVALID_ARGUMENT,
                  "page_token")


def test_page_token_cannot_be_replayed_under_another_filter(admin: Admin, actor: str) -> None:
    for _ in range(2):
        admin.issue(actor)
    page = admin.get(ISSUED, params={"filter": f'actor_id="{actor}"', "page_size": "1"}).json()
    assert page["next_page_token"]
    resp = admin.get(ISSUED, params={"filter": "status=KEY_STATUS_ACTIVE", "page_size": "1",
                                     "page_token": page["next_page_token"]})
    assert_status(resp, 400, INVALID_ARGUMENT, "page_token", "filter")


@pytest.mark.parametrize(("size", "words"), [("-1", ("page_size", "negative")),
                                             ("ten", ("page_size", "integer"))])
def test_bad_page_size_is_refused(admin: Admin, size: str, words: tuple[str, ...]) -> None:
    assert_status(admin.get(ISSUED, params={"page_size": size}), 400, INVALID_ARGUMENT, *words)


def test_batch_of_1000_is_accepted_and_page_size_over_1000_is_clamped(admin: Admin,
                                                                      actor: str) -> None:
    requests = [{"raw_key": raw_key(), "name": f"k{i}", "actor_id": actor} for i in range(1001)]
    resp = admin.post(f"{IMPORTED}:batchCreate", {"requests": requests[:1000]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["success_count"] == 1000
    admin.import_(actor, requests[1000]["raw_key"])
    page = admin.get(IMPORTED, params={"filter": f'actor_id="{actor}"', "page_size": "5000"})
    assert page.status_code == 200
    assert len(page.json()["imported_api_keys"]) == 1000 and page.json()["next_page_token"]
    default = admin.get(IMPORTED, params={"filter": f'actor_id="{actor}"'}).json()
    assert len(default["imported_api_keys"]) == 50


def test_batch_over_1000_is_refused_and_creates_nothing(admin: Admin, actor: str) -> None:
    requests = [{"raw_key": raw_key(), "name": "n", "actor_id": actor} for _ in range(1001)]
    resp = admin.post(f"{IMPORTED}:batchCreate", {"requests": requests})
    assert_status(resp, 400, INVALID_ARGUMENT, "requests", "1000")
    assert admin.count(IMPORTED, actor) == 0


@pytest.mark.parametrize("body", [{}, {"requests": []}, {"requests": "x"}])
def test_batch_without_items_is_refused(admin: Admin, body: dict[str, Any]) -> None:
    assert_status(admin.post(f"{IMPORTED}:batchCreate", body), 400, INVALID_ARGUMENT,
                  "requests")


# -- authentication and not-found ----------------------------------------------------------


ADMIN_CALLS = [
    ("POST", ISSUED), ("GET", ISSUED), ("GET", f"{ISSUED}/x"), ("PATCH", f"{ISSUED}/x"),
    ("POST", f"{ISSUED}/x:revoke"), ("POST", f"{ISSUED}/x:rotate"), ("POST", IMPORTED),
    ("GET", IMPORTED), ("GET", f"{IMPORTED}/x"), ("PATCH", f"{IMPORTED}/x"),
    ("DELETE", f"{IMPORTED}/x"), ("POST", f"{IMPORTED}/x:revoke"),
    ("POST", f"{IMPORTED}:batchCreate"), ("POST", f"{IMPORTED}:batchImport"),
    ("POST", f"{LEGACY}/x:revoke"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz",
                                           "Bearer", "test-admin-token-xxxxxxxxxxxxxxxx"])
def test_admin_routes_need_the_admin_token(http: httpx.Client, method: str, path: str,
                                           authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = http.request(method, path, headers=headers, json={})
    body = assert_status(resp, 401, UNAUTHENTICATED, "admin credential")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "test-admin-token" not in body["message"]


def test_a_refused_token_creates_nothing(http: httpx.Client, admin: Admin, actor: str) -> None:
    resp = http.post(ISSUED, json={"actor_id": actor},
                     headers={"Authorization": "Bearer wrong-token"})
    assert resp.status_code == 401
    assert admin.count(ISSUED, actor) == 0


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", f"{ISSUED}/01NOSUCHKEY0000000000000000", None),
    ("PATCH", f"{ISSUED}/01NOSUCHKEY0000000000000000", {"name": "x"}),
    ("POST", f"{ISSUED}/01NOSUCHKEY0000000000000000:revoke", COMPROMISE),
    ("POST", f"{ISSUED}/01NOSUCHKEY0000000000000000:rotate", {}),
    ("GET", f"{IMPORTED}/{'0' * 64}", None),
    ("PATCH", f"{IMPORTED}/{'0' * 64}", {"name": "x"}),
    ("DELETE", f"{IMPORTED}/{'0' * 64}", None),
    ("POST", f"{IMPORTED}/{'0' * 64}:revoke", COMPROMISE),
    ("POST", f"{LEGACY}/{'0' * 64}:revoke", COMPROMISE),
])
def test_unknown_key_id_is_404(admin: Admin, method: str, path: str, body: Any) -> None:
    resp = admin.request(method, path, **({} if body is None else {"json": body}))
    assert_status(resp, 404, NOT_FOUND, "not found")


def test_unknown_verb_is_404_and_wrong_method_is_405(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    assert_status(admin.post(f"{ISSUED}/{key_id}:explode", {}), 404, NOT_FOUND, "no route")
    assert_status(admin.request("DELETE", f"{ISSUED}/{key_id}"), 405, 12, "DELETE")
    assert_status(admin.request("GET", f"{ISSUED}/{key_id}:revoke"), 405, 12, "POST")
    assert admin.get(f"{ISSUED}/{key_id}").json()["status"] == "KEY_STATUS_ACTIVE"


def test_percent_encoded_key_id_in_the_path_is_decoded(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    every_byte = "".join(f"%{b:02X}" for b in key_id.encode())
    resp = admin.get(f"{ISSUED}/{every_byte}")
    assert resp.status_code == 200 and resp.json()["key_id"] == key_id
    resp = admin.post(f"{ISSUED}/{every_byte}:revoke", COMPROMISE)
    assert resp.status_code == 204
    assert admin.get(f"{ISSUED}/{key_id}").json()["status"] == "KEY_STATUS_REVOKED"


def test_an_encoded_colon_is_part_of_the_key_id_not_a_verb(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.post(f"{ISSUED}/{key_id}{quote(':', safe='')}revoke", COMPROMISE)
    assert_status(resp, 405, 12, "POST")
    assert admin.get(f"{ISSUED}/{key_id}").json()["status"] == "KEY_STATUS_ACTIVE"


def test_an_encoded_slash_in_the_key_id_is_looked_up_not_routed(admin: Admin) -> None:
    resp = admin.get(f"{ISSUED}/{quote('a/b', safe='')}")
    assert_status(resp, 404, NOT_FOUND, "'a/b'")


# -- PATCH shapes --------------------------------------------------------------------------


def test_patch_accepts_the_wrapped_body_of_the_doc_example(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, scopes=["a"], name="keep")["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}",
                       {"issued_api_key": {"key_id": key_id, "scopes": ["read"]}},
                       params={"update_mask": "scopes"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["scopes"] == ["read"] and resp.json()["name"] == "keep"


def test_patch_accepts_the_wrapped_imported_body(admin: Admin, actor: str) -> None:
    key_id = admin.import_(actor)["key_id"]
    resp = admin.patch(f"{IMPORTED}/{key_id}", {"imported_api_key": {"name": "renamed"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "renamed"


def test_patch_refuses_a_key_id_that_differs_from_the_path(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, name="keep")["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}",
                       {"issued_api_key": {"key_id": "another", "name": "x"}})
    assert_status(resp, 400, INVALID_ARGUMENT, "key_id")
    assert admin.get(f"{ISSUED}/{key_id}").json()["name"] == "keep"


@pytest.mark.parametrize(("mask", "words"), [
    ("status", ("status", "output only")),
    ("name,update_time", ("update_time", "output only")),
    ("nickname", ("nickname", "unknown field")),
])
def test_patch_refuses_a_bad_mask(admin: Admin, actor: str, mask: str,
                                  words: tuple[str, ...]) -> None:
    key_id = admin.issue(actor, name="keep")["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"name": "x"}, params={"update_mask": mask})
    assert_status(resp, 400, INVALID_ARGUMENT, "update_mask", *words)
    assert admin.get(f"{ISSUED}/{key_id}").json()["name"] == "keep"


# -- nested mask paths (AIP-134 sub-fields, AIP-161 map keys) ------------------------------

LIMITED = {"quota": "5", "window": "60s"}


def test_a_sub_path_changes_one_field_of_the_rate_limit(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, rate_limit_policy=LIMITED)["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}",
                       {"rate_limit_policy": {"quota": "9", "window": "1s"}},
                       params={"update_mask": "rate_limit_policy.quota"})
    assert resp.status_code == 200, resp.text
    expected = {"quota": "9", "window": "60s", "unit": "requests"}
    assert resp.json()["rate_limit_policy"] == expected
    assert admin.get(f"{ISSUED}/{key_id}").json()["rate_limit_policy"] == expected


def test_sub_paths_on_a_key_without_a_rate_limit_must_make_a_whole_policy(
        admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, name="keep")["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"rate_limit_policy": {"quota": "9"}},
                       params={"update_mask": "rate_limit_policy.quota"})
    assert_status(resp, 400, INVALID_ARGUMENT, "rate_limit_policy.window", "required")
    assert "rate_limit_policy" not in admin.get(f"{ISSUED}/{key_id}").json()
    resp = admin.patch(f"{ISSUED}/{key_id}", {"rate_limit_policy": {"quota": "9",
                                                                    "window": "2s"}},
                       params={"update_mask": "rate_limit_policy.quota,"
                                              "rate_limit_policy.window"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["rate_limit_policy"]["window"] == "2s"


def test_clearing_a_required_part_of_the_rate_limit_is_refused(admin: Admin, actor: str
                                                                ) -> None:
    key_id = admin.issue(actor, rate_limit_policy=LIMITED)["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"name": "x"},
                       params={"update_mask": "name,rate_limit_policy.quota"})
    assert_status(resp, 400, INVALID_ARGUMENT, "rate_limit_policy.quota")
    after = admin.get(f"{ISSUED}/{key_id}").json()
    assert after["name"] == "k" and after["rate_limit_policy"]["quota"] == "5"


def test_a_map_key_path_sets_and_removes_single_metadata_keys(admin: Admin, actor: str
                                                               ) -> None:
    key_id = admin.issue(actor, metadata={"team": "a", "tier": 1, "cost.centre": "x"}
                         )["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}",
                       {"metadata": {"team": "b", "ignored": True, "new": [1]}},
                       params={"update_mask": "metadata.team,metadata.tier,metadata.new,"
                                              "metadata.`cost.centre`"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == {"team": "b", "new": [1]}
    assert admin.get(f"{ISSUED}/{key_id}").json()["metadata"] == {"team": "b", "new": [1]}


def test_the_whole_field_wins_over_its_own_sub_path(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, metadata={"a": 1, "b": 2})["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"metadata": {"c": 3}},
                       params={"update_mask": "metadata.a,metadata"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == {"c": 3}


def test_ip_restriction_allowed_cidrs_is_the_whole_restriction(admin: Admin, actor: str
                                                               ) -> None:
    key_id = admin.issue(actor, ip_restriction={"allowed_cidrs": ["10.0.0.0/8"]}
                         )["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}",
                       {"ip_restriction": {"allowed_cidrs": ["192.0.2.0/24"]}},
                       params={"update_mask": "ip_restriction.allowed_cidrs"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ip_restriction"] == {"allowed_cidrs": ["192.0.2.0/24"]}


@pytest.mark.parametrize(("mask", "words"), [
    ("rate_limit_policy.burst", ("rate_limit_policy.burst", "unknown field", "quota")),
    ("name.first", ("name.first", "no subfields")),
    ("status.code", ("status", "output only")),
    ("metadata.a.b", ("metadata.a.b", "backticks")),
    ("metadata.``", ("metadata.``", "backticks")),
    ("metadata.", ("metadata.", "backticks")),
])
def test_patch_refuses_a_bad_nested_path(admin: Admin, actor: str, mask: str,
                                         words: tuple[str, ...]) -> None:
    key_id = admin.issue(actor, name="keep", metadata={"a": 1})["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"name": "x", "metadata": {}},
                       params={"update_mask": f"name,{mask}"})
    assert_status(resp, 400, INVALID_ARGUMENT, "update_mask", *words)
    after = admin.get(f"{ISSUED}/{key_id}").json()
    assert (after["name"], after["metadata"]) == ("keep", {"a": 1})


def test_a_metadata_path_with_a_body_that_is_not_an_object_is_refused(admin: Admin,
                                                                      actor: str) -> None:
    key_id = admin.issue(actor, metadata={"a": 1})["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"metadata": "a=2"},
                       params={"update_mask": "metadata.a"})
    assert_status(resp, 400, INVALID_ARGUMENT, "metadata", "object")
    assert admin.get(f"{ISSUED}/{key_id}").json()["metadata"] == {"a": 1}


@pytest.mark.parametrize("style", ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S+00:00",
                                   "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.123456Z"])
def test_patch_accepts_every_timestamp_style_the_sdk_sends(admin: Admin, actor: str,
                                                           style: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    # a month ahead: within GATEWAY_MAX_KEY_TTL (8760h)
    future = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    resp = admin.patch(f"{ISSUED}/{key_id}", {"expire_time": future.strftime(style),
                                              "create_time": "2026-01-01T00:00:00"},
                       params={"update_mask": "expire_time"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["expire_time"].startswith(future.strftime("%Y-%m-%dT%H:%M:%S"))


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    """A gateway with GATEWAY_MAX_KEY_TTL off: expiries past 2038 are allowed."""
    gw = start_gateway(tmp_path_factory.mktemp("unlimited"), {"GATEWAY_MAX_KEY_TTL": "0"})
    try:
        with gw.client() as client:
            yield Admin(client, gw.auth)
    finally:
        gw.stop()


# Instants past 2038 that float arithmetic (timestamp() * 1e6) turns into one microsecond
# less (none before 2**31 seconds).
@pytest.mark.parametrize("stamp", ["2041-03-11T08:14:07.451903Z",
                                   "2039-02-12T08:14:18.032902Z"])
def test_patch_keeps_the_expiry_to_the_microsecond(unlimited: Admin, actor: str,
                                                   stamp: str) -> None:
    admin = unlimited
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"expire_time": stamp},
                       params={"update_mask": "expire_time"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["expire_time"] == stamp
    assert admin.get(f"{ISSUED}/{key_id}").json()["expire_time"] == stamp


@pytest.mark.parametrize(("body", "words"), [
    ({"expire_time": "next tuesday"}, ("expire_time",)),
    ({"expire_time": "2001-01-01T00:00:00Z"}, ("expire_time", "future")),
    ({"create_time": 5}, ("create_time",)),
    ({"status": "KEY_STATUS_ZOMBIE"}, ("status",)),
    ({"colour": "red"}, ("unknown field", "'colour'")),
])
def test_patch_refuses_bad_values(admin: Admin, actor: str, body: dict[str, Any],
                                  words: tuple[str, ...]) -> None:
    key_id = admin.issue(actor, name="keep")["issued_api_key"]["key_id"]
    assert_status(admin.patch(f"{ISSUED}/{key_id}", body), 400, INVALID_ARGUMENT, *words)


def test_patch_refuses_changing_visibility(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"visibility": "KEY_VISIBILITY_PUBLIC"})
    assert_status(resp, 400, INVALID_ARGUMENT, "visibility")


def test_a_revoked_key_cannot_be_patched(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor, name="keep")["issued_api_key"]["key_id"]
    admin.post(f"{ISSUED}/{key_id}:revoke", COMPROMISE)
    resp = admin.patch(f"{ISSUED}/{key_id}", {"name": "x"}, params={"update_mask": "name"})
    assert_status(resp, 409, FAILED_PRECONDITION, "revoked")  # 409, as Ory Talos


def test_revoking_a_revoked_key_is_409_and_the_first_revocation_stands(admin: Admin,
                                                                        actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    assert admin.post(f"{ISSUED}/{key_id}:revoke", COMPROMISE).status_code == 204
    again = admin.post(f"{ISSUED}/{key_id}:revoke",
                       {"reason": "REVOCATION_REASON_SUPERSEDED"})
    assert_status(again, 409, FAILED_PRECONDITION, "already revoked")
    assert_status(admin.post(f"{LEGACY}/{key_id}:revoke", COMPROMISE), 409,
                  FAILED_PRECONDITION, "already revoked")
    key = admin.get(f"{ISSUED}/{key_id}").json()
    assert key["revocation_reason"] == COMPROMISE["reason"]


# -- the older routes ----------------------------------------------------------------------


def test_legacy_revoke_route_revokes_issued_keys(admin: Admin, actor: str) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    resp = admin.post(f"{LEGACY}/{key_id}:revoke", COMPROMISE)
    assert resp.status_code == 204 and resp.content == b""
    body = admin.get(f"{ISSUED}/{key_id}").json()
    assert body["status"] == "KEY_STATUS_REVOKED"
    assert body["revocation_reason"] == "REVOCATION_REASON_KEY_COMPROMISE"


def test_legacy_revoke_route_revokes_imported_keys(admin: Admin, actor: str) -> None:
    key_id = admin.import_(actor)["key_id"]
    resp = admin.post(f"{LEGACY}/{key_id}:revoke",
                      {"reason": "REVOCATION_REASON_PRIVILEGE_WITHDRAWN", "description": "d"})
    assert resp.status_code == 204
    body = admin.get(f"{IMPORTED}/{key_id}").json()
    assert body["status"] == "KEY_STATUS_REVOKED" and body["revocation_description"] == "d"


def test_legacy_batch_import_uses_the_older_error_code_prefix(admin: Admin, actor: str
                                                              ) -> None:
    raw = raw_key()
    resp = admin.post(f"{IMPORTED}:batchImport", {"requests": [
        {"raw_key": raw, "name": "a", "actor_id": actor},
        {"raw_key": raw, "name": "b", "actor_id": actor},
        {"raw_key": raw_key(), "name": "c"},
    ]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["error_code"] for r in body["results"]] == [
        "BATCH_IMPORT_ERROR_UNSPECIFIED", "BATCH_IMPORT_ERROR_ALREADY_EXISTS",
        "BATCH_IMPORT_ERROR_INVALID_ARGUMENT"]
    assert (body["success_count"], body["failure_count"]) == (1, 2)
    assert "actor_id" in body["results"][2]["error_message"]


def test_batch_in_which_every_item_fails_reports_every_result(admin: Admin, actor: str
                                                              ) -> None:
    resp = admin.post(f"{IMPORTED}:batchCreate", {"requests": [
        {"raw_key": raw_key(), "name": "a"}, {"raw_key": raw_key(), "actor_id": actor}]})
    body = assert_status(resp, 400, INVALID_ARGUMENT, "all 2 items failed")
    results = body["details"][0]["results"]
    assert [r["error_code"] for r in results] == [
        "BATCH_CREATE_IMPORTED_API_KEYS_ERROR_INVALID_ARGUMENT"] * 2
    assert admin.count(IMPORTED, actor) == 0


# -- self-revoke over HTTP -----------------------------------------------------------------


def test_self_revoke_answers_200_with_an_empty_object(http: httpx.Client, admin: Admin,
                                                      actor: str) -> None:
    secret = admin.issue(actor)["secret"]
    resp = http.post(SELF_REVOKE, json={"credential": secret, **COMPROMISE})
    assert resp.status_code == 200 and resp.json() == {}


@pytest.mark.parametrize(("body", "words"), [
    ({"reason": "REVOCATION_REASON_KEY_COMPROMISE"}, ("credential", "required")),
    ({"credential": "", "reason": "REVOCATION_REASON_KEY_COMPROMISE"}, ("credential",)),
    ({"credential": "sk_x", "reason": "REVOCATION_REASON_UNSPECIFIED"}, ("reason",)),
    ({"credential": "sk_x", "reason": "REVOCATION_REASON_PRIVILEGE_WITHDRAWN"},
     ("PRIVILEGE_WITHDRAWN",)),
])
def test_self_revoke_refuses_bad_requests(http: httpx.Client, body: dict[str, Any],
                                          words: tuple[str, ...]) -> None:
    assert_status(http.post(SELF_REVOKE, json=body), 400, INVALID_ARGUMENT, *words)


def test_self_revoke_of_a_public_key_is_403(http: httpx.Client, admin: Admin, actor: str
                                            ) -> None:
    secret = admin.issue(actor, visibility="KEY_VISIBILITY_PUBLIC")["secret"]
    resp = http.post(SELF_REVOKE, json={"credential": secret, **COMPROMISE})
    assert_status(resp, 403, 7, "public")


# -- nothing half-written ------------------------------------------------------------------


def test_a_rejected_issue_creates_nothing(admin: Admin, actor: str, unique: str) -> None:
    bad_bodies = [
        {"actor_id": actor, "scopes": ["ok"], "ttl": "abc"},
        {"actor_id": actor, "metadata": {"ok": 1}, "rate_limit_policy": {"quota": "0",
                                                                          "window": "60s"}},
        {"actor_id": actor, "request_id": f"req-{unique}", "ip_restriction": {
            "allowed_cidrs": ["nope"]}},
    ]
    for body in bad_bodies:
        assert admin.post(ISSUED, body).status_code == 400
    assert admin.count(ISSUED, actor) == 0
    again = admin.issue(actor, request_id=f"req-{unique}")
    assert again["issued_api_key"]["actor_id"] == actor


def test_a_rejected_import_creates_nothing_and_frees_the_raw_key(admin: Admin, actor: str
                                                                 ) -> None:
    raw = raw_key()
    resp = admin.post(IMPORTED, {"raw_key": raw, "name": "n", "actor_id": actor,
                                 "scopes": [""]})
    assert_status(resp, 400, INVALID_ARGUMENT, "scopes[0]")
    assert admin.count(IMPORTED, actor) == 0
    assert admin.import_(actor, raw)["key_id"] == hashlib.new(
        "sha512_256", raw.encode()).hexdigest()


def test_a_rejected_rotate_changes_nothing(admin: Admin, actor: str) -> None:
    key = admin.issue(actor, name="svc")["issued_api_key"]
    resp = admin.post(f"{ISSUED}/{key['key_id']}:rotate", {"scopes": "not-a-list"})
    assert_status(resp, 400, INVALID_ARGUMENT, "scopes")
    assert admin.get(f"{ISSUED}/{key['key_id']}").json() == key
    assert admin.count(ISSUED, actor) == 1


def test_a_rejected_patch_changes_nothing(admin: Admin, actor: str) -> None:
    key = admin.issue(actor, name="svc", scopes=["a"])["issued_api_key"]
    resp = admin.patch(f"{ISSUED}/{key['key_id']}", {"name": "new", "scopes": [7]})
    assert_status(resp, 400, INVALID_ARGUMENT, "scopes[0]")
    assert admin.get(f"{ISSUED}/{key['key_id']}").json() == key


# -- lifecycle changes reach verify before the admin call returns --------------------------


VERIFY = "/v2alpha1/admin/apiKeys:verify"


def _verify(admin: Admin, credential: str) -> dict[str, Any]:
    resp = admin.post(VERIFY, {"credential": credential})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_an_imported_key_verifies_at_once_even_after_a_miss(admin: Admin, actor: str) -> None:
    raw = raw_key()
    assert _verify(admin, raw)["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
    admin.import_(actor, raw)
    assert _verify(admin, raw)["is_valid"] is True


def test_a_reimported_key_verifies_at_once_after_delete(admin: Admin, actor: str) -> None:
    raw = raw_key()
    key_id = admin.import_(actor, raw)["key_id"]
    assert _verify(admin, raw)["is_valid"] is True
    assert admin.request("DELETE", f"{IMPORTED}/{key_id}").status_code == 204
    assert _verify(admin, raw)["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
    admin.import_(actor, raw)
    assert _verify(admin, raw)["is_valid"] is True


@pytest.mark.parametrize("route", [f"{ISSUED}/{{key_id}}:revoke", f"{LEGACY}/{{key_id}}:revoke"])
def test_a_revoked_key_stops_verifying_at_once(admin: Admin, actor: str, route: str) -> None:
    issued = admin.issue(actor)
    assert _verify(admin, issued["secret"])["is_valid"] is True
    key_id = issued["issued_api_key"]["key_id"]
    assert admin.post(route.format(key_id=key_id), COMPROMISE).status_code == 204
    result = _verify(admin, issued["secret"])
    assert result["is_valid"] is False
    assert result["error_code"] == "VERIFICATION_ERROR_REVOKED"


def test_a_self_revoked_key_stops_verifying_at_once(http: httpx.Client, admin: Admin,
                                                    actor: str) -> None:
    raw = raw_key()
    admin.import_(actor, raw)
    assert _verify(admin, raw)["is_valid"] is True
    assert http.post(SELF_REVOKE, json={"credential": raw, **COMPROMISE}).status_code == 200
    assert _verify(admin, raw)["error_code"] == "VERIFICATION_ERROR_REVOKED"


def test_an_update_reaches_verify_at_once(admin: Admin, actor: str) -> None:
    issued = admin.issue(actor, scopes=["read"])
    assert _verify(admin, issued["secret"])["scopes"] == ["read"]
    key_id = issued["issued_api_key"]["key_id"]
    resp = admin.patch(f"{ISSUED}/{key_id}", {"scopes": ["write"]},
                       params={"update_mask": "scopes"})
    assert resp.status_code == 200
    assert _verify(admin, issued["secret"])["scopes"] == ["write"]


def test_a_rotated_key_stops_verifying_and_its_successor_verifies(admin: Admin, actor: str
                                                                  ) -> None:
    issued = admin.issue(actor)
    assert _verify(admin, issued["secret"])["is_valid"] is True
    resp = admin.post(f"{ISSUED}/{issued['issued_api_key']['key_id']}:rotate", {})
    assert resp.status_code == 201
    assert _verify(admin, issued["secret"])["error_code"] == "VERIFICATION_ERROR_REVOKED"
    fresh = _verify(admin, resp.json()["secret"])
    assert fresh["is_valid"] is True
    assert fresh["key_id"] == resp.json()["issued_api_key"]["key_id"]


# -- races ---------------------------------------------------------------------------------


def _in_parallel(gateway: Any, calls: int, call: Any) -> list[httpx.Response]:
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> httpx.Response:
        with gateway.client() as client:
            return call(Admin(client, gateway.auth))

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(calls)))


def test_concurrent_issues_with_one_request_id_create_one_key(gateway: Any, admin: Admin,
                                                             actor: str, unique: str) -> None:
    body = {"name": "n", "actor_id": actor, "request_id": f"req-{unique}"}
    responses = _in_parallel(gateway, 8, lambda a: a.post(ISSUED, body))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["issued_api_key"]["key_id"] for r in responses}) == 1
    assert len({r.json()["secret"] for r in responses}) == 1
    assert admin.count(ISSUED, actor) == 1


def test_concurrent_rotations_of_one_key_succeed_once(gateway: Any, admin: Admin, actor: str
                                                      ) -> None:
    key_id = admin.issue(actor)["issued_api_key"]["key_id"]
    responses = _in_parallel(gateway, 6, lambda a: a.post(f"{ISSUED}/{key_id}:rotate", {}))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5
    for r in responses:
        if r.status_code == 409:
            assert_status(r, 409, FAILED_PRECONDITION, key_id)
    assert admin.count(ISSUED, actor) == 2


# -- responses -----------------------------------------------------------------------------


def test_responses_use_snake_case_enum_names_and_rfc3339_times(admin: Admin, actor: str
                                                                ) -> None:
    from datetime import datetime

    key = admin.issue(actor, rate_limit_policy={"quota": 100, "window": "1m"},
                      ttl="1h")["issued_api_key"]
    assert key["rate_limit_policy"] == {"quota": "100", "window": "60s", "unit": "requests"}
    assert key["status"] == "KEY_STATUS_ACTIVE"
    for stamp in ("create_time", "update_time", "expire_time"):
        assert key[stamp].endswith("Z")
        datetime.fromisoformat(key[stamp])
    assert all(k == k.lower() for k in key)


# -- discovery and health ------------------------------------------------------------------


SPEC_OPERATIONS = {
    ("post", ISSUED): "adminIssueApiKey",
    ("get", ISSUED): "adminListIssuedApiKeys",
    ("get", f"{ISSUED}/{{key_id}}"): "adminGetIssuedApiKey",
    ("patch", f"{ISSUED}/{{key_id}}"): "adminUpdateIssuedApiKey",
    ("post", f"{ISSUED}/{{key_id}}:revoke"): "adminRevokeIssuedApiKey",
    ("post", f"{ISSUED}/{{key_id}}:rotate"): "adminRotateIssuedApiKey",
    ("post", IMPORTED): "adminImportApiKey",
    ("get", IMPORTED): "adminListImportedApiKeys",
    ("get", f"{IMPORTED}/{{key_id}}"): "adminGetImportedApiKey",
    ("patch", f"{IMPORTED}/{{key_id}}"): "adminUpdateImportedApiKey",
    ("delete", f"{IMPORTED}/{{key_id}}"): "adminDeleteImportedApiKey",
    ("post", f"{IMPORTED}/{{key_id}}:revoke"): "adminRevokeImportedApiKey",
    ("post", f"{IMPORTED}:batchCreate"): "adminBatchCreateImportedApiKeys",
    ("post", SELF_REVOKE): "revokeApiKey",
}
OLDER_ROUTES = {("post", f"{LEGACY}/{{key_id}}:revoke"), ("post", f"{IMPORTED}:batchImport")}
HEALTH_ROUTES = {("get", "/health/alive"), ("get", "/health/ready")}


def test_openapi_lists_every_implemented_key_route(http: httpx.Client) -> None:
    resp = http.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    listed = {(m, p): op["operationId"] for p, ops in doc["paths"].items()
              for m, op in ops.items()}
    for route, op_id in SPEC_OPERATIONS.items():
        assert listed.get(route) == op_id, route
    assert set(listed) >= OLDER_ROUTES | HEALTH_ROUTES
    assert doc["paths"][SELF_REVOKE]["post"].get("security") in (None, [])
    assert doc["paths"][ISSUED]["post"]["security"] == [{"oryAccessToken": []}]
    assert "201" in doc["paths"][ISSUED]["post"]["responses"]
    assert "204" in doc["paths"][f"{IMPORTED}/{{key_id}}"]["delete"]["responses"]


def test_every_key_route_in_openapi_is_served(http: httpx.Client, gateway: Any) -> None:
    doc = http.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if not path.startswith(("/v2alpha1/admin/issuedApiKeys", "/v2alpha1/admin/imported",
                                "/v2alpha1/admin/apiKeys/", SELF_REVOKE, "/health/")):
            continue
        for method in ops:
            resp = http.request(method.upper(), path.replace("{key_id}", "x"),
                                headers=gateway.auth, json={})
            assert resp.status_code != 405, (method, path)
            if resp.status_code == 404:
                assert "no route" not in resp.json()["message"], (method, path)


def test_openapi_schemas_resolve(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_health_routes_answer_without_a_token(http: httpx.Client) -> None:
    alive = http.get("/health/alive")
    ready = http.get("/health/ready")
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}
