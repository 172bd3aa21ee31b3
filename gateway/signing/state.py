"""Named JSON documents in the store, updated by compare-and-set.

Every writer reads the document, computes the new one from it and writes it back only if
nobody changed it meanwhile (``store.put_state(name, new, expected=old)``); otherwise it
reads again and retries. Creation is insert-if-absent (``expected=None``), so two replicas
starting at once cannot both create a document: the loser re-reads the winner's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from gateway.audit.events import AuditEvent
from gateway.errors import Internal, Unavailable
from gateway.signing.seal import Sealer, SealError

log = logging.getLogger("gateway.signing")
MAX_ATTEMPTS = 16


class StateStore(Protocol):
    """The part of ``gateway.store.Store`` this package uses."""

    async def get_state(self, name: str) -> str | None: ...
    async def put_state(self, name: str, value: str, expected: str | None,
                        audit: Sequence[AuditEvent] = ()) -> bool: ...


class Unchanged:
    """Returned by an update function that has nothing to write."""


UNCHANGED = Unchanged()


class Documents:
    """JSON documents, sealed when a Sealer is given (documents holding private keys)."""

    def __init__(self, store: StateStore, sealer: Sealer | None = None) -> None:
        self._store = store
        self._sealer = sealer

    def encode(self, name: str, doc: Any) -> str:
        text = orjson.dumps(doc).decode()
        return self._sealer.seal(text, name) if self._sealer else text

    def decode(self, name: str, raw: str) -> Any:
        try:
            text = self._sealer.open(raw, name) if self._sealer else raw
            return orjson.loads(text)
        except (SealError, orjson.JSONDecodeError) as exc:
            log.error("state document %s is unreadable: %s", name, exc)
            raise Internal(f"state document {name!r} is unreadable") from None

    async def read(self, name: str) -> tuple[Any, str | None]:
        """``(document or None, stored text or None)``. A document sealed under a retired
        pepper is sealed again under the current one (compare-and-set), so that pepper can
        be dropped from the configuration once every replica has read its documents."""
        raw = await self._store.get_state(name)
        if raw is None:
            return None, None
        doc = self.decode(name, raw)
        if self._sealer is not None and self._sealer.sealed_by_retired(raw, name):
            resealed = self.encode(name, doc)
            if await self._store.put_state(name, resealed, raw):
                log.info("state document %s sealed again under the current pepper", name)
                raw = resealed
        return doc, raw

    async def update(self, name: str, change: Callable[[Any], Any],
                     audit: Sequence[AuditEvent] = ()) -> tuple[Any, str | None]:
        """Apply ``change(current or None)`` by compare-and-set until it sticks.

        ``change`` may run more than once (after a lost race) and may raise a GatewayError
        to abort; returning ``UNCHANGED`` writes nothing. Returns ``(document, stored)``.
        ``audit`` is written with the document, in its transaction (nothing when unchanged).
        """
        for _ in range(MAX_ATTEMPTS):
            current, raw = await self.read(name)
            new = change(current)
            if new is UNCHANGED:
                return current, raw
            encoded = self.encode(name, new)
            if await self._store.put_state(name, encoded, raw, audit):
                return new, encoded
        raise Unavailable(f"too many concurrent updates of {name!r}; try again")
