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


def _checked(name: bytes, value: bytes) -> bytes:
    """One header as an HTTP/1.1 line; ValueError for one uvicorn would refuse (by its own
    patterns: the server does not check rendered lines per response) or one the server
    decides itself (connection, transfer-encoding)."""
    if (HEADER_RE.search(name) or HEADER_VALUE_RE.search(value) or name != name.lower()
            or name in (b"connection", b"transfer-encoding")):
        raise ValueError(f"not a header a rendered answer may carry: {name!r}: {value!r}")
    return b"%s: %s\r\n" % (name, value)


def head(headers: Iterable[Header]) -> Head:
    """``headers`` (content-length among them) as a ``Head``; ValueError for a header
    ``_checked`` refuses."""
    headers = tuple(headers)
    length = None
    lines = []
    for name, value in headers:
        lines.append(_checked(name, value))
        if name == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("a fast answer's headers need its content-length")
    return Head(headers, b"".join(lines), length)


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
    # count_values is at most one per byte (and one): a body shorter than the bound
    # cannot exceed it, and is not counted (7 of a 100-key batch's 16 us)
    if len(raw) >= max_values and count_values(raw) > max_values:
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


# send_bytes' own headers as rendered lines, and the extra headers it was given, rendered
# once per tuple (the route's answers repeat a few: X-Cache and the like); a tuple
# that cannot be rendered is remembered as None (uvicorn's path then refuses it, or
# decides what it says). At most _MAX_RENDERED tuples of at most _MAX_RENDERED_BYTES.
_SECURITY_LINES = b"".join(_checked(*pair) for pair in SECURITY_HEADERS)
_JSON_LINE = _checked(*JSON)
_RENDERED_EXTRA: dict[tuple[Header, ...], bytes | None] = {}
_MAX_RENDERED = 1024
_MAX_RENDERED_BYTES = 512
_UNSEEN = b"unseen"  # a sentinel: compared by identity


def _extra_lines(extra: tuple[Header, ...]) -> bytes | None:
    cached = _RENDERED_EXTRA.get(extra, _UNSEEN)
    if cached is not _UNSEEN:
        return cached
    lines: bytes | None
    try:
        if any(name == b"content-length" for name, _ in extra):
            raise ValueError("send_bytes sets the content-length")
        lines = b"".join(_checked(name, value) for name, value in extra)
    except ValueError:
        lines = None
    # the key is kept as well: its size bounds what is remembered, renderable or not
    if (len(_RENDERED_EXTRA) < _MAX_RENDERED
            and sum(len(name) + len(value) for name, value in extra) <= _MAX_RENDERED_BYTES):
        _RENDERED_EXTRA[extra] = lines
    return lines


async def send_bytes(send: Send, status: int, body: bytes, extra: list[Header] | None = None,
                     *, content_type: bool = True) -> None:
    """A whole response: ``body`` (JSON unless ``content_type`` is false) and ``extra``.
    Its start message carries the headers rendered (``RENDERED``) as well: our server
    then writes them as they are, instead of checking and joining each (uvicorn's
    handling of the headers was the largest part of a verify answered from Redis, 14 % of
    its samples, py-spy)."""
    length = b"%d" % len(body)
    headers = [(b"content-length", length), *SECURITY_HEADERS]
    if content_type:
        headers.append(JSON)
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    lines: bytes | None = b""
    if extra:
        headers.extend(extra)
        lines = _extra_lines(tuple(extra))
    if lines is not None:
        start[RENDERED] = (b"".join((b"content-length: ", length, b"\r\n", _SECURITY_LINES,
                                    _JSON_LINE if content_type else b"", lines)), len(body))
    await send(start)
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
