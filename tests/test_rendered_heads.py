"""Fast answers' heads written as rendered lines (``gateway.http.wire.Head``,
``gateway.http.server.GatewayCycle``): the same bytes uvicorn writes for the same headers,
and never a header uvicorn would refuse (on the real server's wire: test_request_bounds)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.http.server import GatewayCycle
from gateway.http.wire import JSON, RENDERED, SECURITY_HEADERS, head

HEADERS = ((b"content-length", b"5"), JSON, (b"x-cache", b"L1"), *SECURITY_HEADERS)
RID = (b"x-request-id", b"0123456789abcdef0123456789abcdef")
DATE = [(b"date", b"Thu, 03 Dec 2026 21:00:00 GMT")]


class Recorder:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.written.append(b"<closed>")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def writes(cycle_class: type[RequestResponseCycle], start: dict[str, Any], *,
           keep_alive: bool = True, method: str = "POST",
           bodies: tuple[bytes, ...] = (b"hello",)) -> tuple[list[bytes], bool]:
    """The writes of a cycle for ``start`` and ``bodies`` (one body message each, the last
    one ending the response); whether it completed."""
    transport = Recorder()

    async def run() -> RequestResponseCycle:
        cycle = cycle_class(
            scope={"type": "http", "method": method}, transport=transport,  # type: ignore[arg-type]
            flow=FlowControl(transport), logger=None, access_logger=None,  # type: ignore[arg-type]
            access_log=False, default_headers=DATE, message_event=asyncio.Event(),
            expect_100_continue=False, keep_alive=keep_alive, on_response=lambda: None)
        await cycle.send(start)
        for n, body in enumerate(bodies, 1):
            await cycle.send({"type": "http.response.body", "body": body,
                              "more_body": n < len(bodies)})
        return cycle

    cycle = asyncio.run(run())
    return transport.written, cycle.response_complete


def answer(cycle_class: type[RequestResponseCycle], start: dict[str, Any], *,
           keep_alive: bool = True, method: str = "POST",
           bodies: tuple[bytes, ...] = (b"hello",)) -> tuple[bytes, bool]:
    """What a cycle writes for ``start`` and ``bodies``; whether it completed."""
    written, complete = writes(cycle_class, start, keep_alive=keep_alive, method=method,
                               bodies=bodies)
    return b"".join(written), complete


def start_message(rendered: bool) -> dict[str, Any]:
    h = head(HEADERS)
    message: dict[str, Any] = {"type": "http.response.start", "status": 200,
                               "headers": (*h.headers, RID)}
    if rendered:
        message[RENDERED] = (h.lines + b"%s: %s\r\n" % RID, h.length)
    return message


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_a_rendered_head_is_written_as_uvicorn_writes_it(keep_alive: bool, method: str
                                                         ) -> None:
    expected = answer(RequestResponseCycle, start_message(False), keep_alive=keep_alive,
                      method=method)
    written = answer(GatewayCycle, start_message(True), keep_alive=keep_alive, method=method)
    assert written == expected
    assert written[1]  # the body's length was taken from the rendered head
    assert (b"connection: close\r\n" in written[0]) is not keep_alive


@pytest.mark.parametrize("rendered", [True, False])
@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_response_is_written_in_one_piece(rendered: bool, method: str, keep_alive: bool
                                            ) -> None:
    """Head and body in one write (one send() system call; uvicorn makes two), whether
    the head was rendered or not, for HEAD too (no body), closing or not."""
    written, complete = writes(GatewayCycle, start_message(rendered), method=method,
                               keep_alive=keep_alive)
    assert complete
    assert written[1:] == ([] if keep_alive else [b"<closed>"])
    expected = answer(RequestResponseCycle, start_message(False), method=method,
                      keep_alive=keep_alive)[0]
    assert written[0] + (b"" if keep_alive else b"<closed>") == expected


@pytest.mark.parametrize("bodies", [(b"hel", b"lo"), (b"", b"hello"), (b"hello", b"")])
def test_a_rendered_answer_in_pieces_is_written_as_uvicorn_writes_it(
        bodies: tuple[bytes, ...]) -> None:
    assert (answer(GatewayCycle, start_message(True), bodies=bodies)
            == answer(RequestResponseCycle, start_message(False), bodies=bodies))


def test_a_body_shorter_than_the_rendered_length_is_refused_as_uvicorn_refuses_it() -> None:
    with pytest.raises(RuntimeError, match="shorter than Content-Length"):
        answer(GatewayCycle, start_message(True), bodies=(b"hell",))


def test_without_rendered_lines_the_cycle_is_uvicorns() -> None:
    assert (answer(GatewayCycle, start_message(False))
            == answer(RequestResponseCycle, start_message(False)))


def test_a_body_longer_than_the_rendered_length_is_refused_as_uvicorn_refuses_it() -> None:
    start = start_message(True)
    lines, _ = start[RENDERED]
    start[RENDERED] = (lines, 2)
    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        answer(GatewayCycle, start)


@pytest.mark.parametrize("bad", [
    (b"x-id", b"a\r\nset-cookie: x=1"),  # a header smuggled in a value
    (b"X-Id", b"1"),  # not lowercase, as uvicorn would send it
    (b"x id", b"1"),
    (b"connection", b"close"),  # the server decides these
    (b"transfer-encoding", b"chunked"),
])
def test_a_head_refuses_what_uvicorn_would_refuse_or_decides_itself(bad: tuple[bytes, bytes]
                                                                    ) -> None:
    with pytest.raises(ValueError):
        head(((b"content-length", b"0"), bad))


def test_a_head_needs_its_content_length() -> None:
    with pytest.raises(ValueError, match="content-length"):
        head(((b"x-cache", b"L1"),))


def test_the_servers_protocol_runs_each_request_in_a_gateway_cycle() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from gateway.http.server import BoundedHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    class Transport(Recorder):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default

        def set_protocol(self, protocol: Any) -> None:
            pass

    async def run() -> type:
        config = Config(app, http="httptools", lifespan="off", log_config=None)
        config.load()
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {})
        protocol.connection_made(Transport())  # type: ignore[arg-type]
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.01)
        return type(protocol.cycle)

    assert asyncio.run(run()) is GatewayCycle


def _sent_by_send_bytes(body: bytes, extra: list[tuple[bytes, bytes]] | None,
                        content_type: bool = True) -> dict[str, Any]:
    from gateway.http.wire import send_bytes

    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(send_bytes(keep, 200, body, extra, content_type=content_type))
    return sent[0]


@pytest.mark.parametrize("extra", [None, [(b"x-cache", b"L2"), (b"ory-talos-cache", b"HIT")],
                                   [(b"allow", b"POST")]])
@pytest.mark.parametrize("content_type", [True, False])
def test_send_bytes_renders_its_headers_as_uvicorn_writes_them(
        extra: list[tuple[bytes, bytes]] | None, content_type: bool) -> None:
    """The general half's answers (send_bytes) carry their headers rendered too, so our
    server writes them in one piece without checking each header; the bytes on the wire
    are those uvicorn writes for the same headers."""
    start = _sent_by_send_bytes(b"hello", extra, content_type)
    assert RENDERED in start
    plain = {k: v for k, v in start.items() if k != RENDERED}
    assert answer(GatewayCycle, start) == answer(RequestResponseCycle, plain)


@pytest.mark.parametrize("bad", [
    (b"x-id", b"a\r\nset-cookie: x=1"),  # refused by uvicorn: still refused
    (b"connection", b"close"),  # the server must see it: uvicorn's path closes
    (b"content-length", b"5"),  # send_bytes sets it
])
def test_send_bytes_leaves_a_header_the_server_must_judge_to_uvicorn(
        bad: tuple[bytes, bytes]) -> None:
    start = _sent_by_send_bytes(b"hello", [bad])
    assert RENDERED not in start
    assert _sent_by_send_bytes(b"hello", [bad]) == start  # remembered as such


def test_send_bytes_remembers_a_bounded_number_of_small_renderings() -> None:
    from gateway.http import wire

    for n in range(wire._MAX_RENDERED + 100):
        _sent_by_send_bytes(b"{}", [(b"x-n", str(n).encode())])
    assert len(wire._RENDERED_EXTRA) <= wire._MAX_RENDERED
    wire._RENDERED_EXTRA.clear()
    big = [(b"x-big", b"v" * (wire._MAX_RENDERED_BYTES + 1))]
    assert RENDERED in _sent_by_send_bytes(b"{}", big)  # rendered, not remembered
    assert not wire._RENDERED_EXTRA
    refused = [(b"x-big", b"v\r\n" * wire._MAX_RENDERED_BYTES)]
    assert RENDERED not in _sent_by_send_bytes(b"{}", refused)  # nor a big refused one
    assert not wire._RENDERED_EXTRA
