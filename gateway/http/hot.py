"""Plain-ASGI dispatch of the hot routes in front of the Starlette app.

The hot routes are a table, built once by the composition root (``gateway.app``): a path
(and, for forward auth, every path below it) → a ``Route``. A route has two halves:

- ``fast``: synchronous, for the hot case. It answers a request by itself (the ASGI
  messages of a cached "yes", built from the bytes L1 holds) or returns what it learned
  (the parsed body, the credential's digest, what L1 held) for the general half, so
  nothing is parsed, digested or looked up twice.
- ``general``: everything else, through the ``Verifier``; its faults become the Ory error
  body here (``gateway.http.errors``, as on the Starlette routes).

A wrong method is a 405 with ``Allow``, as on every other route; anything else falls
through to Starlette. A Starlette endpoint costs more per request than a cached verify is
allowed to, which is why these routes are plain ASGI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import monotonic
from typing import Any, Protocol

from gateway.errors import GatewayError, MethodNotAllowed
from gateway.http.errors import ORY, error_answer, internal_error
from gateway.http.wire import send_bytes

log = logging.getLogger("gateway.hot")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Answer = tuple[Message, Message]  # the start and body messages of a whole answer


class Route(Protocol):
    path: str
    below: bool  # also every path below ``path`` (forward auth behind a path prefix)
    methods: frozenset[str] | None  # None: any method
    reads_body: bool  # ``fast`` is handed the first body message
    observe: Callable[[float], None]  # records one request's latency

    def fast(self, scope: Scope, message: Message | None, now: float) -> Answer | Any:
        """The whole answer (a tuple), or what ``general`` is handed (never a tuple)."""

    async def general(self, scope: Scope, message: Message | None, receive: Receive,
                      send: Send, now: float, learned: Any) -> None: ...


# (methods, reads_body, fast, general, observe) of a route
_Entry = tuple[frozenset[str] | None, bool, Callable[..., Any], Callable[..., Awaitable[None]],
               Callable[[float], None]]


class HotPath:
    def __init__(self, app: ASGIApp, routes: Iterable[Route]) -> None:
        self.app = app
        # each route as the tuple the dispatch unpacks: no attribute lookups per request
        # (generic ones on three route classes cost 476 instructions a call, icount verify)
        table = [(route.path, route.below, (route.methods, route.reads_body, route.fast,
                                            route.general, route.observe))
                 for route in routes]
        self._exact: dict[str, _Entry] = {path: entry for path, _, entry in table}
        self._below = tuple((path + "/", entry) for path, below, entry in table if below)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._exact.get(scope.get("path"))  # type: ignore[arg-type]
        if ((entry is None and (entry := self._route_below(scope.get("path"))) is None)
                or scope["type"] != "http"):
            await self.app(scope, receive, send)
            return
        methods, reads_body, fast, general, observe = entry
        if methods is not None and scope["method"] not in methods:
            error = MethodNotAllowed(scope["method"], scope["path"], ", ".join(sorted(methods)))
            await _send_error(send, error)
            return
        start = monotonic()  # also the routes' "now" for L1: one clock read
        message = await receive() if reads_body else None
        step = fast(scope, message, start)
        if type(step) is tuple:  # the hot case: answered from L1
            await send(step[0])
            await send(step[1])
            observe(monotonic() - start)
            return
        try:
            await general(scope, message, receive, send, start, step)
        except GatewayError as exc:
            await _send_error(send, exc)
        except Exception as exc:
            await _send_error(send, internal_error(scope["method"], scope["path"], exc))
        finally:
            observe(monotonic() - start)

    def _route_below(self, path: str | None) -> _Entry | None:
        if path is not None:
            for prefix, entry in self._below:
                if path.startswith(prefix):
                    return entry
        return None


async def _send_error(send: Send, exc: GatewayError) -> None:
    await send_bytes(send, *error_answer(exc, ORY))
