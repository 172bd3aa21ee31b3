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
"""

from __future__ import annotations

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line and headers (Envoy's default is 60 KiB)
MAX_HEADERS = 128  # Envoy's default is 100; nginx forwards all of a client's headers
_BODY = b'{"code":3,"message":"request header fields too large","details":[]}'
STATUS_LINE.setdefault(431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request has too many headers."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _header_count = 0
    _in_body = False
    _refused = False

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
                if isinstance(exc.__context__, HeadTooLarge) or self._header_count > MAX_HEADERS:
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
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)
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
        self.transport.write(b"".join([
            STATUS_LINE[431], b"content-type: application/json\r\n",
            b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
            b"connection: close\r\n\r\n", _BODY]))
        self.transport.close()
