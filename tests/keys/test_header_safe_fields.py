"""Values that forward auth sends back in response headers (``X-Actor-Id``, ``X-Key-Id``,
``X-Scopes``): refused at every admin entry point when they could not travel in a header
(400 naming the field, nothing written), and percent-encoded on the way out anyway, for
values that reached the store some other way.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from conftest import Gateway

from gateway.errors import InvalidArgument
from gateway.keys import fields as f
from gateway.keys.header_values import header_value, scopes_value
from gateway.keys.model import ApiKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "verify"))
from verify_helpers import DECISIONS, IMPORTED, ISSUED

# What uvicorn refuses in a header value (it drops the connection instead of answering).
UVICORN_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
BAD_ACTORS = ["alice\r\nX-Injected: 1", "alice\nbob", "alice\rbob", "alice\x00", "tab\there",
              "del\x7f", "c1\x85", "line\u2028sep"]
BAD_SCOPES = ["read write", "read,write", "caf\u00e9", "read\r\nX-Injected: 1", "nul\x00",
              "tab\t"]


# -- the field rules -------------------------------------------------------------------


@pytest.mark.parametrize("actor", BAD_ACTORS)
def test_actor_id_with_a_control_character_is_refused_naming_the_field(actor: str) -> None:
    with pytest.raises(InvalidArgument,
                       match=r"^actor_id: must not contain control characters"):
        f.actor_id({"actor_id": actor})


@pytest.mark.parametrize("actor", ["user_123", "jane.doe+keys@example.com",
                                   "j\u00fcrgen@b\u00fccher.example", "Jane Doe", "100%",
                                   "spiffe://cluster.local/ns/a/sa/b", "\u7528\u6237"])
def test_actor_id_accepts_email_addresses_spaces_and_non_ascii(actor: str) -> None:
    assert f.actor_id({"actor_id": actor}) == actor


def test_required_actor_id_still_says_it_is_required() -> None:
    with pytest.raises(InvalidArgument, match=r"^actor_id: is required"):
        f.actor_id({}, required=True)


@pytest.mark.parametrize(("scope", "rule"), [
    ("read write", "whitespace"), ("read,write", "a comma"), ("caf\u00e9", "ASCII"),
    ("read\r\nX-Injected: 1", "control characters"), ("nul\x00", "control characters"),
    ("tab\t", "control characters"), ("nbsp\u00a0", "whitespace"),
])
def test_a_scope_that_cannot_travel_in_x_scopes_is_refused_naming_its_index(
        scope: str, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^scopes\[1\]: must .*{rule}"):
        f.scopes({"scopes": ["read", scope]})


@pytest.mark.parametrize("scope", ["read", "orders:read", "files/read", "admin.*",
                                   "https://api.example.com/orders", "a%b", "x-y_z~1"])
def test_oauth_style_scopes_are_accepted(scope: str) -> None:
    assert f.scopes({"scopes": [scope]}) == (scope,)


def test_scopes_the_key_holds_already_are_not_checked_again() -> None:
    assert f.scopes({"scopes": ["a b", "read"]}, held=("a b",)) == ("a b", "read")
    with pytest.raises(InvalidArgument, match=r"^scopes\[1\]: "):
        f.scopes({"scopes": ["a b", "c d"]}, held=("a b",))


# -- the header encoding ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "encoded"), [
    ("user_123", b"user_123"),
    ("jane.doe+keys@example.com", b"jane.doe+keys@example.com"),
    ("Jane Doe", b"Jane Doe"),
    ("alice\r\nX-Injected: 1", b"alice%0D%0AX-Injected: 1"),
    ("nul\x00del\x7f", b"nul%00del%7F"),
    ("j\u00fcrgen", b"j%C3%BCrgen"),
    ("100%", b"100%25"),
    (" padded ", b"%20padded%20"),
    ("", b""),
])
def test_header_values_percent_encode_all_but_visible_ascii_and_inner_spaces(
        value: str, encoded: bytes) -> None:
    assert header_value(value) == encoded


def test_x_scopes_encodes_each_scope_so_the_list_keeps_its_items() -> None:
    assert scopes_value(["read", "write"]) == b"read,write"
    assert scopes_value(["a b", "c,d", "caf\u00e9", "x%y"]) == b"a%20b,c%2Cd,caf%C3%A9,x%25y"
    assert scopes_value([]) == b""


@pytest.mark.parametrize("value", [*BAD_ACTORS, *BAD_SCOPES, "\u00ff\u0100\U0001f600",
                                   "%41", " ", "  x  ", "".join(map(chr, range(0x100)))])
def test_header_values_are_safe_ascii_and_decode_back_exactly(value: str) -> None:
    for raw in (header_value(value), scopes_value([value])):
        assert raw.isascii() and UVICORN_BAD_VALUE.search(raw) is None
        assert raw == raw.strip()
        assert unquote(raw.decode("ascii")) == value


# -- over HTTP: every entry point refuses, nothing is written -------------------------


def _client(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers=gw.auth, timeout=10)


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with _client(gateway) as c:
        yield c


def _listed(client: httpx.Client, base: str) -> set[str]:
    """Every key id of one collection, all pages."""
    field = "issued_api_keys" if base == ISSUED else "imported_api_keys"
    ids: set[str] = set()
    token = ""
    for _ in range(1000):
        r = client.get(base, params={"page_size": "1000", "page_token": token})
        assert r.status_code == 200, r.text
        body = r.json()
        ids |= {k["key_id"] for k in body.get(field) or []}
        token = body.get("next_page_token") or ""
        if not token:
            return ids
    raise AssertionError("pagination did not end")


def _refused(r: httpx.Response, field: str) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == 3
    assert body["message"].startswith(f"{field}: "), body["message"]
    return str(body["message"])


def _raw_key() -> str:
    return f"sk_test_{secrets.token_hex(16)}"


def _imported_id(raw: str) -> str:
    return hashlib.new("sha512_256", raw.encode()).hexdigest()


BAD_FIELDS: list[tuple[str, Any, str]] = [
    *[("actor_id", a, "actor_id") for a in ("a\r\nX-Injected: 1", "a\nb", "a\x00b")],
    *[("scopes", ["read", s], "scopes[1]") for s in ("read write", "a,b", "x\r\ny", "n\x00")],
]
BAD_IDS = ["actor-crlf", "actor-lf", "actor-nul", "scope-space", "scope-comma", "scope-crlf",
           "scope-nul"]


@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS, ids=BAD_IDS)
def test_issue_refuses_and_writes_nothing(client: httpx.Client, unique: str, name: str,
                                          value: Any, field: str) -> None:
    body = {"name": "n", "actor_id": f"actor-{unique}", "scopes": ["read"], name: value}
    before = _listed(client, ISSUED)
    _refused(client.post(ISSUED, json=body), field)
    _refused(client.post(ISSUED, json={**body, "request_id": f"req-{unique}"}), field)
    assert _listed(client, ISSUED) == before


@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS, ids=BAD_IDS)
def test_import_refuses_and_writes_nothing(client: httpx.Client, unique: str, name: str,
                                           value: Any, field: str) -> None:
    raw = _raw_key()
    body = {"raw_key": raw, "name": "n", "actor_id": f"actor-{unique}", name: value}
    before = _listed(client, IMPORTED)
    _refused(client.post(IMPORTED, json=body), field)
    assert client.get(f"{IMPORTED}/{_imported_id(raw)}").status_code == 404
    assert _listed(client, IMPORTED) == before


@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS, ids=BAD_IDS)
def test_batch_import_refuses_the_bad_item_only(client: httpx.Client, unique: str, name: str,
                                                value: Any, field: str) -> None:
    good, bad = _raw_key(), _raw_key()
    actor = f"actor-{unique}"
    r = client.post(f"{IMPORTED}:batchCreate", json={"requests": [
        {"raw_key": good, "name": "good", "actor_id": actor},
        {"raw_key": bad, "name": "bad", "actor_id": actor, name: value},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["success_count"], body["failure_count"]) == (1, 1)
    ok, failed = body["results"]
    assert ok["imported_api_key"]["key_id"] == _imported_id(good)
    assert failed["index"] == 1 and "imported_api_key" not in failed
    assert failed["error_code"] == "BATCH_CREATE_IMPORTED_API_KEYS_ERROR_INVALID_ARGUMENT"
    assert failed["error_message"].startswith(f"{field}: ")
    assert client.get(f"{IMPORTED}/{_imported_id(bad)}").status_code == 404


def test_batch_import_in_which_every_item_is_refused_is_a_400(client: httpx.Client,
                                                             unique: str) -> None:
    raw = _raw_key()
    before = _listed(client, IMPORTED)
    r = client.post(f"{IMPORTED}:batchCreate", json={"requests": [
        {"raw_key": raw, "name": "bad", "actor_id": f"actor-{unique}\r\nX-Injected: 1"}]})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 3 and "actor_id" in r.json()["message"]
    assert _listed(client, IMPORTED) == before


@pytest.mark.parametrize("kind", ["issued", "imported"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS, ids=BAD_IDS)
def test_update_refuses_and_changes_nothing(client: httpx.Client, unique: str, kind: str,
                                            masked: bool, name: str, value: Any,
                                            field: str) -> None:
    actor = f"actor-{unique}"
    if kind == "issued":
        base = ISSUED
        r = client.post(ISSUED, json={"name": "n", "actor_id": actor, "scopes": ["read"]})
        key = r.json()["issued_api_key"]
    else:
        base = IMPORTED
        r = client.post(IMPORTED, json={"raw_key": _raw_key(), "name": "n", "actor_id": actor,
                                        "scopes": ["read"]})
        key = r.json()
    assert r.status_code == 201, r.text
    params = {"update_mask": name} if masked else {}
    r = client.patch(f"{base}/{key['key_id']}", params=params, json={name: value})
    _refused(r, field)
    after = client.get(f"{base}/{key['key_id']}").json()
    assert after == key


@pytest.mark.parametrize("scope", ["read write", "a,b", "x\r\ny", "n\x00", "caf\u00e9"])
def test_rotate_refuses_bad_scopes_and_keeps_the_old_key(client: httpx.Client, unique: str,
                                                        scope: str) -> None:
    r = client.post(ISSUED, json={"name": "n", "actor_id": f"actor-{unique}",
                                  "scopes": ["read"]})
    assert r.status_code == 201, r.text
    key = r.json()["issued_api_key"]
    before = _listed(client, ISSUED)
    _refused(client.post(f"{ISSUED}/{key['key_id']}:rotate",
                         json={"scopes": ["read", scope]}), "scopes[1]")
    assert _listed(client, ISSUED) == before
    assert client.get(f"{ISSUED}/{key['key_id']}").json() == key


def test_rotate_takes_no_actor_id(client: httpx.Client, unique: str) -> None:
    r = client.post(ISSUED, json={"name": "n", "actor_id": f"actor-{unique}"})
    key_id = r.json()["issued_api_key"]["key_id"]
    r = client.post(f"{ISSUED}/{key_id}:rotate", json={"actor_id": "x\r\ny"})
    assert r.status_code == 400 and "'actor_id'" in r.json()["message"]


def test_valid_email_and_non_ascii_actor_ids_are_issued_and_kept(client: httpx.Client,
                                                                unique: str) -> None:
    actor = f"j\u00fcrgen+{unique}@b\u00fccher.example"
    r = client.post(ISSUED, json={"name": "n", "actor_id": actor, "scopes": ["orders:read"]})
    assert r.status_code == 201, r.text
    assert r.json()["issued_api_key"]["actor_id"] == actor
    decided = httpx.get(client.base_url.join(DECISIONS),
                        headers={"Authorization": f"Bearer {r.json()['secret']}"})
    assert decided.status_code == 200
    assert decided.headers["x-actor-id"] == f"j%C3%BCrgen+{unique}@b%C3%BCcher.example"
    assert unquote(decided.headers["x-actor-id"]) == actor
    assert decided.headers["x-scopes"] == "orders:read"


# -- through the official SDK ------------------------------------------------------------


def test_sdk_issue_with_a_crlf_actor_id_is_a_400_naming_the_field(ory_keys: Any,
                                                                   client: httpx.Client,
                                                                   unique: str) -> None:
    from ory_client import IssueApiKeyRequest
    from ory_client.exceptions import ApiException

    before = _listed(client, ISSUED)
    with pytest.raises(ApiException) as info:
        ory_keys.admin_issue_api_key(IssueApiKeyRequest(
            name="n", actor_id=f"actor-{unique}\r\nX-Injected: 1", scopes=["read"]))
    assert info.value.status == 400
    body = json.loads(info.value.body)
    assert body["code"] == 3
    assert body["message"].startswith("actor_id: must not contain control characters")
    with pytest.raises(ApiException) as info:
        ory_keys.admin_issue_api_key(IssueApiKeyRequest(
            name="n", actor_id=f"actor-{unique}", scopes=["read", "read,write"]))
    assert info.value.status == 400
    assert json.loads(info.value.body)["message"].startswith("scopes[1]: ")
    assert _listed(client, ISSUED) == before


def test_sdk_batch_import_reports_the_bad_item(ory_keys: Any, unique: str) -> None:
    from ory_client import (
        BatchCreateImportedApiKeysErrorCode,
        BatchCreateImportedApiKeysRequest,
        ImportApiKeyRequest,
    )

    result = ory_keys.admin_batch_create_imported_api_keys(BatchCreateImportedApiKeysRequest(
        requests=[ImportApiKeyRequest(raw_key=_raw_key(), name="ok", actor_id=f"a-{unique}"),
                  ImportApiKeyRequest(raw_key=_raw_key(), name="bad",
                                      actor_id=f"a-{unique}\x00")]))
    assert (result.success_count, result.failure_count) == (1, 1)
    bad = result.results[1]
    assert bad.error_code == (BatchCreateImportedApiKeysErrorCode
                              .BATCH_CREATE_IMPORTED_API_KEYS_ERROR_INVALID_ARGUMENT)
    assert bad.error_message.startswith("actor_id: ")


# -- a key stored before the checks: forward auth still answers, encoded -------------------


def _store_write(gw: Gateway, key_id: str, **changes: Any) -> None:
    """Change a key in the gateway's store directly, past the admin API's checks."""
    from gateway.settings import sqlite_path
    from gateway.store.postgres import PostgresStore
    from gateway.store.sqlite import SqliteStore

    url = gw.env["GATEWAY_DATABASE_URL"]

    async def run() -> None:
        store = (SqliteStore(sqlite_path(url)) if url.startswith("sqlite")
                 else PostgresStore(url))
        await store.open()
        try:
            current: ApiKey | None = await store.get_key(key_id)
            assert current is not None
            updated = current.with_changes(update_time=current.update_time + 1, **changes)
            assert await store.update_key(updated, current.update_time)
        finally:
            await store.close()

    asyncio.run(run())


def test_a_stored_crlf_actor_id_reaches_forward_auth_percent_encoded(
        gateway: Gateway, client: httpx.Client, unique: str) -> None:
    r = client.post(ISSUED, json={"name": "n", "actor_id": f"actor-{unique}",
                                  "scopes": ["read"]})
    assert r.status_code == 201, r.text
    secret, key_id = r.json()["secret"], r.json()["issued_api_key"]["key_id"]
    actor = f"actor-{unique}\r\nX-Injected: yes"
    _store_write(gateway, key_id, actor_id=actor, scopes=("read", "a b", "c,d", "caf\u00e9"))
    expected_actor = f"actor-{unique}%0D%0AX-Injected: yes"
    expected_scopes = "read,a%20b,c%2Cd,caf%C3%A9"

    derived = client.post("/v2alpha1/admin/apiKeys:derive", json={
        "credential": secret, "algorithm": "TOKEN_ALGORITHM_JWT", "scopes": ["read"]})
    assert derived.status_code == 200, derived.text
    token = derived.json()["token"]["token"]

    host = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(host.hostname or "127.0.0.1", host.port, timeout=10)
    try:
        def decide(credential: str) -> http.client.HTTPResponse:
            conn.request("GET", DECISIONS, headers={"Authorization": f"Bearer {credential}"})
            response = conn.getresponse()
            response.read()
            return response

        first = decide(secret)  # the store, then cached
        sock = conn.sock
        second = decide(secret)  # the L1 fast path
        for response in (first, second):
            assert response.status == 200
            assert response.getheader("x-actor-id") == expected_actor
            assert response.getheader("x-scopes") == expected_scopes
            assert response.getheader("x-key-id") == key_id
            assert response.getheader("x-injected") is None
        assert unquote(expected_actor) == actor
        from_token = decide(token)  # a derived token: its own branch of forward auth
        assert from_token.status == 200
        assert from_token.getheader("x-actor-id") == expected_actor
        assert from_token.getheader("x-scopes") == "read"
        assert from_token.getheader("x-injected") is None
        conn.request("GET", "/health/alive")
        assert conn.getresponse().status == 200
        assert conn.sock is sock, "the connection was dropped and opened again"
    finally:
        conn.close()

    verified = client.post("/v2alpha1/admin/apiKeys:verify", json={"credential": secret})
    assert verified.status_code == 200
    assert verified.json()["actor_id"] == actor  # JSON carries the stored value as it is


def test_control_check_refuses_exactly_cc_zl_zp() -> None:
    """The actor-id check (one regex search) refuses exactly the code points Unicode puts
    in Cc, Zl and Zp, and names the first one and its index."""
    import unicodedata

    for code in range(0x110000):
        char = chr(code)
        bad = unicodedata.category(char) in ("Cc", "Zl", "Zp")
        try:
            f.actor_id({"actor_id": f"ab{char}"})
        except InvalidArgument as exc:
            assert bad, f"U+{code:04X} refused"
            assert f"U+{code:04X} at index 2" in exc.message
        else:
            assert not bad, f"U+{code:04X} let through"
