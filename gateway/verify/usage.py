"""last_used_time without writes on the verify path: aggregated in memory, flushed in
batches by a background task and once more on shutdown.

Uses are stamped with the monotonic clock the caller already read (the L1 lookup needs
it), and turned into wall-clock microseconds only when a batch is flushed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.errors import GatewayError
from gateway.store.base import Store

log = logging.getLogger("gateway.usage")
CHUNK = 4_000  # keys a write


class UsageRecorder:
    def __init__(self, store: Store, interval_s: float = 5.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self._pending: dict[str, float] = {}  # key id -> monotonic seconds of the last use
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

    async def flush(self) -> None:
        """Write the uses recorded since the last flush, ``CHUNK`` keys a write, yielding
        to the event loop between chunks: a flush of 100,000 keys done in one go held the
        loop for 225 ms (converting and sorting them) and every request waited."""
        if not self._pending:
            return
        # two lists of strings and floats, not a (key, time) tuple each: 100,000 tuples
        # living through the flush reached the oldest GC generation and set off a full
        # collection (130 ms with 200,000 keys in L1) at every flush
        key_ids, uses = list(self._pending), list(self._pending.values())
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

    def _requeue(self, key_ids: list[str], uses: list[float]) -> None:
        for key_id, used in zip(key_ids, uses, strict=True):
            self._pending[key_id] = max(used, self._pending.get(key_id, 0))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
