"""Forward auth: ``/v2alpha1/decisions`` and every path below it, any method (nginx
``auth_request``, Traefik ``forwardAuth``, Envoy ``ext_authz`` over HTTP).

200 with the identity headers (``X-Actor-Id``, ``X-Key-Id``, ``X-Scopes``) when the
credential passes; 401 with ``WWW-Authenticate`` when it is missing or does not pass (why
is not said: the caller may be anyone); 403 for an address, scope or audience the key does
not allow; 429 when its rate limit is spent; 503 when it cannot be checked. The body is
never read: proxies send none.

Trust assumption: ``X-Forwarded-For`` / ``X-Real-IP`` are believed only when the TCP peer
is one of ``settings.trusted_proxies``; otherwise the peer address is the client.

The decision itself (``ForwardAuth``: a ``Verdict`` from a credential, a client address and
the required scopes) is transport-free: Envoy's ext_authz over gRPC
(``gateway.ext_authz``) asks the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from gateway.cache.entry import AUTH_HEADERS_MEMO, auth_headers
from gateway.cache.keycache import CacheMode
from gateway.http.client_ip import Trusted, client_ip
from gateway.http.hot import Answer, Message, Receive, Scope, Send
from gateway.http.l1_answers import L1Answers, bare
from gateway.http.verify_routes import cache_header, rate_limit_headers
from gateway.http.wire import SECURITY_HEADERS, Head, Header, bearer_token, head, send_bytes
from gateway.keys.header_values import header_value, scopes_value
from gateway.observability.metrics import Metrics
from gateway.verify.outcomes import TABLE, Outcome, Result
from gateway.verify.verifier import L1Probe, Verifier

DECISIONS = "/v2alpha1/decisions"
_INVALID_TOKEN = b'{"error":"invalid_token","error_description":"the credential is not valid"}'
_EMPTY_END = {"type": "http.response.body", "body": b""}
_DECISION_HEAD = ((b"content-length", b"0"), (b"x-cache", b"L1"), *SECURITY_HEADERS)
# a "yes" from L1's headers, by its identity headers (made once per key state:
# gateway.cache.entry.auth_headers), as many as that keeps
_DECISION_HEADS: dict[tuple[Header, ...], Head] = {}


def _decision_head(identity: tuple[Header, ...]) -> Head:
    rendered = _DECISION_HEADS.get(identity)
    if rendered is None:
        if len(_DECISION_HEADS) >= AUTH_HEADERS_MEMO:
            _DECISION_HEADS.clear()
        rendered = _DECISION_HEADS[identity] = head(_DECISION_HEAD + identity)
    return rendered


@dataclass(slots=True)
class Presented:
    """What forward auth's fast half learned: the request's headers, its credential, and
    the credential's L1 probe (when it was a root key's with nothing more to check)."""

    headers: dict[bytes, bytes]
    credential: str | None
    probe: L1Probe | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Forward auth's decision, whatever the transport: the HTTP status (200: the request
    passes), the identity headers the upstream gets (a pass only), and the answer's other
    headers (``X-Cache``, the rate-limit headers, ``WWW-Authenticate``) and JSON body (a
    refusal's)."""

    status: int
    identity: tuple[Header, ...] = ()
    headers: tuple[Header, ...] = ()
    body: bytes = b""


MISSING = Verdict(401, headers=((b"www-authenticate", b'Bearer realm="gateway"'),),
                  body=b'{"error":"credential required"}')


def credential_of(headers: Mapping[bytes, bytes], alternative: bytes) -> str | None:
    """The credential a request presents: ``Authorization: Bearer`` first, then the
    configured header (``X-API-Key``, ``alternative``: its lower-case name)."""
    raw, alt = headers.get(b"authorization"), headers.get(alternative)
    return credential_from(raw.decode("latin-1") if raw else None,
                           alt.decode("latin-1") if alt else None)


def credential_from(authorization: str | None, alternative: str | None) -> str | None:
    """``credential_of`` from the two headers' values, read (None: absent)."""
    credential = bearer_token(authorization) if authorization else None
    if credential is None:
        credential = alternative.strip() if alternative else None
    return credential or None


class ForwardAuth:
    """The decision every forward-auth transport asks for, when L1 does not answer yes by
    itself (``L1Answers.yes``, which each transport's fast half asks): one
    ``Verifier.verify`` call, then the required scopes. Each answer is counted in the
    verify results."""

    def __init__(self, services: Any) -> None:
        self._verifier: Verifier = services.verifier
        self._metrics: Metrics = services.metrics
        # the header besides Authorization that carries a credential (lower case)
        self.credential_header: bytes = services.settings.credential_header.encode()

    async def decide(self, credential: str | None, *, client_ip: str | None,
                     required: tuple[str, ...] = (), audiences: tuple[str, ...] = (),
                     probe: L1Probe | None = None) -> Verdict:
        """The verdict on ``credential`` (None: none was presented) for a client at
        ``client_ip`` (None: unknown), with the ``required`` scopes and the expected
        ``audiences``."""
        if credential is None:
            self._metrics.result("missing", "NONE")
            return MISSING
        # Cache-Control / Pragma are the proxied client's own headers here: honouring them
        # would let any client force a store read per request, so forward auth ignores them.
        result = await self._verifier.verify(credential, client_ip=client_ip,
                                             expected_audiences=audiences, probe=probe)
        result = _with_scopes(result, required)
        self._metrics.result(result.outcome.value, result.cache)
        return verdict(result)


class DecisionsRoute:
    """Fast: a root key with no required scope or audience that L1 answers alone.
    General: the whole check, one ``Verifier.verify`` call, then the required scopes."""

    path, below, reads_body = DECISIONS, True, False
    methods: frozenset[str] | None = None  # any: proxies forward the client's method

    def __init__(self, services: Any, l1: L1Answers) -> None:
        self._l1 = l1
        self._auth = ForwardAuth(services)
        self._metrics: Metrics = services.metrics
        self._trusted: Trusted = services.trusted
        self._credential_header = self._auth.credential_header  # bound for the fast half
        self.observe = self._metrics.latency("forward_auth")
        self.observe_status = self._metrics.answered("forward_auth")

    def fast(self, scope: Scope, message: Message | None, now: float) -> Answer | Presented:
        headers = dict(scope["headers"])
        credential = credential_of(headers, self._credential_header)
        if (credential is None or not bare(credential) or b"x-required-scope" in headers
                or b"x-expected-audience" in headers
                or (scope["query_string"] and scope["path"] == DECISIONS)):
            return Presented(headers, credential)
        digest = self._l1.digest(credential)
        cached = self._l1.fresh(digest, now)
        if self._l1.yes(cached, now):
            return (200, _decision_head(auth_headers(cached)), _EMPTY_END,
                    headers.get(b"x-request-id"))  # for HotPath (see Answer)
        return Presented(headers, credential, L1Probe(digest, cached))

    async def general(self, scope: Scope, message: Message | None, receive: Receive,
                      send: Send, now: float, presented: Presented) -> None:
        headers = presented.headers
        answer = await self._auth.decide(
            presented.credential, client_ip=client_ip(scope, headers, self._trusted),
            required=_required_scopes(scope, headers),
            audiences=_list_header(headers.get(b"x-expected-audience")), probe=presented.probe)
        await send_bytes(send, answer.status, answer.body, [*answer.headers, *answer.identity],
                         content_type=bool(answer.body))


def verdict(result: Result) -> Verdict:
    """The verdict of a verification: a pass with the identity headers, or a refusal."""
    wire = TABLE[result.outcome]
    headers = ((b"x-cache", cache_header(result, CacheMode.DEFAULT)), *_limit_headers(result),
               *rate_limit_headers(result))
    entry = result.entry
    if result.valid and entry is not None:
        if result.token is None:
            return Verdict(200, tuple(entry.auth_headers), headers)
        # a derived token: its own actor and scopes
        return Verdict(200, ((b"x-actor-id", header_value(result.token["actor_id"])),
                             (b"x-key-id", header_value(entry.key_id)),
                             (b"x-scopes", scopes_value(result.token["scopes"]))), headers)
    if wire.http_status == 401:
        # The caller may be anyone: it learns that the credential does not pass, not why
        # (unknown, revoked, expired and forged read alike). The reason is in the metrics,
        # and the holder can ask the verify API.
        return Verdict(401, headers=(*headers, (b"www-authenticate",
                                                b'Bearer realm="gateway", error="invalid_token"')),
                       body=_INVALID_TOKEN)
    return Verdict(wire.http_status, headers=headers, body=orjson.dumps(
        {"error": result.outcome.value, "error_description": wire.message}))


def _with_scopes(result: Result, required: tuple[str, ...]) -> Result:
    """SCOPE_MISSING for a valid credential that lacks one of ``required``."""
    entry = result.entry
    if not required or not result.valid or entry is None:
        return result
    scopes = result.token.get("scopes", entry.scopes) if result.token else entry.scopes
    if all(s in scopes for s in required):
        return result
    return Result(Outcome.SCOPE_MISSING, entry, result.cache, result.limit)


def _limit_headers(result: Result) -> list[tuple[bytes, bytes]]:
    limit = result.limit
    if limit is None:
        return []
    headers = [(b"x-ratelimit-remaining", str(limit.remaining).encode()),
               (b"x-ratelimit-reset", str(limit.reset_us // 1_000_000).encode())]
    if result.entry is not None and result.entry.rate_limit is not None:
        headers.append((b"x-ratelimit-limit", str(result.entry.rate_limit.quota).encode()))
    return headers


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
