"""Plain-ASGI dispatch of the hot routes in front of the Starlette app.

The hot routes are a table, built once by the composition root (``gateway.app``): a path
(and, for forward auth, every path below it) → a ``Route``. A route has two halves:

- ``fast``: synchronous, for the hot case. It answers a request by itself (an ``Answer``:
  the status, headers and body of a cached "yes", built from the bytes L1 holds) or
  returns what it learned (the parsed body, the credential's digest, what L1 held) for the
  general half, so nothing is parsed, digested or looked up twice.
- ``general``: everything else, through the ``Verifier``; its faults become the Ory error
  body here (``gateway.http.errors``, as on the Starlette routes).

A wrong method is a 405 with ``Allow``, as on every other route; anything else falls
through to Starlette. A Starlette endpoint costs more per request than a cached verify is
allowed to, which is why these routes are plain ASGI.

Every answer carries the request's id (``X-Request-ID``, ``gateway.http.request_ids``). An
answer from L1 logs nothing: its pre-rendered headers are sent with the id's header added,
and the id is not set in ``request_context``; the general half runs with it set, through a
``send`` that adds the header. With ``GATEWAY_ACCESS_LOG`` each answer is logged
(``AccessLog``); without, that costs one None check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import monotonic
from typing import Any, Protocol

from gateway.errors import GatewayError, MethodNotAllowed
from gateway.http.access_log import AccessLog
from gateway.http.errors import ORY, error_answer, internal_error
from gateway.http.request_ids import HEADER, IDS, MAX_LENGTH, SAFE_MAP, Tagged, request_id_of
from gateway.http.wire import RENDERED, Head, send_bytes
from gateway.observability.request_context import request_id

log = logging.getLogger("gateway.hot")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_RID_LINE = HEADER + b": "
# A whole answer from ``fast``: its status, headers (checked and rendered once: ``Head``)
# and body message, and the caller's X-Request-ID as sent (None: none), read with the other
# headers ``fast`` reads (a scan of the headers for it here cost 1,550 instructions a call,
# icount verify). The start message is made here, with the request id, as ASGI headers and
# as the lines our server writes as they are (``RENDERED``).
Answer = tuple[int, Head, Message, bytes | None]


class Route(Protocol):
    path: str
    below: bool  # also every path below ``path`` (forward auth behind a path prefix)
    methods: frozenset[str] | None  # None: any method
    reads_body: bool  # ``fast`` is handed the first body message
    # records the latency of an answer of ``fast``: every one is a 200, so no status is
    # looked at on the L1 path (gateway_request_duration_seconds adds it at scrape time)
    observe: Callable[[float], None]
    # records the latency of an answer of ``general`` (and of a 405), with its status
    observe_status: Callable[[int, float], None]

    def fast(self, scope: Scope, message: Message | None, now: float) -> Answer | Any:
        """The whole answer (a tuple), or what ``general`` is handed (never a tuple)."""

    async def general(self, scope: Scope, message: Message | None, receive: Receive,
                      send: Send, now: float, learned: Any) -> None: ...


# (methods, reads_body, fast, general, observe, template) of a route; the template names
# it in the access log (below its path: "{path}", never the path itself)
_Entry = tuple[frozenset[str] | None, bool, Callable[..., Any], Callable[..., Awaitable[None]],
               Callable[[float], None], str]


class HotPath:
    def __init__(self, app: ASGIApp, routes: Iterable[Route],
                 access: AccessLog | None = None) -> None:
        self.app = app
        self._access = access
        # each route as the tuple the dispatch unpacks: no attribute lookups per request
        # (generic ones on three route classes cost 476 instructions a call, icount verify)
        routes = tuple(routes)
        self._exact: dict[str, _Entry] = {
            route.path: (route.methods, route.reads_body, route.fast, route.general,
                         route.observe, route.path) for route in routes}
        self._below = tuple(
            (route.path + "/", (route.methods, route.reads_body, route.fast, route.general,
                                route.observe, route.path + "/{path}"))
            for route in routes if route.below)
        # template → the route's observe_status, for the general half (not in the entries:
        # the L1 path unpacks those)
        self._answered: dict[str, Callable[[int, float], None]] = {
            **{route.path: route.observe_status for route in routes},
            **{route.path + "/{path}": route.observe_status for route in routes if route.below}}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._exact.get(scope.get("path"))  # type: ignore[arg-type]
        if ((entry is None and (entry := self._route_below(scope.get("path"))) is None)
                or scope["type"] != "http"):
            await self.app(scope, receive, send)
            return
        methods, reads_body, fast, general, observe, template = entry
        if methods is not None and scope["method"] not in methods:
            await self._general(scope, None, receive, send, template, monotonic(),
                                _not_allowed, methods)
            return
        start = monotonic()  # also the routes' "now" for L1: one clock read
        message = await receive() if reads_body else None
        step = fast(scope, message, start)
        if type(step) is tuple:  # the hot case: answered from L1
            status, head, body, rid = step
            # request_ids.accepted and new_id, inlined (a call is ~400 instructions)
            if rid is None or len(rid) > MAX_LENGTH or not rid.translate(SAFE_MAP).isalnum():
                rid = next(IDS.ids)
            await send({"type": "http.response.start", "status": status,
                        "headers": head.headers + ((HEADER, rid),),  # noqa: RUF005 (cheaper)
                        RENDERED: (head.lines + _RID_LINE + rid + b"\r\n", head.length)})
            await send(body)
            observe(monotonic() - start)
            if self._access is not None:
                self._access.record(scope, template, status, head.headers,
                                    monotonic() - start, rid.decode("ascii"))
            return
        await self._general(scope, message, receive, send, template, start, general, step)

    async def _general(self, scope: Scope, message: Message | None, receive: Receive,
                       send: Send, template: str, start: float,
                       general: Callable[..., Awaitable[None]], learned: Any) -> None:
        """The general half of a route, with the request id set; its faults answered."""
        tagged = Tagged(send, request_id_of(scope["headers"]))
        token = request_id.set(tagged.id)
        try:
            await general(scope, message, receive, tagged, start, learned)
        except GatewayError as exc:
            await _send_error(tagged, exc)
        except Exception as exc:
            await _send_error(tagged, internal_error(scope["method"], scope["path"], exc))
        finally:
            status, headers = tagged.answered()
            seconds = monotonic() - start
            self._answered[template](status, seconds)
            if self._access is not None:
                self._access.record(scope, template, status, headers, seconds, tagged.id)
            request_id.reset(token)

    def _route_below(self, path: str | None) -> _Entry | None:
        if path is not None:
            for prefix, entry in self._below:
                if path.startswith(prefix):
                    return entry
        return None


async def _not_allowed(scope: Scope, message: Message | None, receive: Receive, send: Send,
                       now: float, methods: frozenset[str]) -> None:
    """The general half of a route asked with a method it does not take: 405."""
    raise MethodNotAllowed(scope["method"], scope["path"], ", ".join(sorted(methods)))


async def _send_error(send: Send, exc: GatewayError) -> None:
    await send_bytes(send, *error_answer(exc, ORY))
