"""Plain-ASGI dispatch of the hot routes in front of the Starlette app.

Routes: ``POST /v2alpha1/admin/apiKeys:verify``, ``POST /v2alpha1/admin/apiKeys:batchVerify``
and forward-auth at ``/v2alpha1/decisions`` (any method, any sub-path). Everything else
falls through to Starlette. A generic Starlette endpoint costs more per request than a
cached verify is allowed to, so these routes parse only what they need and answer with
pre-rendered bytes where they can.

Trust assumption: ``X-Forwarded-For`` / ``X-Real-IP`` are believed only when the TCP peer
is one of ``settings.trusted_proxies``; otherwise the peer address is the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from hmac import compare_digest
from time import monotonic
from typing import Any, TypeGuard, cast
from urllib.parse import parse_qs

import orjson

from gateway.cache.entry import EXPIRES, HEAD, KEY_ID, PLAIN, TAIL, Cached, auth_headers, unexpired
from gateway.cache.keycache import CacheMode, KeyCache, cache_mode
from gateway.cache.l1 import L1
from gateway.crypto import tokens
from gateway.errors import (
    GatewayError,
    InvalidArgument,
    PayloadTooLarge,
    Unavailable,
)
from gateway.http.auth import authenticate_admin
from gateway.http.client_ip import Trusted, client_ip
from gateway.http.errors import ory_status
from gateway.http.wire import bearer_token, parse_json
from gateway.keys.fields import MAX_CREDENTIAL_BYTES
from gateway.keys.header_values import header_value, scopes_value
from gateway.observability.metrics import HotCounters
from gateway.verify.outcomes import TABLE, Outcome, Result
from gateway.verify.render import response_body
from gateway.verify.verifier import Verifier

log = logging.getLogger("gateway.hot")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
DECISIONS = "/v2alpha1/decisions"
DECISIONS_BELOW = DECISIONS + "/"
MAX_BATCH = 100
# The largest valid bodies: a credential of 8 KiB with its audiences; 100 of them.
VERIFY_BODY_LIMIT = 64 << 10
BATCH_BODY_LIMIT = 1 << 20
_JSON = (b"content-type", b"application/json")
_INVALID_TOKEN = b'{"error":"invalid_token","error_description":"the credential is not valid"}'
_EMPTY_END = {"type": "http.response.body", "body": b""}
_CACHE_HEADER = {level: level.encode() for level in ("L1", "L2", "STORE", "NONE")}
_FROM_L1 = (b"x-cache", b"L1")
_DECISION_HEAD = ((b"content-length", b"0"), _FROM_L1)
_L1_STARTS: dict[int, Message] = {}  # the start message of a cached "yes", by body length


def _l1_start(size: int) -> Message:
    """The start message of a cached "yes" to verify with a body of ``size`` bytes: one per
    length, shared (the server only reads the messages it is sent)."""
    start = _L1_STARTS.get(size)
    if start is None:
        start = {"type": "http.response.start", "status": 200,
                 "headers": ((b"content-length", str(size).encode()), _JSON, _FROM_L1)}
        if len(_L1_STARTS) < 65_536:
            _L1_STARTS[size] = start
    return start


def _l1_yes(cached: Cached) -> tuple[Message, Message]:
    """The ASGI messages of a cached "yes" to verify (the body is made per request: an entry
    keeps only its parts, see gateway.cache.entry)."""
    body = cached[HEAD] + cached[TAIL]
    return _l1_start(len(body)), {"type": "http.response.body", "body": body}


class HotPath:
    """The hot routes. Each has an L1 fast path: a bare request for a plain key (no IP
    allow-list, no rate limit) found in L1 is answered from the bytes its cached
    ``Entry`` pre-rendered, with one clock read and no ``Result``; anything else takes
    the general path, which gives the same answers for those requests too."""

    def __init__(self, app: ASGIApp, services: Any) -> None:
        self.app = app
        self.services = services
        settings = services.settings
        self.verifier: Verifier = services.verifier
        self.metrics = services.metrics
        self.credential_header = settings.credential_header.encode()
        self.trusted: Trusted = services.trusted
        self._last_admin_header: bytes | None = None
        self._cache: KeyCache = services.cache
        self._l1: L1[Cached] = services.cache.l1
        self._fresh: Callable[[str, float], Cached | None] = self._l1.fresh
        self._digest: Callable[[str], str] = services.digester.digest
        self._digest_many: Callable[[list[str]], list[str]] = services.digester.digest_many
        self._used: dict[str, float] = services.usage.pending
        self._counters: HotCounters = self.metrics.hot
        self._latency = {name: self.metrics.latency(name)
                         for name in ("verify", "batch_verify", "forward_auth")}
        self._verify_latency = self._latency["verify"]
        self._decide_latency = self._latency["forward_auth"]
        self._l1_on = self._l1.enabled
        self._issued_starts = services.peppers.format.starts
        self._candidates: Callable[[str, str], tuple[str, ...]] = services.peppers.candidates
        not_found = response_body(Result(Outcome.NOT_FOUND))
        self._not_found: tuple[Message, Message] = (
            {"type": "http.response.start", "status": 200,
             "headers": ((b"content-length", str(len(not_found)).encode()), _JSON,
                         (b"x-cache", b"NONE"))},
            {"type": "http.response.body", "body": not_found})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        general: Awaitable[None]
        if path == VERIFY and scope.get("method") == "POST":
            start = monotonic()  # also the handlers' "now" for L1: one clock read
            message = await receive()
            answer = self._verify_l1(scope["headers"], message, start)
            if answer is not None:  # the hot case: messages built when the entry was cached
                await send(answer[0])
                await send(answer[1])
                self._verify_latency(monotonic() - start)
                return
            route, general = "verify", self._verify(scope, message, receive, send, start)
        elif path == BATCH_VERIFY and scope.get("method") == "POST":
            start = monotonic()
            route, general = "batch_verify", self._batch(scope, receive, send, start)
        elif (path == DECISIONS or (path is not None and path.startswith(DECISIONS_BELOW))
              ) and scope["type"] == "http":
            start = monotonic()
            headers = dict(scope["headers"])  # the body is never read: proxies send none
            credential = self._presented(headers)
            digest = self._decision_digest(scope, headers, credential)
            cached = self._plain_l1(digest, start) if digest is not None else None
            if cached is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": _DECISION_HEAD + auth_headers(cached)})
                await send(_EMPTY_END)
                self._decide_latency(monotonic() - start)
                return
            route, general = "forward_auth", self._decide(scope, headers, credential, digest,
                                                          send, start)
        else:
            await self.app(scope, receive, send)
            return
        # The general path of a hot route: faults become the Ory error body, and the
        # route's latency is recorded whatever happens.
        try:
            await general
        except GatewayError as exc:
            await _send(send, exc.http_status, orjson.dumps(ory_status(exc)),
                        [(b"www-authenticate", b'Bearer realm="gateway"')]
                        if exc.http_status == 401 else [])
        except Exception as exc:
            log.error("unhandled error on %s", route, exc_info=exc)
            await _send(send, 500, b'{"code":13,"message":"internal error","details":[]}')
        finally:
            self._latency[route](monotonic() - start)

    def _plain_l1(self, digest: str, now: float) -> Cached | None:
        """The L1 entry of a plain, unexpired root key with this digest, with its use
        recorded and counted (the caller answers yes from it), or None."""
        cached = self._fresh(digest, now)
        # gateway.cache.entry.answers_alone, inlined (a call each, per request); the expiry
        # is asked only of a key that has one
        if cached is None or not cached[PLAIN] or (cached[EXPIRES] is not None
                                                   and not unexpired(cached[EXPIRES])):
            return None
        key_id = cached[KEY_ID]
        if self._used.get(key_id, 0.0) < now:  # a later use may have been recorded
            self._used[key_id] = now
        self._counters.l1_valid += 1
        return cached

    def _verify_l1(self, headers: list[tuple[bytes, bytes]], message: Message, now: float
                   ) -> tuple[Message, Message] | None:
        """The L1 fast path of verify: the messages that answer this request by themselves
        (a cached entry's, or the not-found answer of a forged key), or None, and then
        ``_verify`` takes it (and checks everything again, so a None here is
        never a wrong answer). It answers a bare request only: the same admin header as the
        last admin call that passed, no cache directives, and a body that is exactly
        ``{"credential": <root key>}`` in one message."""
        if not self._l1_on or message.get("more_body"):
            return None
        authorization = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"cache-control" or name == b"pragma":
                return None
        last = self._last_admin_header
        # The same admin client as last time; its token was checked then. That header is
        # held in memory only (never logged): it is a credential the process trusts.
        if authorization is None or last is None or not compare_digest(authorization, last):
            return None
        try:
            body = orjson.loads(message.get("body", b""))
        except orjson.JSONDecodeError:
            return None
        if type(body) is not dict or len(body) != 1:
            return None
        credential = body.get("credential")
        if (type(credential) is not str or not 0 < len(credential) <= MAX_CREDENTIAL_BYTES
                or credential.startswith(tokens.TOKEN_STARTS)):  # _bare, inlined
            return None
        digest = self._digest(credential)
        cached = self._plain_l1(digest, now)
        if cached is not None:
            return _l1_yes(cached)
        if credential.startswith(self._issued_starts) and not self._candidates(credential,
                                                                                 digest):
            # forged (a checksum we did not make): the answer an unknown key gets, built
            # once; no lookup, and no trip through the general path (a flood of forged
            # keys costs what cached verifies cost)
            self.metrics.result("not_found", "NONE")
            return self._not_found
        return None

    # -- the verify API --------------------------------------------------------------

    async def _admin(self, raw: bytes | None, scope: Scope) -> None:
        last = self._last_admin_header
        if raw is not None and last is not None and compare_digest(raw, last):
            # The same admin client as last time; its token was checked then. This header
            # is held in memory only (never logged): it is a credential the process trusts.
            return
        await authenticate_admin(self.services, raw.decode("latin-1") if raw else None, scope)
        self._last_admin_header = raw

    async def _verify(self, scope: Scope, message: Message, receive: Receive, send: Send,
                      now: float) -> None:
        """The general path of verify; ``message`` is the request's first body message."""
        headers = dict(scope["headers"])
        await self._admin(headers.get(b"authorization"), scope)
        body = _object(await _read_body(receive, VERIFY_BODY_LIMIT, message)
                       if message.get("more_body") else _first_body(message))
        credential = body.get("credential") if len(body) == 1 else None
        digest = None
        if (_bare(credential) and b"cache-control" not in headers
                and b"pragma" not in headers):
            digest = self._digest(credential)
            cached = self._plain_l1(digest, now)
            if cached is not None:  # _verify_l1 declined, but L1 answers (e.g. a new admin)
                start, end = _l1_yes(cached)
                await send(start)
                await send(end)
                return
        mode = CacheMode.DEFAULT
        step = (self.verifier.classify(cast(str, credential), digest) if digest is not None
                else None)
        if isinstance(step, tuple):  # a bare root key that L1 could not answer
            try:
                entry, level = await self.verifier.lookup(step)
            except Unavailable:
                result = Result(Outcome.UNAVAILABLE)
            else:
                if entry is not None and entry.answers_alone():
                    self.verifier.usage.record(entry.key_id, now)
                    self.metrics.result(Outcome.VALID.value, level)
                    await _send(send, 200, entry.valid_body,
                                [(b"x-cache", _CACHE_HEADER[level])])
                    return
                result = await self.verifier.decide(entry, level,
                                                    self._client_ip(scope, headers))
        elif isinstance(step, Result):  # malformed or forged: no lookup
            result = step
        else:
            credential, audiences = _verify_request(body, "")
            mode = _mode(headers)
            result = await self._check(credential, scope, headers, mode, audiences)
        self.metrics.result(result.outcome.value, result.cache)
        if result.outcome is Outcome.UNAVAILABLE:
            raise _unavailable()
        await _send(send, 200, response_body(result), [(b"x-cache", _cache(result, mode))])

    async def _batch(self, scope: Scope, receive: Receive, send: Send, now: float) -> None:
        headers = dict(scope["headers"])
        await self._admin(headers.get(b"authorization"), scope)
        body = _object(await _read_body(receive, BATCH_BODY_LIMIT))
        items = body.get("requests")
        if not isinstance(items, list):
            raise InvalidArgument("requests: expected an array of VerifyApiKeyRequest")
        if len(items) > MAX_BATCH:
            raise InvalidArgument(f"requests: {len(items)} items exceeds the limit of {MAX_BATCH}")
        self.metrics.batch_size.observe(len(items))
        mode = _mode(headers)
        parts: list[bytes | None] = [None] * len(items)
        fast, missed = 0, dict[int, str]()
        if mode is CacheMode.DEFAULT:
            fast, missed = self._batch_from_l1(items, parts, now)
        slow: list[tuple[int, str, tuple[str, ...], str | None]] = []
        results: dict[int, Result] = {}
        for index, item in enumerate(items if fast < len(items) else ()):
            if parts[index] is not None:
                continue
            digest = missed.get(index)
            if digest is not None:  # a bare item L1 could not answer: its digest is known
                slow.append((index, item["credential"], (), digest))
                continue
            try:
                credential, audiences = _verify_request(item, f"requests[{index}].")
            except InvalidArgument:
                results[index] = Result(Outcome.INVALID_FORMAT)
                continue
            result = (self.verifier.verify_cached(credential, audiences)
                      if mode is CacheMode.DEFAULT else None)
            if result is None:
                slow.append((index, credential, audiences, None))
            else:
                results[index] = result
        if slow:
            client_ip = self._client_ip(scope, headers)
            done = await asyncio.gather(*(
                self.verifier.verify(c, client_ip=client_ip, mode=mode, expected_audiences=a,
                                     digest=d)
                for _, c, a, d in slow))
            for (index, *_), result in zip(slow, done, strict=True):
                results[index] = result
        tally: dict[tuple[str, str], int] = {}
        for index, result in results.items():
            key = (result.outcome.value, result.cache)
            tally[key] = tally.get(key, 0) + 1
            parts[index] = response_body(result)
        counts: dict[str, int] = {"L1": fast} if fast else {}
        self._counters.l1_valid += fast
        for (outcome, level), n in tally.items():
            self.metrics.result(outcome, level, n)
            label = "BYPASS" if mode is not CacheMode.DEFAULT and level == "STORE" else level
            counts[label] = counts.get(label, 0) + n
        done_parts = cast(list[bytes], parts)
        if done_parts:  # the brackets join the first and last parts: one copy of the ~30 KB
            done_parts[0] = b'{"results":[' + done_parts[0]
            done_parts[-1] += b"]}"
        out = b",".join(done_parts) if done_parts else b'{"results":[]}'
        summary = ",".join(f"{k}={v}" for k, v in sorted(counts.items())).encode()
        await _send(send, 200, out, [(b"x-cache", summary or b"NONE")])

    def _batch_from_l1(self, items: list[Any], parts: list[bytes | None], now: float
                       ) -> tuple[int, dict[int, str]]:
        """Fill ``parts`` with the pre-rendered answers of the bare items whose plain key
        is in L1 (one digest pass, one L1 pass). Returns the number answered, and the
        digests of the bare items it could not answer, by index."""
        limit, starts = MAX_CREDENTIAL_BYTES, tokens.TOKEN_STARTS
        bare = [c if (type(item) is dict and len(item) == 1  # _bare, inlined: per item
                      and type(c := item.get("credential")) is str
                      and 0 < len(c) <= limit and not c.startswith(starts)) else None
                for item in items]
        if None in bare:
            index: Sequence[int] = [i for i, c in enumerate(bare) if c is not None]
            credentials = [bare[i] for i in index]
        else:
            index, credentials = range(len(bare)), bare
        digests = self._digest_many(cast(list[str], credentials))
        entries = self._l1.fresh_many(digests, now)
        used = self._used
        answered, missed = 0, dict[int, str]()
        for i, d, cached in zip(index, digests, entries, strict=True):
            # answers_alone, inlined (a call per item); expiry asked only if it has one
            if cached is None or not cached[PLAIN] or (cached[EXPIRES] is not None
                                                       and not unexpired(cached[EXPIRES])):
                missed[i] = d
                continue
            parts[i] = cached[HEAD] + cached[TAIL]
            key_id = cached[KEY_ID]
            if used.get(key_id, 0.0) < now:
                used[key_id] = now
            answered += 1
        return answered, missed

    # -- forward auth ----------------------------------------------------------------

    def _decision_digest(self, scope: Scope, headers: dict[bytes, bytes],
                         credential: str | None) -> str | None:
        """The credential's digest when the L1 fast path of forward auth may answer (a root
        key's shape, no required scope or audience to check), else None. When L1 cannot
        answer, ``_decide`` takes the request and this digest with it."""
        if (credential is None or not _bare(credential) or b"x-required-scope" in headers
                or b"x-expected-audience" in headers
                or (scope["query_string"] and scope["path"] == DECISIONS)):
            return None
        return self._digest(credential)

    def _presented(self, headers: dict[bytes, bytes]) -> str | None:
        """The credential of a forward-auth request: ``Authorization: Bearer`` first, then
        the configured header (``X-API-Key``)."""
        raw = headers.get(b"authorization")
        credential = bearer_token(raw.decode("latin-1")) if raw else None
        if credential is None:
            alt = headers.get(self.credential_header)
            credential = alt.decode("latin-1").strip() if alt else None
        return credential or None

    async def _decide(self, scope: Scope, headers: dict[bytes, bytes], credential: str | None,
                      digest: str | None, send: Send, now: float) -> None:
        """The general path of forward auth (L1 could not answer alone). ``digest``: the
        credential's, when the fast path computed it and found no plain L1 entry."""
        if credential is None:
            self.metrics.result("missing", "NONE")
            await _send(send, 401, b'{"error":"credential required"}',
                        [(b"www-authenticate", b'Bearer realm="gateway"')])
            return
        # Cache-Control / Pragma are the proxied client's own headers here: honouring them
        # would let any client force a store read per request, so forward auth ignores them.
        mode = CacheMode.DEFAULT
        audiences = _list_header(headers.get(b"x-expected-audience"))
        result = await self._check(credential, scope, headers, mode, audiences, digest)
        entry = result.entry
        if result.valid and entry is not None:
            required = _required_scopes(scope, headers)
            scopes = result.token.get("scopes", entry.scopes) if result.token else entry.scopes
            if any(s not in scopes for s in required):
                result = Result(Outcome.SCOPE_MISSING, entry, result.cache, result.limit)
        self.metrics.result(result.outcome.value, result.cache)
        wire = TABLE[result.outcome]
        extra: list[tuple[bytes, bytes]] = [(b"x-cache", _cache(result, mode))]
        if result.limit is not None:
            extra += [(b"x-ratelimit-remaining", str(result.limit.remaining).encode()),
                      (b"x-ratelimit-reset", str(result.limit.reset_us // 1_000_000).encode())]
            if result.entry is not None and result.entry.rate_limit is not None:
                extra.append((b"x-ratelimit-limit", str(result.entry.rate_limit.quota).encode()))
        if result.valid and entry is not None:
            if result.token is None:
                extra += entry.auth_headers
            else:  # a derived token: its own actor and scopes
                extra += [(b"x-actor-id", header_value(result.token["actor_id"])),
                          (b"x-key-id", header_value(entry.key_id)),
                          (b"x-scopes", scopes_value(result.token["scopes"]))]
            await _send(send, 200, b"", extra, content_type=False)
            return
        if wire.http_status == 401:
            # The caller may be anyone: it learns that the credential does not pass, not
            # why (unknown, revoked, expired and forged read alike). The reason is in the
            # metrics, and the holder can ask the verify API.
            extra.append((b"www-authenticate",
                          b'Bearer realm="gateway", error="invalid_token"'))
            await _send(send, 401, _INVALID_TOKEN, extra)
            return
        if result.outcome is Outcome.RATE_LIMITED and result.limit is not None:
            extra.append((b"retry-after", str(result.limit.retry_after_s).encode()))
        body = orjson.dumps({"error": result.outcome.value, "error_description": wire.message})
        await _send(send, wire.http_status, body, extra)

    async def _check(self, credential: str, scope: Scope, headers: dict[bytes, bytes],
                     mode: CacheMode, audiences: tuple[str, ...],
                     digest: str | None = None) -> Result:
        """The synchronous L1 answer when there is one, else the whole verify path (the
        client address is only worked out when a policy may need it). ``digest``: the
        credential's, when the fast path computed it and found no plain L1 entry."""
        if mode is CacheMode.DEFAULT and digest is None:
            result = self.verifier.verify_cached(credential, audiences)
            if result is not None:
                return result
        return await self.verifier.verify(credential, client_ip=self._client_ip(scope, headers),
                                          mode=mode, expected_audiences=audiences,
                                          digest=digest)

    def _client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        return client_ip(scope, headers, self.trusted)


def _bare(credential: object) -> TypeGuard[str]:
    """A credential the L1 fast path may answer: a root key's shape, not a derived token."""
    return (type(credential) is str and 0 < len(credential) <= MAX_CREDENTIAL_BYTES
            and not credential.startswith(tokens.TOKEN_STARTS))


def _mode(headers: dict[bytes, bytes]) -> CacheMode:
    cc = headers.get(b"cache-control")
    pragma = headers.get(b"pragma")
    if cc is None and pragma is None:
        return CacheMode.DEFAULT
    return cache_mode(cc.decode("latin-1") if cc else None,
                      pragma.decode("latin-1") if pragma else None)


def _cache(result: Result, mode: CacheMode) -> bytes:
    if mode is not CacheMode.DEFAULT and result.cache == "STORE":
        return b"BYPASS"
    return _CACHE_HEADER.get(result.cache, b"NONE")


def _list_header(raw: bytes | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(p.strip() for p in raw.decode("latin-1").replace(" ", ",").split(",")
                 if p.strip())


def _required_scopes(scope: Scope, headers: dict[bytes, bytes]) -> tuple[str, ...]:
    """From ``X-Required-Scope``, and ``?scope=`` on the bare decisions path only: below it
    (Envoy's path prefix) the query string is the client's own."""
    required = list(_list_header(headers.get(b"x-required-scope")))
    query = scope.get("query_string", b"")
    if query and scope["path"] == DECISIONS:
        for value in parse_qs(query.decode("latin-1")).get("scope", []):
            required += [p for p in value.replace(",", " ").split() if p]
    return tuple(required)


def _object(body: bytes) -> dict[str, Any]:
    parsed = parse_json(body)
    if not isinstance(parsed, dict):
        raise InvalidArgument("request body: expected a JSON object")
    return parsed


def _verify_request(item: object, where: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where or 'request body'}: expected a VerifyApiKeyRequest object")
    credential = item.get("credential")
    if not isinstance(credential, str) or not credential:
        raise InvalidArgument(f"{where}credential: is required and must be a string")
    if len(credential) > MAX_CREDENTIAL_BYTES:
        raise InvalidArgument(f"{where}credential: longer than {MAX_CREDENTIAL_BYTES} bytes")
    unknown = set(item) - {"credential", "expected_audiences"}
    if unknown:
        raise InvalidArgument(f"{where}{sorted(unknown)[0]}: unknown field")
    audiences = item.get("expected_audiences")
    if audiences is None:
        return credential, ()
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidArgument(f"{where}expected_audiences: expected an array of strings")
    return credential, tuple(audiences)


def _unavailable() -> GatewayError:
    return Unavailable(TABLE[Outcome.UNAVAILABLE].message)


def _first_body(message: Message, limit: int = VERIFY_BODY_LIMIT) -> bytes:
    """The body of a request that came in one message (no coroutine for the usual case)."""
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return body


async def _read_body(receive: Receive, limit: int, first: Message | None = None) -> bytes:
    """The whole request body, at most ``limit`` bytes; ``first`` is its first message
    when already received."""
    message = first if first is not None else await receive()
    body = _first_body(message, limit)
    if not message.get("more_body", False):  # the usual case: one message
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes,
                extra: list[tuple[bytes, bytes]] | None = None, *,
                content_type: bool = True) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append(_JSON)
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
