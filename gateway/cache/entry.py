"""What the caches hold for one credential digest: key metadata, never the secret.

An ``Entry`` is kept compact: it holds the bytes of its positive verify answer, rendered
once, and nothing else pre-built. The answer's fields, the forward-auth headers and the
ASGI messages are made when asked. Pre-rendering five answers per entry cost ≈ 6.2 KB a
key.

L1 holds an entry ``packed``: a ``Cached``, an exact tuple of strings, bytes, numbers and
tuples of them. CPython's collector stops tracking such a tuple after its first pass, so
100,000 cached keys add nothing to what a full collection walks; as objects they added
200,000 (an ``Entry`` and L1's tuple per key), and each full collection paused every
request for 130 to 330 ms (load/bench.py, usage-stall-cached). The hot paths read the fields
they need from the tuple (``PLAIN``, ``EXPIRES``, ``KEY_ID``, ``HEAD``, ``TAIL``); the
general path gets an ``Entry`` back (``Entry.unpacked``).
"""

from __future__ import annotations

import functools
import ipaddress
import sys
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.cache.untrack import untracked
from gateway.clock import to_rfc3339
from gateway.keys.header_values import header_value, scopes_value
from gateway.keys.model import ApiKey, RateLimit
from gateway.keys.wire import rate_limit_wire

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Header = tuple[bytes, bytes]
# An Entry packed for L1: (plain, expire_time, key_id, head, tail, actor_id, scopes,
# visibility, metadata as JSON bytes (a dict, even empty, keeps a tuple tracked), revoked,
# cidrs, (quota, window_s, unit) or None, digest)
Cached = tuple[bool, int | None, str, bytes, bytes, str, tuple[str, ...], str, bytes | None,
               bool, tuple[str, ...], tuple[int, int, str] | None, str]
# the fields the hot paths read (Final: a checker knows each one's type)
PLAIN: Final = 0
EXPIRES: Final = 1
KEY_ID: Final = 2
HEAD: Final = 3
TAIL: Final = 4
AUTH_HEADERS_MEMO = 4096
# What L1 holds for a digest that is no key's (a "not found" answer, cached briefly): not
# plain, so no fast path answers from it.
NOT_FOUND: Cached = untracked(
    (False, None, "", b"", b"", "", (), "", None, False, (), None, ""))


def address_in(address: str, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` parses and lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


@functools.lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """The parsed allow-list (keys share few distinct lists; entries are unpacked often)."""
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def unexpired(expire_time: int | None) -> bool:
    """True unless a key with this expiry (µs since the epoch, None: never) has expired by
    the wall clock. Caches never hold an entry past its key's expiry; this is asked
    anyway, in case the clock was stepped."""
    return expire_time is None or expire_time > time.time_ns() // 1000


def answers_alone(cached: Cached) -> bool:
    """The "cached yes" rule: an entry answers yes with nothing to check per request when
    it is plain (no IP allow-list, no rate limit, not revoked) and unexpired."""
    return cached[PLAIN] and unexpired(cached[EXPIRES])


def _plain_answers(table: dict[str, tuple[float, Cached | None, float]], digests: list[str],
                   now: float, wall_us: int, used: dict[str, float], valid: dict[str, int],
                   due: list[str], left: list[int]) -> list[bytes | None]:
    """``answers_alone`` for many digests at once (a batchVerify): for each, the bytes of
    its positive verify answer when L1's ``table`` (``L1.table``) holds it unexpired at
    ``now``, plain, and unexpired at ``wall_us``, with the use recorded (``used``: key id →
    last use, moved forwards to ``now``; ``valid``: key id → yes answers) and, when it is
    at or past its refresh time, its digest appended to ``due`` (for ``L1.mark_due``);
    None for every other digest, its index appended to ``left``, for the caller (a miss,
    an entry past its expiry, a key with something to check). The C extension ``_plain``
    where it was built: 100 cached keys' answers in about a third of this loop's time."""
    out: list[bytes | None] = []
    for i, digest in enumerate(digests):
        item = table.get(digest)
        if item is None or not item[2] > now or (cached := item[1]) is None or (
                cached[PLAIN] is not True
                or ((expires := cached[EXPIRES]) is not None and expires <= wall_us)):
            out.append(None)
            left.append(i)
            continue
        key_id = cached[KEY_ID]
        if used.get(key_id, 0.0) < now:
            used[key_id] = now
        valid[key_id] = valid.get(key_id, 0) + 1
        if not item[0] > now:
            due.append(digest)
        out.append(cached[HEAD] + cached[TAIL])
    return out


try:
    from gateway.cache._plain import answers as _native_answers
except ImportError:  # not built (setup.py)
    plain_answers = _plain_answers
else:
    plain_answers = _native_answers


_AUTH_HEADERS: dict[bytes, tuple[Header, ...]] = {}


def auth_headers(cached: Cached) -> tuple[Header, ...]:
    """Forward auth's identity headers of a "yes" from L1 (``_identity_headers``)."""
    return _identity_headers(cached[TAIL], cached[KEY_ID], cached[5], cached[6])


def _identity_headers(tail: bytes, key_id: str, actor_id: str, scopes: tuple[str, ...]
                      ) -> tuple[Header, ...]:
    """X-Actor-Id, X-Key-Id, X-Scopes: made once per key state and kept for the most
    recent ones, by the bytes of the key's answer (``tail``: its key id, actor and scopes
    are in them, so a changed key never finds the old headers)."""
    headers = _AUTH_HEADERS.get(tail)
    if headers is None:
        if len(_AUTH_HEADERS) >= AUTH_HEADERS_MEMO:
            _AUTH_HEADERS.clear()
        headers = _AUTH_HEADERS[tail] = (
            (b"x-actor-id", header_value(actor_id)),
            (b"x-key-id", header_value(key_id)),
            (b"x-scopes", scopes_value(scopes)))
    return headers


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

    def __post_init__(self) -> None:
        if self.cidrs:
            self.networks = _networks(self.cidrs)
        # scopes repeat across keys: one string each, not one per entry
        self.scopes = tuple(sys.intern(s) for s in self.scopes)

    def unexpired(self) -> bool:
        return unexpired(self.expire_time)

    def packed(self) -> Cached:
        """This entry as L1 holds it (see the module's docstring)."""
        rl = self.rate_limit
        return (self.plain, self.expire_time, self.key_id, self._head, self._tail,
                self.actor_id, self.scopes, self.visibility,
                None if self.metadata is None else orjson.dumps(self.metadata), self.revoked,
                self.cidrs, (rl.quota, rl.window_s, rl.unit) if rl else None, self.digest)

    @classmethod
    def unpacked(cls, cached: Cached) -> Entry:
        """The entry ``packed`` gave, rendered as it was."""
        (plain, expire_time, key_id, head, tail, actor_id, scopes, visibility, metadata,
         revoked, cidrs, rl, digest) = cached
        entry = cls(key_id, actor_id, scopes, visibility,
                    None if metadata is None else orjson.loads(metadata), expire_time,
                    revoked, cidrs, RateLimit(*rl) if rl else None, digest)
        entry._head, entry._tail, entry.plain = head, tail, plain
        return entry

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
        """Forward auth's identity headers of a "yes" (``_identity_headers``)."""
        return _identity_headers(self._tail, self.key_id, self.actor_id, self.scopes)

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
