"""Envoy ext_authz over gRPC: ``envoy.service.auth.v3.Authorization/Check`` on its own
port (``GATEWAY_GRPC_PORT``), served by ``grpc.aio`` on the app's event loop, started and
stopped (gracefully) with the app's lifespan.

Each Check gets the decision of HTTP forward auth (``gateway.http.decisions.ForwardAuth``):
the same credential, address and scopes give the same verdict on either transport.

- Credential: ``authorization: Bearer …``, else ``GATEWAY_CREDENTIAL_HEADER``
  (``x-api-key``), from ``attributes.request.http.headers`` (lower-case names).
- Client address: ``attributes.source.address``, the downstream address Envoy saw, when
  the gRPC peer is one of ``GATEWAY_TRUSTED_PROXIES``; when that address is itself a
  trusted proxy, ``X-Forwarded-For`` / ``X-Real-IP`` as over HTTP. From any other peer,
  the peer itself (what it says about the client is not believed).
- Required scopes: the route's context extension ``required_scope`` (Envoy's per-route
  ``check_settings``, which the client cannot touch) and ``X-Required-Scope`` (a client's
  own can only add one). Expected audiences: the context extension ``expected_audience``
  only, not a header: over gRPC Envoy sends the client's headers, and a client-sent
  audience would widen what passes (a derived token needs to name one of them).
- Pass: ``OkHttpResponse`` with X-Actor-Id, X-Key-Id and X-Scopes, each
  ``OVERWRITE_IF_EXISTS_OR_ADD`` (every client-sent value of the name is replaced), and in
  ``headers_to_remove`` each header the client sent under another spelling of those names
  (``x_actor_id``, ``x.actor.id``: CGI, WSGI, PHP and Rack read them as the same header).
  The names themselves are not listed there: Envoy removes after it sets, so that would
  remove the gateway's own.
- Refusal: ``DeniedHttpResponse`` with HTTP forward auth's status (401, 403, 429), body and
  headers (``WWW-Authenticate``, ``Retry-After``, the rate-limit headers; not ``X-Cache``),
  and a non-OK ``CheckResponse.status``.
- Fail-closed: a store that cannot be reached is a DENIED 503 (HTTP's body), and any
  unexpected fault a DENIED 500 — an answer, not a gRPC error. Envoy's
  ``failure_mode_allow`` applies to a call that fails (a gRPC error status, a timeout, no
  connection) and, when true, lets such requests through; a DENIED answer is a denial
  whatever it is set to.
- Bounds: a CheckRequest over ``MAX_MESSAGE`` bytes is refused by gRPC before it is
  parsed (``RESOURCE_EXHAUSTED``: Envoy denies with its ``status_on_error``); more than
  ``MAX_HEADERS`` headers, or more than ``MAX_HEAD_BYTES`` of them, is a DENIED 431 with
  the HTTP server's body, as over HTTP.

Metrics: each answer is timed in ``gateway_request_duration_seconds{route="grpc_check"}``
by its HTTP status, and counted in the verify results as HTTP forward auth's are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any
from urllib.parse import unquote

import grpc
from google.rpc.status_pb2 import Status

from gateway.cache.entry import auth_headers
from gateway.errors import ConfigError, GatewayError
from gateway.ext_authz.protos.base_pb2 import HeaderMap, HeaderValue, HeaderValueOption
from gateway.ext_authz.protos.external_auth_pb2 import (
    AttributeContext,
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from gateway.ext_authz.protos.http_status_pb2 import HttpStatus
from gateway.http.client_ip import Trusted, client_ip
from gateway.http.decisions import ForwardAuth, credential_from
from gateway.http.errors import ORY, error_answer, internal_error
from gateway.http.l1_answers import L1Answers, bare
from gateway.http.server import HEAD_TOO_LARGE, MAX_HEAD_BYTES, MAX_HEADERS
from gateway.http.wire import Header
from gateway.verify.verifier import L1Probe

log = logging.getLogger("gateway.ext_authz")
SERVICE = "envoy.service.auth.v3.Authorization"
CHECK = f"/{SERVICE}/Check"
ROUTE = "grpc_check"  # the route label of its metrics
# The largest CheckRequest read: a request head as large as the HTTP server takes, and
# room for the rest of the attributes (addresses, path, metadata).
MAX_MESSAGE = MAX_HEAD_BYTES + 8 * 1024
STOP_GRACE_S = 5.0  # at shutdown: how long Checks in flight may take to finish
REQUIRED_SCOPE = "required_scope"  # context extensions (Envoy's per-route check_settings)
EXPECTED_AUDIENCE = "expected_audience"
IDENTITY = frozenset({"x-actor-id", "x-key-id", "x-scopes"})
_IDENTITY_LENGTHS = frozenset(len(name) for name in IDENTITY)
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# CheckResponse.status of a refusal, by its HTTP status (Envoy reads only "not OK")
_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED, 431: grpc.StatusCode.INVALID_ARGUMENT,
          500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}
PASSES_MEMO = 4096  # serialized pass answers kept, by identity headers
# (its size in bytes, the request): the size is known before parsing, for free
Parsed = tuple[int, CheckRequest]


def _parse(data: bytes) -> Parsed:
    return len(data), CheckRequest.FromString(data)


def _option(name: bytes, value: bytes) -> HeaderValueOption:
    """``name: value`` in place of every value of ``name`` (an empty one too: X-Scopes of
    a key with no scope replaces a client's)."""
    return HeaderValueOption(header=HeaderValue(key=name.decode("latin-1"),
                                                value=value.decode("latin-1")),
                             append_action=_OVERWRITE, keep_empty_value=True)


def denied(status: int, headers: tuple[Header, ...], body: bytes) -> bytes:
    """A serialized DENIED answer: the HTTP status, headers (but ``X-Cache``) and JSON body
    the client gets."""
    options = [_option(name, value) for name, value in headers if name != b"x-cache"]
    options.append(_option(b"content-type", b"application/json"))
    code = _CODES.get(status, grpc.StatusCode.PERMISSION_DENIED).value[0]
    answer: bytes = CheckResponse(
        status=Status(code=code),
        denied_response=DeniedHttpResponse(status=HttpStatus(code=status), headers=options,
                                           body=body.decode("utf-8", "replace")),
    ).SerializeToString()
    return answer


TOO_LARGE = denied(431, (), HEAD_TOO_LARGE)


def aliases(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The names in ``headers`` that apps read as an identity header but that are spelled
    otherwise (``x_actor_id``, ``x.actor.id``), sorted."""
    out: tuple[str, ...] = ()
    for name in headers:
        if len(name) in _IDENTITY_LENGTHS and name[0] in "xX" and name not in IDENTITY:
            canonical = "".join(c if c.isalnum() else "-" for c in name.lower())
            if canonical in IDENTITY:
                out += (name,)
    return tuple(sorted(out)) if len(out) > 1 else out


def _joined(header_map: HeaderMap) -> dict[str, str]:
    """``header_map`` (Envoy's ``encode_raw_headers``) as ``headers`` would be: lower-case
    names, a repeated header's values joined with ","."""
    out: dict[str, str] = {}
    for header in header_map.headers:
        name = header.key.lower()
        value = header.raw_value.decode("latin-1") if header.raw_value else header.value
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _as_read(value: str | None) -> str | None:
    """A header's value as an HTTP server would have read it: Envoy passes its bytes on
    as UTF-8, the HTTP server reads them as latin-1."""
    if value is None or value.isascii():
        return value
    return value.encode().decode("latin-1")


def _head_bytes(http: AttributeContext.HttpRequest, headers: Mapping[str, str]) -> int:
    """About what the request line and headers took on the wire."""
    return (len(http.method) + len(http.path) + 12
            + sum(len(name) + len(value) + 4 for name, value in headers.items()))


def _list(value: str | None) -> tuple[str, ...]:
    """A comma- or space-separated list (a header, a context extension)."""
    return tuple(value.replace(",", " ").split()) if value else ()


def peer_address(peer: str) -> str | None:
    """The address of a gRPC peer: ``ipv4:10.0.0.1:5000`` → ``10.0.0.1``,
    ``ipv6:[::1]:5000`` (or ``ipv6:%5B::1%5D:5000``) → ``::1``, ``ipv6:[::ffff:10.0.0.1]:5000``
    → ``10.0.0.1``; None for any other kind."""
    kind, _, rest = unquote(peer).partition(":")
    host = rest.rpartition(":")[0]
    if kind == "ipv4":
        return host or None
    if kind == "ipv6":
        host = host.removeprefix("[").removesuffix("]")
        if host.startswith("::ffff:") and "." in host:  # IPv4, on a dual-stack socket
            return host.removeprefix("::ffff:")
        return host or None
    return None


@dataclass(slots=True)
class _Asked:
    """What the first half of a Check read, for a decision L1 could not give alone."""

    attributes: AttributeContext
    headers: Mapping[str, str]
    credential: str | None
    required: tuple[str, ...]
    audiences: tuple[str, ...]
    forged: tuple[str, ...]
    probe: L1Probe | None


class CheckService:
    """``check``: one Check, answered with a serialized ``CheckResponse``. Its first half
    (``_read``) is synchronous and answers a cached "yes" by itself, as HTTP forward auth's
    fast half does; anything else is decided by ``ForwardAuth``."""

    def __init__(self, services: Any) -> None:
        self._auth = ForwardAuth(services)
        l1 = L1Answers(services)
        self._digest, self._fresh, self._yes = l1.digest, l1.fresh, l1.yes
        self._credential_header = self._auth.credential_header.decode()
        self._trusted: Trusted = services.trusted
        self._observe = services.metrics.answered(ROUTE)
        self._passes: dict[tuple[tuple[Header, ...], tuple[str, ...]], bytes] = {}

    async def check(self, request: Parsed, context: Any) -> bytes:
        start = monotonic()  # also "now" for L1, as on the HTTP hot routes
        size, message = request
        try:
            step = self._read(size, message, start)
            status, answer = (await self._decide(step, context) if isinstance(step, _Asked)
                              else step)
        except Exception as exc:  # fail closed: a DENIED answer, never a gRPC error
            fault = exc if isinstance(exc, GatewayError) else internal_error("CHECK", CHECK, exc)
            status, body, headers = error_answer(fault, ORY)
            answer = denied(status, tuple(headers), body)
        self._observe(status, monotonic() - start)
        return answer

    def _read(self, size: int, request: CheckRequest, now: float) -> tuple[int, bytes] | _Asked:
        """The answer when it needs nothing but L1 (a cached "yes") or the request's size
        (431), else what the decision needs."""
        attributes = request.attributes
        http = attributes.request.http
        headers: Mapping[str, str] = http.headers
        if not headers and http.header_map.headers:
            headers = _joined(http.header_map)
        if len(headers) > MAX_HEADERS or (size > MAX_HEAD_BYTES
                                          and _head_bytes(http, headers) > MAX_HEAD_BYTES):
            return 431, TOO_LARGE
        required: tuple[str, ...] = ()
        audiences: tuple[str, ...] = ()
        extensions = attributes.context_extensions
        if extensions:
            required = _list(extensions.get(REQUIRED_SCOPE))
            audiences = _list(extensions.get(EXPECTED_AUDIENCE))
        client_scope = headers.get("x-required-scope")
        if client_scope:
            required = (*required, *_list(client_scope))
        credential = credential_from(_as_read(headers.get("authorization")),
                                     _as_read(headers.get(self._credential_header)))
        forged = aliases(headers)
        probe = None
        if credential is not None and not required and not audiences and bare(credential):
            digest = self._digest(credential)
            cached = self._fresh(digest, now)
            if self._yes(cached, now):  # the hot case
                return 200, self._pass(auth_headers(cached), forged)
            probe = L1Probe(digest, cached)
        return _Asked(attributes, headers, credential, required, audiences, forged, probe)

    async def _decide(self, asked: _Asked, context: Any) -> tuple[int, bytes]:
        verdict = await self._auth.decide(
            asked.credential, client_ip=self._client_ip(asked.attributes, asked.headers,
                                                        context.peer()),
            required=asked.required, audiences=asked.audiences, probe=asked.probe)
        if verdict.status == 200:
            return 200, self._pass(verdict.identity, asked.forged)
        return verdict.status, denied(verdict.status, verdict.headers, verdict.body)

    def _pass(self, identity: tuple[Header, ...], remove: tuple[str, ...]) -> bytes:
        """The serialized OK answer: the identity headers set, the aliases removed."""
        key = (identity, remove)
        answer = self._passes.get(key)
        if answer is None:
            if len(self._passes) >= PASSES_MEMO:
                self._passes.clear()
            answer = self._passes[key] = CheckResponse(
                status=Status(code=grpc.StatusCode.OK.value[0]),
                ok_response=OkHttpResponse(
                    headers=[_option(name, value) for name, value in identity],
                    headers_to_remove=remove),
            ).SerializeToString()
        return answer

    def _client_ip(self, attributes: AttributeContext, headers: Mapping[str, str],
                   peer: str) -> str | None:
        address = peer_address(peer)
        if address not in self._trusted:
            return address
        source = attributes.source.address.socket_address.address or address
        forwarded = {name.encode(): headers[name].encode()
                     for name in ("x-forwarded-for", "x-real-ip") if name in headers}
        return client_ip({"client": (source, 0)}, forwarded, self._trusted)


class ExtAuthzServer:
    """The gRPC server of ``CheckService``."""

    def __init__(self, services: Any) -> None:
        self.service = CheckService(services)
        self.port = 0
        self._server: Any = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host``:``port`` (0: any free port) and serve; the port. With
        ``reuse_port`` (``GATEWAY_WORKERS`` > 1) every worker listens on the port and the
        kernel spreads connections over them; otherwise a port in use is an error."""
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", int(reuse_port)),
        ])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(self.service.check,
                                                         request_deserializer=_parse),
        }),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"GATEWAY_GRPC_PORT: cannot listen on {address}: {exc}") from exc
        await server.start()
        self._server = server
        log.info("gRPC ext_authz (%s) on %s", SERVICE, address.rsplit(":", 1)[0]
                 + f":{self.port}")
        return self.port

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop taking Checks; those in flight get ``grace`` seconds to finish."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
