"""What the caches hold for one credential digest: key metadata, never the secret.

An ``Entry`` is kept compact (an L1 of 100,000 keys is ~100,000 of them): it holds the
bytes of its positive verify answer, rendered once, and nothing else pre-built. The
answer's fields, the forward-auth headers and the ASGI messages are made when asked (the
headers once, on first use). Pre-rendering five answers per entry cost ≈ 6.2 KB a key.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.clock import to_rfc3339
from gateway.keys.header_values import header_value, scopes_value
from gateway.keys.model import ApiKey, RateLimit
from gateway.keys.wire import rate_limit_wire

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Header = tuple[bytes, bytes]


def address_in(address: str, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` parses and lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


_HEADS: dict[str, bytes] = {}


def _head(issuer: str) -> bytes:
    """The start of every positive verify answer, up to the key's own fields."""
    head = _HEADS.get(issuer)
    if head is None:
        head = _HEADS[issuer] = orjson.dumps({
            "is_valid": True, "error_code": "VERIFICATION_ERROR_UNSPECIFIED",
            "status": "KEY_STATUS_ACTIVE", "issuer": issuer, "audiences": []})[:-1] + b","
    return head


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
    # The positive verify answer (``render``): the fields every key's answer shares
    # (``_head``, one bytes object for all entries) and this key's own (``_tail``).
    _head: bytes = b""
    _tail: bytes = b""
    plain: bool = False  # no IP allow-list and no rate limit: nothing to check per request
    _auth_headers: tuple[Header, ...] | None = None

    def __post_init__(self) -> None:
        if self.cidrs:
            self.networks = tuple(ipaddress.ip_network(c) for c in self.cidrs)
        # scopes repeat across keys: one string each, not one per entry
        self.scopes = tuple(sys.intern(s) for s in self.scopes)

    def unexpired(self) -> bool:
        """True unless the key has expired by the wall clock. Caches never hold an entry
        past its key's expiry; this is asked anyway, in case the clock was stepped."""
        return self.expire_time is None or self.expire_time > time.time_ns() // 1000

    def answers_alone(self) -> bool:
        """A "yes" with nothing to check per request: plain (no IP allow-list, no rate
        limit, not revoked) and unexpired."""
        return self.plain and self.unexpired()

    def render(self, issuer: str) -> None:
        """Render the bytes of a positive verify answer."""
        fields: dict[str, Any] = {
            "key_id": self.key_id,
            "actor_id": self.actor_id,
            "scopes": list(self.scopes),
            "visibility": self.visibility,
        }
        if self.metadata is not None:
            fields["metadata"] = self.metadata
        if self.expire_time is not None:
            fields["expire_time"] = to_rfc3339(self.expire_time)
        if self.rate_limit is not None:
            fields["rate_limit_policy"] = rate_limit_wire(self.rate_limit)
        self._head = _head(issuer)
        # without its "{": the head ends with a ","; a copy of exactly its size (orjson's
        # own result holds a 4 KiB buffer: 4,089 of the 4,398 bytes an entry cost)
        self._tail = bytes(memoryview(orjson.dumps(fields))[1:])
        self.plain = not self.networks and self.rate_limit is None and not self.revoked

    @property
    def valid_body(self) -> bytes:
        return self._head + self._tail

    def valid_fields(self) -> dict[str, Any]:
        """The fields of the positive answer (a new dict: the caller may add to it)."""
        fields: dict[str, Any] = orjson.loads(self.valid_body)
        return fields

    @property
    def auth_headers(self) -> tuple[Header, ...]:
        """Forward auth's identity headers of a "yes" (made on first use, then kept)."""
        headers = self._auth_headers
        if headers is None:
            headers = self._auth_headers = (
                (b"x-actor-id", header_value(self.actor_id)),
                (b"x-key-id", header_value(self.key_id)),
                (b"x-scopes", scopes_value(self.scopes)))
        return headers

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
