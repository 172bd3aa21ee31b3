"""The HTTP/1.1 server protocol: uvicorn's httptools protocol with the request head bounded.

uvicorn puts no limit on the request line and headers when it runs httptools: one
unauthenticated request with a 96 MiB header cost 21 s of CPU on the event loop (the
parser joins a long header from its fragments), and 20,000 headers were accepted. Here the
head is fed to the parser at most ``MAX_HEAD_BYTES`` at a time and never beyond that
total, and the headers are counted as they complete: a request over either limit is
answered 431 and its connection closed before anything more is parsed. Bodies are left to
the routes (each reads at most its own limit).

The slack: bytes that follow a body in the same read (a pipelined next request) are
counted from the next read on, so a head can reach ``MAX_HEAD_BYTES`` plus one read
(asyncio reads at most 256 KiB) before it is refused.

Graceful drain (``GatewayServer``): the first SIGTERM or SIGINT starts a drain of
``GATEWAY_DRAIN_SECONDS``. Meanwhile /health/ready answers 503, the listener stays open and
every request is answered as usual, but with ``Connection: close``, so each keep-alive
client opens a new connection for its next request (which the load balancer, told by the
failed readiness or by the pod's termination, sends to another replica). Then uvicorn's
graceful shutdown runs: the listener closes, in-flight requests finish (at most
``SHUTDOWN_TIMEOUT_S``), the lifespan shutdown flushes the usage statistics, and the
process exits 0. A second signal ends the drain at once; a SIGINT after that skips the
wait for in-flight requests (and the flush), as in uvicorn. ``GATEWAY_DRAIN_SECONDS=0``:
the first signal starts the graceful shutdown, as uvicorn's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
import time
import types
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any, cast

import httptools
import uvicorn
import uvicorn.protocols.http.httptools_impl as httptools_impl
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import HANDLED_SIGNALS, ServerState

from gateway.http.request_ids import new_id
from gateway.http.wire import RENDERED

MAX_HEAD_BYTES = 64 * 1024  # request line and headers (Envoy's default is 60 KiB)
MAX_HEADERS = 128  # Envoy's default is 100; nginx forwards all of a client's headers
# the 431 body (also gRPC ext_authz's, gateway.ext_authz.server)
HEAD_TOO_LARGE = b'{"code":3,"message":"request header fields too large","details":[]}'
STATUS_LINE.setdefault(431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
# Once the drain is over: the longest the shutdown waits for in-flight requests (a refused
# admin authentication may be answered GATEWAY_ADMIN_REFUSAL_DELAY, 5 s, late).
SHUTDOWN_TIMEOUT_S = 10
# At the shutdown, a connection that has not sent (all of) its next request head yet gets
# this long to do so (it is answered, with Connection: close) before it is closed: the
# client may have connected just before the listener closed. Go's http.Server.Shutdown
# gives new connections 5 s the same way; idle keep-alive connections are closed at once.
FIRST_REQUEST_GRACE_S = 2.0
DRAIN_STATE = "gateway.drain"  # the Drain, in the ASGI lifespan state (so in every scope)

_STATUS_LINE = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 100 "
log = logging.getLogger("gateway.server")


class Drain:
    """Whether the server is draining; shared with the app through the lifespan state."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False  # set from the signal handler: a plain flag
        self.deadline = 0.0  # time.monotonic() at which the drain ends

    def begin(self) -> None:
        if not self.draining:
            self.deadline = time.monotonic() + self.seconds
            self.draining = True


def draining(scope: Mapping[str, Any]) -> bool:
    """True when the server running this request is draining (readiness fails)."""
    drain = (scope.get("state") or {}).get(DRAIN_STATE)
    return isinstance(drain, Drain) and drain.draining


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request has too many headers."""


class CoalescingTransport:
    """A response's transport (see ``GatewayCycle``) that sends its head with its body:
    uvicorn writes them separately, two send() system calls a response. Only a response head is
    held (a write that starts with the status line, but an interim ``100 Continue``),
    until the next write joins it, the response completes, or the connection closes; body
    chunks go out as they come."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(_STATUS_LINE) and not data.startswith(_CONTINUE):
            self._held = data
        else:  # a body chunk, or the interim answer the client waits for before its body
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, …
        return getattr(self._transport, name)


class GatewayCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, with each response written in one piece (one
    send() system call, not uvicorn's two: its head, then its body).

    A start message that carries its headers rendered (``RENDERED``: a fast answer's,
    checked when they were made, see ``gateway.http.wire.Head``) has its head made from
    them (uvicorn checks, lowercases and joins each header of each response; a cached
    verify has ten) and kept until its body comes, then both are written at once. Any other
    response, and one uvicorn must wait or log for, takes uvicorn's own path through a
    ``CoalescingTransport`` made for it. The fast answers do not pay for that wrapper: it
    cost them about 9,400 instructions a request (``load/icount.py --wire``, case
    ``protocol``), four Python calls per response."""

    _head: bytes | None = None  # a rendered response's head, waiting for its body

    async def send(self, message: Any) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if self.disconnected:
                return  # as uvicorn: nothing more is written
            if (message["type"] == "http.response.body" and not message.get("more_body")
                    and not self.flow.write_paused):
                body = message.get("body", b"")
                if len(body) == self.expected_content_length:
                    self.expected_content_length = 0
                    self.transport.write(head + body)
                    self.response_complete = True
                    self.message_event.set()
                    if not self.keep_alive:
                        self.transport.close()
                    self.on_response()
                    return
            self.transport.write(head)  # anything else: as uvicorn would (or refuse it)
            await super().send(message)
            return
        rendered = message.get(RENDERED)
        if (rendered is None or self.response_started or self.disconnected
                or self.flow.write_paused or self.access_log
                or self.scope["method"] == "HEAD"):
            await self._send_coalesced(message)
            return
        lines, length = rendered
        self.response_started = True
        self.waiting_for_100_continue = False
        self.expected_content_length = length
        self.chunked_encoding = False
        content = [STATUS_LINE[message["status"]]]
        for name, value in self.default_headers:  # the date, as uvicorn sends it
            content += (name, b": ", value, b"\r\n")
        content.append(lines)
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        self._head = b"".join(content)

    async def _send_coalesced(self, message: Any) -> None:
        transport = self.transport
        if not isinstance(transport, CoalescingTransport):
            transport = self.transport = cast(
                asyncio.Transport, CoalescingTransport(transport))
        await super().send(message)
        if self.response_complete:  # a HEAD answer, or an empty body: nothing followed
            cast(CoalescingTransport, transport).flush()


# uvicorn's callbacks copied into BoundedHttpToolsProtocol: the first 16 hex digits of the
# SHA-256 of their source in the uvicorn they were copied from (0.55.0), which
# tests/test_request_bounds.py compares with the installed uvicorn's
UVICORN_COPIED = {
    "on_message_begin": "96d377fdc7c2baef",
    "on_header": "1e86ebb6cea0458c",
    "on_message_complete": "1fbad42dc31fc01f",
}

# uvicorn's own on_headers_complete (its code object), run with globals in which the cycle
# class it makes is GatewayCycle. Assigning the made cycle's __class__ instead cost about
# 17,600 instructions a request (CPython then moves the object's attributes into a dict, and
# each attribute access of the cycle is slower): this protocol with the floor's app counted
# 165.4k a request with the assignment, 147.9k without (uvicorn's protocol: 117.9k).
_uvicorn_headers_complete = types.FunctionType(
    HttpToolsProtocol.on_headers_complete.__code__,
    {**vars(httptools_impl), "RequestResponseCycle": GatewayCycle}, "on_headers_complete")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, with the head bounded and a drain. Three of uvicorn's parser
    callbacks are copied here with our lines added (``UVICORN_COPIED``), not overridden
    with a call to uvicorn's: they run for every request (one of them for every header);
    the calls to uvicorn's on_header and on_message_complete cost 7,400 and 4,700
    instructions a request (``load/icount.py --wire``, case ``protocol``, 1,000 calls).
    tests/test_request_bounds.py fails when uvicorn's own change."""

    _head_bytes = 0
    _in_body = False
    _refused = False
    _closing = False  # every response from now on closes the connection
    _seen_request = False  # a request has begun on this connection
    _head_pending = False  # a request head has begun and is not complete

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        drain = app_state.get(DRAIN_STATE)
        self._drain = drain if isinstance(drain, Drain) else Drain(0.0)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        while data and not self._refused:
            if self._in_body:  # the parser is reading a body: the route bounds it
                chunk, data = data, b""
            else:
                room = MAX_HEAD_BYTES - self._head_bytes
                if room <= 0:
                    self._refuse()
                    return
                chunk, data = data[:room], data[room:]
                self._head_bytes += len(chunk)
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, HeadTooLarge):  # httptools sets it
                    self._refuse()
                    return
                self._bad_request()
                return
            except httptools.HttpParserError:
                self._bad_request()
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return

    def on_message_begin(self) -> None:
        self._seen_request = self._head_pending = True
        # uvicorn's (UVICORN_COPIED)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            raise HeadTooLarge
        # uvicorn's (UVICORN_COPIED)
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        self._in_body = True
        self._head_pending = False
        _uvicorn_headers_complete(self)  # a GatewayCycle
        if (self._closing or self._drain.draining) and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def close_after_response(self) -> None:
        """The drain began: the response being prepared ends with Connection: close (one
        already started is sent as it is; the next request's answer closes instead)."""
        self._closing = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False

    def shutdown(self) -> None:
        """The server is stopping (the listener is closed). uvicorn closes every connection
        that has no response in progress; a connection whose client has connected but not
        yet sent its request (or all of its head) gets ``FIRST_REQUEST_GRACE_S`` for it."""
        self._closing = True
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if (idle and not self.pipeline and not self.transport.is_closing()
                and (self._head_pending or not self._seen_request)):
            self.loop.call_later(FIRST_REQUEST_GRACE_S, self._close_if_idle)
            return
        super().shutdown()

    def _close_if_idle(self) -> None:
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def on_message_complete(self) -> None:
        self._in_body = False
        # uvicorn's (UVICORN_COPIED)
        if ((self.parser.should_upgrade() and self._should_upgrade())
                or self.cycle.response_complete):
            return
        self.cycle.more_body = False
        self.cycle.message_event.set()

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        rid = new_id()
        self.logger.warning(msg, extra={"request_id": rid.decode("ascii")})
        self._answer_and_close(400, b"text/plain; charset=utf-8", msg.encode(), rid)
        self._refused = True

    def _refuse(self) -> None:
        """431 with the Ory error body, and close: nothing more of this connection is read."""
        self._refused = True
        if self.transport.is_closing():
            return
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:  # pipelined: just close
            self.transport.close()
            return
        self._answer_and_close(431, b"application/json", HEAD_TOO_LARGE, new_id())

    def _answer_and_close(self, status: int, content_type: bytes, body: bytes,
                          rid: bytes) -> None:
        """An answer given before the app sees the request, then close. Its request id is
        a new one: the request's own headers were not all read."""
        self.transport.write(b"".join([
            STATUS_LINE[status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: " + content_type + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"x-request-id: " + rid + b"\r\n", b"connection: close\r\n\r\n", body]))
        self.transport.close()


class GatewayServer(uvicorn.Server):
    """uvicorn's server with a drain before its graceful shutdown. The process exits 0 after
    a signal: uvicorn's own server re-raises the signal once it has shut down, so the
    process died of it (status -15)."""

    def __init__(self, config: Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain = Drain(drain_seconds)
        self._drain_started = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.lifespan.state[DRAIN_STATE] = self.drain
        await super().startup(sockets=sockets)
        # What exists once the app has started (modules, classes, the services: ~53,000
        # objects) lives as long as the process: out of the collector's sight, a full
        # collection walks only what requests made since. On an idle gateway a full
        # collection took 11-23 ms before, 0.01 ms after; each one holds every request.
        gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler: flags only, the event loop acts on them (on_tick)
        if self.should_exit:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        if self.drain.seconds > 0 and not self.drain.draining:
            self.drain.begin()
            return
        self.should_exit = True  # no drain, or a second signal: stop now

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain
        if drain.draining and not self.should_exit:
            if not self._drain_started:
                self._drain_started = True
                log.info("draining for %g s: readiness fails, keep-alive connections are "
                         "closed after their next response (signal again to stop now)",
                         drain.seconds)
                for connection in list(self.server_state.connections):
                    if isinstance(connection, BoundedHttpToolsProtocol):
                        connection.close_after_response()
            if time.monotonic() >= drain.deadline:
                self.should_exit = True
        return await super().on_tick(counter)
