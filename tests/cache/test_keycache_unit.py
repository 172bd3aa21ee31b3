"""Unit tests of the read-through key cache (L1 → L2 → store) against a fake store and
fakeredis.

fakeredis runs without a Lua interpreter here, so the two Lua scripts of ``RedisBackend``
are replaced by Python equivalents with the same semantics (EXISTS-guarded SET PX, and
INCR + PEXPIRE). The real scripts run against a real Redis in ``tests/verify``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.cache import changes
from gateway.cache.changes import ChangeFollower
from gateway.cache.entry import NOT_FOUND, Entry, answers_alone
from gateway.cache.keycache import CacheMode, KeyCache, cache_mode
from gateway.cache.l1 import L1
from gateway.cache.redis_backend import RedisBackend
from gateway.errors import Unavailable
from gateway.keys.model import ApiKey, Kind, RateLimit
from gateway.observability.metrics import Metrics

DIGEST = "hs256:" + "ab" * 32


def make_key(key_id: str = "key-1", *, digest: str = DIGEST, revoked: bool = False,
             expire_in_s: float | None = None, scopes: tuple[str, ...] = ("read",)) -> ApiKey:
    now = time.time_ns() // 1000
    return ApiKey(key_id=key_id, kind=Kind.ISSUED, digest=digest, create_time=now,
                  update_time=now, actor_id="actor", scopes=scopes,
                  expire_time=None if expire_in_s is None else now + int(expire_in_s * 1e6),
                  revoke_time=now if revoked else None)


class FakeStore:
    """``get_by_digest`` over a dict. A read takes its snapshot of the row *before* it
    waits on the next gate, like a query whose answer is still in flight."""

    def __init__(self) -> None:
        self.rows: dict[str, ApiKey] = {}
        self.reads = 0
        self.gates: list[asyncio.Event] = []
        self.entered = asyncio.Event()
        self.down = False

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        self.reads += 1
        if self.down:
            raise Unavailable("the key store is unavailable")
        row = self.rows.get(digest)
        gate = self.gates.pop(0) if self.gates else None
        self.entered.set()
        if gate is not None:
            await gate.wait()
        return row


def fake_backend(server: fakeredis.FakeServer, metrics: Metrics) -> RedisBackend:
    """A RedisBackend whose connections go to a fakeredis server."""
    backend = RedisBackend("redis://fake.invalid:6379/0", metrics)
    client = fakeredis.aioredis.FakeRedis(server=server)
    backend._client = client

    async def fill(keys: list[str], args: list[Any]) -> int:
        if await client.exists(keys[1]):
            return 0
        await client.set(keys[0], args[0], px=int(args[1]))
        return 1

    async def incr(keys: list[str], args: list[Any]) -> list[int]:
        n = await client.incr(keys[0])
        if n == 1:
            await client.pexpire(keys[0], int(args[0]))
        return [n, await client.pttl(keys[0])]

    async def invalidate(keys: list[str], args: list[Any]) -> int:
        target = backend._client  # a test may swap in a broken one
        for i in range(0, len(keys), 2):
            await target.set(keys[i + 1], b"1", ex=int(args[0]))
            await target.delete(keys[i])
        return len(keys) // 2

    backend._fill = fill  # type: ignore[assignment]
    backend._incr = incr  # type: ignore[assignment]
    backend._invalidate = invalidate  # type: ignore[assignment]
    backend._make_listener_client = (  # type: ignore[method-assign]
        lambda: fakeredis.aioredis.FakeRedis(server=server))
    return backend


def make_cache(store: FakeStore, redis: RedisBackend | None = None, *, l1_ttl: float = 60.0,
               l1_size: int = 1000, l2_ttl: float = 300.0, negative_ttl: float = 5.0
               ) -> KeyCache:
    return KeyCache(store, redis.metrics if redis else Metrics(),  # type: ignore[arg-type]
                    issuer="https://issuer.test", l1_ttl=l1_ttl, l1_size=l1_size,
                    l2_ttl=l2_ttl, negative_ttl=negative_ttl, redis=redis)


def plain_l1(cache: KeyCache, digest: str, now: float) -> Entry | None:
    """The entry L1 answers yes for by itself (``answers_alone``), as the hot routes ask."""
    cached = cache.l1.fresh(digest, now)
    return Entry.unpacked(cached) if cached is not None and answers_alone(cached) else None


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server: fakeredis.FakeServer) -> AsyncIterator[RedisBackend]:
    backend = fake_backend(server, Metrics())
    yield backend
    await backend.close()


@pytest.fixture
def raw(server: fakeredis.FakeServer) -> fakeredis.aioredis.FakeRedis:
    """A plain client on the same fake server, to look at what the cache wrote."""
    return fakeredis.aioredis.FakeRedis(server=server)


# -- cache_mode ----------------------------------------------------------------------


@pytest.mark.parametrize(("cache_control", "pragma", "expected"), [
    (None, None, CacheMode.DEFAULT),
    ("", "", CacheMode.DEFAULT),
    ("no-cache", None, CacheMode.NO_CACHE),
    ("No-Cache", None, CacheMode.NO_CACHE),
    ("max-age=0, no-cache", None, CacheMode.NO_CACHE),
    ('no-cache="set-cookie"', None, CacheMode.NO_CACHE),
    ("no-store", None, CacheMode.NO_STORE),
    ("NO-STORE", None, CacheMode.NO_STORE),
    ("no-cache, no-store", None, CacheMode.NO_STORE),
    ("no-store", "no-cache", CacheMode.NO_STORE),
    ("max-age=0", None, CacheMode.DEFAULT),
    ("private, must-revalidate", None, CacheMode.DEFAULT),
    ("x-no-store", None, CacheMode.DEFAULT),
    (None, "no-cache", CacheMode.NO_CACHE),
    (None, "NO-CACHE", CacheMode.NO_CACHE),
    ("max-age=60", "no-cache", CacheMode.NO_CACHE),
    (None, "no-store", CacheMode.DEFAULT),
    (None, "x-no-cache-y", CacheMode.DEFAULT),
    (None, "foo", CacheMode.DEFAULT),
])
def test_cache_mode_parses_cache_control_and_pragma(
        cache_control: str | None, pragma: str | None, expected: CacheMode) -> None:
    assert cache_mode(cache_control, pragma) is expected


# -- L1 ------------------------------------------------------------------------------


def test_l1_never_holds_more_than_its_bound() -> None:
    l1: L1[str] = L1(max_entries=100, ttl=60)
    now = time.monotonic()
    for i in range(1000):
        l1.put(f"d{i}", f"v{i}", 60, now)
        assert len(l1) <= 100
    assert l1.get("d999", now) == (True, "v999")
    assert l1.get("d0", now) == (False, None)


def test_l1_evicts_expired_entries_before_live_ones() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=60)
    now = time.monotonic()
    for i in range(5):
        l1.put(f"short{i}", "s", 0.001, now - 1)  # already expired
    for i in range(5):
        l1.put(f"live{i}", "l", 60, now)
    l1.put("one-more", "x", 60, now)
    assert all(l1.get(f"live{i}", now)[0] for i in range(5))
    assert l1.get("one-more", now) == (True, "x")


def test_l1_drops_a_fill_that_started_before_an_invalidation() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=60)
    started = time.monotonic()
    l1.invalidate("d")
    l1.put("d", "stale", 60, started)
    assert l1.get("d", time.monotonic()) == (False, None)
    l1.put("d", "fresh", 60, time.monotonic())
    assert l1.get("d", time.monotonic()) == (True, "fresh")


def test_l1_with_zero_ttl_is_disabled() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=0)
    assert not l1.enabled
    l1.put("d", "v", 60, time.monotonic())
    assert l1.get("d", time.monotonic()) == (False, None)


def test_l1_entry_ttl_is_capped_by_the_l1_ttl() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=2)
    now = time.monotonic()
    l1.put("d", "v", 600, now)
    assert l1.get("d", now + 1.9)[0]
    assert not l1.get("d", now + 2.1)[0]


def test_l1_fresh_answers_only_unexpired_positive_entries() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=5)
    now = time.monotonic()
    l1.put("live", "v", 5, now)
    l1.put("negative", None, 5, now)
    assert l1.fresh("live", now + 1) == "v"
    assert l1.fresh("live", now + 5.1) is None
    assert l1.fresh("negative", now + 1) is None
    assert l1.fresh("absent", now) is None
    assert l1.fresh_many(["absent", "live", "negative", "live"], now + 1) == [
        None, "v", None, "v"]


async def test_plain_l1_answers_only_for_a_cached_plain_unexpired_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    plain, guarded, limited, expiring, missing = (f"hs256:{c * 64}" for c in "12345")
    store.rows[plain] = make_key("plain", digest=plain)
    store.rows[guarded] = dataclasses.replace(make_key("guarded", digest=guarded),
                                              allowed_cidrs=("10.0.0.0/8",))
    store.rows[limited] = dataclasses.replace(make_key("limited", digest=limited),
                                              rate_limit=RateLimit(quota=5, window_s=60))
    store.rows[expiring] = make_key("expiring", digest=expiring, expire_in_s=3600)
    cache = make_cache(store)
    now = time.monotonic()
    assert plain_l1(cache, plain, now) is None  # not cached yet: the caller looks it up
    for digest in (plain, guarded, limited, expiring, missing):
        await cache.lookup(digest)
    now = time.monotonic()
    assert [e.key_id if (e := plain_l1(cache, d, now)) else None
            for d in (plain, guarded, limited, expiring, missing)] == [
        "plain", None, None, "expiring", None]
    entry = plain_l1(cache, expiring, now)
    assert entry is not None and entry.expire_time is not None
    # the wall clock stepped past the key's expiry since it was cached
    stepped = (entry.expire_time + 1) * 1000
    monkeypatch.setattr("gateway.cache.entry.time.time_ns", lambda: stepped)
    assert plain_l1(cache, expiring, now) is None


def test_l1_asks_for_a_refresh_of_a_hit_in_the_last_quarter_of_its_life() -> None:
    calls: list[str] = []
    l1: L1[str] = L1(max_entries=10, ttl=8)
    l1.on_due = lambda: calls.append("due")
    now = time.monotonic()
    l1.put("hot", "v", 8, now)
    l1.put("negative", None, 8, now)
    l1.put("ending", "e", 2, now)  # cut short by its key's expiry: meant to end
    assert l1.fresh("hot", now + 5.9) == "v" and not l1.due
    assert l1.fresh("hot", now + 6.1) == "v"  # still answered while due
    assert l1.fresh_many(["hot", "ending", "negative"], now + 6.2) == ["v", None, None]
    assert l1.get("hot", now + 7) == (True, "v")
    assert set(l1.due) == {"hot"} and calls == ["due"]  # told once, when the first became due
    assert l1.fresh("ending", now + 1.9) == "e" and set(l1.due) == {"hot"}
    assert l1.fresh("hot", now + 8) is None  # never answered past its expiry
    l1.invalidate("hot")
    assert not l1.due


def test_l1_without_a_refresher_marks_nothing_due() -> None:
    l1: L1[str] = L1(max_entries=10, ttl=8)
    now = time.monotonic()
    l1.put("hot", "v", 8, now)
    assert l1.fresh("hot", now + 7) == "v" and l1.get("hot", now + 7) == (True, "v")
    assert not l1.due


# -- read-through, levels --------------------------------------------------------------


async def test_lookup_reads_store_then_l1() -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store)
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None and entry.key_id == "key-1"
    entry, level = await cache.lookup(DIGEST)
    assert level == "L1" and entry is not None and entry.key_id == "key-1"
    assert store.reads == 1


async def test_lookup_fills_l2_for_other_replicas(redis: RedisBackend,
                                                  server: fakeredis.FakeServer) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key(scopes=("a", "b"))
    first = make_cache(store, redis)
    await first.lookup(DIGEST)
    other = make_cache(store, fake_backend(server, Metrics()))
    entry, level = await other.lookup(DIGEST)
    assert level == "L2"
    assert entry is not None and entry.scopes == ("a", "b") and entry.valid_body
    assert store.reads == 1
    assert (await other.lookup(DIGEST))[1] == "L1"


async def test_no_cache_skips_reads_but_refreshes_both_levels(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis)
    assert (await cache.lookup(DIGEST, CacheMode.NO_CACHE))[1] == "STORE"
    assert (await cache.lookup(DIGEST, CacheMode.NO_CACHE))[1] == "STORE"
    assert store.reads == 2
    assert await raw.exists(f"gw:k:{DIGEST}")
    assert (await cache.lookup(DIGEST))[1] == "L1"


async def test_no_store_skips_reads_and_writes(redis: RedisBackend,
                                               raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis)
    assert (await cache.lookup(DIGEST, CacheMode.NO_STORE))[1] == "STORE"
    assert len(cache.l1) == 0
    assert not await raw.exists(f"gw:k:{DIGEST}")
    assert (await cache.lookup(DIGEST))[1] == "STORE"
    assert store.reads == 2


@pytest.mark.parametrize("stored", [b"not json", b'["too","short"]', b"{}"])
async def test_an_unreadable_l2_value_is_a_miss_and_gets_replaced(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis, stored: bytes) -> None:
    """E.g. written by another version of the gateway during a rolling upgrade."""
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    await raw.set(f"gw:k:{DIGEST}", stored)
    cache = make_cache(store, redis, l1_ttl=0)
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None and entry.key_id == "key-1"
    assert (await cache.lookup(DIGEST))[1] == "L2"


# -- negative caching and TTLs --------------------------------------------------------


async def test_not_found_is_cached_for_the_negative_ttl_only(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    cache = make_cache(store, redis, l1_ttl=60, l2_ttl=300, negative_ttl=3)
    assert await cache.lookup(DIGEST) == (None, "STORE")
    assert await cache.lookup(DIGEST) == (None, "L1")
    assert store.reads == 1
    now = time.monotonic()
    assert cache.l1.get(DIGEST, now + 2.5) == (True, NOT_FOUND)
    assert cache.l1.get(DIGEST, now + 3.5) == (False, None)
    pttl = await raw.pttl(f"gw:k:{DIGEST}")
    assert 0 < pttl <= 3000


async def test_a_key_created_after_a_cached_miss_verifies_once_invalidated(
        redis: RedisBackend) -> None:
    store = FakeStore()
    cache = make_cache(store, redis, negative_ttl=60)
    assert await cache.lookup(DIGEST) == (None, "STORE")
    store.rows[DIGEST] = make_key()
    await cache.invalidate([DIGEST])  # what KeyService.import_key does
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None


async def test_an_entry_never_outlives_its_key_expiry(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key(expire_in_s=3)
    cache = make_cache(store, redis, l1_ttl=60, l2_ttl=300)
    await cache.lookup(DIGEST)
    now = time.monotonic()
    assert cache.l1.get(DIGEST, now + 2.5)[0]
    assert not cache.l1.get(DIGEST, now + 3.1)[0]
    pttl = await raw.pttl(f"gw:k:{DIGEST}")
    assert 0 < pttl <= 3000


async def test_an_entry_read_from_l2_keeps_the_key_expiry_in_l1(redis: RedisBackend,
                                                               server: fakeredis.FakeServer
                                                               ) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key(expire_in_s=3)
    await make_cache(store, redis, l1_ttl=60).lookup(DIGEST)
    other = make_cache(store, fake_backend(server, Metrics()), l1_ttl=60)
    assert (await other.lookup(DIGEST))[1] == "L2"
    now = time.monotonic()
    assert not other.l1.get(DIGEST, now + 3.1)[0]


# -- single flight ---------------------------------------------------------------------


async def test_concurrent_misses_share_one_store_read() -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    gate = asyncio.Event()
    store.gates.append(gate)
    cache = make_cache(store)
    tasks = [asyncio.create_task(cache.lookup(DIGEST)) for _ in range(50)]
    await store.entered.wait()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert store.reads == 1
    assert all(entry is not None and entry.key_id == "key-1" for entry, _ in results)
    assert {level for _, level in results} == {"STORE"}


async def test_a_failed_shared_read_fails_every_waiter_and_is_not_cached() -> None:
    store = FakeStore()
    store.down = True
    cache = make_cache(store)
    results = await asyncio.gather(*(cache.lookup(DIGEST) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    store.down = False
    store.rows[DIGEST] = make_key()
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None


# -- refresh-ahead ----------------------------------------------------------------------


async def _until_refreshed(cache: KeyCache) -> None:
    assert cache._refresher is not None
    await cache._refresher


async def test_a_hot_entry_is_re_read_before_it_expires_once_for_all_hits() -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key(scopes=("read",))
    cache = make_cache(store, l1_ttl=8)
    await cache.lookup(DIGEST)
    # the row changes without an invalidation (as a missed one would leave it)
    store.rows[DIGEST] = make_key(scopes=("read", "write"))
    late = time.monotonic() + 7  # in the last quarter of the entry's life
    hits = [plain_l1(cache, DIGEST, late) for _ in range(50)]
    assert all(e is not None and e.scopes == ("read",) for e in hits)  # answered meanwhile
    await _until_refreshed(cache)
    assert store.reads == 2  # fifty hits, one re-read
    entry = plain_l1(cache, DIGEST, time.monotonic())
    assert entry is not None and entry.scopes == ("read", "write")


async def test_a_refresh_reads_l2_before_the_store(redis: RedisBackend) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis, l1_ttl=8)
    await cache.lookup(DIGEST)  # store read; fills L2 too
    assert plain_l1(cache, DIGEST, time.monotonic() + 7) is not None
    await _until_refreshed(cache)
    assert store.reads == 1


async def test_a_refresh_racing_a_revocation_does_not_resurrect_the_key() -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, l1_ttl=8)
    await cache.lookup(DIGEST)
    gate = asyncio.Event()
    store.gates.append(gate)
    store.entered.clear()
    assert plain_l1(cache, DIGEST, time.monotonic() + 7) is not None
    await store.entered.wait()  # the refresh read saw the key active and is in flight
    store.rows[DIGEST] = make_key(revoked=True)
    await cache.invalidate([DIGEST])
    gate.set()
    await _until_refreshed(cache)
    assert cache.l1.get(DIGEST, time.monotonic()) == (False, None)
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None and entry.revoked


async def test_a_failed_refresh_leaves_the_entry_answering_until_it_expires(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.cache.keycache.REFRESH_RETRY_S", 0)
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, l1_ttl=8)
    await cache.lookup(DIGEST)
    store.down = True
    late = time.monotonic() + 7
    assert plain_l1(cache, DIGEST, late) is not None
    await _until_refreshed(cache)  # the failure ends inside the refresher
    assert store.reads == 2
    assert plain_l1(cache, DIGEST, late) is not None  # still answers: not expired
    assert plain_l1(cache, DIGEST, late + 1.1) is None  # and never past its expiry
    await cache.close()


async def test_entries_due_together_are_re_read_a_batch_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries put together come due together: at most ``REFRESH_BATCH`` are re-read at
    once (one gather of all of them held the loop for 100 ms and more)."""
    monkeypatch.setattr("gateway.cache.keycache.REFRESH_BATCH", 2)
    store = FakeStore()
    digests = [f"hs256:{i:064x}" for i in range(5)]
    for i, digest in enumerate(digests):
        store.rows[digest] = make_key(f"key-{i}", digest=digest)
    cache = make_cache(store, l1_ttl=8)
    for digest in digests:
        await cache.lookup(digest)
    in_flight = most = 0
    read = store.get_by_digest

    async def counted(digest: str) -> ApiKey | None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)
        try:
            return await read(digest)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "get_by_digest", counted)
    late = time.monotonic() + 7
    assert all(plain_l1(cache, d, late) is not None for d in digests)
    assert len(cache.l1.due) == 5
    await _until_refreshed(cache)
    assert store.reads == 10 and most == 2 and not cache.l1.due
    await cache.close()


# -- tombstones: a racing fill cannot resurrect an invalidated key ---------------------


async def _race(cache: KeyCache, store: FakeStore) -> tuple[Any, asyncio.Event]:
    """Start a lookup whose store read saw the key active and is still in flight, then
    revoke the key (store first, then invalidate, as KeyService does)."""
    store.rows[DIGEST] = make_key()
    gate = asyncio.Event()
    store.gates.append(gate)
    stale = asyncio.create_task(cache.lookup(DIGEST))
    await store.entered.wait()
    store.rows[DIGEST] = make_key(revoked=True)
    await cache.invalidate([DIGEST])
    return stale, gate


async def test_a_fill_racing_a_revocation_does_not_resurrect_the_key(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    cache = make_cache(store, redis)
    stale, gate = await _race(cache, store)
    gate.set()
    await stale  # it started before the revocation: its own answer may be the old one
    assert cache.l1.get(DIGEST, time.monotonic()) == (False, None)
    assert not await raw.exists(f"gw:k:{DIGEST}")
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE"
    assert entry is not None and entry.revoked
    assert store.reads == 2


async def test_a_lookup_started_after_a_revocation_does_not_join_an_older_read(
        redis: RedisBackend) -> None:
    store = FakeStore()
    cache = make_cache(store, redis)
    stale, gate = await _race(cache, store)
    fresh = asyncio.create_task(cache.lookup(DIGEST))
    await asyncio.sleep(0.01)
    gate.set()
    await stale
    entry, level = await fresh
    assert entry is not None and entry.revoked
    assert level == "STORE"
    # and afterwards the cache holds the revoked entry, not the stale one
    entry, _ = await cache.lookup(DIGEST)
    assert entry is not None and entry.revoked


async def test_a_fill_racing_a_revocation_without_redis(redis: RedisBackend) -> None:
    store = FakeStore()
    cache = make_cache(store)
    stale, gate = await _race(cache, store)
    gate.set()
    await stale
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None and entry.revoked


async def test_another_replica_fill_cannot_resurrect_after_revocation(
        redis: RedisBackend, server: fakeredis.FakeServer,
        raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    replica_a = make_cache(store, redis)
    store_b = FakeStore()
    replica_b = make_cache(store_b, fake_backend(server, Metrics()))
    store.rows[DIGEST] = store_b.rows[DIGEST] = make_key()
    gate = asyncio.Event()
    store_b.gates.append(gate)
    stale = asyncio.create_task(replica_b.lookup(DIGEST))
    await store_b.entered.wait()
    store.rows[DIGEST] = store_b.rows[DIGEST] = make_key(revoked=True)
    await replica_a.invalidate([DIGEST])  # replica A revokes
    gate.set()
    await stale
    assert not await raw.exists(f"gw:k:{DIGEST}")
    entry, level = await replica_a.lookup(DIGEST)
    assert level == "STORE" and entry is not None and entry.revoked


# -- invalidation bus ------------------------------------------------------------------


def _applier(cache: KeyCache) -> Callable[[list[str], bool], Awaitable[None]]:
    async def apply(digests: list[str], added: bool = False, seqs: Any = ()) -> None:
        cache.forget(digests, added=added)

    return apply


async def test_a_failing_invalidation_handler_does_not_end_the_subscription(
        server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.cache.redis_backend.ACK_WAIT_S", 0.3)
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    a = make_cache(store, fake_backend(server, Metrics()))
    b = make_cache(store, fake_backend(server, Metrics()))
    calls: list[list[str]] = []

    async def flaky(digests: list[str], added: bool = False, seqs: Any = ()) -> None:
        calls.append(digests)
        if len(calls) == 1:
            raise Unavailable("the key store is unavailable")  # e.g. a signing-key refresh
        b.invalidate_local(digests)

    try:
        assert a.redis is not None and b.redis is not None
        await a.redis.start_listener(_applier(a))
        await b.redis.start_listener(flaky)
        await b.lookup(DIGEST)
        assert (await b.lookup(DIGEST))[1] == "L1"
        await a.invalidate(["hs256:other"])  # b's handler fails on this one
        assert a.redis.metrics.registry.get_sample_value(
            "gateway_invalidation_ack_timeouts_total") == 1  # the publisher noticed
        # b dropped its L1 rather than trust it
        assert b.l1.get(DIGEST, time.monotonic()) == (False, None)
        await b.lookup(DIGEST)
        store.rows[DIGEST] = make_key(revoked=True)
        await a.invalidate([DIGEST])  # and b still listens
        assert len(calls) == 2
        entry, _ = await b.lookup(DIGEST)
        assert entry is not None and entry.revoked
    finally:
        for cache in (a, b):
            assert cache.redis is not None
            await cache.redis.close()


async def test_invalidation_reaches_other_replicas_before_it_returns(
        server: fakeredis.FakeServer) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    a = make_cache(store, fake_backend(server, Metrics()))
    b = make_cache(store, fake_backend(server, Metrics()))
    try:
        assert a.redis is not None and b.redis is not None
        await a.redis.start_listener(_applier(a))
        await b.redis.start_listener(_applier(b))
        await b.lookup(DIGEST)
        assert (await b.lookup(DIGEST))[1] == "L1"
        store.rows[DIGEST] = make_key(revoked=True)
        await a.invalidate([DIGEST])
        assert b.l1.get(DIGEST, time.monotonic()) == (False, None)
        entry, level = await b.lookup(DIGEST)
        assert level == "STORE" and entry is not None and entry.revoked
        # every replica acked: the publisher did not wait for a missing one
        assert a.redis.metrics.registry.get_sample_value(
            "gateway_invalidation_ack_timeouts_total") == 0
    finally:
        for cache in (a, b):
            assert cache.redis is not None
            await cache.redis.close()


# -- Redis failures --------------------------------------------------------------------


class BrokenRedis:
    """Every command fails as if the server were gone."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("redis is down")

        return fail

    def pipeline(self, *args: Any, **kwargs: Any) -> BrokenPipeline:
        return BrokenPipeline()

    async def aclose(self) -> None:
        return None


class BrokenPipeline:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self

    async def execute(self) -> Any:
        raise ConnectionError("redis is down")


async def test_concurrent_l2_reads_share_one_mget_and_a_cancelled_reader_stops_only_itself(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    await raw.set("k1", b"one")
    await raw.set("k2", b"two")
    mgets = 0
    mget = redis._client.mget

    async def counting(keys: list[str]) -> Any:
        nonlocal mgets
        mgets += 1
        return await mget(keys)

    redis._client.mget = counting  # type: ignore[method-assign]
    readers = [asyncio.ensure_future(redis.get(k)) for k in ("k1", "k1", "k2", "k1", "k3")]
    await asyncio.sleep(0)  # every reader is waiting on the one flush
    readers[1].cancel()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert results[0] == b"one" and results[3] == b"one" and results[2] == b"two"
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[4] is None
    assert mgets == 1


async def test_lookups_that_arrive_while_an_mget_is_in_flight_share_the_next_one(
        redis: RedisBackend, raw: fakeredis.aioredis.FakeRedis) -> None:
    for key in ("a", "b", "c"):
        await raw.set(key, key.encode())
    calls: list[list[str]] = []
    release = asyncio.Event()
    mget = redis._client.mget

    async def gated(keys: list[str]) -> Any:
        calls.append(list(keys))
        if len(calls) == 1:
            await release.wait()
        return await mget(keys)

    redis._client.mget = gated  # type: ignore[method-assign]
    first = asyncio.ensure_future(redis.get("a"))
    while not calls:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(redis.get(k)) for k in ("b", "c", "b")]
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [["a"]]  # one read in flight: the others wait for the next
    release.set()
    assert await asyncio.gather(first, *later) == [b"a", b"b", b"c", b"b"]
    assert calls == [["a"], ["b", "c"]]


async def test_lookups_waiting_behind_a_failed_mget_do_not_wait_for_another(
        redis: RedisBackend) -> None:
    calls = 0
    started = asyncio.Event()

    async def slow_failure(keys: list[str]) -> Any:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.01)
        raise ConnectionError("redis is down")

    redis._client.mget = slow_failure  # type: ignore[method-assign]
    first = asyncio.ensure_future(redis.get("a"))
    await started.wait()
    waiting = asyncio.ensure_future(redis.get("b"))  # queued behind the failing read
    assert await asyncio.gather(first, waiting) == [None, None]
    assert calls == 1  # the breaker opened: the queued lookup is a miss, not a second wait


async def test_a_cancelled_flush_releases_its_readers(redis: RedisBackend) -> None:
    started = asyncio.Event()

    async def hanging(keys: list[str]) -> Any:
        started.set()
        await asyncio.sleep(3600)

    redis._client.mget = hanging  # type: ignore[method-assign]
    reader = asyncio.ensure_future(redis.get("k"))
    await started.wait()
    for flush in list(redis._flushes):
        flush.cancel()  # as close() does on shutdown
    assert await asyncio.wait_for(reader, 1) is None


async def test_redis_failures_fall_back_to_the_store(redis: RedisBackend) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis, l1_ttl=0)
    redis._client = BrokenRedis()  # type: ignore[assignment]
    entry, level = await cache.lookup(DIGEST)
    assert level == "STORE" and entry is not None
    assert not redis.available
    errors = redis.metrics.registry.get_sample_value("gateway_redis_errors_total", {"op": "mget"})
    assert errors == 1


async def test_a_revocation_during_a_redis_outage_is_applied_to_l2_on_recovery(
        server: fakeredis.FakeServer, raw: fakeredis.aioredis.FakeRedis) -> None:
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    backend_a = fake_backend(server, Metrics())
    replica_a = make_cache(store, backend_a, l1_ttl=0)
    replica_b = make_cache(store, fake_backend(server, Metrics()), l1_ttl=0)
    try:
        await replica_a.lookup(DIGEST)
        assert (await replica_b.lookup(DIGEST))[1] == "L2"
        healthy = backend_a._client
        backend_a._client = BrokenRedis()  # type: ignore[assignment]
        store.rows[DIGEST] = make_key(revoked=True)
        await replica_a.invalidate([DIGEST])  # L2 cannot be reached: its entry is stale now
        entry, _ = await replica_a.lookup(DIGEST)
        assert entry is not None and entry.revoked
        backend_a._client = healthy
        backend_a._broken_until = 0.0  # Redis is back and the breaker closes
        entry, _ = await replica_a.lookup(DIGEST)
        assert entry is not None and entry.revoked
        for _ in range(100):  # the invalidation is retried until it reaches Redis
            value = await raw.get(f"gw:k:{DIGEST}")
            if value is None or Entry.loads(value).revoked:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the stale L2 entry of a revoked key survived the Redis outage")
        entry, _ = await replica_b.lookup(DIGEST)
        assert entry is not None and entry.revoked
    finally:
        for cache in (replica_a, replica_b):
            assert cache.redis is not None
            await cache.redis.close()


class DroppableListener:
    """A listener client on the fake server whose subscription can be made to drop."""

    def __init__(self, server: fakeredis.FakeServer, drop: asyncio.Event) -> None:
        self.inner = fakeredis.aioredis.FakeRedis(server=server)
        self.drop = drop
        self.pubsub_inner: Any = None

    def pubsub(self) -> DroppableListener:
        self.pubsub_inner = self.inner.pubsub()
        return self

    async def subscribe(self, *channels: str) -> None:
        await self.pubsub_inner.subscribe(*channels)

    async def get_message(self, timeout: float | None = None) -> dict[str, Any] | None:
        if self.drop.is_set():
            self.drop.clear()
            raise RedisConnectionError("connection lost")
        message: dict[str, Any] | None = await self.pubsub_inner.get_message(timeout=0.02)
        return message

    async def aclose(self) -> None:
        if self.pubsub_inner is not None:
            await self.pubsub_inner.aclose()
            self.pubsub_inner = None
        else:
            await self.inner.aclose()


async def test_a_replica_that_lost_its_subscription_forgets_its_l1(
        server: fakeredis.FakeServer, raw: fakeredis.aioredis.FakeRedis) -> None:
    """Invalidations published while a replica was not subscribed are lost to it, so a
    re-subscribed replica must not keep answering from what it cached before."""
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, fake_backend(server, Metrics()))
    backend = cache.redis
    assert backend is not None
    drop = asyncio.Event()
    listeners: list[DroppableListener] = []

    def listener() -> DroppableListener:
        listeners.append(DroppableListener(server, drop))
        return listeners[-1]

    backend._make_listener_client = listener  # type: ignore[assignment,method-assign]
    try:
        await backend.start_listener(_applier(cache))
        await cache.lookup(DIGEST)
        assert (await cache.lookup(DIGEST))[1] == "L1"
        # another replica revokes the key: L2 is cleared, but this replica's subscription
        # is down while the invalidation is published
        store.rows[DIGEST] = make_key(revoked=True)
        await raw.delete(f"gw:k:{DIGEST}")
        drop.set()
        for _ in range(100):
            if len(listeners) == 2 and backend.subscribed.is_set():
                break
            await asyncio.sleep(0.05)
        assert len(listeners) == 2 and backend.subscribed.is_set()
        entry, level = await cache.lookup(DIGEST)
        assert level != "L1"
        assert entry is not None and entry.revoked
    finally:
        await backend.close()


async def test_lookups_neither_wait_for_nor_repeat_a_pending_invalidation(
        redis: RedisBackend) -> None:
    """A replica that does not ack (paused) holds up the admin call that waits for it, and
    nothing else: a lookup meanwhile takes the store for the digest being invalidated, L2
    for the others, and the invalidation is published once."""
    other = "hs256:" + "cd" * 32
    store = FakeStore()
    store.rows[DIGEST] = make_key()
    store.rows[other] = make_key("key-2", digest=other)
    cache = make_cache(store, redis, l1_ttl=0)
    await cache.lookup(other)  # in L2 now
    published: list[list[str]] = []
    release = asyncio.Event()

    async def stuck_publish(digests: list[str]) -> set[str]:
        published.append(digests)
        await release.wait()  # the acks of a paused replica never come
        return set()

    redis.publish_invalidation = stuck_publish  # type: ignore[method-assign]
    revoke = asyncio.create_task(cache.invalidate([DIGEST]))
    await asyncio.sleep(0.05)
    reads = store.reads
    for _ in range(5):
        entry, level = await asyncio.wait_for(cache.lookup(DIGEST), 1.0)
        assert entry is not None and level == "STORE"  # its L2 copy may be stale
        entry, level = await asyncio.wait_for(cache.lookup(other), 1.0)
        assert entry is not None and level == "L2"
    assert store.reads == reads + 5
    assert not revoke.done() and published == [[DIGEST]]
    release.set()
    await revoke
    assert published == [[DIGEST]]


def test_l1_tombstones_expire_from_the_oldest_end_in_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk import invalidates thousands of digests: each costs O(1), and tombstones
    older than TOMBSTONE_S go, oldest first, while younger ones keep stopping stale fills."""
    import gateway.cache.l1 as l1_module

    clock = [1000.0]
    monkeypatch.setattr(l1_module.time, "monotonic", lambda: clock[0])
    l1: L1[str] = L1(1000, 10.0)
    for n in range(50_000):
        clock[0] += 0.01  # 500 s of invalidations, 100 a second
        l1.invalidate(f"d{n}")
    assert len(l1._tombstones) <= 100 * l1_module.TOMBSTONE_S + 1
    l1.put("d49999", "stale", 10.0, started=clock[0] - 1)  # began before its invalidation
    assert l1.get("d49999", clock[0])[0] is False
    l1.put("d0", "fresh", 10.0, started=clock[0])  # its tombstone is long gone
    assert l1.get("d0", clock[0]) == (True, "fresh")
    l1.invalidate("d10")  # invalidated again: moves to the young end
    assert next(reversed(l1._tombstones)) == "d10"


class LogStore(FakeStore):
    """A FakeStore with a change log and the replicas' positions in it (store time: the
    host's clock, as SQLite's)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[int, list[tuple[str, str]]]] = []
        self.replicas: dict[str, tuple[int, int]] = {}  # id -> (followed_at, trusted_until)

    async def first_change_since(self, at_us: int) -> int:
        return 0

    async def follow_changes(self, after: int, limit: int = 10_000
                             ) -> tuple[int, list[tuple[int, list[tuple[str, str]]]]]:
        if self.down:
            raise Unavailable("the key store is unavailable")
        return time.time_ns() // 1000, [row for row in self.log if row[0] > after][:limit]

    async def heartbeat(self, replica_id: str, followed_at: int, trusted_until: int) -> None:
        self.replicas[replica_id] = (followed_at, trusted_until)

    async def unconfirmed(self, replica_id: str, at_us: int | None = None
                          ) -> tuple[int, list[str]]:
        now = time.time_ns() // 1000
        at = now if at_us is None else at_us
        return at, sorted(r for r, (followed, until) in self.replicas.items()
                          if r != replica_id and until > max(now, at) and followed <= at)

    async def prune_changes(self, before_us: int) -> None:
        return None  # the rows stay: a second follow must not apply them again


async def test_the_change_log_reaches_a_replica_that_redis_did_not(redis: RedisBackend,
                                                                   raw: Any) -> None:
    """A change read from the store's log drops the key from L1 and its L2 copy, once."""
    store = LogStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis)
    follower = ChangeFollower(store, cache, "b", grace=5, l2_ttl=300)  # type: ignore[arg-type]
    await follower.follow()
    assert (await cache.lookup(DIGEST))[1] == "STORE"
    assert (await cache.lookup(DIGEST))[1] == "L1"
    assert await raw.get(f"gw:k:{DIGEST}") is not None
    store.rows[DIGEST] = make_key(revoked=True)
    store.log.append((1, [(DIGEST, "key-1")]))
    await follower.follow()
    assert await raw.get(f"gw:k:{DIGEST}") is None  # and a tombstone stops a refill
    entry, level = await cache.lookup(DIGEST)
    assert entry is not None and entry.revoked and level == "STORE"
    await follower.follow()  # applied once: the revoked entry stays cached
    assert (await cache.lookup(DIGEST))[1] == "L1"


async def test_nothing_is_answered_from_the_caches_past_the_lease(
        redis: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that cannot read the change log stops answering from L1 and L2 when its
    lease runs out (it cannot know what changed), and again once a read succeeds."""
    monkeypatch.setattr(changes, "LEASE_S", 0.2)
    store = LogStore()
    store.rows[DIGEST] = make_key()
    cache = make_cache(store, redis)
    follower = ChangeFollower(store, cache, "b", grace=5, l2_ttl=300)  # type: ignore[arg-type]
    assert plain_l1(cache, DIGEST, time.monotonic()) is None
    with pytest.raises(Unavailable):  # never read the log: not even a store read answers
        store.down = True
        await cache.lookup(DIGEST)
    store.down = False
    await follower.follow()
    assert store.replicas["b"][1] - store.replicas["b"][0] == 200_000  # its lease, recorded
    await cache.lookup(DIGEST)
    assert (await cache.lookup(DIGEST))[1] == "L1"
    store.down = True
    with pytest.raises(Unavailable):
        await follower.follow()
    assert (await cache.lookup(DIGEST))[1] == "L1"
    await asyncio.sleep(0.25)
    assert plain_l1(cache, DIGEST, time.monotonic()) is None
    with pytest.raises(Unavailable):  # neither L1 nor L2 (it holds a copy) answers
        await cache.lookup(DIGEST)
    store.down = False
    await follower.follow()
    assert (await cache.lookup(DIGEST))[1] == "L1"


async def test_the_lease_is_the_grace_while_the_redis_subscription_is_up() -> None:
    store = LogStore()
    cache = make_cache(store, None)
    up = [True]
    follower = ChangeFollower(store, cache, "b", grace=7, l2_ttl=300,  # type: ignore[arg-type]
                              subscribed=lambda: up[0])
    await follower.follow()
    assert store.replicas["b"][1] - store.replicas["b"][0] == 7_000_000
    up[0] = False
    await follower.follow()
    assert store.replicas["b"][1] - store.replicas["b"][0] == changes.LEASE_S * 1e6


async def test_a_change_is_confirmed_by_every_replica_trusted_past_it() -> None:
    """Through Redis (its ack) or the change log (followed past it); otherwise the admin
    call answers 503 at its deadline and names the replicas."""
    store = LogStore()
    cache = make_cache(store, None)
    a = ChangeFollower(store, cache, "a", grace=5, l2_ttl=300)  # type: ignore[arg-type]
    b = ChangeFollower(store, make_cache(store, None), "b",  # type: ignore[arg-type]
                       grace=5, l2_ttl=300)
    await a.follow()
    await b.follow()
    started = time.monotonic()
    # b read the log before the change; a itself is not waited for
    with pytest.raises(Unavailable, match=r"1 replica\(s\) \(b\) did not confirm"):
        await a.confirm(set(), started + 0.2)
    assert time.monotonic() - started >= 0.2
    await a.confirm({"b"}, time.monotonic() + 1)  # acknowledged through Redis
    confirming = asyncio.create_task(a.confirm(set(), time.monotonic() + 2))
    await asyncio.sleep(0.1)
    assert not confirming.done()
    await b.follow()  # b reads the log past the change
    await asyncio.wait_for(confirming, 1)
    # a replica past its lease (crashed, or cut off and no longer answering) is not waited for
    store.replicas["b"] = (0, time.time_ns() // 1000 - 1)
    await a.confirm(set(), time.monotonic() + 1)


def test_l1_forgets_new_keys_without_a_tombstone_each() -> None:
    """An import's digests: their "not found" entries go, and so does any "not found" fill
    that started before (it may have read the store before the import); positive fills and
    later reads are kept."""
    l1: L1[str] = L1(10, 60.0)
    before = time.monotonic()
    l1.put("new", None, 5.0, before)
    l1.forget_new(["new", "never-cached"])
    assert l1.get("new", time.monotonic())[0] is False and not l1._tombstones
    l1.put("new", None, 5.0, before)  # a racing read of the store before the import
    assert l1.get("new", time.monotonic())[0] is False
    l1.put("other", "x", 5.0, before)  # a positive fill is not stale
    assert l1.get("other", time.monotonic()) == (True, "x")
    l1.put("new", None, 5.0, time.monotonic())  # read after: kept
    assert l1.get("new", time.monotonic()) == (True, None)


def test_l1_answers_nothing_past_its_lease() -> None:
    l1: L1[str] = L1(10, 60.0)
    now = time.monotonic()
    l1.put("a", "x", 60.0, now)
    l1.trusted_until = now + 1
    assert l1.get("a", now) == (True, "x")
    assert l1.fresh("a", now) == "x" and l1.fresh_many(["a"], now) == ["x"]
    assert l1.get("a", now + 1)[0] is False
    assert l1.fresh("a", now + 1) is None and l1.fresh_many(["a"], now + 1) == [None]
