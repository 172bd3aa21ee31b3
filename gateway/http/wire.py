"""Transport helpers shared by every API family: JSON in and out, bearer tokens."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import InvalidArgument, PayloadTooLarge

DEFAULT_BODY_LIMIT = 1 << 20
DEFAULT_MAX_VALUES = 100_000  # about 7 MB of parsed objects at most


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
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return parse_json(b"".join(chunks), max_values)


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
