"""Transport helpers shared by every API family, on the hot routes (plain ASGI) and the
Starlette routes alike: request bodies read within a limit, JSON in and out, bearer
tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from gateway.errors import InvalidArgument, PayloadTooLarge

DEFAULT_BODY_LIMIT = 1 << 20
DEFAULT_MAX_VALUES = 100_000  # about 7 MB of parsed objects at most
JSON = (b"content-type", b"application/json")
Header = tuple[bytes, bytes]
# A start message's key, read by our server (gateway.http.server.GatewayCycle): the
# response's headers as HTTP/1.1 lines and its body's length. Other ASGI servers ignore it
# and read "headers", which always hold the same headers.
RENDERED = "gateway.rendered"


@dataclass(frozen=True, slots=True)
class Head:
    """The headers of a fast answer, checked and rendered as HTTP/1.1 lines once (the
    routes keep them): the server writes ``lines`` as they are instead of checking and
    joining each header of each response. With a cached verify's headers, uvicorn's
    handling of a response took 7.6 us, this 2.4 us (timed in-process)."""

    headers: tuple[Header, ...]
    lines: bytes
    length: int  # the body's (content-length)


def head(headers: Iterable[Header]) -> Head:
    """``headers`` (content-length among them; no connection or transfer-encoding, which
    the server decides) as a ``Head``; ValueError for a header uvicorn would refuse (by
    its own patterns: the server no longer checks these per response)."""
    headers = tuple(headers)
    length = None
    for name, value in headers:
        if (HEADER_RE.search(name) or HEADER_VALUE_RE.search(value) or name != name.lower()
                or name in (b"connection", b"transfer-encoding")):
            raise ValueError(f"not a header a fast answer may carry: {name!r}: {value!r}")
        if name == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("a fast answer's headers need its content-length")
    return Head(headers, b"".join(b"%s: %s\r\n" % pair for pair in headers), length)


# On every response (hot routes and Starlette routes alike): JSON only, never framed,
# never a referrer, nothing loaded from it.
SECURITY_HEADERS: tuple[Header, ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def count_values(raw: bytes) -> int:
    """An upper bound of the JSON values in ``raw`` (every value but the first of a
    container follows a comma; every container opens with a bracket), counted at C speed
    before parsing: what parsing would allocate (about 60 bytes a value) is bounded by it."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1


def parse_json(raw: bytes, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """The parsed JSON body ({} when empty); 400 when it does not parse, 413 when it holds
    more values than ``max_values`` (refused before it is parsed)."""
    if not raw.strip():
        return {}
    if count_values(raw) > max_values:
        raise PayloadTooLarge(f"request body holds more than {max_values} JSON values")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc.msg} at position "
                              f"{exc.pos}") from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """``parse_json`` of a body that must be a JSON object."""
    parsed = parse_json(raw)
    if not isinstance(parsed, dict):
        raise InvalidArgument("request body: expected a JSON object")
    return parsed


async def read_body(receive: Receive, limit: int, first: Message | None = None) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 beyond: nothing more is
    read); ``first`` is its first message when already received."""
    message = first if first is not None else await receive()
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
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


class SecurityHeaders:
    """ASGI middleware: ``SECURITY_HEADERS`` on every response of the app it wraps (the
    hot routes put them in their own answers)."""

    def __init__(self, app: Callable[[Any, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def send_bytes(send: Send, status: int, body: bytes, extra: list[Header] | None = None,
                     *, content_type: bool = True) -> None:
    """A whole response: ``body`` (JSON unless ``content_type`` is false) and ``extra``."""
    headers = [(b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    if content_type:
        headers.append(JSON)
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_json(request: Request, limit: int = DEFAULT_BODY_LIMIT,
                    max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """The parsed JSON body ({} when empty); clear 400/413 errors otherwise. At most
    ``limit`` bytes are read, and at most ``max_values`` values parsed."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return parse_json(await read_body(request.receive, limit), max_values)


def bearer_token(authorization: str | None, schemes: tuple[str, ...] = ("bearer",)) -> str | None:
    """The token of ``Authorization: <scheme> <token>`` for one of ``schemes``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() in schemes and token.strip():
        return token.strip()
    lowered = authorization.lower()
    for s in schemes:  # okta's SDK sends "SSWS<token>" with no space
        if s == "ssws" and lowered.startswith("ssws") and len(authorization) > 4:
            return authorization[4:].strip() or None
    return None
