"""Listing audit events: the AIP-160 filter they take, and their page tokens.

``action="key.revoked" AND principal="gwa_3oTlP5EjLQWz" AND time >= "2026-12-01T00:00:00Z"``
: ``action``, ``target``, ``principal`` and ``outcome`` compare with ``=``; ``time`` with
``>=``, ``>``, ``<=``, ``<`` (an RFC 3339 timestamp). Pages run newest first; a page token
names the last event of the page before and the filter it was made for.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from gateway.clock import parse_rfc3339
from gateway.errors import InvalidArgument
from gateway.keys.listing import parse_page_size, scan_terms

EQUALS = ("action", "target", "principal", "outcome")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class AuditFilter:
    equals: dict[str, str] = field(default_factory=dict)  # column -> value
    since: int | None = None  # at >= since (microseconds)
    until: int | None = None  # at < until

    @property
    def fingerprint(self) -> str:
        text = repr((sorted(self.equals.items()), self.since, self.until))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_audit_filter(expression: str | None) -> AuditFilter:
    if not expression or not expression.strip():
        return AuditFilter()
    equals: dict[str, str] = {}
    since: int | None = None
    until: int | None = None
    for name, op, value in scan_terms(expression):
        if name in EQUALS:
            if op != "=":
                raise InvalidArgument(f"filter: {name} takes =, not {op!r}")
            if name in equals:
                raise InvalidArgument(f"filter: field {name!r} appears twice")
            equals[name] = value
        elif name == "time":
            at = parse_rfc3339(value, "filter: time")
            if op == ">=":
                since = at if since is None else max(since, at)
            elif op == ">":
                since = at + 1 if since is None else max(since, at + 1)
            elif op == "<":
                until = at if until is None else min(until, at)
            elif op == "<=":
                until = at + 1 if until is None else min(until, at + 1)
            else:
                raise InvalidArgument(f"filter: time takes >=, >, <= or <, not {op!r}")
        else:
            raise InvalidArgument(f"filter: field {name!r} cannot be filtered on; supported: "
                                  f"{', '.join(EQUALS)}, time")
    return AuditFilter(equals, since, until)


def page_size(raw: str | None) -> int:
    return parse_page_size(raw, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def make_token(last_seq: int, flt: AuditFilter) -> str:
    return base64.urlsafe_b64encode(f"a1:{last_seq}:{flt.fingerprint}".encode()).decode()


def parse_token(token: str | None, flt: AuditFilter) -> int | None:
    """The seq to continue below, or None for the first page."""
    if not token:
        return None
    try:
        version, seq, fingerprint = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if version != "a1" or fingerprint != flt.fingerprint:
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token: not a token of this listing and filter") from None
