"""Following the store's change log (``key_changes``): the backbone of invalidation.

Redis pub/sub tells the replicas about a change before the admin call returns, when it can.
When it cannot (the changing replica's link to Redis is cut, say), every replica still
reads the change from the store within ``FOLLOW_S``, drops the key from its L1 and, if it
can reach Redis, the stale L2 copy with a tombstone; the changing replica then answers only
after that bound (``KeyCache.invalidate`` reports whether Redis carried it). Rows are read
again ``LAG`` ids back (a PostgreSQL transaction can commit after a later id) and each is
applied once; rows older than ``KEEP_S`` are pruned.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from gateway.cache.keycache import KeyCache, key_id_cache_key
from gateway.store.base import Store
from gateway.store.follower import StoreFollower

FOLLOW_S = 0.5
LAG = 200
KEEP_S = 3600.0
PRUNE_EVERY_S = 60.0


class ChangeFollower(StoreFollower):
    interval = FOLLOW_S
    what = "following the change log"

    def __init__(self, store: Store, cache: KeyCache) -> None:
        self.store = store
        self.cache = cache
        self._last = 0
        self._applied: OrderedDict[int, None] = OrderedDict()
        self._pruned_at = 0.0

    async def start(self) -> None:
        self._last = await self.store.last_change()
        self._follow_in_background()

    async def follow(self) -> None:
        """Apply the change-log rows not applied yet (and prune old ones now and then)."""
        rows = await self.store.changes_since(max(0, self._last - LAG))
        fresh = [(i, items) for i, items in rows if i not in self._applied]
        if fresh:
            cache_keys = [k for _, items in fresh for digest, key_id in items
                          for k in (digest, key_id_cache_key(key_id))]
            self.cache.invalidate_local(cache_keys)
            await self.cache.drop_l2(cache_keys)
            for change_id, _ in fresh:
                self._applied[change_id] = None
                self._last = max(self._last, change_id)
            while len(self._applied) > 4 * LAG:
                self._applied.popitem(last=False)
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await self.store.prune_changes(int((time.time() - KEEP_S) * 1e6))
