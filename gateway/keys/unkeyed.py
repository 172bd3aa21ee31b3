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
Rows are counted a round after they were learned: an import's batches commit and
broadcast concurrently, so the newest rows may still lack a sibling whose broadcast is on
its way, and a count over them failed and sent the follower to read (one to three reads a
second during an import, each holding the loop 0.3-1.3 ms). While broadcasts are arriving,
rows above the counted ones wait for the next round; without any, they are read at once.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import deque
from collections.abc import Sequence

from gateway.crypto.secrets_format import DigestSet, sorted_array, sorted_runs
from gateway.store.base import Store
from gateway.store.follower import StoreFollower

FOLLOW_S = 1.0
RELOAD_S = 300.0
PAGE = 2_000  # digests a read of the full reload (their prefixes made on the loop: 0.7 ms)
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
        # ``learned`` from a broadcast before its last round; those learned since: ``_fresh``
        self._held: set[int] = set()
        self._fresh: set[int] = set()
        self._loaded_at = 0.0

    def learned(self, seqs: Sequence[int]) -> None:
        """Rows whose digests were added to the set from an import's broadcast: ``follow``
        reads them only if a count of the store's rows says it must. A broadcast that
        would take the rows held past ``MAX_HELD`` is not kept (its rows are read)."""
        if len(self._held) + len(self._fresh) + len(seqs) <= MAX_HELD:
            self._fresh.update(seqs)

    async def load(self) -> None:
        """All of them, replacing what is known: read a page at a time, each page sorted
        and kept as 8-byte prefixes (a store of millions of imported keys is never held as
        strings), then the pages merged pairwise (``merged``); sorts and merges run in a
        thread where ``_merge`` is built (a page of 20,000 sorted on the loop held it 10
        ms)."""
        runs: list[Sequence[int]] = []
        seq = 0
        prefix = DigestSet.prefix
        while rows := await self.store.unkeyed_digests(seq, PAGE):
            runs.append(await sorted_array(array("Q", [prefix(digest) for _, digest in rows])))
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
        # counted now: the rows learned before the last round. Those learned since wait for
        # the next (``_fresh``), and what arrives from now on goes to a new set. An import
        # names some 10,000 rows a second: the common case (all held rows above ``after``,
        # and all passed by the count) walks them only in C (min, max, len)
        held, self._held, self._fresh = self._held, self._fresh, set()
        if held and min(held) <= after:
            held = {seq for seq in held if seq > after}
        read: deque[int] = deque(maxlen=lag)  # of the seqs read now, those the lag may reach
        try:
            top = max(held, default=0)
            if lag and top > self._seq:
                # PostgreSQL: an import's concurrent batches interleave their seqs, so rows
                # named since the last round lie among the counted ones; they are held too
                # (else the count fell short and sent the follower to read, most rounds)
                named = (_within(self._held, after, top) | _within(self._fresh, after, top)
                         ) - held
                self._held -= named
                self._fresh -= named
                held |= named
            if top > self._seq and await self.store.count_unkeyed(after, top) == len(held):
                self._seq = after = top  # every row up to ``top`` is held
            # broadcasts are arriving: the rows above the counted ones may be named by them
            # (or be on their way), and wait for the next round
            upto = max(top, after) if self._held or self._fresh else None
            # the keys read already within the lag are not sent again (an idle PostgreSQL
            # replica read the last 2,000 imported keys' rows every second); only those
            # above a page's start are named, so the list shrinks as the pages move past
            while rows := await self.store.unkeyed_digests(
                    after, FOLLOW_PAGE, [seq for seq in held if seq > after] if top > after
                    else [], upto):
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
            if top > floor:  # on SQLite, none once the count passed them
                self._held.update(_within(held, floor, top))
            self._held.update(seq for seq in read if seq > floor)
        if self.digests.merge_due:
            await self.digests.merge()

    async def start(self) -> None:
        await self.load()
        self._follow_in_background()


def _within(seqs: set[int], low: int, high: int) -> set[int]:
    """The seqs in (``low``, ``high``], walking the smaller of the set and the range: the
    range in C when it is the smaller (a round's 10,000 learned rows against a lag of
    2,000), the set otherwise (a seq far above the others, from a failed round or a bogus
    broadcast, made a range of billions)."""
    if high - low < len(seqs):
        return seqs.intersection(range(low + 1, high + 1))
    return {seq for seq in seqs if low < seq <= high}
