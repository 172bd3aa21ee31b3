"""The verify path, top to bottom: classify, digest, look up through the caches, apply
policy, return an outcome. No exceptions for verdicts, no database writes, no Starlette."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.cache.entry import Cached, Entry
from gateway.cache.keycache import CacheMode, KeyCache
from gateway.crypto.peppers import Peppers
from gateway.errors import Unavailable
from gateway.keys.fields import MAX_CREDENTIAL_LENGTH
from gateway.verify.outcomes import Outcome, Result
from gateway.verify.policy import Policy

log = logging.getLogger("gateway.verify")
Mover = Callable[[str, str, str], Coroutine[Any, Any, None]]  # (key id, old digest, new digest)


class DerivedTokens(Protocol):
    """Derived tokens (JWT, macaroon): ``gateway.verify.derived.DerivedVerifier``."""

    def claims_token(self, credential: str) -> bool: ...

    async def verify(self, credential: str, *, client_ip: str | None, mode: CacheMode,
                     expected_audiences: tuple[str, ...]) -> Result: ...


@dataclass(frozen=True, slots=True)
class L1Probe:
    """A root key's digest as a caller (a hot route's fast half) computed it, and what L1
    held for it then (``L1.fresh``; None: nothing): ``verify`` neither digests nor asks L1
    again."""

    digest: str
    cached: Cached | None
    # the digests to look up (``Verifier.classify``'s), when the caller has asked the
    # secret's checksum (``Peppers.candidates``) already
    candidates: tuple[str, ...] | None = None


class Verifier:
    """``verify``: the whole path, for every credential and every caller."""

    def __init__(self, peppers: Peppers, cache: KeyCache, policy: Policy,
                 derived: DerivedTokens | None = None, move: Mover | None = None) -> None:
        self.peppers = peppers
        self.digester = peppers.current
        self.cache = cache
        self.policy = policy
        self.usage = policy.usage
        self.derived = derived
        self._move = move
        self._moving: dict[str, asyncio.Task[None]] = {}  # by key id; holds the tasks

    def classify(self, credential: str, digest: str | None = None
                 ) -> Result | tuple[str, ...] | None:
        """An early verdict, the digests to look up (``Peppers.candidates``), or None for a
        derived token. ``digest``: the credential's, when the caller has computed it."""
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH or not credential.isascii():
            return Result(Outcome.INVALID_FORMAT)
        if self.derived is not None and self.derived.claims_token(credential):
            return None
        candidates = self.peppers.candidates(credential, digest)
        if not candidates:  # forged: same answer as unknown, no oracle, no lookup
            return Result(Outcome.NOT_FOUND)
        return candidates

    async def lookup(self, candidates: tuple[str, ...], mode: CacheMode = CacheMode.DEFAULT,
                     probe: L1Probe | None = None) -> tuple[Entry | None, str]:
        """The key stored under the first digest of ``candidates`` (the current pepper's),
        else under a retired pepper's digest; a key found there is moved to the current
        pepper in the background. ``probe``: L1 was asked for the first digest already."""
        if probe is not None and mode is CacheMode.DEFAULT:
            entry, level = await self.cache.lookup_after_l1(candidates[0], probe.cached)
        else:
            entry, level = await self.cache.lookup(candidates[0], mode)
        for old in candidates[1:] if entry is None else ():
            entry, level = await self.cache.lookup(old, mode)
            if entry is not None:
                self._start_move(entry.key_id, old, candidates[0])
                break
        return entry, level

    def _start_move(self, key_id: str, old: str, new: str) -> None:
        if self._move is None or key_id in self._moving:
            return
        task = asyncio.get_running_loop().create_task(self._move(key_id, old, new))
        self._moving[key_id] = task
        task.add_done_callback(lambda t: self._moved(key_id, t))

    def _moved(self, key_id: str, task: asyncio.Task[None]) -> None:
        self._moving.pop(key_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("moving key %s to the current pepper failed: %s (retried on its "
                        "next use)", key_id, type(task.exception()).__name__)

    async def verify(self, credential: str, *, client_ip: str | None = None,
                     mode: CacheMode = CacheMode.DEFAULT,
                     expected_audiences: tuple[str, ...] = (),
                     probe: L1Probe | None = None) -> Result:
        """The verdict on ``credential``: a root key through the caches and its policy, or
        a derived token (``DerivedTokens``). ``probe``: its digest and L1 entry, when the
        caller has them."""
        step = (self.classify(credential, probe.digest if probe is not None else None)
                if probe is None or probe.candidates is None else probe.candidates)
        if isinstance(step, Result):
            return step
        if step is None:
            assert self.derived is not None  # classify returns None only for its tokens
            return await self.derived.verify(credential, client_ip=client_ip, mode=mode,
                                             expected_audiences=expected_audiences)
        return await self.check_digest(step, client_ip, mode, expected_audiences, probe=probe)

    async def check_digest(self, candidates: tuple[str, ...], client_ip: str | None,
                           mode: CacheMode, expected_audiences: tuple[str, ...] = (), *,
                           count: bool = True, probe: L1Probe | None = None) -> Result:
        """Look up a root key by its candidate digests through the caches and apply its
        policy."""
        try:
            entry, level = await self.lookup(candidates, mode, probe)
        except Unavailable:
            return Result(Outcome.UNAVAILABLE)
        return await self.decide(entry, level, client_ip, expected_audiences, count=count)

    async def decide(self, entry: Entry | None, level: str, client_ip: str | None,
                     expected_audiences: tuple[str, ...] = (), *, count: bool = True
                     ) -> Result:
        return await self.policy.decide(entry, level, client_ip, expected_audiences,
                                        count=count)
