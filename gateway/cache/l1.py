"""L1: a bounded in-process cache with a short TTL, and tombstones against stale fills.

A fill that started before an invalidation of the same digest is dropped, so a lookup
racing with a revocation cannot put the old answer back.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")
TOMBSTONE_S = 60.0


class L1(Generic[V]):
    def __init__(self, max_entries: int, ttl: float) -> None:
        self._data: dict[str, tuple[float, V]] = {}
        self._tombstones: dict[str, float] = {}
        self._cleared = float("-inf")  # fills that started before the last clear() are dropped
        self.max_entries = max_entries
        self.ttl = ttl

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def get(self, digest: str, now: float) -> tuple[bool, V | None]:
        """(hit, value); a cached negative answer is (True, None)."""
        item = self._data.get(digest)
        if item is None:
            return False, None
        if item[0] <= now:
            self._data.pop(digest, None)
            return False, None
        return True, item[1]

    def fresh(self, digest: str, now: float) -> V | None:
        """The cached value when present and unexpired, else None (also for a cached
        negative answer): the hot path's one-call lookup. Expired items are left for
        ``get`` or eviction to drop."""
        item = self._data.get(digest)
        return item[1] if item is not None and item[0] > now else None

    def fresh_many(self, digests: list[str], now: float) -> list[V | None]:
        """``fresh`` for each digest, in order."""
        get = self._data.get
        return [item[1] if (item := get(d)) is not None and item[0] > now else None
                for d in digests]

    def put(self, digest: str, value: V | None, ttl: float, started: float) -> None:
        """Store unless ``digest`` was invalidated after ``started`` (monotonic)."""
        if not self.enabled or ttl <= 0:
            return
        if started <= self._cleared:
            return
        tomb = self._tombstones.get(digest)
        if tomb is not None and tomb >= started:
            return
        if len(self._data) >= self.max_entries:
            self._evict()
        self._data[digest] = (started + min(ttl, self.ttl), value)  # type: ignore[assignment]

    def invalidate(self, digest: str) -> None:
        now = time.monotonic()
        self._data.pop(digest, None)
        self._tombstones[digest] = now
        if len(self._tombstones) > 10_000:
            cutoff = now - TOMBSTONE_S
            self._tombstones = {d: t for d, t in self._tombstones.items() if t >= cutoff}

    def clear(self) -> None:
        self._cleared = time.monotonic()
        self._data.clear()

    def _evict(self) -> None:
        """Drop expired entries, then the oldest tenth (insertion order)."""
        now = time.monotonic()
        expired = [d for d, (exp, _) in self._data.items() if exp <= now]
        for d in expired:
            del self._data[d]
        if len(self._data) >= self.max_entries:
            for d in list(self._data)[: max(1, self.max_entries // 10)]:
                del self._data[d]

    def __len__(self) -> int:
        return len(self._data)
