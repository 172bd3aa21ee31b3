"""The audit trail (issue 14): every admin change writes its event in the change's own
transaction; refusals and failed verifications are counted, one event a minute whatever
the flood; ``GET /v2alpha1/admin/auditEvents`` lists them newest first, filtered and
paged; no secret, digest or token ever enters one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PEPPER, Gateway, start_gateway

from gateway.audit.events import AuditEvent, event
from gateway.audit.query import AuditFilter, parse_audit_filter
from gateway.audit.recorder import AuditRecorder
from gateway.crypto.digests import Digester
from gateway.errors import InvalidArgument
from gateway.keys.model import ApiKey, Kind
from gateway.secret import Secret
from gateway.store.sqlite import SqliteStore

V = "/v2alpha1"
ISSUED = f"{V}/admin/issuedApiKeys"
IMPORTED = f"{V}/admin/importedApiKeys"
AUDIT = f"{V}/admin/auditEvents"
COMPROMISE = {"reason": "REVOCATION_REASON_KEY_COMPROMISE"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Any:
    gateway = start_gateway(tmp_path_factory.mktemp("audit"), {})
    yield gateway
    gateway.stop()


def _events(gw: Gateway, **params: Any) -> list[dict[str, Any]]:
    with gw.client() as client:
        resp = client.get(AUDIT, params=params, headers=gw.auth)
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["audit_events"]
    return events


def _by_target(gw: Gateway, target: str) -> list[dict[str, Any]]:
    return _events(gw, filter=f'target="{target}"', page_size=100)


def test_every_key_change_is_on_the_record_with_who_and_from_where(gw: Gateway) -> None:
    with gw.client() as c:
        issued = c.post(ISSUED, json={"name": "k", "actor_id": "audit-u1", "scopes": ["read"]},
                        headers={**gw.auth, "X-Request-ID": "req-issue-1"}).json()
        key_id = issued["issued_api_key"]["key_id"]
        assert c.patch(f"{ISSUED}/{key_id}", params={"update_mask": "name,scopes"},
                       json={"name": "renamed", "scopes": ["write"]},
                       headers=gw.auth).status_code == 200
        rotated = c.post(f"{ISSUED}/{key_id}:rotate", headers=gw.auth).json()
        new_id = rotated["issued_api_key"]["key_id"]
        assert c.post(f"{ISSUED}/{new_id}:revoke", json=COMPROMISE,
                      headers=gw.auth).status_code == 204
        imported = c.post(IMPORTED, json={"raw_key": "legacy-audit-0123456789", "name": "i",
                                          "actor_id": "audit-u1"}, headers=gw.auth).json()
        assert c.delete(f"{IMPORTED}/{imported['key_id']}", headers=gw.auth).status_code == 204
    old = _by_target(gw, f"issuedApiKeys/{key_id}")
    assert [e["action"] for e in old] == ["key.rotated", "key.updated", "key.issued"]
    rotate, update, issue = old
    assert rotate["details"] == {"new_key_id": new_id}
    assert update["details"] == {"fields": ["name", "scopes"]}
    assert issue["details"]["actor_id"] == "audit-u1"
    assert issue["details"]["scopes"] == ["read"]
    for e in old:
        assert e["principal"].startswith("plain:") and e["outcome"] == "success"
        assert e["client_address"] == "127.0.0.1"
    assert issue["request_id"] == "req-issue-1"
    revoked = _by_target(gw, f"issuedApiKeys/{new_id}")
    assert [(e["action"], e["details"]) for e in revoked] == [
        ("key.revoked", {"reason": "REVOCATION_REASON_KEY_COMPROMISE"})]
    assert [e["action"] for e in _by_target(gw, f"importedApiKeys/{imported['key_id']}")] == [
        "key.deleted", "key.imported"]


def test_a_refused_change_writes_no_event(gw: Gateway) -> None:
    with gw.client() as c:
        key_id = c.post(ISSUED, json={"name": "k"}, headers=gw.auth).json()[
            "issued_api_key"]["key_id"]
        assert c.post(f"{ISSUED}/{key_id}:revoke", json=COMPROMISE,
                      headers=gw.auth).status_code == 204
        assert c.post(f"{ISSUED}/{key_id}:revoke", json=COMPROMISE,
                      headers=gw.auth).status_code == 409
        assert c.patch(f"{ISSUED}/{key_id}", json={"name": "x"},
                       headers=gw.auth).status_code == 409
    assert [e["action"] for e in _by_target(gw, f"issuedApiKeys/{key_id}")] == [
        "key.revoked", "key.issued"]


def test_no_secret_digest_or_token_enters_an_event(gw: Gateway) -> None:
    raw_key = "legacy-audit-secret-material-0123456789"
    with gw.client() as c:
        issued = c.post(ISSUED, json={"name": "k", "actor_id": "audit-secrets"},
                        headers=gw.auth).json()
        secret = issued["secret"]
        rotated = c.post(f"{ISSUED}/{issued['issued_api_key']['key_id']}:rotate",
                         headers=gw.auth).json()
        c.post(IMPORTED, json={"raw_key": raw_key, "name": "i", "actor_id": "audit-secrets"},
               headers=gw.auth)
        token = c.post(f"{V}/admin/apiKeys:derive", json={"credential": rotated["secret"]},
                       headers=gw.auth).json()["token"]["token"]
        c.post(f"{V}/apiKeys:selfRevoke", json={"credential": rotated["secret"], **COMPROMISE})
    digester = Digester(Secret(PEPPER))
    everything = json.dumps(_events(gw, page_size=500)) + gw.logs()
    for value in (secret, rotated["secret"], raw_key, token, digester.digest(secret),
                  digester.digest(raw_key), token.split(".")[-1]):
        assert value not in everything
    derived = _events(gw, filter='action="token.derived"')[0]
    assert derived["details"]["algorithm"] == "jwt" and derived["details"]["token_id"]
    self_revoked = _events(gw, filter='action="key.self_revoked"')[0]
    assert self_revoked["principal"] == "key-holder"


def test_jwk_and_signing_key_changes_are_on_the_record(gw: Gateway) -> None:
    with gw.client() as c:
        assert c.post("/admin/keys/audit-set", json={"alg": "ES256", "use": "sig",
                                                     "kid": "k1"},
                      headers=gw.auth).status_code == 201
        assert c.delete("/admin/keys/audit-set", headers=gw.auth).status_code == 204
        assert c.post("/api/v1/authorizationServers/default/credentials/lifecycle/keyRotate",
                      json={"use": "sig"},
                      headers={"Authorization": f"SSWS {gw.auth['Authorization'][7:]}"}
                      ).status_code == 200
    assert [e["action"] for e in _events(gw, filter='target="jwk_sets/audit-set"')] == [
        "jwk_set.deleted"]
    assert _events(gw, filter='target="jwk_sets/audit-set/k1"')[0]["details"] == {
        "alg": "ES256", "use": "sig"}
    rotation = _events(gw, filter='action="signing_keys.rotated"')[0]
    assert rotation["details"]["scheduled"] is False


def test_listing_pages_newest_first_and_filters_by_time(gw: Gateway) -> None:
    with gw.client() as c:
        for n in range(5):
            c.post(ISSUED, json={"name": f"p{n}", "actor_id": "audit-pages"}, headers=gw.auth)
        mine = 'action="key.issued"'
        first = c.get(AUDIT, params={"filter": mine, "page_size": 2}, headers=gw.auth).json()
        second = c.get(AUDIT, params={"filter": mine, "page_size": 2,
                                      "page_token": first["next_page_token"]},
                       headers=gw.auth).json()
        other = c.get(AUDIT, params={"filter": 'action="key.revoked"', "page_size": 2,
                                     "page_token": first["next_page_token"]}, headers=gw.auth)
        bad = c.get(AUDIT, params={"filter": "secret=1"}, headers=gw.auth)
        refused = c.get(AUDIT)
    times = [e["time"] for e in first["audit_events"] + second["audit_events"]]
    assert len(times) == 4 and times == sorted(times, reverse=True)
    assert other.status_code == 400 and "page_token" in other.json()["message"]
    assert bad.status_code == 400 and "cannot be filtered on" in bad.json()["message"]
    assert refused.status_code == 401
    newest = first["audit_events"][0]["time"]
    assert _events(gw, filter=f'{mine} AND time > "{newest}"') == []
    assert _events(gw, filter=f'{mine} AND time >= "{newest}"')[0]["time"] == newest


def test_refusals_and_failed_verifications_are_counted_not_flooded(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {})
    try:
        with gw.client() as c:
            for _ in range(30):
                assert c.get(ISSUED, headers={"Authorization": "Bearer wrong-token"}
                             ).status_code == 401
            for n in range(40):
                c.post(f"{V}/admin/apiKeys:verify", json={"credential": f"nope-{n}"},
                       headers=gw.auth)
    finally:
        gw.stop()  # a clean shutdown writes the last counts
    gw = start_gateway(tmp_path, {})
    try:
        refusals = _events(gw, filter='action="admin.authentication_refused"')
        failures = _events(gw, filter='action="key.verification_failed"')
    finally:
        gw.stop()
    assert len(refusals) == 1 and refusals[0]["details"]["count"] == 30
    assert refusals[0]["details"]["clients"] == {"127.0.0.1": 30}
    assert refusals[0]["outcome"] == "failure"
    assert len(failures) == 1 and failures[0]["details"]["outcomes"] == {"not_found": 40}


def _key(n: int) -> ApiKey:
    return ApiKey(key_id=f"audit-{n}", kind=Kind.IMPORTED, digest=f"hs256:{n:064x}",
                  create_time=1, update_time=1, actor_id="a")


def test_a_change_and_its_event_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "s.db")
        await store.open()
        await store.migrate()
        try:
            clash = event("key.imported", "importedApiKeys/audit-1")
            await store.insert_key(_key(1), [clash])
            # the same event id again: the event cannot be written, so neither is the key
            with pytest.raises(Exception):  # noqa: B017 (the store's own error)
                await store.insert_key(_key(2), [clash])
            assert await store.get_key("audit-2") is None
            assert [e.target for e in await store.list_audit(AuditFilter(), None, 10)] == [
                "importedApiKeys/audit-1"]
        finally:
            await store.close()

    asyncio.run(run())


def test_old_events_are_pruned_and_counts_flushed(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "s.db")
        await store.open()
        await store.migrate()
        try:
            old = AuditEvent(id="old", at=1_000_000, action="key.issued", target="t",
                             principal="p", client_address="", request_id="",
                             outcome="success")
            await store.insert_audit([old, event("key.issued", "t2")])
            refusals = {"10.0.0.1": 3}
            recorder = AuditRecorder(store, refusals, dict, retention_s=3600)
            assert await recorder.prune() == 1
            await recorder.flush()
            assert refusals == {}
            events = await store.list_audit(AuditFilter(), None, 10)
            assert [e.action for e in events] == ["admin.authentication_refused", "key.issued"]
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(("expression", "words"), [
    ('time = "2026-01-01T00:00:00Z"', "time takes"),
    ('action >= "x"', "action takes ="),
    ('action="a" AND action="b"', "appears twice"),
    ("digest=x", "cannot be filtered on"),
    ('time >= "yesterday"', "time"),
])
def test_bad_audit_filters_are_refused_naming_the_fault(expression: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_audit_filter(expression)
    assert words in info.value.message


def test_the_audit_route_is_in_the_served_openapi(gw: Gateway) -> None:
    doc = httpx.get(f"{gw.url}/openapi.json").json()
    assert doc["paths"][AUDIT]["get"]["operationId"] == "adminListAuditEvents"
