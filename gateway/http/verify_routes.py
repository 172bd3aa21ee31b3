"""The verify API's hot routes: ``POST /v2alpha1/admin/apiKeys:verify`` and
``POST /v2alpha1/admin/apiKeys:batchVerify`` (see ``gateway.http.hot``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any, cast

import orjson

from gateway.cache.entry import HEAD, TAIL, Cached, plain_answers
from gateway.cache.keycache import CacheMode, cache_mode
from gateway.crypto import tokens
from gateway.errors import InvalidArgument, Unavailable
from gateway.http.auth import AdminGate
from gateway.http.client_ip import Trusted, client_ip
from gateway.http.hot import Answer, Message, Receive, Scope, Send
from gateway.http.l1_answers import L1Answers, bare_many
from gateway.http.wire import (
    JSON,
    RENDERED,
    SECURITY_HEADERS,
    Head,
    Header,
    head,
    parse_object,
    read_body,
    send_bytes,
)
from gateway.keys.fields import MAX_CREDENTIAL_LENGTH
from gateway.keys.names import snake_fields
from gateway.observability.metrics import Metrics
from gateway.verify.outcomes import TABLE, Outcome, Result
from gateway.verify.render import response_body
from gateway.verify.verifier import L1Probe, Verifier

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
POST = frozenset({"POST"})
MAX_BATCH = 100
# The largest valid bodies: a credential of 8 KiB with its audiences; 100 of them.
VERIFY_BODY_LIMIT = 64 << 10
BATCH_BODY_LIMIT = 1 << 20
CACHE_HEADER = {level: level.encode() for level in ("L1", "L2", "STORE", "NONE")}
# Ory Talos's cache header: HIT (L1 or L2), MISS (read from the store, or no lookup at all),
# SKIP (the caller's Cache-Control / Pragma bypassed the caches)
_TALOS_CACHE = {"L1": b"HIT", "L2": b"HIT"}
_NO_STORE = (b"cache-control", b"no-store")
# the heads of a "yes" to verify that needed nothing per request, by the level that
# answered and the body's length: one ``Head`` per pair, shared
_YES_HEADS: dict[str, dict[int, Head]] = {"L1": {}, "L2": {}, "STORE": {}}
_L1_HEADS = _YES_HEADS["L1"]


def _yes_head(size: int, level: str = "L1") -> Head:
    """The headers of a plain "yes" to verify from ``level``, with a body of ``size``
    bytes (those ``send_bytes`` and ``verify_headers`` would send, rendered once)."""
    heads = _YES_HEADS[level]
    rendered = heads.get(size)
    if rendered is None:
        rendered = head(((b"content-length", str(size).encode()), JSON,
                         (b"x-cache", CACHE_HEADER[level]),
                         (b"ory-talos-cache", _TALOS_CACHE.get(level, b"MISS")),
                         *SECURITY_HEADERS))
        if len(heads) < 65_536:
            heads[size] = rendered
    return rendered


def _l1_yes(cached: Cached, request_id: bytes | None) -> Answer:
    """A cached "yes" to verify (the body is joined per request: an entry keeps only its
    parts, see gateway.cache.entry)."""
    body = cached[HEAD] + cached[TAIL]
    # _yes_head, inlined for L1: icount verify 44,357 -> 43,790 instructions a call
    rendered = _L1_HEADS.get(len(body))
    return (200, rendered if rendered is not None else _yes_head(len(body)),
            {"type": "http.response.body", "body": body},
            request_id)


@dataclass(slots=True)
class Parsed:
    """What verify's fast half learned: the body, and the credential's L1 probe."""

    body: dict[str, Any]
    probe: L1Probe | None = None


class VerifyRoute:
    """Fast: a bare request (``{"credential": <root key>}`` in one message, no cache
    directives) from the admin client that passed last, for a key L1 answers alone, or a
    forged key (a checksum we did not make: the not-found answer, no lookup). General:
    the whole check, one ``Verifier.verify`` call."""

    path, below, reads_body = VERIFY, False, True
    methods: frozenset[str] | None = POST

    def __init__(self, services: Any, gate: AdminGate, l1: L1Answers) -> None:
        self._gate = gate
        self._l1_on = l1.enabled
        self._digest, self._fresh, self._yes = l1.digest, l1.fresh, l1.yes
        self._verifier: Verifier = services.verifier
        self._metrics: Metrics = services.metrics
        self._trusted: Trusted = services.trusted
        self._issued_starts = services.peppers.format.starts
        self._candidates: Any = services.peppers.candidates
        self.observe = self._metrics.latency("verify")
        self.observe_status = self._metrics.answered("verify")
        not_found = response_body(Result(Outcome.NOT_FOUND))
        self._not_found_head = head(((b"content-length", str(len(not_found)).encode()), JSON,
                                     (b"x-cache", b"NONE"), (b"ory-talos-cache", b"MISS"),
                                     *SECURITY_HEADERS))
        self._not_found = {"type": "http.response.body", "body": not_found}

    def fast(self, scope: Scope, message: Message | None, now: float) -> Answer | Parsed | None:
        assert message is not None
        raw = message.get("body", b"")
        if message.get("more_body") or len(raw) > VERIFY_BODY_LIMIT:
            return None
        authorization = request_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"cache-control" or name == b"pragma":
                return None
            elif name == b"x-request-id":  # for HotPath (see Answer)
                request_id = value
        # the AdminGate's comparison, inlined (icount verify 36,903 -> 36,585 with the L1
        # functions bound here); then, and only then, the body is read
        last = self._gate.last_bearer
        if authorization is None or last is None or not compare_digest(authorization, last):
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None  # the general half says what is wrong with it
        if type(body) is not dict:
            return None
        credential = body.get("credential")
        # l1_answers.bare, inlined: icount verify 37,378 -> 36,903
        if (len(body) != 1 or type(credential) is not str
                or not 0 < len(credential) <= MAX_CREDENTIAL_LENGTH
                or credential.startswith(tokens.TOKEN_STARTS)):
            return Parsed(body)
        digest = self._digest(credential)
        cached = self._fresh(digest, now) if self._l1_on else None
        if self._yes(cached, now):
            return _l1_yes(cached, request_id)
        if cached is None and credential.startswith(self._issued_starts):
            candidates = self._candidates(credential, digest)
            if not candidates:
                # the answer an unknown key gets, built once: a flood of forged keys costs
                # what cached verifies cost
                self._metrics.result("not_found", "NONE")
                return 200, self._not_found_head, self._not_found, request_id
            if credential.isascii():  # Verifier.classify's verdict: it is not asked again
                return Parsed(body, L1Probe(digest, None, candidates))
        return Parsed(body, L1Probe(digest, cached))

    async def general(self, scope: Scope, message: Message | None, receive: Receive,
                      send: Send, now: float, parsed: Parsed | None) -> None:
        headers = dict(scope["headers"])
        probe = parsed.probe if parsed is not None else None
        audiences: tuple[str, ...] = ()
        if parsed is not None and probe is not None and probe.candidates is not None:
            # vetted by the fast half: the admin client that passed last, a bare body, no
            # cache directives, a secret with our checksum (with L1 off, the parsing and
            # admin check below were a large part of a verify answered from Redis)
            credential, mode = parsed.body["credential"], CacheMode.DEFAULT
        else:
            await self._gate.principal(headers.get(b"authorization"), scope)
            body = parsed.body if parsed is not None else parse_object(
                await read_body(receive, VERIFY_BODY_LIMIT, message))
            credential, audiences = verify_request(snake_fields(body), "")
            mode = request_mode(headers)
        result = await self._verifier.verify(
            credential, client_ip=client_ip(scope, headers, self._trusted), mode=mode,
            expected_audiences=audiences, probe=probe if not audiences else None)
        self._metrics.result(result.outcome.value, result.cache)
        if result.outcome is Outcome.UNAVAILABLE:
            raise Unavailable(TABLE[Outcome.UNAVAILABLE].message)
        entry = result.entry
        if (mode is CacheMode.DEFAULT and result.valid and entry is not None and entry.plain
                and result.token is None and result.cache in _YES_HEADS):
            # a "yes" that needed nothing per request: its head rendered once, as L1's
            answer = entry.valid_body
            rendered = _yes_head(len(answer), result.cache)
            await send({"type": "http.response.start", "status": 200,
                        "headers": list(rendered.headers),
                        RENDERED: (rendered.lines, rendered.length)})
            await send({"type": "http.response.body", "body": answer})
            return
        await send_bytes(send, 200, response_body(result), verify_headers(result, mode))


class BatchVerifyRoute:
    """Validate the items, answer those L1 answers alone (one digest pass, one L1 pass),
    look up the others together, assemble the answer."""

    path, below, reads_body = BATCH_VERIFY, False, True
    methods: frozenset[str] | None = POST

    def __init__(self, services: Any, gate: AdminGate, l1: L1Answers) -> None:
        self._gate = gate
        self._l1 = l1
        self._verifier: Verifier = services.verifier
        self._metrics: Metrics = services.metrics
        self._trusted: Trusted = services.trusted
        self._digest_many = services.digester.digest_many
        self._fresh_many = services.cache.l1.fresh_many
        self._table = services.cache.l1.table
        self._mark_due = services.cache.l1.mark_due
        self.observe = self._metrics.latency("batch_verify")
        self.observe_status = self._metrics.answered("batch_verify")

    def fast(self, scope: Scope, message: Message | None, now: float) -> None:
        return None  # a batch is never one L1 answer: see general

    async def general(self, scope: Scope, message: Message | None, receive: Receive,
                      send: Send, now: float, learned: None) -> None:
        headers = dict(scope["headers"])
        await self._gate.principal(headers.get(b"authorization"), scope)
        items = batch_items(parse_object(await read_body(receive, BATCH_BODY_LIMIT, message)))
        read: list[int] = []  # the indices of the items that are not bare
        bare = bare_many(items, read)  # the bare items' credentials, None for the others
        # the others are read now: a malformed item is a 400 naming it, before any answer
        others = {i: verify_request(snake_fields(items[i]), f"requests[{i}].") for i in read}
        self._metrics.batch_size.observe(len(items))
        mode = request_mode(headers)
        parts: list[bytes | None] = [None] * len(items)
        answered, probes = (self._from_l1(bare, bool(others), parts, now)
                            if mode is CacheMode.DEFAULT else (0, {}))
        results = (await self._look_up(bare, others, parts, probes, mode,
                                       client_ip(scope, headers, self._trusted))
                   if answered < len(items) else {})
        body, levels = self._assemble(parts, results, answered, mode)
        await send_bytes(send, 200, body, [(b"x-cache", levels)])

    def _from_l1(self, bare: list[str | None], some_others: bool, parts: list[bytes | None],
                 now: float) -> tuple[int, dict[int, L1Probe]]:
        """Fill ``parts`` with the answers of the bare items L1 answers alone, all at once
        (``entry.plain_answers``; ``some_others``: some items are not bare). Returns how
        many, and the L1 probes of the other bare items, by index."""
        index: Sequence[int] = range(len(bare))
        credentials = bare
        if some_others:  # only the bare ones
            index = [i for i, c in enumerate(bare) if c is not None]
            credentials = [bare[i] for i in index]
        digests = self._digest_many(cast(list[str], credentials))
        due: list[str] = []
        left: list[int] = []  # the positions in ``digests`` of those L1 did not answer
        # one reading of the wall clock for the whole batch (entry.unexpired's); the C
        # pass with bare_many: icount --wire batch 1,832,070 -> 1,349,040 instructions
        answers = plain_answers(self._table(now), digests, now, time.time_ns() // 1000,
                                self._l1.used, self._l1.valid, due, left)
        for digest in due:
            self._mark_due(digest)
        if type(index) is range:
            parts[:] = answers
        else:
            for i, answer in zip(index, answers, strict=True):
                parts[i] = answer
        answered = len(answers) - len(left)
        self._l1.count(answered)
        return answered, {
            index[j]: L1Probe(digests[j], cached)
            for j, cached in zip(left, self._fresh_many([digests[j] for j in left], now),
                                 strict=True)} if left else {}

    async def _look_up(self, bare: list[str | None],
                       others: dict[int, tuple[str, tuple[str, ...]]],
                       parts: list[bytes | None], probes: dict[int, L1Probe], mode: CacheMode,
                       address: str | None) -> dict[int, Result]:
        """The results of the items L1 did not answer."""
        results: dict[int, Result] = {}
        pending: list[tuple[int, str, tuple[str, ...], L1Probe | None]] = []
        for index, credential in enumerate(bare):
            if parts[index] is not None:
                continue
            if credential is not None:  # a bare item (its digest known if L1 was probed)
                pending.append((index, credential, (), probes.get(index)))
            else:
                pending.append((index, *others[index], None))
        done = await asyncio.gather(*(
            self._verifier.verify(c, client_ip=address, mode=mode, expected_audiences=a,
                                  probe=p)
            for _, c, a, p in pending))
        results.update(zip((index for index, *_ in pending), done, strict=True))
        return results

    def _assemble(self, parts: list[bytes | None], results: dict[int, Result],
                  answered: int, mode: CacheMode) -> tuple[bytes, bytes]:
        """The response body and its ``X-Cache`` summary (answers by level)."""
        tally: dict[tuple[str, str], int] = {}
        for index, result in results.items():
            key = (result.outcome.value, result.cache)
            tally[key] = tally.get(key, 0) + 1
            parts[index] = response_body(result)
        counts: dict[str, int] = {"L1": answered} if answered else {}
        for (outcome, level), n in tally.items():
            self._metrics.result(outcome, level, n)
            label = "BYPASS" if mode is not CacheMode.DEFAULT and level == "STORE" else level
            counts[label] = counts.get(label, 0) + n
        done = cast(list[bytes], parts)
        if done:  # the brackets join the first and last parts: one copy of the ~30 KB
            done[0] = b'{"results":[' + done[0]
            done[-1] += b"]}"
        body = b",".join(done) if done else b'{"results":[]}'
        if not tally:  # all from L1 (or none): the usual summary, made without a sort
            return body, b"L1=%d" % answered if answered else b"NONE"
        summary = ",".join(f"{k}={v}" for k, v in sorted(counts.items())).encode()
        return body, summary


def request_mode(headers: dict[bytes, bytes]) -> CacheMode:
    """The caller's cache directives (``Cache-Control``, ``Pragma``)."""
    cc = headers.get(b"cache-control")
    pragma = headers.get(b"pragma")
    if cc is None and pragma is None:
        return CacheMode.DEFAULT
    return cache_mode(cc.decode("latin-1") if cc else None,
                      pragma.decode("latin-1") if pragma else None)


def verify_headers(result: Result, mode: CacheMode) -> list[Header]:
    """The headers of a verify answer: where it came from (``X-Cache`` and Ory Talos's
    ``Ory-Talos-Cache``), ``Cache-Control: no-store`` for an IP-restricted key (the answer
    holds for one client address only), and the key's rate limit."""
    talos = (b"SKIP" if mode is not CacheMode.DEFAULT
             else _TALOS_CACHE.get(result.cache, b"MISS"))
    headers = [(b"x-cache", cache_header(result, mode)), (b"ory-talos-cache", talos),
               *rate_limit_headers(result)]
    if result.entry is not None and result.entry.networks:
        headers.append(_NO_STORE)
    return headers


def rate_limit_headers(result: Result) -> list[Header]:
    """For a key with a rate limit: ``RateLimit-Policy`` (its quota and window), and once
    it is spent ``RateLimit`` (none left, seconds to the reset) and ``Retry-After``, as in
    the IETF RateLimit header fields draft and Ory Talos."""
    entry, limit = result.entry, result.limit
    if entry is None or entry.rate_limit is None:
        return []
    policy = entry.rate_limit
    headers = [(b"ratelimit-policy", f'"key";q={policy.quota};w={policy.window_s}'.encode())]
    if result.outcome is Outcome.RATE_LIMITED and limit is not None:
        headers += [(b"ratelimit", f'"key";r=0;t={limit.retry_after_s}'.encode()),
                    (b"retry-after", str(limit.retry_after_s).encode())]
    return headers


def cache_header(result: Result, mode: CacheMode) -> bytes:
    """``X-Cache``: the level that answered; BYPASS for a store read the caller asked for."""
    if mode is not CacheMode.DEFAULT and result.cache == "STORE":
        return b"BYPASS"
    return CACHE_HEADER.get(result.cache, b"NONE")


def batch_items(body: dict[str, Any]) -> list[Any]:
    unknown = sorted(set(body) - {"requests"})
    if unknown:
        raise InvalidArgument(f"BatchVerifyApiKeysRequest: unknown field {unknown[0]!r}")
    items = body.get("requests")
    if not isinstance(items, list):
        raise InvalidArgument("requests: expected an array of VerifyApiKeyRequest")
    if len(items) > MAX_BATCH:
        raise InvalidArgument(f"requests: {len(items)} items exceeds the limit of {MAX_BATCH}")
    return items


def verify_request(item: object, where: str) -> tuple[str, tuple[str, ...]]:
    """(credential, expected audiences) of a VerifyApiKeyRequest; InvalidArgument naming
    the field (``where`` prefixes it: ``requests[3].``) otherwise."""
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where or 'request body'}: expected a VerifyApiKeyRequest object")
    credential = item.get("credential")
    if not isinstance(credential, str) or not credential:
        raise InvalidArgument(f"{where}credential: is required and must be a string")
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise InvalidArgument(
            f"{where}credential: longer than {MAX_CREDENTIAL_LENGTH} characters")
    unknown = set(item) - {"credential", "expected_audiences"}
    if unknown:
        raise InvalidArgument(f"{where}{sorted(unknown)[0]}: unknown field")
    audiences = item.get("expected_audiences")
    if audiences is None:
        return credential, ()
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidArgument(f"{where}expected_audiences: expected an array of strings")
    return credential, tuple(audiences)
