"""List queries: the AIP-160 filter subset we index, page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from gateway.errors import InvalidArgument
from gateway.keys.model import KeyStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 2048  # characters of an AIP-160 filter (keys and audit events)
FILTER_FIELDS = ("actor_id", "status")
_TERM = re.compile(
    r"""\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>=|!=|<=|>=|<|>|:)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|[^\s"()]+)\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"AND(?:\s+|$)")
_UNSUPPORTED = re.compile(r"(?:OR|NOT)\b|[()-]")


@dataclass(frozen=True)
class Filter:
    actor_id: str | None = None
    status: KeyStatus | None = None
    text: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.actor_id}\x00{self.status}".encode()).hexdigest()[:12]


def scan_terms(expression: str) -> list[tuple[str, str, str]]:
    """The ``(field, operator, value)`` terms of an AIP-160 conjunction (``a="x" AND b>=3``),
    quoted values unquoted; a clear 400 for anything else (OR, NOT, parentheses, a dangling
    AND, text that is no term)."""
    if len(expression) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"filter: longer than {MAX_FILTER_LENGTH} characters")
    terms: list[tuple[str, str, str]] = []
    text = expression.strip()
    pos = 0
    while True:
        # Scan term by term so that quoted values may hold AND, OR, NOT or parentheses.
        match = _TERM.match(text, pos)
        if not match:
            rest = text[pos:]
            if _UNSUPPORTED.match(rest):
                raise InvalidArgument(
                    "filter: only terms joined by AND are supported (no OR, NOT, - or ())"
                )
            raise InvalidArgument(
                f"filter: cannot parse {rest!r}; expected field=value "
                "(e.g. actor_id=\"user_123\" AND status=KEY_STATUS_ACTIVE)"
            )
        pos = match.end()
        value = match["value"]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        terms.append((match["field"], match["op"], value))
        if pos == len(text):
            return terms
        joiner = _AND.match(text, pos)
        if joiner is None:
            rest = text[pos:]
            if _UNSUPPORTED.match(rest):
                raise InvalidArgument(
                    "filter: only terms joined by AND are supported (no OR, NOT, - or ())"
                )
            raise InvalidArgument(f"filter: expected AND before {rest!r}")
        pos = joiner.end()
        if pos == len(text):
            raise InvalidArgument("filter: AND must be followed by another term")


def parse_filter(expression: str | None) -> Filter:
    """``actor_id="u1" AND status=KEY_STATUS_ACTIVE``; anything else is a clear 400."""
    if not expression or not expression.strip():
        return Filter()
    values: dict[str, str] = {}
    for field, op, value in scan_terms(expression):
        if field not in FILTER_FIELDS:
            raise InvalidArgument(
                f"filter: field {field!r} cannot be filtered on; supported: actor_id, status"
            )
        if op != "=":
            raise InvalidArgument(f"filter: operator {op!r} is not supported; use =")
        if field in values:
            raise InvalidArgument(f"filter: field {field!r} appears twice")
        values[field] = value
    status = None
    if "status" in values:
        raw = values["status"]
        name = raw if raw.startswith("KEY_STATUS_") else f"KEY_STATUS_{raw}"
        try:
            status = KeyStatus(name)
        except ValueError:
            status = None
        if status is None or status is KeyStatus.UNSPECIFIED:
            raise InvalidArgument(
                f"filter: status {raw!r} is unknown; expected KEY_STATUS_ACTIVE, "
                "KEY_STATUS_REVOKED or KEY_STATUS_EXPIRED"
            )
    return Filter(actor_id=values.get("actor_id"), status=status, text=expression)


def parse_page_size(raw: str | None, default: int = DEFAULT_PAGE_SIZE,
                    most: int = MAX_PAGE_SIZE) -> int:
    """``page_size``: absent or 0, ``default``; more than ``most``, ``most``."""
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise InvalidArgument(f"page_size: expected an integer, got {raw!r}") from None
    if size < 0:
        raise InvalidArgument("page_size: must not be negative")
    if size == 0:
        return default
    return min(size, most)


def make_page_token(last_seq: int, flt: Filter) -> str:
    raw = f"v1:{last_seq}:{flt.fingerprint}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str | None, flt: Filter) -> int:
    """The last seen position; 0 for the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, seq, fingerprint = raw.split(":")
        position = int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token: not a token this service issued") from None
    if version != "v1" or position < 0:
        raise InvalidArgument("page_token: not a token this service issued")
    if fingerprint != flt.fingerprint:
        raise InvalidArgument("page_token: was issued for a different filter")
    return position
