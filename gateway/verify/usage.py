"""last_used_time and usage analytics without writes on the verify path: aggregated in
memory, flushed in batches by a background task and once more on shutdown.

Uses are stamped with the monotonic clock the caller already read (the L1 lookup needs
it), and turned into wall-clock microseconds only when a batch is flushed. Verifications
are counted per key and outcome (``valid``: the hot path's yes answers, one dict update;
``outcomes``: the general path's, by outcome) and added to the minute bucket of their
flush (so a count may land up to one flush interval, 5 s, late)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from array import array
from collections.abc import Sequence

from gateway.cache.untrack import untracked
from gateway.errors import GatewayError
from gateway.store.base import Store
from gateway.tasks import cancel

log = logging.getLogger("gateway.usage")
CHUNK = 1_000  # keys (or count rows) a write: 4,000 held the loop 3-10 ms a chunk
PRUNE_S = 3600.0  # how often buckets older than the retention are deleted


class UsageRecorder:
    def __init__(self, store: Store, interval_s: float = 5.0,
                 retention_s: float | None = 30 * 86_400) -> None:
        self.store = store
        self.interval_s = interval_s
        self._pending: dict[str, float] = {}  # key id -> monotonic seconds of the last use
        self.valid: dict[str, int] = {}  # key id -> yes answers since the last flush
        self.outcomes: dict[tuple[str, str], int] = {}  # (key id, OUTCOME) -> answers
        self.retention_s = retention_s
        self._pruned_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> dict[str, float]:
        """The map the hot path writes into directly: key id -> ``time.monotonic()``.
        Always the same dict object, so a caller may keep a reference to it."""
        return self._pending

    def record(self, key_id: str, monotonic: float | None = None) -> None:
        """A use of the key at ``monotonic`` (now by default). Uses are recorded as their
        requests finish, not in the order they started: the latest use wins, so
        last_used_time never moves backwards (the store keeps the later one too)."""
        used = time.monotonic() if monotonic is None else monotonic
        if self._pending.get(key_id, 0.0) < used:
            self._pending[key_id] = used

    def count(self, key_id: str, outcome: str) -> None:
        """One verification of the key with ``outcome`` (``VALID``, ``EXPIRED``…)."""
        key = (key_id, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    async def flush_counts(self) -> None:
        """Add the counts since the last flush to this minute's buckets, ``CHUNK`` rows a
        transaction, yielding to the event loop between them: 100,000 keys' counts merged
        and sorted in one go held the loop 120-210 ms every flush (the usage-stall row's
        gaps). A statement's rows come either from the hot path's yes answers or from the
        general path's outcomes, never both, so it names each bucket once (PostgreSQL
        refuses an upsert that touches a row twice)."""
        if not self.valid and not self.outcomes:
            return
        minute = int(time.time()) // 60 * 60
        # parallel columns (key id, outcome, count), untracked: see flush()
        ids = untracked(tuple(self.valid) + tuple(k for k, _ in self.outcomes))
        names = untracked(("VALID",) * len(self.valid) + tuple(o for _, o in self.outcomes))
        counts = array("q", self.valid.values())
        counts.extend(self.outcomes.values())
        bounds = (0, len(self.valid), len(ids))
        self.valid.clear()  # the same dict: the hot path holds it
        self.outcomes.clear()
        for lo, hi in itertools.pairwise(bounds):
            for start in range(lo, hi, CHUNK):
                end = min(start + CHUNK, hi)
                try:
                    await self.store.add_usage_counts(
                        [(ids[i], minute, names[i], counts[i]) for i in range(start, end)])
                except BaseException:  # the store is down, or shutdown: counted next time
                    for i in range(start, len(ids)):
                        key = (ids[i], names[i])
                        self.outcomes[key] = self.outcomes.get(key, 0) + counts[i]
                    raise

    async def prune(self) -> int:
        self._pruned_at = time.monotonic()
        if self.retention_s is None:
            return 0
        return await self.store.prune_usage(int(time.time() - self.retention_s) // 60 * 60)

    async def flush(self) -> None:
        """Write the uses recorded since the last flush, ``CHUNK`` keys a write, yielding
        to the event loop between chunks: a flush of 100,000 keys done in one go held the
        loop for 225 ms (converting and sorting them) and every request waited."""
        if not self._pending:
            return
        # a tuple of strings and an array of floats, not a (key, time) tuple each: 100,000
        # tuples living through the flush reached the oldest GC generation and set off a
        # full collection (130 ms with 200,000 keys in L1) at every flush; and untracked,
        # not lists: two lists of 113,000 were walked by every collection during a flush
        key_ids = untracked(tuple(self._pending))
        uses = array("d", self._pending.values())
        self._pending.clear()  # the same dict: the hot path holds it
        wall_us, mono = time.time_ns() // 1000, time.monotonic()
        for start in range(0, len(key_ids), CHUNK):
            end = start + CHUNK
            try:
                await self.store.record_usage({
                    key_id: wall_us - int((mono - used) * 1_000_000)
                    for key_id, used in zip(key_ids[start:end], uses[start:end], strict=True)})
            except GatewayError as exc:
                log.warning("usage flush failed (%s); will retry", exc.message)
                self._requeue(key_ids[start:], uses[start:])
                return
            except BaseException:
                # cancelled (shutdown): the final flush has it
                self._requeue(key_ids[start:], uses[start:])
                raise

    def _requeue(self, key_ids: Sequence[str], uses: Sequence[float]) -> None:
        for key_id, used in zip(key_ids, uses, strict=True):
            self._pending[key_id] = max(used, self._pending.get(key_id, 0))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()
            try:
                await self.flush_counts()
                if time.monotonic() - self._pruned_at >= PRUNE_S:
                    await self.prune()
            except GatewayError as exc:
                log.warning("usage counts not written (%s); will retry", exc.message)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="usage-flush")

    async def stop(self) -> None:
        await cancel(self._task)
        await self.flush()
        try:
            await self.flush_counts()
        except GatewayError as exc:
            log.warning("usage counts lost at shutdown (%s)", exc.message)
