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
        if not self._pending:
            return
        taken = self._pending.copy()
        self._pending.clear()  # the same dict: the hot path holds it
        wall_us, mono = time.time_ns() // 1000, time.monotonic()
        batch = {key_id: wall_us - int((mono - used) * 1_000_000)
                 for key_id, used in taken.items()}
        try:
            await self.store.record_usage(batch)
        except GatewayError as exc:
            log.warning("usage flush failed (%s); will retry", exc.message)
            self._requeue(taken)
        except BaseException:
            self._requeue(taken)  # cancelled mid-write (shutdown): the final flush has it
            raise

    def _requeue(self, batch: dict[str, float]) -> None:
        for key_id, used in batch.items():
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
