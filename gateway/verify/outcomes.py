"""Verification outcomes: a closed enum, and the one table mapping each to the wire.

Each row: the Ory ``error_code``, the HTTP status forward-auth answers with, and the
public message. Internal detail is logged, never put here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gateway.cache.entry import Entry
    from gateway.verify.ratelimit import Decision


class Outcome(enum.Enum):
    VALID = "valid"
    INVALID_FORMAT = "invalid_format"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SIGNATURE_INVALID = "signature_invalid"
    IP_NOT_ALLOWED = "ip_not_allowed"
    RATE_LIMITED = "rate_limited"
    AUDIENCE_MISMATCH = "audience_mismatch"
    SCOPE_MISSING = "scope_missing"
    UNAVAILABLE = "unavailable"


class Wire(NamedTuple):
    error_code: str
    http_status: int
    message: str


TABLE: dict[Outcome, Wire] = {
    Outcome.VALID: Wire("VERIFICATION_ERROR_UNSPECIFIED", 200, ""),
    Outcome.INVALID_FORMAT: Wire("VERIFICATION_ERROR_INVALID_FORMAT", 401,
                                 "the credential is malformed"),
    Outcome.NOT_FOUND: Wire("VERIFICATION_ERROR_NOT_FOUND", 401, "the credential is not known"),
    Outcome.EXPIRED: Wire("VERIFICATION_ERROR_EXPIRED", 401, "the credential has expired"),
    Outcome.REVOKED: Wire("VERIFICATION_ERROR_REVOKED", 401, "the credential was revoked"),
    Outcome.SIGNATURE_INVALID: Wire("VERIFICATION_ERROR_SIGNATURE_INVALID", 401,
                                    "the credential's signature is invalid"),
    Outcome.IP_NOT_ALLOWED: Wire("VERIFICATION_ERROR_IP_NOT_ALLOWED", 403,
                                 "the client address is not allowed for this credential"),
    Outcome.RATE_LIMITED: Wire("VERIFICATION_ERROR_RATE_LIMITED", 429,
                               "the credential's rate limit is exhausted"),
    Outcome.AUDIENCE_MISMATCH: Wire("VERIFICATION_ERROR_AUDIENCE_MISMATCH", 403,
                                    "the credential is not valid for this audience"),
    Outcome.SCOPE_MISSING: Wire("VERIFICATION_ERROR_UNSPECIFIED", 403,
                                "the credential lacks a required scope"),
    Outcome.UNAVAILABLE: Wire("VERIFICATION_ERROR_INTERNAL", 503,
                              "the key store is unavailable; try again"),
}


@dataclass(frozen=True, slots=True)
class Result:
    """One verdict. Frozen: the L1 fast path hands out one shared instance per entry."""

    outcome: Outcome
    entry: Entry | None = None
    cache: str = "NONE"
    limit: Decision | None = None
    audiences: tuple[str, ...] = ()
    token: dict[str, Any] | None = field(default=None)  # claims of a derived token

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID
