"""Keeps ``Peppers.unkeyed`` (the digests of the v1 and imported keys) in step with the store.

A credential without a keyed checksum is looked up only when its digest is in that set, so
every replica must learn a new imported key before its import returns (the invalidation
broadcast carries the digest: ``Services._on_invalidate``), and without Redis within
``FOLLOW_S``: the keys written since the last read are read every ``FOLLOW_S`` (reaching
the store's ``seq_lag`` sequence numbers back, for transactions that committed out of
order: none on SQLite), and all of them every ``RELOAD_S`` (digests moved by a pepper
rotation).

The broadcast also names the rows (their seqs, ``learned``): when one count of the store's
rows in the range those reach says there is no other, the follower moves past them without
reading them. A replica beside a bulk import read every imported row a second time, 500 at
a time, and each read held its requests: their p99 went from 0.86 to 1.5-2.1 ms during an
import of 300,000 keys, and to 0.9-1.3 ms with the reads left out (load/bulk_import.py).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import Iterable

from gateway.crypto.secrets_format import DigestSet, sorted_runs
from gateway.store.base import Store
from gateway.store.follower import StoreFollower

FOLLOW_S = 1.0
RELOAD_S = 300.0
PAGE = 20_000  # digests a read of the full reload (sorted on the event loop: about 10 ms)
FOLLOW_PAGE = 500  # a page held the loop 0.7 ms at 2,000 (p99 2.3 ms on a busy replica)
# Rows learned from broadcasts and not yet passed by ``follow`` (the store may be down for
# a while): past this many, more are not kept, and ``follow`` reads them from the store.
MAX_HELD = 100_000


class UnkeyedFollower(StoreFollower):
    interval = FOLLOW_S
    what = "reading the digests of imported and v1 keys"

    def __init__(self, store: Store, digests: DigestSet) -> None:
        self.store = store
        self.digests = digests
        self._seq = 0
        # seqs above ``_seq - seq_lag`` whose digests are held: read by ``follow``, or
        # ``learned`` from a broadcast
        self._held: set[int] = set()
        self._loaded_at = 0.0

    def learned(self, seqs: Iterable[int]) -> None:
        """Rows whose digests were added to the set from an import's broadcast: ``follow``
        reads them only if a count of the store's rows says it must."""
        if len(self._held) < MAX_HELD:
            self._held.update(seqs)

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
        reading them in one go held every request on this replica for milliseconds. Rows
        ``learned`` from broadcasts are passed without a read when the store holds no other
        in their range (``count_unkeyed``); else only the others are read."""
        if time.monotonic() - self._loaded_at >= RELOAD_S:
            await self.load()
            return
        lag = self.store.seq_lag
        after = max(0, self._seq - lag)
        # what arrives from now on goes to a new set, kept beside what this read decides
        held, self._held = {seq for seq in self._held if seq > after}, set()
        read: deque[int] = deque(maxlen=lag)  # of the seqs read now, those the lag may reach
        try:
            top = max(held, default=0)
            if top > self._seq and await self.store.count_unkeyed(after, top) == len(held):
                self._seq = after = top  # every row up to ``top`` is held
            # the keys read already within the lag are not sent again (an idle PostgreSQL
            # replica read the last 2,000 imported keys' rows every second); only those
            # above a page's start are named, so the list shrinks as the pages move past
            while rows := await self.store.unkeyed_digests(
                    after, FOLLOW_PAGE, [seq for seq in held if seq > after]):
                self.digests.add_many([digest for _, digest in rows])
                after = rows[-1][0]
                self._seq = max(self._seq, after)
                read.extend(seq for seq, _ in rows)
                await asyncio.sleep(0)
            # none is left but those held: past them too (one deleted since its broadcast
            # would otherwise keep the count from matching)
            self._seq = max(self._seq, top)
        finally:
            floor = self._seq - lag
            self._held.update(seq for seq in (*held, *read) if seq > floor)
        if self.digests.merge_due:
            await self.digests.merge()

    async def start(self) -> None:
        await self.load()
        self._follow_in_background()
