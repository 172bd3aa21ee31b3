"""last_used_time without writes on the verify path: aggregated in memory, flushed in
batches by a background task and once more on shutdown."""

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
        self._pending: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str, now_us: int | None = None) -> None:
        self._pending[key_id] = time.time_ns() // 1000 if now_us is None else now_us

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self.store.record_usage(batch)
        except GatewayError as exc:
            log.warning("usage flush failed (%s); will retry", exc.message)
            self._requeue(batch)
        except BaseException:
            self._requeue(batch)  # cancelled mid-write (shutdown): the final flush has it
            raise

    def _requeue(self, batch: dict[str, int]) -> None:
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
