"""Following the store's change log (``key_changes``): the backbone of invalidation.

Every replica reads the log every ``FOLLOW_S``, drops the changed keys from its L1 and,
if it can reach Redis, the stale L2 copies (with tombstones), then records in the store
(``replicas``) how far it has read: ``followed_at``, a store time before which every change
is applied there, and ``trusted_until``, how long it may answer from its caches without
reading the log again. It holds itself to that: past its lease it answers from neither L1
nor L2 (only from the store) until a read of the log succeeds again. The lease is
``LEASE_S``, or ``grace`` (``GATEWAY_STORE_GRACE``) while its Redis subscription is up,
so that a store outage is ridden out on cached answers.

A change is confirmed (``confirm``) when every replica trusted past it has either
acknowledged it through Redis or followed the log past it. The admin call that made it
answers success only then; otherwise, after ``CONFIRM_S``, it answers 503 and says which
replicas did not confirm (they converge within their lease regardless).

Rows are read again ``LAG`` ids back (a PostgreSQL transaction can commit after a later id)
and each is applied once; rows older than ``KEEP_S`` are pruned. At start a replica applies
the changes of the last L2 TTL (an L2 copy that no replica could drop when it changed must
not be served by a newcomer).

After a Redis failover (Sentinel named another primary, ``RedisBackend.on_switch``) the
same changes are dropped from L2 again, on the new primary, before this replica uses L2
there (``_replay_to_l2``): the drops and tombstones this replica wrote to the old primary
may not have been replicated, and it reads L2 only where it writes its own drops. Changes
made after the switch are dropped on the new primary as they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.cache.keycache import KeyCache, key_id_cache_key
from gateway.errors import GatewayError, Unavailable
from gateway.store.base import Store
from gateway.store.follower import StoreFollower

FOLLOW_S = 0.5
LEASE_S = 2.0  # a replica's lease on its caches without a Redis subscription
CONFIRM_S = 3.0  # how long an admin call waits for every replica to confirm its change
CONFIRM_POLL_S = 0.05
LAG = 200
PAGE = 10_000
KEEP_S = 3600.0
PRUNE_EVERY_S = 60.0
REPLAY_RETRY_S = 0.2  # after a failover: pause between attempts to re-drop L2
log = logging.getLogger("gateway.redis")


class ChangeFollower(StoreFollower):
    interval = FOLLOW_S
    what = "following the change log"

    def __init__(self, store: Store, cache: KeyCache, replica_id: str, *, grace: float,
                 l2_ttl: float, subscribed: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.cache = cache
        self.replica_id = replica_id
        self.grace = grace
        self.l2_ttl = l2_ttl
        self.subscribed = subscribed  # is the Redis invalidation subscription up?
        self._last = 0
        self._applied: OrderedDict[int, None] = OrderedDict()
        self._pruned_at = 0.0
        cache.trust_until(float("-inf"))  # nothing is answered from the caches before
        self._replay: asyncio.Task[None] | None = None
        if cache.redis is not None:
            cache.redis.on_switch = self._primary_switched

    async def start(self) -> None:
        since = int((time.time() - self.l2_ttl) * 1e6)
        self._last = await self.store.first_change_since(since)
        while not await self._read():
            pass
        self._follow_in_background()

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(GatewayError):  # the store is gone: the row's lease runs out
            await self.store.leave(self.replica_id)

    async def follow(self) -> None:
        await self._read()
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await self.store.prune_changes(int((time.time() - KEEP_S) * 1e6))

    async def _read(self) -> bool:
        """Apply the rows not applied yet; when that is all of them, renew the lease.
        True when caught up."""
        started = time.monotonic()
        at, rows = await self.store.follow_changes(max(0, self._last - LAG), PAGE)
        fresh = [(i, items) for i, items in rows if i not in self._applied]
        if fresh:
            cache_keys = [k for _, items in fresh for digest, key_id in items
                          for k in (digest, key_id_cache_key(key_id))]
            self.cache.invalidate_local(cache_keys)
            await self.cache.drop_l2(cache_keys)
            for change_id, _ in fresh:
                self._applied[change_id] = None
                self._last = max(self._last, change_id)
            while len(self._applied) > 4 * LAG + PAGE:
                self._applied.popitem(last=False)
        if len(rows) >= PAGE:
            return False
        lease = self.grace if self.subscribed() else LEASE_S
        await self.store.heartbeat(self.replica_id, at, at + int(lease * 1e6))
        self.cache.trust_until(started + lease)
        return True

    def _primary_switched(self) -> None:
        """Redis has another primary: L2 is held (``RedisBackend.l2_held``) until
        ``_replay_to_l2`` has run for it."""
        redis = self.cache.redis
        assert redis is not None
        if self._replay is None or self._replay.done():
            self._replay = redis.spawn(self._replay_to_l2(), "redis-failover-replay")

    async def _replay_to_l2(self) -> None:
        """Drop from L2, on the current primary, every change of the last L2 TTL (an L2
        copy written before a change is gone by then), then use L2 again; once more if the
        primary changed meanwhile."""
        redis = self.cache.redis
        assert redis is not None
        while (epoch := redis.l2_held) is not None:
            started = time.monotonic()
            try:
                after = await self.store.first_change_since(
                    int((time.time() - self.l2_ttl) * 1e6))
                after = max(0, after - LAG)
                cache_keys: list[str] = []
                while True:
                    _, rows = await self.store.follow_changes(after, PAGE)
                    cache_keys += [k for _, items in rows for digest, key_id in items
                                   for k in (digest, key_id_cache_key(key_id))]
                    if len(rows) < PAGE:
                        break
                    after = rows[-1][0]
                if await self.cache.drop_l2_all(cache_keys) and redis.release_l2(epoch):
                    log.info("%d change(s) dropped from L2 on the new primary in %.2fs",
                             len(cache_keys) // 2, time.monotonic() - started)
                    return
            except GatewayError as exc:
                log.warning("re-dropping L2 after a failover failed: %s", exc.message)
            await asyncio.sleep(REPLAY_RETRY_S)

    async def confirm(self, acked: set[str], deadline: float) -> None:
        """Return once every replica trusted past now has applied the change just made
        (acknowledged through Redis, in ``acked``, or followed the log past it); raise
        ``Unavailable`` at ``deadline`` (monotonic) if some have not."""
        at, waiting = await self.store.unconfirmed(self.replica_id)
        while left := [r for r in waiting if r not in acked]:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"the change is saved, but {len(left)} replica(s) ({', '.join(left)}) "
                    f"did not confirm it within {CONFIRM_S:g}s; a replica that cannot read "
                    f"the change log stops answering from its caches within "
                    f"{max(self.grace, LEASE_S):g}s")
            await asyncio.sleep(CONFIRM_POLL_S)
            _, waiting = await self.store.unconfirmed(self.replica_id, at)
