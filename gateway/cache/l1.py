"""L1: a bounded in-process cache with a short TTL, and tombstones against stale fills.

A fill that started before an invalidation of the same digest is dropped, so a lookup
racing with a revocation cannot put the old answer back.

Refresh-ahead: a hit on a positive entry in the last quarter of its life puts its digest in
``due`` (and calls ``on_due`` when ``due`` was empty), so the owner can re-read it in the
background while the entry still answers. A hot key then never drops out of L1 under load;
otherwise every request in flight for it misses at the same moment, when it expires. An
entry is never answered past its expiry.

Nothing is answered at or after ``trusted_until`` (monotonic): the replica's lease on its
caches (``gateway.cache.changes``), renewed each time it reads the store's change log.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway.cache.untrack import untracked

V = TypeVar("V")
# Memory budgets, held by load/memory.py (RSS measured with 100,000 keys cached) and by the
# k8s manifests' memory limit (tests/test_k8s_manifests.py): the most RSS one cached key
# may cost, and the RSS of a gateway process with an empty L1.
ENTRY_BUDGET_BYTES = 1024
IDLE_BUDGET_BYTES = 128 << 20
TOMBSTONE_S = 60.0
REFRESH_AFTER = 0.75  # share of an entry's L1 life after which a hit asks for a refresh


class L1(Generic[V]):
    def __init__(self, max_entries: int, ttl: float, negative: V | None = None) -> None:
        # the value that stands for "not found" (None, or the owner's own: see KeyCache)
        self.negative = negative
        # digest -> (refresh_at, value, expires), refresh_at <= expires: a hit before
        # refresh_at is one comparison, as cheap as the expiry check alone
        self._data: dict[str, tuple[float, V | None, float]] = {}
        # digest -> when it was invalidated, oldest first: expired from the front, O(1) a key
        self._tombstones: OrderedDict[str, float] = OrderedDict()
        self._cleared = float("-inf")  # fills that started before the last clear() are dropped
        # "not found" fills that started before the last ``forget_new`` are dropped
        self._negatives_before = float("-inf")
        self.max_entries = max_entries
        self.ttl = ttl
        # digests (a dict, not a set: a dict of strings stays out of the garbage
        # collector's sight, a set is always walked by a full collection)
        self.due: dict[str, None] = {}
        self.on_due: Callable[[], None] | None = None
        self.trusted_until = float("inf")

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def get(self, digest: str, now: float) -> tuple[bool, V | None]:
        """(hit, value); a cached negative answer is (True, ``negative``)."""
        item = self._data.get(digest)
        if item is None or now >= self.trusted_until:
            return False, None
        if item[0] > now:
            return True, item[1]
        if item[2] > now:
            self._mark_due(digest)
            return True, item[1]
        self._data.pop(digest, None)
        return False, None

    def fresh(self, digest: str, now: float) -> V | None:
        """The cached value when present and unexpired (a cached negative answer is
        ``negative``), else None: the hot path's one-call lookup. Expired items are left
        for ``get`` or eviction to drop."""
        item = self._data.get(digest)
        if item is None or now >= self.trusted_until:
            return None
        return item[1] if item[0] > now else self._late(digest, item, now)

    def table(self, now: float) -> dict[str, tuple[float, V | None, float]]:
        """The entries as they are, digest -> (refresh_at, value, expires), for a caller
        that reads many at once (``entry.plain_answers``) and marks the hits it answered at
        or past their refresh time (``mark_due``); empty from ``trusted_until`` on. Not to
        be changed."""
        return self._data if now < self.trusted_until else {}

    def fresh_many(self, digests: list[str], now: float) -> list[V | None]:
        """``fresh`` for each digest, in order."""
        if now >= self.trusted_until:
            return [None] * len(digests)
        get, late = self._data.get, self._late
        return [(item[1] if item[0] > now else late(d, item, now))
                if (item := get(d)) is not None else None
                for d in digests]

    def _late(self, digest: str, item: tuple[float, V | None, float], now: float) -> V | None:
        """A hit past the entry's refresh time: its value until it expires, marked due."""
        if item[2] <= now:
            return None
        self._mark_due(digest)
        return item[1]

    def mark_due(self, digest: str) -> None:
        """A hit at or past its refresh time (``fresh`` marks its own; a caller that read
        ``table`` marks those it answered)."""
        self._mark_due(digest)

    def _mark_due(self, digest: str) -> None:
        # only entries put while on_due was set have a refresh_at before their expiry
        if not self.due and self.on_due is not None:
            self.on_due()
        self.due[digest] = None

    def put(self, digest: str, value: V | None, ttl: float, started: float) -> None:
        """Store unless ``digest`` was invalidated after ``started`` (monotonic)."""
        if not self.enabled or ttl <= 0:
            return
        negative = value is self.negative
        if started <= self._cleared or (negative and started <= self._negatives_before):
            return
        tomb = self._tombstones.get(digest)
        if tomb is not None and tomb >= started:
            return
        if len(self._data) >= self.max_entries:
            self._evict()
        life = min(ttl, self.ttl)
        expires = started + life
        # Negative answers and entries cut short by their key's expiry are not refreshed:
        # they are meant to end.
        refreshed = not negative and ttl >= self.ttl and self.on_due is not None
        refresh_at = started + life * REFRESH_AFTER if refreshed else expires
        # untracked at once (packed entries are tuples of atoms): a tracked one makes the
        # dict tracked again, and each full collection then walks every entry (200,000:
        # 10-25 ms holding every request, 67 of them in a usage-stall-cached run)
        self._data[digest] = untracked((refresh_at, value, expires))

    def invalidate(self, digest: str) -> None:
        now = time.monotonic()
        self._data.pop(digest, None)
        self.due.pop(digest, None)
        tombstones = self._tombstones
        tombstones[digest] = now
        tombstones.move_to_end(digest)
        # Tombstones older than any fill still in flight can go: from the oldest end, so a
        # bulk import's thousands of invalidations cost O(1) each (rebuilding the whole map
        # whenever it held over 10,000 took 78% of the CPU of a 10,000-key import).
        cutoff = now - TOMBSTONE_S
        while tombstones:
            oldest = next(iter(tombstones.values()))
            if oldest >= cutoff:
                break
            tombstones.popitem(last=False)

    def forget_new(self, digests: list[str]) -> None:
        """New keys were stored under these digests: drop their "not found" entries. No
        tombstone each (a bulk import adds thousands a second): one time stops every
        "not found" fill that started before it (they are the only stale ones)."""
        self._negatives_before = time.monotonic()
        data = self._data
        for digest in digests:
            if digest in data:
                del data[digest]

    def clear(self) -> None:
        self._cleared = time.monotonic()
        self._data.clear()
        self.due.clear()

    def _evict(self) -> None:
        """Drop expired entries, then the oldest tenth (insertion order)."""
        now = time.monotonic()
        expired = [d for d, (_, _, exp) in self._data.items() if exp <= now]
        for d in expired:
            del self._data[d]
        if len(self._data) >= self.max_entries:
            for d in list(self._data)[: max(1, self.max_entries // 10)]:
                del self._data[d]

    def __len__(self) -> int:
        return len(self._data)
