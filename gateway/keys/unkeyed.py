"""Keeps ``Peppers.unkeyed`` (the digests of the v1 and imported keys) in step with the store.

A credential without a keyed checksum is looked up only when its digest is in that set, so
every replica must learn a new imported key before its import returns (the invalidation
broadcast carries the digest: ``Services._on_invalidate``), and without Redis within
``FOLLOW_S``: the keys written since the last read are read every ``FOLLOW_S`` (reaching
the store's ``seq_lag`` sequence numbers back, for transactions that committed out of
order: none on SQLite), and all of them every ``RELOAD_S`` (digests moved by a pepper
rotation).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque

from gateway.crypto.secrets_format import DigestSet, sorted_runs
from gateway.store.base import Store
from gateway.store.follower import StoreFollower

FOLLOW_S = 1.0
RELOAD_S = 300.0
PAGE = 20_000  # digests a read of the full reload (sorted on the event loop: about 10 ms)
FOLLOW_PAGE = 500  # a page held the loop 0.7 ms at 2,000 (p99 2.3 ms on a busy replica)


class UnkeyedFollower(StoreFollower):
    interval = FOLLOW_S
    what = "reading the digests of imported and v1 keys"

    def __init__(self, store: Store, digests: DigestSet) -> None:
        self.store = store
        self.digests = digests
        self._seq = 0
        self._seen: list[int] = []  # seqs above ``_seq - seq_lag`` read by ``follow``
        self._loaded_at = 0.0

    async def load(self) -> None:
        """All of them, replacing what is known: read a page at a time, each page sorted
        and kept as 8-byte prefixes (a store of millions of imported keys is never held as
        strings), then the pages merged pairwise, a slice at a time (``merged``)."""
        runs: list[array[int]] = []
        seq = 0
        while rows := await self.store.unkeyed_digests(seq, PAGE):
            runs.append(array("Q", sorted(DigestSet.prefix(digest) for _, digest in rows)))
            seq = rows[-1][0]
        self.digests.replace_sorted(await sorted_runs(runs))
        self._seq = max(self._seq, seq)
        self._loaded_at = time.monotonic()

    async def follow(self) -> None:
        """The ones written since the last read (and ``seq_lag`` before it), ``FOLLOW_PAGE``
        a read with the loop free between: a bulk import writes thousands a second, and
        reading them in one go held every request on this replica for milliseconds."""
        if time.monotonic() - self._loaded_at >= RELOAD_S:
            await self.load()
            return
        lag = self.store.seq_lag
        after = max(0, self._seq - lag)
        # the keys read already within the lag are not sent again (an idle PostgreSQL
        # replica read the last 2,000 imported keys' rows every second); only those above
        # a page's start are named, so the list shrinks as the pages move past them
        # (of the seqs read now, at most the last ``lag`` can be within it at the end: a
        # backlog of a million keys is not held)
        seen = self._seen
        read: deque[int] = deque(maxlen=lag)
        while rows := await self.store.unkeyed_digests(
                after, FOLLOW_PAGE, [seq for seq in seen if seq > after]):
            self.digests.add_many([digest for _, digest in rows])
            after = rows[-1][0]
            self._seq = max(self._seq, after)
            read.extend(seq for seq, _ in rows)
            await asyncio.sleep(0)
        self._seen = [seq for seq in (*seen, *read) if seq > self._seq - lag]
        if self.digests.merge_due:
            await self.digests.merge()

    async def start(self) -> None:
        await self.load()
        self._follow_in_background()
