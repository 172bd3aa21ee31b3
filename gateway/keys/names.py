"""Field names as protojson writes them (``actorId``) read as the proto's own (``actor_id``).

grpc-gateway, and so Ory Talos, accepts both spellings in request bodies and update masks;
the SDKs send the proto names. Only message fields are renamed: the keys of a Struct
(``metadata``, ``custom_claims``) are the caller's own and stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import InvalidArgument

_UPPER = re.compile(r"[A-Z]")
_CAMEL = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+")
# message-typed fields whose own fields are renamed too (Structs are not)
_MESSAGES = frozenset({"ip_restriction", "rate_limit_policy"})
_LISTS_OF_MESSAGES = frozenset({"requests"})


def snake(name: str) -> str:
    """``actorId`` → ``actor_id``; any other name (a proto name, or one that is no field
    at all, which the error then names as it was sent) is returned as it is."""
    return _UPPER.sub(lambda m: "_" + m.group().lower(), name) if _CAMEL.fullmatch(name) else name


def snake_fields(body: Any) -> Any:
    """``body`` (a request message as parsed JSON) with its fields, and those of its nested
    messages, under their proto names; a field given in both spellings is a 400."""
    if not isinstance(body, dict):
        return body
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = snake(key)
        if name in out:
            raise InvalidArgument(f"{name}: given twice (also as {key!r})")
        if name in _MESSAGES:
            value = snake_fields(value)
        elif name in _LISTS_OF_MESSAGES and isinstance(value, list):
            value = [snake_fields(item) for item in value]
        out[name] = value
    return out
