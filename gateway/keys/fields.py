"""Reading and checking the fields of Ory API-key request bodies.

Plain dicts in, domain values out.

Each reader names the field in its error, so every 400 says what was wrong.

``actor_id`` and ``scopes`` are sent back in forward auth's ``X-Actor-Id`` and
``X-Scopes`` response headers, so they are checked for what cannot travel in one
(``actor_id``, ``scopes``, below); ``key_id`` is never taken from a client (issued ids are
made by the server, imported ids are a hash of the raw key). The headers are percent-encoded
anyway (``gateway.keys.header_values``), for values stored before these checks.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from gateway.clock import parse_rfc3339
from gateway.errors import InvalidArgument
from gateway.keys.durations import parse_duration
from gateway.keys.model import RateLimit

MAX_METADATA_BYTES = 64 * 1024
MAX_CREDENTIAL_LENGTH = 8192
MAX_TEXT = 512
MAX_SCOPES = 256
MAX_CIDRS = 256
MAX_INT64 = 2**63 - 1

E = TypeVar("E", bound=enum.Enum)


def populated(value: object) -> bool:
    """Set, as proto3 reads JSON: not null, "", [], {} or an ``*_UNSPECIFIED`` enum."""
    if value is None or value in ("", [], {}):
        return False
    return not (isinstance(value, str) and value.endswith("_UNSPECIFIED"))


def require_object(body: object, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return body


def check_known(body: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidArgument(f"{what}: unknown field {unknown[0]!r}")


def text(body: dict[str, Any], name: str, *, required: bool = False,
         max_len: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidArgument(f"{name}: is required")
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name}: expected a string, got {_kind(value)}")
    if required and not value:
        raise InvalidArgument(f"{name}: must not be empty")
    if len(value) > max_len:  # characters, as the OpenAPI document's maxLength counts
        raise InvalidArgument(f"{name}: longer than {max_len} characters")
    return value


def credential(body: dict[str, Any], name: str = "credential") -> str:
    value = text(body, name, required=True, max_len=MAX_CREDENTIAL_LENGTH)
    assert value is not None
    return value


def actor_id(body: dict[str, Any], name: str = "actor_id", *, required: bool = False
             ) -> str | None:
    """The key's owner: any text (e-mail addresses, non-ASCII names) but no control
    characters (C0, DEL, C1) and no line or paragraph separators, which could end the
    ``X-Actor-Id`` header of a forward-auth answer."""
    value = text(body, name, required=required)
    if value:
        _no_control(value, name)
    return value


def scopes(body: dict[str, Any], name: str = "scopes", *, held: tuple[str, ...] = ()
           ) -> tuple[str, ...] | None:
    """The key's scopes. Each is visible ASCII without a comma (an OAuth scope-token):
    ``X-Scopes`` is their comma-joined list, ``X-Required-Scope`` and ``?scope=`` are split
    at commas and whitespace, and a header is read as Latin-1, so a scope with a comma,
    whitespace or non-ASCII character could never be matched.

    ``held``: the scopes the key holds already (update, rotate); they are not checked
    again, so a key stored before this check can still be sent back as it was read."""

    def check(item: str, where: str) -> None:
        if item not in held:
            _scope_token(item, where)

    return string_list(body, name, check=check)


# Unicode's Cc (C0, DEL, C1), Zl and Zp, and nothing else (checked against
# unicodedata.category over every code point): one C-level search, 0.11 us against a
# Python loop's 1.1 us for a 10-character actor_id
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control(value: str, where: str) -> None:
    found = _CONTROL.search(value)
    if found is not None:
        raise InvalidArgument(f"{where}: must not contain control characters or line "
                              f"breaks (U+{ord(found.group()):04X} at index {found.start()})")


def _scope_token(value: str, where: str) -> None:
    _no_control(value, where)
    for index, char in enumerate(value):
        if char == ",":
            raise InvalidArgument(f"{where}: must not contain a comma (index {index})")
        if char.isspace():
            raise InvalidArgument(f"{where}: must not contain whitespace "
                                  f"(U+{ord(char):04X} at index {index})")
        if not char.isascii():
            raise InvalidArgument(f"{where}: must be ASCII (U+{ord(char):04X} at index "
                                  f"{index})")


def string_list(body: dict[str, Any], name: str, *, max_items: int = MAX_SCOPES,
                check: Callable[[str, str], None] | None = None
                ) -> tuple[str, ...] | None:
    """A list of non-empty strings, deduplicated in order; ``check(item, "name[i]")``
    may refuse an item."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument(f"{name}: expected an array of strings, got {_kind(value)}")
    if len(value) > max_items:
        raise InvalidArgument(f"{name}: more than {max_items} items")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidArgument(f"{name}[{i}]: expected a non-empty string")
        if len(item) > MAX_TEXT:
            raise InvalidArgument(f"{name}[{i}]: longer than {MAX_TEXT} characters")
        if check is not None:
            check(item, f"{name}[{i}]")
        if item not in out:
            out.append(item)
    return tuple(out)


def enum_value(body: dict[str, Any], name: str, kind: type[E]) -> E | None:
    """An enum by its full wire name; ``*_UNSPECIFIED`` reads as not provided."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name}: expected an enum string, got {_kind(value)}")
    for member in kind:
        if member.value == value:
            return None if value.endswith("_UNSPECIFIED") else member
    allowed = ", ".join(m.value for m in kind if not m.value.endswith("_UNSPECIFIED"))
    raise InvalidArgument(f"{name}: unknown value {value!r}; expected one of {allowed}")


def metadata(body: dict[str, Any], name: str = "metadata") -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{name}: expected a JSON object, got {_kind(value)}")
    size = len(orjson.dumps(value))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"{name}: {size} bytes serialized exceeds the {MAX_METADATA_BYTES}-byte limit"
        )
    return value


def ip_restriction(body: dict[str, Any], name: str = "ip_restriction") -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    obj = require_object(value, name)
    check_known(obj, frozenset({"allowed_cidrs"}), name)
    cidrs = string_list(obj, "allowed_cidrs", max_items=MAX_CIDRS) or ()
    out = []
    for i, cidr in enumerate(cidrs):
        try:
            out.append(str(ipaddress.ip_network(cidr, strict=True)))
        except ValueError as exc:
            raise InvalidArgument(f"{name}.allowed_cidrs[{i}]: {exc}") from None
    return tuple(out)


def rate_limit(body: dict[str, Any], name: str = "rate_limit_policy") -> RateLimit | None:
    value = body.get(name)
    if value is None:
        return None
    obj = require_object(value, name)
    check_known(obj, frozenset({"quota", "window", "unit"}), name)
    if not obj:
        return None
    quota = int64(obj.get("quota"), f"{name}.quota")
    if quota is None or quota <= 0:
        raise InvalidArgument(f"{name}.quota: must be a positive integer")
    raw_window = obj.get("window")
    if raw_window is None:
        raise InvalidArgument(f"{name}.window: is required")
    window = parse_duration(raw_window, f"{name}.window")
    if window != int(window) or window < 1:
        raise InvalidArgument(f"{name}.window: must be a whole number of seconds, at least 1s")
    unit = obj.get("unit")
    if unit in (None, ""):
        unit = "requests"
    if unit != "requests":
        raise InvalidArgument(f"{name}.unit: only \"requests\" is supported, got {unit!r}")
    return RateLimit(quota=quota, window_s=int(window), unit=unit)


def timestamp(value: object, name: str) -> int:
    """An RFC 3339 timestamp as exact integer microseconds (see ``gateway.clock``)."""
    return parse_rfc3339(value, name)


def int64(value: object, name: str) -> int | None:
    """An int64 as proto3 JSON carries it: a decimal string (or a JSON integer)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}: expected an integer string")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.lstrip("-").isdigit():
        number = int(value)
    else:
        raise InvalidArgument(f"{name}: expected an integer string such as \"100\"")
    if not -MAX_INT64 - 1 <= number <= MAX_INT64:
        raise InvalidArgument(f"{name}: out of int64 range")
    return number


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")
