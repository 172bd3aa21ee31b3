"""AIP-134 update masks: which fields of a key an update names.

A path is a top-level field (``name``), ``*`` (every updatable field), a field of a message
(``rate_limit_policy.quota``, ``ip_restriction.allowed_cidrs``) or, AIP-161 style, one key
of the metadata map (``metadata.team``; a key with dots or other punctuation in backticks:
``metadata.`cost.centre```). A whole field named beside one of its own sub-paths wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidArgument
from gateway.keys.fields import populated, require_object
from gateway.keys.names import snake

MUTABLE = ("name", "scopes", "metadata", "ip_restriction", "rate_limit_policy", "expire_time")
IMMUTABLE = ("actor_id", "visibility")
OUTPUT_ONLY = ("key_id", "status", "create_time", "update_time", "last_used_time",
               "revocation_reason", "revocation_description", "revocation_reason_text")
# The fields of the message-typed fields that a mask may name one by one. Naming the only
# field of a message names the whole message.
SUBFIELDS = {"rate_limit_policy": ("quota", "window", "unit"),
             "ip_restriction": ("allowed_cidrs",)}
MAP_FIELD = "metadata"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Mask:
    """Whole fields in mask order, and the sub-paths of the fields not named whole."""

    fields: tuple[str, ...]
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_mask(update_mask: str | None, body: dict[str, Any]) -> Mask:
    """The mask an update applies. Omitted or blank: every populated field of ``body``."""
    if update_mask is None or not update_mask.strip():
        return Mask(tuple(p for p in (*MUTABLE, *IMMUTABLE) if populated(body.get(p))))
    paths = [p.strip() for p in update_mask.split(",") if p.strip()]
    if paths == ["*"]:
        return Mask((*MUTABLE, *IMMUTABLE))
    whole: dict[str, None] = {}
    parts: dict[str, dict[str, None]] = {}
    for path in paths:
        head, dot, rest = path.partition(".")
        head = snake(head)  # protojson's lowerCamelCase too (``rateLimitPolicy.quota``)
        if head in SUBFIELDS:
            rest = snake(rest)
        path = f"{head}{dot}{rest}"
        if head in OUTPUT_ONLY:
            raise InvalidArgument(f"update_mask: field {head!r} is output only")
        if head not in MUTABLE and head not in IMMUTABLE:
            raise InvalidArgument(
                f"update_mask: unknown field {path!r}; updatable: {', '.join(MUTABLE)}")
        if not dot:
            whole[head] = None
        elif head == MAP_FIELD:
            parts.setdefault(head, {})[_map_key(path, rest)] = None
        elif head in SUBFIELDS:
            if rest not in SUBFIELDS[head]:
                raise InvalidArgument(
                    f"update_mask: unknown field {path!r}; {head} has "
                    f"{', '.join(SUBFIELDS[head])}")
            if len(SUBFIELDS[head]) == 1:
                whole[head] = None
            else:
                parts.setdefault(head, {})[rest] = None
        else:
            raise InvalidArgument(f"update_mask: {path!r}: field {head!r} has no subfields")
    return Mask(tuple(whole), {head: tuple(keys) for head, keys in parts.items()
                               if head not in whole})


def _map_key(path: str, rest: str) -> str:
    if len(rest) >= 2 and rest[0] == rest[-1] == "`":
        key = rest[1:-1]
        if key and "`" not in key:
            return key
    elif _PLAIN_KEY.fullmatch(rest):
        return rest
    raise InvalidArgument(
        f"update_mask: {path!r}: a metadata key is a name of letters, digits and '_', or "
        "any other text in backticks (metadata.`cost.centre`); paths below one key are not "
        "supported")


def merge(current: dict[str, Any] | None, given: object, names: tuple[str, ...],
          label: str) -> dict[str, Any]:
    """``current`` with each of ``names`` taken from ``given`` (the body's object for that
    field), or removed when ``given`` lacks it: a path named in the mask and left empty
    clears it (AIP-134)."""
    given = {} if given is None else require_object(given, label)
    merged = dict(current or {})
    for name in names:
        value = given.get(name)
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged

