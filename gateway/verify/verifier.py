"""The verify path, top to bottom: classify, digest, look up through the caches, apply
policy, return an outcome. No exceptions for verdicts, no database writes, no Starlette."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from gateway.cache.entry import Entry
from gateway.cache.keycache import CacheMode, KeyCache
from gateway.crypto import tokens
from gateway.crypto.peppers import Peppers
from gateway.errors import Unavailable
from gateway.keys.fields import MAX_CREDENTIAL_BYTES
from gateway.verify.outcomes import Outcome, Result
from gateway.verify.policy import Policy

log = logging.getLogger("gateway.verify")
Mover = Callable[[str, str, str], Coroutine[Any, Any, None]]  # (key id, old digest, new digest)


class DerivedTokens(Protocol):
    """Derived tokens (JWT, macaroon): ``gateway.verify.derived.DerivedVerifier``."""

    def claims_token(self, credential: str) -> bool: ...

    async def verify(self, credential: str, *, client_ip: str | None, mode: CacheMode,
                     expected_audiences: tuple[str, ...]) -> Result: ...


class Verifier:
    """``verify`` is the whole path; ``verify_cached`` is its synchronous prefix, which
    answers from L1 alone (the hot case) or returns None when I/O is needed."""

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
        if not credential or len(credential) > MAX_CREDENTIAL_BYTES or not credential.isascii():
            return Result(Outcome.INVALID_FORMAT)
        if self.derived is not None and self.derived.claims_token(credential):
            return None
        candidates = self.peppers.candidates(credential, digest)
        if not candidates:  # forged: same answer as unknown, no oracle, no lookup
            return Result(Outcome.NOT_FOUND)
        return candidates

    async def lookup(self, candidates: tuple[str, ...], mode: CacheMode = CacheMode.DEFAULT
                     ) -> tuple[Entry | None, str]:
        """The key stored under the first digest of ``candidates`` (the current pepper's),
        else under a retired pepper's digest; a key found there is moved to the current
        pepper in the background."""
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

    def verify_cached(self, credential: str, expected_audiences: tuple[str, ...] = ()
                      ) -> Result | None:
        """The answer for an active key with no per-request policy (no IP allow-list, no
        rate limit) found in L1, or None: then ``verify`` runs the whole path.

        Digest first: a digest in L1 was looked up before, so it passed the format and
        checksum checks then; only misses pay for them (in ``classify``)."""
        if (not credential or len(credential) > MAX_CREDENTIAL_BYTES or expected_audiences
                or not self.cache.l1.enabled):
            return None
        if (credential.startswith(tokens.TOKEN_STARTS) and self.derived is not None
                and self.derived.claims_token(credential)):
            return None
        now = time.monotonic()
        entry = self.cache.plain_l1(self.digester.digest(credential), now)
        if entry is None:
            return None
        self.cache.metrics.cache("L1", True)
        self.usage.record(entry.key_id, now)  # the usage recorder's clock: monotonic
        return Result(Outcome.VALID, entry, "L1")

    async def verify(self, credential: str, *, client_ip: str | None = None,
                     mode: CacheMode = CacheMode.DEFAULT,
                     expected_audiences: tuple[str, ...] = (),
                     digest: str | None = None) -> Result:
        step = self.classify(credential, digest)
        if isinstance(step, Result):
            return step
        if step is None:
            assert self.derived is not None  # classify returns None only for its tokens
            return await self.derived.verify(credential, client_ip=client_ip, mode=mode,
                                             expected_audiences=expected_audiences)
        return await self.check_digest(step, client_ip, mode, expected_audiences)

    async def check_digest(self, candidates: tuple[str, ...], client_ip: str | None,
                           mode: CacheMode, expected_audiences: tuple[str, ...] = (), *,
                           count: bool = True) -> Result:
        """Look up a root key by its candidate digests through the caches and apply its
        policy."""
        try:
            entry, level = await self.lookup(candidates, mode)
        except Unavailable:
            return Result(Outcome.UNAVAILABLE)
        return await self.decide(entry, level, client_ip, expected_audiences, count=count)

    async def decide(self, entry: Entry | None, level: str, client_ip: str | None,
                     expected_audiences: tuple[str, ...] = (), *, count: bool = True
                     ) -> Result:
        return await self.policy.decide(entry, level, client_ip, expected_audiences,
                                        count=count)
