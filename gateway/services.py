"""The composition root: every dependency is built here, once, and handed in explicitly."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.audit.recorder import AuditRecorder
from gateway.cache.changes import CONFIRM_S, ChangeFollower
from gateway.cache.keycache import KeyCache, key_id_cache_key
from gateway.cache.redis_backend import RedisBackend
from gateway.crypto import digests
from gateway.crypto.admin_tokens import AdminTokens
from gateway.crypto.digests import PREFIX as DIGEST_PREFIX
from gateway.crypto.digests import Digester
from gateway.crypto.peppers import Peppers
from gateway.errors import ConfigError
from gateway.http.auth import AdminGate
from gateway.http.client_ip import Trusted
from gateway.keys.derive import Deriver
from gateway.keys.model import ApiKey, Kind
from gateway.keys.service import KeyService
from gateway.keys.unkeyed import UnkeyedFollower
from gateway.observability.metrics import Metrics
from gateway.secret import Secret
from gateway.settings import Settings
from gateway.signing import JwkSets, Keyring, ResourceServerKeys, build_keyring, sealer_for
from gateway.store import Store, build_store
from gateway.verify.derived import DerivedVerifier
from gateway.verify.policy import Policy
from gateway.verify.ratelimit import RateLimiter
from gateway.verify.usage import UsageRecorder
from gateway.verify.verifier import Verifier

if TYPE_CHECKING:  # imported by build_services only when tracing is on
    from gateway.observability.tracing import Tracing

# Invalidated items applied between two yields to the loop. A 1,000-key import batch applied
# at once held replica B's requests 0.9 ms (p99 4.6 ms), about five times a second: its
# cached verifies' p99 went from 3.1 to 6.5 ms during an import (load/bulk_import.py).
# Slices of 200 still held the loop 0.3-1 ms each on a replica busy with requests (timed
# per callback beside an import); 64 keep each under about 0.2 ms.
APPLY_SLICE = 64
log = logging.getLogger("gateway")
SIGNING_CHANGED = "signing:refresh"  # an invalidation item: re-read the signing keys


class CacheInvalidator:
    """KeyEvents → cache invalidation: L1 here, L2, and every replica's L1. A change that
    alters an answer (revoke, rotate, update, delete) is answered only once every replica
    has confirmed it, through Redis or the store's change log (``ChangeFollower.confirm``):
    a success answer to a change means every replica honours it."""

    def __init__(self, cache: KeyCache, changes: ChangeFollower) -> None:
        self.cache = cache
        self.changes = changes

    async def key_changed(self, key: ApiKey, *old_digests: str) -> None:
        deadline = time.monotonic() + CONFIRM_S
        acked = await self.cache.invalidate(
            [key.digest, key_id_cache_key(key.key_id), *old_digests])
        await self.changes.confirm(acked, deadline)

    async def keys_added(self, keys: Sequence[ApiKey], *old_digests: str) -> None:
        """New keys (imports) or digests moved to the current pepper: "not found" answers
        cached for them go (one invalidation, one round of acks), without confirmation:
        no answer that an earlier one forbade becomes possible. New imported keys' rows
        go with them, so the replicas' store followers need not read them again."""
        seqs = () if old_digests else [key.seq for key in keys
                                       if key.kind is Kind.IMPORTED and key.seq > 0]
        await self.cache.invalidate([*(item for key in keys
                                       for item in (key.digest, key_id_cache_key(key.key_id))),
                                     *old_digests], added=True, seqs=seqs)


@dataclass
class Services:
    settings: Settings
    store: Store
    digester: Digester
    peppers: Peppers
    admin_tokens: AdminTokens
    admin_gate: AdminGate
    keys: KeyService
    metrics: Metrics
    cache: KeyCache
    verifier: Verifier
    derived: DerivedVerifier
    usage: UsageRecorder
    signing: Keyring
    deriver: Deriver
    jwk_sets: JwkSets
    resource_keys: ResourceServerKeys
    trusted: Trusted
    unkeyed: UnkeyedFollower
    changes: ChangeFollower
    audit: AuditRecorder
    redis: RedisBackend | None = None
    tracing: Tracing | None = None  # GATEWAY_OTEL_ENDPOINT set (or handed in by a test)
    _unwatch_gc: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.store.open()
        pending = await self.store.pending_migrations()
        if pending:
            raise ConfigError(
                f"GATEWAY_DATABASE_URL: schema is not migrated ({', '.join(pending)} pending); "
                "run `gateway migrate`"
            )
        await self.unkeyed.start()
        await self.changes.start()
        await self.signing.start(on_rotated=self.signing_changed)
        if self.redis is not None:
            await self.redis.start_listener(self._on_invalidate)
        self.usage.start()
        self.audit.start()
        self._unwatch_gc = self.metrics.watch_gc()

    async def _on_invalidate(self, items: list[str], added: bool = False,
                             seqs: Sequence[int] = ()) -> None:
        """Applied on every replica, before it acks the invalidation: ``APPLY_SLICE`` items
        at a time, with the loop free between (an import's batch names 1,000 keys).
        ``seqs``: the rows of the imported keys among them (``UnkeyedFollower.learned``)."""
        for start in range(0, len(items), APPLY_SLICE):
            if start:
                await asyncio.sleep(0)
            part = items[start:start + APPLY_SLICE]
            self.cache.forget(part, added=added)
            # a new imported key's digest, say: look it up from now on
            self.peppers.unkeyed.add_many([i for i in part if i.startswith(DIGEST_PREFIX)])
        if added and seqs:
            self.unkeyed.learned(seqs)
        if SIGNING_CHANGED in items:
            await self.signing.refresh()
            self.derived.forget()

    async def signing_changed(self) -> None:
        """Make every replica re-read the signing keys before returning (after a rotation)."""
        if self.redis is not None:
            await self.redis.publish_invalidation([SIGNING_CHANGED])

    async def stop(self) -> None:
        if self._unwatch_gc is not None:
            self._unwatch_gc()
        await self.unkeyed.stop()
        await self.changes.stop()
        await self.signing.stop()
        await self.usage.stop()
        await self.audit.stop()  # the last counts, while the store is open
        await self.cache.close()
        if self.redis is not None:
            await self.redis.close()
        await self.store.close()
        self.admin_tokens.close()
        if self.tracing is not None:  # the last spans, exported off the event loop
            await asyncio.to_thread(self.tracing.shutdown)


def _local_secret(path: Path, nbytes: int) -> Secret:
    """Read a generated secret kept beside the SQLite file, creating it (0600) on first use."""
    if path.exists():
        return Secret(path.read_text(encoding="utf-8").strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    log.info("generated %s", path)
    return Secret(value)


def resolve_pepper(settings: Settings) -> Secret:
    if settings.pepper is not None:
        return settings.pepper
    if not settings.is_sqlite:
        raise ConfigError("GATEWAY_PEPPER: must be set when the store is PostgreSQL "
                          "(every replica needs the same pepper)")
    return _local_secret(settings.data_dir / "pepper", 32)


def resolve_admin_tokens(settings: Settings) -> tuple[Secret, ...]:
    if settings.admin_tokens:
        return settings.admin_tokens
    if not settings.is_sqlite:
        raise ConfigError("GATEWAY_ADMIN_TOKENS: must be set when the store is PostgreSQL")
    path = settings.data_dir / "admin-token"
    token = _local_secret(path, 32)
    log.info("no GATEWAY_ADMIN_TOKENS set: admin token is in %s", path)
    return (token,)


def build_services(settings: Settings, *, store: Store | None = None,
                   tracing: Tracing | None = None) -> Services:
    """``tracing``: spans to export (tests hand in one with an in-memory exporter); by
    default OTLP to GATEWAY_OTEL_ENDPOINT when it is set, and none otherwise."""
    digester = Digester(resolve_pepper(settings))
    retired = tuple(Digester(p) for p in settings.pepper_retired)
    if not digests.NATIVE:
        log.warning("gateway.crypto._hmac256 is not built (no C compiler or OpenSSL headers "
                    "at install): credential digests run in Python, several times slower")
    store = store or build_store(settings)
    metrics = Metrics()
    if tracing is None and settings.otel_endpoint:
        from gateway.observability.tracing import Tracing

        tracing = Tracing.otlp(settings.otel_endpoint)
    redis_backend: Callable[[str, Metrics], RedisBackend] = RedisBackend
    if tracing is not None:  # off by default: the plain store and Redis client
        store = tracing.store(store, "sqlite" if settings.is_sqlite else "postgresql")
        redis_backend = tracing.redis
    redis = redis_backend(settings.redis_url, metrics) if settings.redis_url else None
    cache = KeyCache(store, metrics, issuer=settings.issuer, l1_ttl=settings.l1_ttl,
                     l1_size=settings.l1_size, l2_ttl=settings.l2_ttl,
                     negative_ttl=settings.negative_ttl, redis=redis)
    peppers = Peppers(digester, retired, (settings.key_prefix, settings.public_key_prefix))
    changes = ChangeFollower(
        store, cache, redis.replica_id if redis is not None else uuid.uuid4().hex[:12],
        grace=settings.store_grace, l2_ttl=settings.l2_ttl,
        subscribed=(redis.subscribed.is_set if redis is not None else lambda: False))
    keys = KeyService(store, peppers, key_prefix=settings.key_prefix,
                      public_key_prefix=settings.public_key_prefix,
                      default_ttl=settings.default_key_ttl, max_ttl=settings.max_key_ttl,
                      events=CacheInvalidator(cache, changes))
    usage = UsageRecorder(store, retention_s=settings.usage_retention_s)
    policy = Policy(RateLimiter(redis), usage)
    signing = build_keyring(settings, store, digester, *retired)
    metrics.watch_signing(signing.schedule)
    derived = DerivedVerifier(policy, signing, cache, peppers, metrics, settings.issuer)
    verifier = Verifier(peppers, cache, policy, derived, move=keys.move_to_current_pepper)
    deriver = Deriver(store, peppers, signing, metrics, issuer=settings.issuer,
                      max_ttl_s=keys.max_ttl_s)
    admin_tokens = AdminTokens(resolve_admin_tokens(settings),
                               delay_max=settings.admin_refusal_delay,
                               delay_base=min(0.05, settings.admin_refusal_delay))
    trusted = Trusted(settings.trusted_proxies)
    return Services(settings=settings, store=store, digester=digester, peppers=peppers,
                    admin_tokens=admin_tokens, admin_gate=AdminGate(admin_tokens, trusted),
                    keys=keys,
                    metrics=metrics, cache=cache, verifier=verifier, derived=derived,
                    usage=usage, redis=redis, tracing=tracing,
                    signing=signing, deriver=deriver, trusted=trusted,
                    jwk_sets=JwkSets(store, sealer_for(*peppers.all)),
                    resource_keys=ResourceServerKeys(store),
                    unkeyed=UnkeyedFollower(store, peppers.unkeyed),
                    changes=changes,
                    audit=AuditRecorder(store, admin_tokens.refusals,
                                        lambda: metrics.hot.results,
                                        settings.audit_retention_s))
