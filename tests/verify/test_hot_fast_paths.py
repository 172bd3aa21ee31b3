"""The L1 fast paths of verify and forward auth (gateway/http/verify_routes.py and
decisions.py), driven in-process.

A fast path answers only requests it can answer exactly as the general path would, and
declines everything else; these tests send both kinds through the real app (SQLite, no
Redis) and compare the answers byte for byte.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.keys.model import Kind
from gateway.services import Services, build_services
from gateway.settings import load_settings

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
DECISIONS = "/v2alpha1/decisions"
TOKEN_A, TOKEN_B = "admin-token-a-" + "x" * 16, "admin-token-b-" + "y" * 16


class App:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.asgi = create_app(services)

    async def call(self, path: str, *, method: str = "POST", token: str | None = TOKEN_A,
                   body: bytes | list[bytes] = b"", headers: dict[str, str] | None = None,
                   query: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        chunks = [body] if isinstance(body, bytes) else body
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                    for i, c in enumerate(chunks)]
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if token is not None:
            raw.append((b"authorization", f"Bearer {token}".encode()))
        scope = {"type": "http", "method": method, "path": path, "headers": raw,
                 "query_string": query, "client": ("127.0.0.1", 5000)}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.asgi(scope, receive, send)
        start, end = sent
        headers = dict(start["headers"])
        # every answer has its own request id: fast and general answers compare without it
        assert headers.pop(b"x-request-id")
        return start["status"], headers, end.get("body", b"")

    async def verify(self, credential: str, **kw: Any) -> tuple[int, dict[bytes, bytes], bytes]:
        return await self.call(VERIFY, body=orjson.dumps({"credential": credential}), **kw)

    def l1_valid(self) -> int:
        """Valid answers given from L1 (by a fast path, or by the general one)."""
        hot = self.services.metrics.hot
        return hot.l1_valid + hot.results.get(("valid", "L1"), 0)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **env: str) -> AsyncIterator[App]:
    settings = load_settings({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                              "GATEWAY_PEPPER": "p" * 32,
                              "GATEWAY_ADMIN_TOKENS": f"{TOKEN_A},{TOKEN_B}", **env})
    services = build_services(settings)
    await services.start()
    try:
        yield App(services)
    finally:
        await services.stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running(tmp_path) as app:
        yield app


async def issue(app: App, **fields: Any) -> str:
    issued = await app.services.keys.issue({"name": "k", "actor_id": "actor-1",
                                            "scopes": ["read"], **fields})
    return issued.secret


async def test_a_cached_key_is_answered_by_the_fast_path_exactly_like_the_general_one(
        app: App) -> None:
    secret = await issue(app)
    first = await app.verify(secret)  # the store: general path
    assert first[0] == 200 and first[1][b"x-cache"] == b"STORE"
    before = app.l1_valid()
    fast = await app.verify(secret)
    assert app.l1_valid() == before + 1  # answered by the fast path
    assert fast[1][b"x-cache"] == b"L1"
    assert fast[2] == first[2] and orjson.loads(fast[2])["is_valid"] is True
    # the same request split over two body messages takes the general path, same answer
    body = orjson.dumps({"credential": secret})
    general = await app.call(VERIFY, body=[body[:7], body[7:]])
    assert general == fast
    # and the shared messages were not changed by being sent
    assert await app.verify(secret) == fast


async def test_a_forged_key_is_answered_by_the_fast_path_exactly_like_the_general_one(
        app: App) -> None:
    secret = await issue(app)
    await app.verify(secret)  # the admin header is now the one the fast path knows
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    reads = []
    real = app.services.store.get_by_digest

    async def counted(digest: str) -> Any:
        reads.append(digest)
        return await real(digest)

    app.services.store.get_by_digest = counted  # type: ignore[method-assign]
    before = dict(app.services.metrics.hot.results)
    fast = await app.verify(forged)
    assert app.services.metrics.hot.results[("not_found", "NONE")] == before.get(
        ("not_found", "NONE"), 0) + 1
    body = orjson.dumps({"credential": forged})
    general = await app.call(VERIFY, body=[body[:7], body[7:]])  # two messages: general path
    assert fast == general
    answer = orjson.loads(fast[2])
    assert answer["is_valid"] is False and answer["error_code"] == "VERIFICATION_ERROR_NOT_FOUND"
    assert reads == []
    # a string no imported key has is refused in memory too; once imported, it is looked up
    assert orjson.loads((await app.verify("sk_live_unknown-key"))[2])["is_valid"] is False
    assert reads == []
    await app.services.keys.import_key({"name": "i", "actor_id": "a",
                                        "raw_key": "sk_live_unknown-key"})
    assert orjson.loads((await app.verify("sk_live_unknown-key"))[2])["is_valid"] is True
    assert reads


async def test_the_fast_path_never_lets_a_wrong_admin_token_through(app: App) -> None:
    secret = await issue(app)
    await app.verify(secret)
    assert (await app.verify(secret))[1][b"x-cache"] == b"L1"
    for token in ("wrong", TOKEN_A + "x", None):
        status, headers, body = await app.verify(secret, token=token)
        assert status == 401, token
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        assert orjson.loads(body)["code"] == 16


async def test_another_valid_admin_token_is_checked_once_then_fast(app: App) -> None:
    secret = await issue(app)
    await app.verify(secret)
    before = app.l1_valid()
    status, headers, _ = await app.verify(secret, token=TOKEN_B)  # not the last: checked
    assert (status, headers[b"x-cache"]) == (200, b"L1")
    await app.verify(secret, token=TOKEN_B)  # now the last one: fast
    assert app.l1_valid() == before + 2


@pytest.mark.parametrize("headers, cache", [
    ({"Cache-Control": "no-cache"}, b"BYPASS"),
    ({"Pragma": "no-cache"}, b"BYPASS"),
    ({"Cache-Control": "no-store"}, b"BYPASS"),
])
async def test_cache_directives_skip_the_fast_path(app: App, headers: dict[str, str],
                                                   cache: bytes) -> None:
    secret = await issue(app)
    await app.verify(secret)
    status, answer, body = await app.verify(secret, headers=headers)
    assert (status, answer[b"x-cache"]) == (200, cache)
    assert orjson.loads(body)["is_valid"] is True


@pytest.mark.parametrize("body", [
    b'{"credential": "%s", "expected_audiences": []}',
    b'  {"credential" : "%s"}  ',
])
async def test_other_bodies_take_the_general_path_with_the_same_verdict(app: App,
                                                                        body: bytes) -> None:
    secret = await issue(app)
    expected = await app.verify(secret)
    got = await app.call(VERIFY, body=body % secret.encode())
    assert got[0] == 200 and orjson.loads(got[2]) == orjson.loads(expected[2])


async def test_a_body_that_is_not_an_object_is_still_a_clear_400(app: App) -> None:
    secret = await issue(app)
    await app.verify(secret)
    for body in (b"[1]", b"{nope", orjson.dumps({"credential": 5})):
        status, _, answer = await app.call(VERIFY, body=body)
        assert status == 400, body
        assert orjson.loads(answer)["code"] == 3


async def test_forward_auth_fast_path_answers_like_the_general_one(app: App) -> None:
    secret = await issue(app, scopes=["read", "write"])
    general = await app.call(DECISIONS, method="GET", token=None,
                             headers={"X-API-Key": secret})
    assert general[0] == 200 and general[1][b"x-cache"] == b"STORE"
    before = app.l1_valid()
    fast = await app.call(DECISIONS + "/any/path", method="GET", token=None,
                          headers={"Authorization": f"Bearer {secret}"})
    assert app.l1_valid() == before + 1
    assert fast[0] == 200 and fast[1][b"x-cache"] == b"L1"
    for name in (b"x-actor-id", b"x-key-id", b"x-scopes"):
        assert fast[1][name] == general[1][name]
    assert fast[1][b"x-scopes"] == b"read,write"
    # a required scope is checked on the general path
    status, _, _ = await app.call(DECISIONS, method="GET", token=None,
                                  headers={"X-API-Key": secret, "X-Required-Scope": "admin"})
    assert status == 403
    status, headers, _ = await app.call(DECISIONS, method="GET", token=None)
    assert status == 401 and b"www-authenticate" in headers


async def test_a_revoked_key_leaves_the_fast_path_at_once(app: App) -> None:
    secret = await issue(app)
    await app.verify(secret)
    assert (await app.verify(secret))[1][b"x-cache"] == b"L1"
    key_id = orjson.loads((await app.verify(secret))[2])["key_id"]
    from gateway.keys.model import Kind

    await app.services.keys.revoke([Kind.ISSUED], key_id,
                                   {"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
    status, _, body = await app.verify(secret)
    answer = orjson.loads(body)
    assert status == 200 and answer["is_valid"] is False
    assert answer["error_code"] == "VERIFICATION_ERROR_REVOKED"
    status, _, _ = await app.call(DECISIONS, method="GET", token=None,
                                  headers={"X-API-Key": secret})
    assert status == 401


@pytest.mark.parametrize("count", [0, 1, 2, 100])
async def test_batch_answers_are_one_json_array_of_every_item(app: App, count: int) -> None:
    secrets = [await issue(app) for _ in range(count)]
    body = orjson.dumps({"requests": [{"credential": s} for s in secrets]})
    for _ in range(2):  # the store, then L1
        status, _, answer = await app.call(BATCH_VERIFY, body=body)
        results = orjson.loads(answer)["results"]
        assert status == 200 and len(results) == count
        assert all(r["is_valid"] is True for r in results)


async def test_no_fast_path_answers_yes_past_a_keys_expiry_on_a_stepped_clock(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches never hold an entry past its key's expiry, but the wall clock can step: the
    L1 answers of verify and of a batch (which reads the clock once for all its items)
    check the expiry against it."""
    import time

    secret = await issue(app)
    body = orjson.dumps({"requests": [{"credential": secret}] * 3})
    await app.call(BATCH_VERIFY, body=body)  # the store, then L1
    _, headers, _ = await app.call(BATCH_VERIFY, body=body)
    assert headers[b"x-cache"] == b"L1=3"
    assert (await app.verify(secret))[1][b"x-cache"] == b"L1"
    expire_us = orjson.loads((await app.verify(secret))[2])["expire_time"]
    assert expire_us  # a key expires by default
    later = time.time_ns() + 3 * 365 * 86_400 * 10**9  # past any default expiry
    before = app.l1_valid()
    # only the two calls see the stepped clock: the background tasks and the fixture's
    # teardown (which flushes usage and audit counts) run on the real one
    with monkeypatch.context() as stepped:
        stepped.setattr(time, "time_ns", lambda: later)
        stepped.setattr(time, "time", lambda: later / 1e9)
        _, _, batch_answer = await app.call(BATCH_VERIFY, body=body)
        _, _, answer = await app.verify(secret)
    assert {(r["is_valid"], r["error_code"]) for r in orjson.loads(batch_answer)["results"]} \
        == {(False, "VERIFICATION_ERROR_EXPIRED")}
    assert orjson.loads(answer)["error_code"] == "VERIFICATION_ERROR_EXPIRED"
    assert app.l1_valid() == before  # no yes from L1


@pytest.mark.parametrize("path", [VERIFY, BATCH_VERIFY, DECISIONS])
async def test_a_websocket_on_a_hot_path_falls_through_to_the_router(app: App,
                                                                     path: str) -> None:
    scope = {"type": "websocket", "path": path, "headers": [], "query_string": b"",
             "client": ("127.0.0.1", 5000)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app.asgi(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]


async def test_an_uncached_verify_digests_and_asks_l1_once(app: App) -> None:
    """The general half is handed what the fast half computed: one digest, one L1 probe,
    one store read for a key L1 does not hold."""
    secret = await issue(app)
    await app.verify(secret)  # the admin header is now the one the fast path knows
    app.services.cache.l1.clear()
    services = app.services
    calls: dict[str, int] = {"digest": 0, "fresh": 0, "store": 0}

    def counting(name: str, real: Any) -> Any:
        def counted(*args: Any) -> Any:
            calls[name] += 1
            return real(*args)
        return counted

    services.digester.digest = counting("digest", services.digester.digest)  # type: ignore[method-assign]
    services.cache.l1.fresh = counting("fresh", services.cache.l1.fresh)  # type: ignore[method-assign]
    real_read = services.store.get_by_digest

    async def read(digest: str) -> Any:
        calls["store"] += 1
        return await real_read(digest)

    services.store.get_by_digest = read  # type: ignore[method-assign]
    fresh_app = App(services)  # the routes bind the counted functions
    status, headers, body = await fresh_app.verify(secret)
    assert status == 200 and headers[b"x-cache"] == b"STORE"
    assert orjson.loads(body)["is_valid"] is True
    assert calls == {"digest": 1, "fresh": 1, "store": 1}


@pytest.mark.parametrize("path", [VERIFY, BATCH_VERIFY])
async def test_a_wrong_method_on_a_hot_route_is_405_with_allow(app: App, path: str) -> None:
    status, headers, body = await app.call(path, method="GET")
    assert status == 405 and headers[b"allow"] == b"POST"
    answer = orjson.loads(body)
    assert answer["code"] == 12 and "GET" in answer["message"] and "POST" in answer["message"]


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/v2alpha1/admin/apiKeys:derive", {"POST"}),
    ("DELETE", "/v2alpha1/admin/issuedApiKeys", {"GET", "HEAD", "POST"}),
    ("GET", "/v2alpha1/admin/issuedApiKeys/some-key:revoke", {"POST"}),
])
async def test_a_wrong_method_on_any_other_route_is_405_with_allow_too(
        app: App, method: str, path: str, allow: set[str]) -> None:
    status, headers, body = await app.call(path, method=method)
    assert status == 405, body
    assert {m.strip() for m in headers[b"allow"].decode().split(",")} == allow
    assert orjson.loads(body)["code"] == 12


async def test_a_401_reads_the_same_on_hot_and_other_admin_routes(app: App) -> None:
    hot = await app.call(VERIFY, token="wrong", body=b'{"credential":"x"}')
    other = await app.call("/v2alpha1/admin/issuedApiKeys", method="GET", token="wrong")
    for status, headers, body in (hot, other):
        assert status == 401 and headers[b"www-authenticate"] == b'Bearer realm="gateway"'
        assert orjson.loads(body) == {"code": 16, "message": "invalid admin credential",
                                      "details": []}


def counted_admin_checks(app: App) -> list[bytes | None]:
    """From now on, the Authorization header of every full admin check (AdminGate)."""
    gate = app.services.admin_gate
    real = gate.principal
    seen: list[bytes | None] = []

    async def principal(raw: bytes | None, *args: Any) -> str:
        seen.append(raw)
        return await real(raw, *args)

    gate.principal = principal  # type: ignore[method-assign]
    return seen


def split(secret: str) -> list[bytes]:
    """A verify body in two messages: the fast half declines it, the general half answers."""
    body = orjson.dumps({"credential": secret})
    return [body[:7], body[7:]]


@pytest.mark.parametrize("fields", [{}, {"rate_limit_policy": {"quota": "5", "window": "60s"}},
                                    {"ip_restriction": {"allowed_cidrs": ["127.0.0.0/8"]}}],
                         ids=["plain", "rate-limited", "ip-restricted"])
async def test_a_vetted_verify_from_the_store_is_answered_like_the_general_one(
        app: App, fields: dict[str, Any]) -> None:
    """L1 misses: a request the fast half vetted (admin token, bare body, checksum) skips
    the general half's parsing and admin check, and answers as it would, byte for byte."""
    secret = await issue(app, **fields)
    await app.verify("junk")  # the admin header is now the one the fast path knows
    checks = counted_admin_checks(app)
    vetted = await app.verify(secret)
    assert checks == []  # the vetted branch: no second admin check
    app.services.cache.l1.clear()
    general = await app.call(VERIFY, body=split(secret))
    assert len(checks) == 1
    assert vetted[1][b"x-cache"] == b"STORE"
    if "rate_limit_policy" in fields:  # one more request spent: the counts differ
        assert orjson.loads(vetted[2])["rate_limit_remaining"] == "4"
        assert orjson.loads(general[2])["rate_limit_remaining"] == "3"
        vetted = (vetted[0], vetted[1], general[2])
    assert vetted == general and orjson.loads(vetted[2])["is_valid"] is True


async def test_a_vetted_verify_from_redis_is_answered_like_the_general_one(
        tmp_path: Path, redis_url: str) -> None:
    """L1 off: the fast half still vets the request, and a key Redis holds is answered
    with a rendered head (X-Cache: L2), as the general half answers it."""
    async with running(tmp_path, GATEWAY_L1_TTL="0", GATEWAY_REDIS_URL=redis_url) as app:
        secret = await issue(app)
        await app.verify("junk")
        checks = counted_admin_checks(app)
        from_store = await app.verify(secret)  # fills L2
        from_l2 = await app.verify(secret)
        assert checks == []
        general = await app.call(VERIFY, body=split(secret))
        assert len(checks) == 1
        assert (from_store[1][b"x-cache"], from_store[1][b"ory-talos-cache"]) == (b"STORE",
                                                                                 b"MISS")
        assert (from_l2[1][b"x-cache"], from_l2[1][b"ory-talos-cache"]) == (b"L2", b"HIT")
        assert from_l2 == general
        assert from_store[2] == from_l2[2] and orjson.loads(from_l2[2])["is_valid"] is True
        # a forged key is refused by the fast half with L1 off too: no lookup
        forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        before = dict(app.services.metrics.hot.results)
        assert orjson.loads((await app.verify(forged))[2])["is_valid"] is False
        assert app.services.metrics.hot.results[("not_found", "NONE")] == before.get(
            ("not_found", "NONE"), 0) + 1
        # a revoked key: the store's answer, through the vetted branch
        key_id = orjson.loads(from_l2[2])["key_id"]
        from gateway.keys.model import Kind

        await app.services.keys.revoke([Kind.ISSUED], key_id,
                                       {"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
        revoked = await app.verify(secret)
        assert orjson.loads(revoked[2])["error_code"] == "VERIFICATION_ERROR_REVOKED"
        assert revoked == await app.call(VERIFY, body=split(secret))


async def test_a_batch_answers_every_kind_of_item_as_verify_does(app: App) -> None:
    """The batch's cached-yes pass (``entry.plain_answers``) answers the plain cached keys;
    a hit due for a refresh, an item with audiences, a forged key and a revoked one are
    decided as a verify of each decides them, in their places."""
    plain = [await issue(app) for _ in range(3)]
    due, revoked = await issue(app), await issue(app)
    forged = "ory_ak_" + "x" * 40
    items: list[dict[str, Any]] = [
        {"credential": plain[0]}, {"credential": due}, {"credential": forged},
        {"credential": plain[1], "expected_audiences": []}, {"credential": revoked},
        {"credential": plain[2]}]
    body = orjson.dumps({"requests": items})
    await app.call(BATCH_VERIFY, body=body)  # the store, then L1 holds them
    key_id = orjson.loads((await app.verify(revoked))[2])["key_id"]
    await app.services.keys.revoke([Kind.ISSUED], key_id,
                                   {"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
    l1 = app.services.cache.l1
    digest = app.services.digester.digest(due)
    value = l1.table(time.monotonic())[digest][1]
    l1.put(digest, value, l1.ttl, time.monotonic() - 0.9 * l1.ttl)  # put 90 % of a life ago
    assert l1.table(time.monotonic())[digest][0] <= time.monotonic()  # due for a refresh
    before = app.l1_valid()
    status, headers, answer = await app.call(BATCH_VERIFY, body=body)
    assert status == 200
    results = orjson.loads(answer)["results"]
    one_by_one = [orjson.loads((await app.call(VERIFY, body=orjson.dumps(item)))[2])
                  for item in items]
    assert results == one_by_one
    assert [r["is_valid"] for r in results] == [True, True, False, True, False, True]
    assert digest in l1.due  # the due hit was answered from L1 and marked for a refresh
    assert app.l1_valid() - before >= 4 + 4  # the batch's 4 yes from L1, then the verifies'
    assert headers[b"x-cache"].startswith(b"L1=")
