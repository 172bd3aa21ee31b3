"""The two-level read-through cache of credential digests: L1 → L2 (Redis) → store.

Cache keys are HMAC digests; values are ``Entry`` metadata (``None`` = not found, cached
briefly), which L1 holds packed (``Entry.packed``, see ``gateway.cache.entry``). No entry
outlives its key's expiry. Concurrent misses for one digest share one store read;
concurrent L2 reads share one MGET (see ``RedisBackend.get``).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Sequence

from gateway.cache.entry import NOT_FOUND, Cached, Entry
from gateway.cache.l1 import L1
from gateway.cache.redis_backend import RedisBackend
from gateway.errors import GatewayError
from gateway.observability.metrics import Metrics
from gateway.store.base import Store
from gateway.tasks import cancel

_NEGATIVE = b"-"
DECODED_MEMO = 4096
REFRESH_RETRY_S = 1.0  # pause after a refresh round that failed (store or Redis down)
# due entries re-read at a time: the entries put together (a warm-up, an import) come due
# together, and one gather of all of them made every task in one loop pass (tens of
# thousands: the loop held for 100 ms or more)
REFRESH_BATCH = 256
DROP_BATCH = 1000  # cache keys a command when many are dropped at once (drop_l2_all)
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
    if pragma and "no-cache" in {t.strip().lower() for t in pragma.split(",")}:
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
        self.l1: L1[Cached] = L1(l1_size, l1_ttl, negative=NOT_FOUND)
        self.l2_ttl = l2_ttl
        self.negative_ttl = negative_ttl
        self._inflight: dict[str, asyncio.Future[Entry | None]] = {}
        # L2 values already parsed, keyed by their bytes: a read from Redis still decides
        # every answer (a changed or deleted value does not match), only the parsing and
        # rendering of identical bytes is skipped
        self._decoded: dict[bytes, Entry] = {}
        # Digests whose invalidation has not reached Redis yet (it was unreachable). Until
        # it has, L2 is neither read nor filled here, and a retry runs in the background.
        self._unsynced: set[str] = set()
        self._sync_lock = asyncio.Lock()  # one push at a time: each change is sent once
        self._resync: asyncio.Task[None] | None = None
        if redis is not None:
            redis.on_resubscribe = self.l1.clear
        self._refresher: asyncio.Task[None] | None = None
        self.l1.on_due = self._start_refresh

    def _ttl(self, entry: Entry | None, cap: float) -> float:
        if entry is None:
            return min(cap, self.negative_ttl)
        if entry.expire_time is not None:
            left = entry.expire_time / 1_000_000 - time.time()
            return min(cap, left) if left > 0 else min(cap, self.negative_ttl)
        return cap

    def _decode(self, raw: bytes | None) -> tuple[bool, Entry | None]:
        """(hit, entry). A value this version cannot read (written by another version
        during a rolling upgrade) is a miss, not an error."""
        if raw is None:
            return False, None
        if raw == _NEGATIVE:
            return True, None
        entry = self._decoded.get(raw)
        if entry is not None:  # the same bytes as an earlier read: the same answer
            return True, entry
        try:
            entry = Entry.loads(raw)
        except (ValueError, TypeError):
            return False, None
        entry.render(self.issuer)
        if len(self._decoded) >= DECODED_MEMO:
            self._decoded.clear()
        self._decoded[raw] = entry
        return True, entry

    async def lookup(self, digest: str, mode: CacheMode = CacheMode.DEFAULT
                     ) -> tuple[Entry | None, str]:
        """(entry or None for not-found, level that answered: L1, L2 or STORE)."""
        if mode is not CacheMode.DEFAULT:
            return await self._from_store(digest, mode), "STORE"
        if self.l1.enabled:
            return await self.lookup_after_l1(digest, self.l1.fresh(digest, time.monotonic()))
        return await self._below_l1(digest, time.monotonic())

    async def lookup_after_l1(self, digest: str, cached: Cached | None
                              ) -> tuple[Entry | None, str]:
        """``lookup`` of a digest for which L1 (``L1.fresh``) gave ``cached`` (None:
        nothing): the caller asked L1 itself."""
        if self.l1.enabled:
            self.metrics.cache("L1", cached is not None)
        if cached is None:
            return await self._below_l1(digest, time.monotonic())
        return (None if cached is NOT_FOUND else Entry.unpacked(cached)), "L1"

    async def _below_l1(self, digest: str, started: float) -> tuple[Entry | None, str]:
        """L2, else the store (one read shared by concurrent callers); fills the levels
        above the one that answered."""
        # A digest whose invalidation has not reached Redis yet may have a stale L2 copy:
        # it is read from the store meanwhile. A lookup never pushes or waits for an
        # invalidation itself (the admin call and one background task do).
        if (self.redis is not None and self.redis.l2_ready
                and started < self.l1.trusted_until and digest not in self._unsynced):
            hit, entry = self._decode(await self.redis.get(_l2_key(digest)))
            self.metrics.cache("L2", hit)
            if hit:
                if entry is not None and entry.digest == digest:
                    entry.digest = digest  # one string for the key and the value (memory)
                self._fill_l1(digest, entry, started)
                return entry, "L2"
        fut = self._inflight.get(digest)
        if fut is not None:
            return await asyncio.shield(fut), "STORE"
        fut = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            entry = await self._from_store(digest, CacheMode.DEFAULT)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            fut.set_result(entry)
        finally:
            # an invalidation may have detached this read (and a newer one may run)
            if self._inflight.get(digest) is fut:
                del self._inflight[digest]
        return entry, "STORE"

    # -- refresh-ahead (see gateway.cache.l1) ----------------------------------------

    def _start_refresh(self) -> None:
        """Called by L1 when a hit finds an entry due for refresh and none was due."""
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_due(), name="l1-refresh")

    async def _refresh_due(self) -> None:
        """Re-read the due L1 entries through L2 and the store, as a miss would. A fill
        that races an invalidation is dropped by L1's tombstones, as any other."""
        due = self.l1.due
        while due:
            digests = list(itertools.islice(due, REFRESH_BATCH))
            for digest in digests:
                del due[digest]
            started = time.monotonic()
            results = await asyncio.gather(*(self._below_l1(d, started) for d in digests),
                                           return_exceptions=True)
            if any(isinstance(r, BaseException) for r in results):
                # the store or Redis is failing: the entries answer until they expire,
                # and hits meanwhile ask again no more than once per interval
                await asyncio.sleep(REFRESH_RETRY_S)

    async def close(self) -> None:
        await cancel(self._refresher)

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
            if entry.digest == digest:
                entry.digest = digest  # one string for the L1 key and the value (memory)
        if mode is not CacheMode.NO_STORE:
            self._fill_l1(digest, entry, started)
            if self.redis is not None and digest not in self._unsynced:
                raw = entry.dumps() if entry is not None else _NEGATIVE
                await self.redis.fill(_l2_key(digest), _tomb_key(digest), raw,
                                      self._ttl(entry, self.l2_ttl))
        return entry

    def _fill_l1(self, digest: str, entry: Entry | None, started: float) -> None:
        if self.l1.enabled:
            self.l1.put(digest, entry.packed() if entry is not None else NOT_FOUND,
                        self._ttl(entry, self.l1.ttl), started)

    def forget(self, digests: list[str], *, added: bool = False) -> None:
        """``invalidate_local``, or for new keys' digests ``L1.forget_new``."""
        if added:
            self.l1.forget_new(digests)
        else:
            self.invalidate_local(digests)

    def invalidate_local(self, digests: list[str]) -> None:
        for digest in digests:
            self.l1.invalidate(digest)
            # a store read already in flight may have seen the old row: later lookups must
            # not join it
            self._inflight.pop(digest, None)

    def trust_until(self, until: float) -> None:
        """The lease on L1 and L2 (monotonic): past it, lookups read the store."""
        self.l1.trusted_until = until

    async def invalidate(self, digests: list[str], *, added: bool = False,
                         seqs: Sequence[int] = ()) -> set[str]:
        """Drop the digests here (L1), from L2 and from every replica's L1 through Redis;
        returns the replicas that acknowledged it (none without Redis, or when Redis could
        not be reached).

        When Redis cannot be reached, L2 and the other replicas cannot be told now: the
        invalidation is kept and retried by one background task until it lands, and until
        then this replica neither reads nor fills L2 for these digests (their entries there
        may be stale). The other replicas read the change from the store's change log
        (``gateway.cache.changes``, which confirms it).

        ``added``: the digests are of keys just stored (imports): only "not found" answers
        can be stale, and they go without a tombstone each (``L1.forget_new``). ``seqs``:
        the rows of the imported ones, which the other replicas' store followers then need
        not read (``UnkeyedFollower.learned``)."""
        self.forget(digests, added=added)
        if self.redis is None:
            return set()
        if added:  # a failure only delays a new key: the store followers bring it within
            # a second, and a "not found" in L2 lasts its 5 s at most
            if await self.redis.delete_with_tombstone([(_l2_key(d), _tomb_key(d))
                                                       for d in digests]):
                return await self.redis.publish_invalidation(digests, added=True,
                                                             seqs=seqs) or set()
            return set()
        self._unsynced.update(digests)
        acked = await self._sync()
        if acked is None:
            self._retry_sync()
            return set()
        return acked

    async def drop_l2(self, digests: list[str]) -> None:
        """Delete L2 copies (with tombstones), no publish: for changes read from the change
        log, which every replica reads for itself. If Redis cannot be reached, they are
        held back from L2 here and retried, as by ``invalidate``."""
        if self.redis is None or not digests:
            return
        if not (self.redis.available and await self.redis.delete_with_tombstone(
                [(_l2_key(d), _tomb_key(d)) for d in digests])):
            self._unsynced.update(digests)
            self._retry_sync()

    async def drop_l2_all(self, cache_keys: list[str]) -> bool:
        """Delete the L2 copies of ``cache_keys`` (with tombstones), in batches, whatever
        else is pending (after a failover, see ``ChangeFollower``): False when some could
        not be, or the primary changed meanwhile."""
        assert self.redis is not None
        epoch = self.redis.epoch
        for i in range(0, len(cache_keys), DROP_BATCH):
            if not await self.redis.delete_with_tombstone(
                    [(_l2_key(d), _tomb_key(d)) for d in cache_keys[i:i + DROP_BATCH]]):
                return False
        return self.redis.epoch == epoch

    async def _sync(self) -> set[str] | None:
        """Push the pending invalidations to Redis: the replicas that acknowledged them, or
        None when some are left (Redis could not be reached)."""
        assert self.redis is not None
        async with self._sync_lock:
            pending = list(self._unsynced)  # what an earlier holder pushed is gone from it
            if not pending:
                return set()
            acked = None
            epoch = self.redis.epoch
            if await self.redis.delete_with_tombstone(
                    [(_l2_key(d), _tomb_key(d)) for d in pending]):
                acked = await self.redis.publish_invalidation(pending)
                if acked is not None and self.redis.epoch != epoch:
                    # the drop may be on the old primary and the acks from the new one,
                    # whose replicas would read L2 there: not done
                    acked = None
                if acked is not None:
                    self._unsynced.difference_update(pending)
            return acked if not self._unsynced else None

    def _retry_sync(self) -> None:
        if self._resync is not None and not self._resync.done():
            return
        assert self.redis is not None
        self._resync = self.redis.spawn(self._resync_loop(), "redis-invalidation-retry")

    async def _resync_loop(self) -> None:
        assert self.redis is not None
        while self._unsynced:
            await asyncio.sleep(0.1)
            if self.redis.available and await self._sync() is not None:
                return
