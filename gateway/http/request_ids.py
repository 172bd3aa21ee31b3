"""Request ids: the caller's ``X-Request-ID`` when it is short and plain, a new one
otherwise; on every response, and in ``request_context.request_id`` (so on every log line
and audit event) while the request is served.

The hot routes (``gateway.http.hot``) put the id on their answers themselves (an answer
from L1 without a send wrapper or the ContextVar); the Starlette app is wrapped in
``RequestIds``.
"""

from __future__ import annotations

import os
import string
from binascii import hexlify
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import chain, count
from os import urandom
from time import monotonic
from typing import Any

from gateway.http.access_log import AccessLog, route_template
from gateway.http.wire import RENDERED, Header, Message, Receive, Send
from gateway.observability.request_context import request_id

HEADER = b"x-request-id"
MAX_LENGTH = 128
# what a caller's id may hold: nothing that could break a header, a log line or a query
SAFE = (string.ascii_letters + string.digits + "-_.:/+=").encode()
# SAFE's punctuation → "a", any other byte but a letter or digit → " ": an id is SAFE when
# its translation isalnum() (a hex id is not even copied); translate(None, SAFE) cost 1,450
# instructions more (icount verify, the caller's id sent).
SAFE_MAP = bytes(c if c in SAFE and chr(c).isalnum() else ord("a") if c in SAFE else ord(" ")
                 for c in range(256))


# an id's last three hex digits, by its counter's low 12 bits
_LOW = tuple(b"%03x" % low for low in range(4096))


class _Ids:
    """New ids, ``ids``: 16 random hex digits per process (drawn again in a forked child),
    then a counter in 16 hex digits. Unique without a system call per request
    (hexlify(urandom(16)) cost about 1,400 instructions a call under callgrind, and a
    getrandom call). The counter is formatted once per 4,096 ids and each id is one
    concatenation with a digit table (``_LOW``): formatting each, b"%s%016x" % (prefix, n),
    cost 2,140 instructions an id under callgrind, this 880."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = hexlify(urandom(8))
        self.ids: Iterator[bytes] = chain.from_iterable(map(self._block, count()))

    def _block(self, high: int) -> Iterator[bytes]:
        """Ids 4,096 * ``high`` to 4,096 * ``high`` + 4,095."""
        return map((b"%s%013x" % (self.prefix, high)).__add__, _LOW)


IDS = _Ids()  # gateway.http.hot draws from it inline


def new_id() -> bytes:
    """A request id no other request of any process has: 32 hex digits."""
    return next(IDS.ids)


def accepted(raw: bytes) -> bool:
    """True when a caller's id is echoed: 1 to ``MAX_LENGTH`` characters of ``SAFE``."""
    return len(raw) <= MAX_LENGTH and raw.translate(SAFE_MAP).isalnum()


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The id of a request with these (ASGI) headers: its ``X-Request-ID`` (the last, as
    the hot routes read it) when ``accepted``, else a new one."""
    given = None
    for name, value in headers:
        if name == HEADER:
            given = value
    return given if given is not None and accepted(given) else new_id()


class Tagged:
    """A request's ``send``: ``X-Request-ID`` added to its response's headers, and the
    response's start message kept (its status and ``X-Cache``, for the access log)."""

    __slots__ = ("_header", "_start", "id", "send")

    def __init__(self, send: Send, rid: bytes) -> None:
        self.send = send
        self.id = rid.decode("ascii")  # an accepted id or a new one: safe on a header line
        self._header: Header = (HEADER, rid)
        self._start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            rendered = message.get(RENDERED)
            message = {**message, "headers": [*message.get("headers", ()), self._header]}
            if rendered is not None:  # the same header on the rendered lines
                lines, length = rendered
                name, rid = self._header
                message[RENDERED] = (b"".join((lines, name, b": ", rid, b"\r\n")), length)
            self._start = message
        await self.send(message)

    def answered(self) -> tuple[int, list[Header]]:
        """The status and headers of the response sent (500 and none before it starts:
        the server answers 500)."""
        start = self._start
        return (500, []) if start is None else (start["status"], start["headers"])


class RequestIds:
    """ASGI middleware (the Starlette app's): each HTTP request's id set for its duration
    and on its response; with ``access``, one access-log line per request, naming the
    route's template (``route_template``), never its path; with ``observe``
    (``Metrics.http_request``), each answer's route template, method, status and seconds."""

    def __init__(self, app: Callable[[Any, Receive, Send], Awaitable[None]],
                 access: AccessLog | None = None,
                 observe: Callable[[str | None, str, int, float], None] | None = None) -> None:
        self.app = app
        self.access = access
        self.observe = observe

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tagged = Tagged(send, request_id_of(scope["headers"]))
        token = request_id.set(tagged.id)
        start = monotonic()
        try:
            await self.app(scope, receive, tagged)
        finally:
            seconds = monotonic() - start
            status, headers = tagged.answered()
            route = route_template(scope)
            if self.observe is not None:
                self.observe(route, scope["method"], status, seconds)
            if self.access is not None:
                self.access.record(scope, route, status, headers, seconds, tagged.id)
            request_id.reset(token)
