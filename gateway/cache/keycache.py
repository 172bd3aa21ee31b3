"""The two-level read-through cache of credential digests: L1 → L2 (Redis) → store.

Cache keys are HMAC digests; values are ``Entry`` metadata (``None`` = not found, cached
briefly). No entry outlives its key's expiry. Concurrent misses for one digest share one
store read; concurrent L2 reads share one MGET (see ``RedisBackend.get``).
"""

from __future__ import annotations

import asyncio
import enum
import time

from gateway.cache.l1 import L1
from gateway.cache.redis_backend import RedisBackend
from gateway.errors import GatewayError
from gateway.observability.metrics import Metrics
from gateway.store.base import Store
from gateway.verify.entry import Entry

_NEGATIVE = b"-"
KEY_ID_PREFIX = "kid:"  # cache keys of parents looked up by key id rather than by digest


def key_id_cache_key(key_id: str) -> str:
    return KEY_ID_PREFIX + key_id


class CacheMode(enum.Enum):
    DEFAULT = "default"
    NO_CACHE = "no-cache"  # skip reads, refresh caches
    NO_STORE = "no-store"  # skip reads and writes


def cache_mode(cache_control: str | None, pragma: str | None) -> CacheMode:
    mode = CacheMode.DEFAULT
    if cache_control:
        tokens = {t.strip().split("=", 1)[0].lower() for t in cache_control.split(",")}
        if "no-store" in tokens:
            return CacheMode.NO_STORE
        if "no-cache" in tokens:
            mode = CacheMode.NO_CACHE
    if pragma and "no-cache" in pragma.lower():
        mode = CacheMode.NO_CACHE
    return mode


def _l2_key(digest: str) -> str:
    return f"gw:k:{digest}"


def _tomb_key(digest: str) -> str:
    return f"gw:t:{digest}"


class KeyCache:
    def __init__(self, store: Store, metrics: Metrics, *, issuer: str, l1_ttl: float,
                 l1_size: int, l2_ttl: float, negative_ttl: float,
                 redis: RedisBackend | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.redis = redis
        self.issuer = issuer
        self.l1: L1[Entry] = L1(l1_size, l1_ttl)
        self.l2_ttl = l2_ttl
        self.negative_ttl = negative_ttl
        self._inflight: dict[str, asyncio.Future[Entry | None]] = {}

    def _ttl(self, entry: Entry | None, cap: float) -> float:
        if entry is None:
            return min(cap, self.negative_ttl)
        if entry.expire_time is not None:
            left = entry.expire_time / 1_000_000 - time.time()
            return min(cap, left) if left > 0 else min(cap, self.negative_ttl)
        return cap

    def _decode(self, raw: bytes) -> Entry | None:
        if raw == _NEGATIVE:
            return None
        entry = Entry.loads(raw)
        entry.render(self.issuer)
        return entry

    async def lookup(self, digest: str, mode: CacheMode = CacheMode.DEFAULT
                     ) -> tuple[Entry | None, str]:
        """(entry or None for not-found, level that answered: L1, L2 or STORE)."""
        if mode is CacheMode.DEFAULT:
            started = time.monotonic()
            if self.l1.enabled:
                hit, entry = self.l1.get(digest, started)
                self.metrics.cache("L1", hit)
                if hit:
                    return entry, "L1"
            if self.redis is not None and self.redis.available:
                raw = await self.redis.get(_l2_key(digest))
                self.metrics.cache("L2", raw is not None)
                if raw is not None:
                    entry = self._decode(raw)
                    self.l1.put(digest, entry, self._ttl(entry, self.l1.ttl), started)
                    return entry, "L2"
            fut = self._inflight.get(digest)
            if fut is not None:
                return await asyncio.shield(fut), "STORE"
            fut = asyncio.get_running_loop().create_future()
            self._inflight[digest] = fut
            try:
                entry = await self._from_store(digest, mode)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: waiters re-raise it themselves
                raise
            else:
                fut.set_result(entry)
            finally:
                del self._inflight[digest]
            return entry, "STORE"
        return await self._from_store(digest, mode), "STORE"

    async def _from_store(self, digest: str, mode: CacheMode) -> Entry | None:
        started = time.monotonic()
        try:
            if digest.startswith(KEY_ID_PREFIX):  # a parent looked up by id (derived tokens)
                key = await self.store.get_key(digest[len(KEY_ID_PREFIX):])
            else:
                key = await self.store.get_by_digest(digest)
        except GatewayError:
            self.metrics.store_errors.labels("get_by_digest").inc()
            raise
        finally:
            self.metrics.store_latency.labels("get_by_digest").observe(
                time.monotonic() - started)
        entry = Entry.from_key(key) if key is not None else None
        if entry is not None:
            entry.render(self.issuer)
        if mode is not CacheMode.NO_STORE:
            self.l1.put(digest, entry, self._ttl(entry, self.l1.ttl), started)
            if self.redis is not None:
                raw = entry.dumps() if entry is not None else _NEGATIVE
                await self.redis.fill(_l2_key(digest), _tomb_key(digest), raw,
                                      self._ttl(entry, self.l2_ttl))
        return entry

    def invalidate_local(self, digests: list[str]) -> None:
        for digest in digests:
            self.l1.invalidate(digest)

    async def invalidate(self, digests: list[str]) -> None:
        """Drop the digests everywhere before returning (L1 here, L2, every replica's L1)."""
        self.invalidate_local(digests)
        if self.redis is not None:
            await self.redis.delete_with_tombstone([(_l2_key(d), _tomb_key(d)) for d in digests])
            await self.redis.publish_invalidation(digests)
