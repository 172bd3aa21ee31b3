"""What the hot routes share: the L1 "yes" of a root key, and the shape of a credential
that may have one.

A "yes" from L1 alone is decided by ``gateway.cache.entry.answers_alone`` (for a whole
batchVerify at once, by ``entry.plain_answers``); this module records the use and counts
it, as the Verifier does for the answers it gives, and finds the bare credentials of a
batch (``bare_many``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from gateway.cache.entry import EXPIRES, KEY_ID, PLAIN, Cached, unexpired
from gateway.crypto import tokens
from gateway.keys.fields import MAX_CREDENTIAL_LENGTH
from gateway.observability.metrics import HotCounters


def bare(credential: object) -> TypeGuard[str]:
    """A credential L1 may answer for: a root key's shape, not a derived token."""
    return (type(credential) is str and 0 < len(credential) <= MAX_CREDENTIAL_LENGTH
            and not credential.startswith(tokens.TOKEN_STARTS))


def _bare_many(items: list[Any], others: list[int]) -> list[str | None]:
    """For each item of a batchVerify, its credential when the item is exactly
    ``{"credential": <str>}`` and the credential is ``bare``; None for every other item,
    and its index appended to ``others``."""
    found = [c if type(item) is dict and len(item) == 1 and bare(c := item.get("credential"))
             else None for item in items]
    others += (i for i, c in enumerate(found) if c is None)
    return found


try:  # the C extension (setup.py): 100 items in 2.4 us against 15.9 us here
    from gateway.cache._plain import bare as _native_bare
except ImportError:
    bare_many = _bare_many
else:
    def bare_many(items: list[Any], others: list[int]) -> list[str | None]:
        return _native_bare(items, MAX_CREDENTIAL_LENGTH, tokens.TOKEN_STARTS, others)


class L1Answers:
    """What L1 holds for a digest (``fresh``), and ``yes``: whether that answers yes by
    itself, with the use recorded."""

    def __init__(self, services: Any) -> None:
        self.enabled: bool = services.cache.l1.enabled
        self.fresh: Callable[[str, float], Cached | None] = services.cache.l1.fresh
        self.digest: Callable[[str], str] = services.digester.digest
        self._used: dict[str, float] = services.usage.pending
        self._valid: dict[str, int] = services.usage.valid
        self._counters: HotCounters = services.metrics.hot

    def yes(self, cached: Cached | None, now: float) -> TypeGuard[Cached]:
        """True when ``cached`` (L1's entry, None: none) answers yes by itself; the use is
        then recorded and counted (the caller answers yes from it)."""
        # gateway.cache.entry.answers_alone, inlined: icount verify 38,112 -> 37,378,
        # batch 1,888,226 -> 1,815,373 instructions a call; the expiry is asked only of a
        # key that has one
        if cached is None or not cached[PLAIN] or (cached[EXPIRES] is not None
                                                   and not unexpired(cached[EXPIRES])):
            return False
        key_id = cached[KEY_ID]
        if self._used.get(key_id, 0.0) < now:  # a later use may have been recorded
            self._used[key_id] = now
        valid = self._valid
        valid[key_id] = valid.get(key_id, 0) + 1  # usage analytics
        self._counters.l1_valid += 1
        return True

    def count(self, answered: int) -> None:
        """``answered`` yes answers given from L1 by a caller that recorded their uses."""
        self._counters.l1_valid += answered

    @property
    def valid(self) -> dict[str, int]:
        """Key id → yes answers given since the usage flush, for callers that count in
        bulk."""
        return self._valid

    @property
    def used(self) -> dict[str, float]:
        """Key id → when it was last used (monotonic), for callers that record in bulk."""
        return self._used
