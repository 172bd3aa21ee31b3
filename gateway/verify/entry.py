"""What the caches hold for one credential digest: key metadata, never the secret.

An ``Entry`` carries the verify response for the valid case pre-rendered, so a cached
"yes" costs no JSON encoding.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.clock import to_rfc3339
from gateway.keys.model import ApiKey, RateLimit
from gateway.keys.wire import rate_limit_wire
from gateway.verify.header_values import header_value, scopes_value
from gateway.verify.outcomes import Outcome, Result

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_in(address: str, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` parses and lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _start(headers: tuple[tuple[bytes, bytes], ...]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": headers}


@dataclass(slots=True)
class Entry:
    key_id: str
    actor_id: str
    scopes: tuple[str, ...]
    visibility: str
    metadata: dict[str, Any] | None
    expire_time: int | None
    revoked: bool
    cidrs: tuple[str, ...]
    rate_limit: RateLimit | None
    digest: str = ""  # the parent's digest: the root of its macaroons
    networks: tuple[Network, ...] = ()
    valid_fields: dict[str, Any] | None = None
    valid_body: bytes = b""
    valid_result: Result | None = None  # the shared Result(VALID, self, "L1") of the fast path
    auth_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # forward auth's
    plain: bool = False  # no IP allow-list and no rate limit: nothing to check per request
    # The ASGI messages of the L1 fast path (hot.py), built once and sent as they are: a
    # "yes" to verify (start and body), and a 200 to forward auth (start; its body is
    # empty). Nothing in front of the hot path changes a message it is sent (uvicorn only
    # reads them), and the headers are tuples, so no sender can change them in place.
    verify_start: dict[str, Any] = field(default_factory=dict)
    verify_end: dict[str, Any] = field(default_factory=dict)
    decision_start: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.networks = tuple(ipaddress.ip_network(c) for c in self.cidrs)

    def unexpired(self) -> bool:
        """True unless the key has expired by the wall clock. Caches never hold an entry
        past its key's expiry; this is asked anyway, in case the clock was stepped."""
        return self.expire_time is None or self.expire_time > time.time_ns() // 1000

    def answers_alone(self) -> bool:
        """A "yes" with nothing to check per request: plain (no IP allow-list, no rate
        limit, not revoked) and unexpired."""
        return self.plain and self.unexpired()

    def render(self, issuer: str) -> None:
        """Pre-render the fields and bytes of a positive verify answer."""
        fields: dict[str, Any] = {
            "is_valid": True,
            "error_code": "VERIFICATION_ERROR_UNSPECIFIED",
            "key_id": self.key_id,
            "actor_id": self.actor_id,
            "scopes": list(self.scopes),
            "status": "KEY_STATUS_ACTIVE",
            "visibility": self.visibility,
            "issuer": issuer,
            "audiences": [],
        }
        if self.metadata is not None:
            fields["metadata"] = self.metadata
        if self.expire_time is not None:
            fields["expire_time"] = to_rfc3339(self.expire_time)
        if self.rate_limit is not None:
            fields["rate_limit_policy"] = rate_limit_wire(self.rate_limit)
        self.valid_fields = fields
        self.valid_body = orjson.dumps(fields)
        self.plain = not self.networks and self.rate_limit is None and not self.revoked
        self.valid_result = Result(Outcome.VALID, self, "L1")
        self.auth_headers = [(b"x-actor-id", header_value(self.actor_id)),
                             (b"x-key-id", header_value(self.key_id)),
                             (b"x-scopes", scopes_value(self.scopes))]
        self.verify_start = _start(((b"content-length", str(len(self.valid_body)).encode()),
                                    (b"content-type", b"application/json"), (b"x-cache", b"L1")))
        self.verify_end = {"type": "http.response.body", "body": self.valid_body}
        self.decision_start = _start(((b"content-length", b"0"), (b"x-cache", b"L1"),
                                      *self.auth_headers))

    @classmethod
    def from_key(cls, key: ApiKey) -> Entry:
        return cls(key_id=key.key_id, actor_id=key.actor_id, scopes=key.scopes,
                   visibility=key.visibility.value, metadata=key.metadata,
                   expire_time=key.expire_time, revoked=key.revoke_time is not None,
                   cidrs=key.allowed_cidrs, rate_limit=key.rate_limit, digest=key.digest)

    def dumps(self) -> bytes:
        rl = self.rate_limit
        return orjson.dumps([self.key_id, self.actor_id, self.scopes, self.visibility,
                             self.metadata, self.expire_time, self.revoked, self.cidrs,
                             [rl.quota, rl.window_s, rl.unit] if rl else None, self.digest])

    @classmethod
    def loads(cls, raw: bytes) -> Entry:
        k, a, s, v, m, e, r, c, rl, d = orjson.loads(raw)
        return cls(key_id=k, actor_id=a, scopes=tuple(s), visibility=v, metadata=m,
                   expire_time=e, revoked=r, cidrs=tuple(c),
                   rate_limit=RateLimit(*rl) if rl else None, digest=d)
