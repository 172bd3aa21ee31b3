"""Audit events: who changed what, when, from where, and how it ended.

An event is made where the change is decided (``event(...)``) and handed to the store
call that makes the change, which writes both in one transaction: a change without its
event, or an event without its change, cannot exist. Once written, each event is also one
JSON line on the ``gateway.audit`` logger, for log shippers.

Who and from where come from the request being served (``actor``, set by the admin
authentication; the request id from ``gateway.observability.request_context``), so the
layers between the route and the store pass nothing along. Changes made by the gateway
itself (automatic signing-key rotation) are the principal ``system``.

Never in an event: a secret, a raw key, a digest, a token. ``details`` holds names and
ids only (field names an update changed, not their values).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.clock import to_rfc3339
from gateway.observability.request_context import current_request_id

log = logging.getLogger("gateway.audit")

SYSTEM = "system"  # the gateway itself (automatic signing-key rotation)
KEY_HOLDER = "key-holder"  # the holder of the key a request presents (self-revoke)


@dataclass(frozen=True, slots=True)
class Actor:
    principal: str  # the admin token's non-secret name (gwa id, plain:<fp>, argon2:<n>)
    client_address: str


actor: ContextVar[Actor | None] = ContextVar("audit_actor", default=None)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    at: int  # microseconds since the epoch
    action: str  # "key.issued", "key.revoked", "jwk_set.replaced", …
    target: str  # "issuedApiKeys/01H…", "jwk_sets/hydra.openid", …
    principal: str
    client_address: str
    request_id: str
    outcome: str  # "success" | "failure"
    details: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # its place in the store (0 until written)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "time": to_rfc3339(self.at), "action": self.action,
                "target": self.target, "principal": self.principal,
                "client_address": self.client_address, "request_id": self.request_id,
                "outcome": self.outcome, "details": self.details}


def new_event_id() -> str:
    """Time-ordered and unique: 12 hex digits of milliseconds, 16 random."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


def event(action: str, target: str, *, outcome: str = "success", principal: str | None = None,
          **details: Any) -> AuditEvent:
    """An event of the request being served (its actor and request id)."""
    who = actor.get()
    return AuditEvent(
        id=new_event_id(), at=time.time_ns() // 1000, action=action, target=target,
        principal=principal or (who.principal if who else SYSTEM),
        client_address=who.client_address if who else "",
        request_id=current_request_id() or "", outcome=outcome, details=details)


def emit(events: Sequence[AuditEvent]) -> None:
    """Each written event as one JSON line on ``gateway.audit``."""
    if log.isEnabledFor(logging.INFO):
        for e in events:
            log.info("%s", orjson.dumps(e.wire()).decode())


def row(e: AuditEvent) -> tuple[Any, ...]:
    return (e.id, e.at, e.action, e.target, e.principal, e.client_address, e.request_id,
            e.outcome, orjson.dumps(e.details).decode())


def from_row(r: Any) -> AuditEvent:
    return AuditEvent(seq=r[0], id=r[1], at=r[2], action=r[3], target=r[4], principal=r[5],
                      client_address=r[6], request_id=r[7], outcome=r[8],
                      details=orjson.loads(r[9]))


COLUMNS = ("id, at, action, target, principal, client_address, request_id, outcome, "
           "details")
