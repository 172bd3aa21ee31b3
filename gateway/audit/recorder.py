"""The audit trail's background work: what is counted rather than recorded one by one,
and retention.

Refused admin authentications and failed verifications can come in floods, so they are
counted in memory (``AdminTokens.refusals`` by client address; the verify outcomes the
metrics count already) and written once a minute as at most two events, whatever the
rate: a flood cannot flood the store. The verify path pays nothing for it. Events older
than the retention are deleted once an hour. A clean shutdown writes the last counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.audit.events import SYSTEM, AuditEvent, event
from gateway.store.base import Store
from gateway.tasks import cancel

log = logging.getLogger("gateway.audit")

FLUSH_S = 60.0
PRUNE_S = 3600.0
TOP_CLIENTS = 20  # the clients named in a refusals event; the rest are summed


class AuditRecorder:
    def __init__(self, store: Store, refusals: dict[str, int],
                 verify_results: Callable[[], dict[tuple[str, str], int]],
                 retention_s: float | None, *, flush_s: float = FLUSH_S) -> None:
        self._store = store
        self._refusals = refusals
        self._results = verify_results
        self._retention_s = retention_s
        self._flush_s = flush_s
        self._failed_before = self._failures()
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-recorder")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
                if time.monotonic() - self._pruned_at >= PRUNE_S:
                    await self.prune()
            except Exception:  # the store may be down: the counts wait for the next turn
                log.exception("audit: counted events not written")

    def _failures(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (outcome, _level), n in list(self._results().items()):
            if outcome != "valid":
                out[outcome] = out.get(outcome, 0) + n
        return out

    def counted(self) -> list[AuditEvent]:
        """The counted events since the last call (and resets the counts)."""
        events: list[AuditEvent] = []
        refusals = dict(self._refusals)
        self._refusals.clear()
        if refusals:
            top = sorted(refusals.items(), key=lambda item: -item[1])
            named = dict(top[:TOP_CLIENTS])
            others = sum(n for _, n in top[TOP_CLIENTS:])
            if others:
                named["other"] = named.get("other", 0) + others
            events.append(event("admin.authentication_refused", "admin", outcome="failure",
                                principal=SYSTEM, count=sum(refusals.values()),
                                clients=named))
        failed = self._failures()
        delta = {o: n - self._failed_before.get(o, 0) for o, n in failed.items()
                 if n > self._failed_before.get(o, 0)}
        self._failed_before = failed
        if delta:
            events.append(event("key.verification_failed", "apiKeys", outcome="failure",
                                principal=SYSTEM, count=sum(delta.values()),
                                outcomes=delta))
        return events

    async def flush(self) -> None:
        events = self.counted()
        if events:
            await self._store.insert_audit(events)

    async def prune(self) -> int:
        self._pruned_at = time.monotonic()
        if self._retention_s is None:
            return 0
        before = time.time_ns() // 1000 - int(self._retention_s * 1_000_000)
        return await self._store.prune_audit(before)
