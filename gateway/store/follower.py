"""A background task that follows the store: ``follow`` every ``interval`` seconds, a
failure logged and tried again at the next interval (the store may be down for a while)."""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import GatewayError

log = logging.getLogger("gateway.store")


class StoreFollower:
    interval = 1.0
    what = "following the store"  # for the warning when a read fails

    _task: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        raise NotImplementedError

    def _follow_in_background(self) -> None:
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow()
            except GatewayError as exc:
                log.warning("%s failed: %s", self.what, exc.message)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
