"""What an update does with each whole field its mask names (AIP-134).

``FIELD_UPDATES`` maps a field path to its ``FieldUpdate``: the reader that reads and checks
the field from the request body (raising ``InvalidArgument`` naming the field) and the
``ApiKey`` attribute its value sets. A field left empty in the body clears the attribute.

``actor_id`` and ``visibility`` cannot change: their readers refuse any value but the key's
own (an absent ``actor_id`` is a change to ""; an absent or ``…_UNSPECIFIED`` visibility is
not), so naming them sets the attribute to what it was.

The paths are the ones ``gateway.keys.masks`` accepts whole (``MUTABLE`` then
``IMMUTABLE``); sub-paths (``metadata.team``, ``rate_limit_policy.quota``) are merged into
the current value by ``KeyService._partial_changes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidArgument
from gateway.keys import fields as f
from gateway.keys.model import ApiKey, Visibility

Reader = Callable[[dict[str, Any], ApiKey, int], object]
"""``(body, current key, now in µs) -> the attribute's new value``."""


@dataclass(frozen=True, slots=True)
class FieldUpdate:
    attribute: str  # of ApiKey
    read: Reader


def _unchangeable(path: str) -> InvalidArgument:
    return InvalidArgument(f"update_mask: field {path!r} cannot be changed")


def _actor_id(body: dict[str, Any], current: ApiKey, now: int) -> str:
    value = f.text(body, "actor_id") or ""
    if value != current.actor_id:
        f.actor_id(body)  # a value no key may hold is refused as such
        raise _unchangeable("actor_id")
    return value


def _visibility(body: dict[str, Any], current: ApiKey, now: int) -> Visibility:
    value = f.enum_value(body, "visibility", Visibility) or current.visibility
    if value != current.visibility:
        raise _unchangeable("visibility")
    return value


def _expire_time(body: dict[str, Any], current: ApiKey, now: int) -> int | None:
    raw = body.get("expire_time")
    expire = None if raw in (None, "") else f.timestamp(raw, "expire_time")
    if expire is not None and expire <= now:
        raise InvalidArgument("expire_time: must be in the future")
    return expire


FIELD_UPDATES: dict[str, FieldUpdate] = {
    "name": FieldUpdate("name", lambda body, current, now: f.text(body, "name") or ""),
    "scopes": FieldUpdate(
        "scopes", lambda body, current, now: f.scopes(body, held=current.scopes) or ()),
    "metadata": FieldUpdate("metadata", lambda body, current, now: f.metadata(body)),
    "ip_restriction": FieldUpdate(
        "allowed_cidrs", lambda body, current, now: f.ip_restriction(body) or ()),
    "rate_limit_policy": FieldUpdate(
        "rate_limit", lambda body, current, now: f.rate_limit(body)),
    "expire_time": FieldUpdate("expire_time", _expire_time),
    "actor_id": FieldUpdate("actor_id", _actor_id),
    "visibility": FieldUpdate("visibility", _visibility),
}
