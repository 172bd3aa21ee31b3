"""Redis as L2 cache, invalidation bus and rate-limit counter store.

Trust and failure model: Redis is a cache, never an authority. Every call has a short
timeout; a failure opens a breaker for ``BREAKER_S`` so requests stop paying the timeout,
and the caller falls back to L1 and the store. Errors are counted, never raised upward.

L2 values are written with a Lua script that refuses to write while a tombstone for the
digest exists; revocation writes the tombstone and deletes the value in one MULTI. So a
fill that read the store before a revocation cannot resurrect the key.

Invalidations are published on ``CHANNEL`` followed by the Redis database number (pub/sub
is not per database: two deployments on one Redis server must not wait for each other's
acks); each replica applies it to its L1 and pushes an ack, and the publisher collects as
many acks as PUBLISH reported receivers (polling, with commands that do not block: a
blocking pop that outlived the socket timeout used to open the breaker).

With a Sentinel address (``redis+sentinel://``, see ``gateway.cache.redis_url``) every
connection asks the Sentinels for the primary, and a watch asks them every ``WATCH_S``.
When they name another server (a failover), the backend's ``epoch`` moves on: a command
that was in flight across the change counts as failed (its write may have landed on the
old primary and be lost with it, its read may be the old primary's), no connection to the
old address is used again, the subscription moves to the new primary, and L2 is neither
read nor filled until ``on_switch``'s handler (``ChangeFollower``) has dropped, on the new
primary, every change of the last L2 TTL (``release_l2``): writes the old primary
acknowledged but never replicated, tombstones among them, are lost in a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.cache.redis_url import SentinelUrl, is_sentinel, parse_sentinel_url
from gateway.observability.metrics import Metrics

# Applies an invalidation (items, added, the seqs of imported rows) on this replica.
OnInvalidate = Callable[[list[str], bool, list[int]], Awaitable[None]]
log = logging.getLogger("gateway.redis")
CHANNEL = "gateway:invalidate"
BREAKER_S = 1.0
TOMBSTONE_S = 60
ACK_WAIT_S = 2.0
ACK_POLL_S = 0.01
WATCH_S = 1.0  # Sentinel mode: how often the Sentinels are asked which server is the primary
LISTEN_POLL_S = 0.5  # how often the subscriber looks up from its socket (to follow a failover)
# An invalidation this large (an import's batch: 80 KB for 1,000 keys) is received, parsed,
# applied and acked with the loop free between: redis-py's receipt (about 0.2 ms), the
# parse (0.15 ms) and the first slice held a busy replica's requests 0.3-1 ms in one go.
LARGE_MESSAGE = 16_384
# One L2 read in flight at a time: lookups that arrive meanwhile ride on the next MGET,
# so under load an MGET carries all the lookups of one round trip. Measured beside the
# floor with L1 off: 0.47 -> 0.50 of its req/s against one MGET per loop tick, and a
# lower p99 (2 in flight: 0.49).
MGETS_IN_FLIGHT = 1
_FILL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# Invalidation of many digests in one command (a batch import invalidates 2,000 at once;
# a MULTI of 4,000 SET/DEL cost about 40 ms of client CPU): KEYS are (key, tombstone)
# pairs, ARGV[1] the tombstone's seconds. Atomic, as the MULTI was.
_INVALIDATE = """
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i + 1], '1', 'EX', ARGV[1])
  redis.call('DEL', KEYS[i])
end
return #KEYS / 2
"""
_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


Address = tuple[str, int]


class _PrimaryPool(SentinelConnectionPool):
    """A pool of connections to the primary Sentinel names. ``watcher`` hears every address
    the Sentinels give, before any connection is made to it; a connection still open to an
    earlier address (it was in use when the primary changed) is closed when it is next
    taken from the pool, not reused (redis-py's own pool would reuse it)."""

    watcher: Callable[[Address], None] | None = None

    async def get_master_address(self) -> Any:
        address = await self.sentinel_manager.discover_master(self.service_name)
        if self.watcher is not None:
            self.watcher((str(address[0]), int(address[1])))
        if self.master_address != address:
            self.master_address = address
            await self.disconnect(inuse_connections=False)
        return address

    async def ensure_connection(self, connection: Any) -> None:
        if (self.master_address is not None and connection.is_connected
                and (connection.host, connection.port) != tuple(self.master_address)):
            await connection.disconnect()
        await super().ensure_connection(connection)


class RedisBackend:
    def __init__(self, url: str, metrics: Metrics, *, timeout: float = 0.25) -> None:
        self._url = url
        self._timeout = timeout
        self.metrics = metrics
        self.replica_id = uuid.uuid4().hex[:12]
        # Sentinel mode: the address, the Sentinels' clients, the primary last named
        self._sentinel_url: SentinelUrl | None = (
            parse_sentinel_url(url) if is_sentinel(url) else None)
        self._sentinel: Sentinel | None = None
        self._primary: Address | None = None
        self.epoch = 0  # moves on whenever the primary changes
        self._l2_held: int | None = None  # the epoch whose L2 is not trusted yet
        # Called when the primary changed: L2 stays held until it calls release_l2(epoch).
        self.on_switch: Callable[[], None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()  # wakes a subscriber waiting to retry
        self._client = self._make_client()
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"{CHANNEL}:{db}"
        self._broken_until = 0.0
        self._fill = self._client.register_script(_FILL)
        self._incr = self._client.register_script(_INCR)
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._flush_scheduled = False
        self._flushes: set[asyncio.Future[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._on_invalidate: OnInvalidate | None = None
        # Called on every (re)subscription, and when an invalidation could not be applied:
        # invalidations published while this replica was not subscribed were lost to it, so
        # what it cached before cannot be trusted.
        self.on_resubscribe: Callable[[], None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def _make_client(self) -> aioredis.Redis:
        if self._sentinel_url is not None:
            client = self._primary_client(
                socket_timeout=self._timeout, health_check_interval=0, max_connections=64)
            pool = client.connection_pool
            assert isinstance(pool, _PrimaryPool)
            pool.watcher = self._primary_named
            return client
        return aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            health_check_interval=0, retry_on_timeout=False, max_connections=64,
        )

    def _primary_client(self, **kwargs: Any) -> aioredis.Redis:
        """A client of the primary the Sentinels name (Sentinel mode)."""
        url = self._sentinel_url
        assert url is not None
        if self._sentinel is None:
            # bounded: a Sentinel that does not answer costs one timeout, and no retries
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
                list(url.sentinels), sentinel_kwargs={
                    "socket_timeout": self._timeout, "socket_connect_timeout": self._timeout,
                    "password": url.sentinel_password, "retry": Retry(NoBackoff(), 0)})
        client: aioredis.Redis = self._sentinel.master_for(
            url.service, connection_pool_class=_PrimaryPool, db=url.db,
            username=url.username, password=url.password,
            socket_connect_timeout=self._timeout, retry=Retry(NoBackoff(), 0), **kwargs)
        return client

    # -- failover (Sentinel mode) ----------------------------------------------------

    def _primary_named(self, address: Address) -> None:
        """Every address the Sentinels name, before it is connected to."""
        if address == self._primary:
            return
        previous, self._primary = self._primary, address
        if previous is None:  # the first: not a change
            return
        self.epoch += 1
        self._l2_held = self.epoch
        self.metrics.redis_primary_changes.inc()
        self._moved.set()
        log.warning("redis primary moved from %s:%s to %s:%s; L2 held back until the recent "
                    "changes are applied there", *previous, *address)
        if self.on_switch is not None:
            self.on_switch()
        else:
            self._l2_held = None

    def release_l2(self, epoch: int) -> bool:
        """L2 may be used again: every change that might be missing on the primary of
        ``epoch`` has been applied there. False when the primary changed again since."""
        if self._l2_held != epoch:
            return self._l2_held is None
        self._l2_held = None
        log.info("redis L2 in use again on the new primary")
        return True

    @property
    def l2_held(self) -> int | None:
        """The epoch whose primary may lack changes (None: L2 can be trusted)."""
        return self._l2_held

    @property
    def l2_ready(self) -> bool:
        return self._l2_held is None and time.monotonic() >= self._broken_until

    async def _watch_primary(self) -> None:
        assert isinstance(self._client.connection_pool, _PrimaryPool)
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await self._client.connection_pool.get_master_address()
            except (RedisError, OSError, TimeoutError):
                pass  # no Sentinel answered: the commands find out for themselves

    # -- breaker ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._broken_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.metrics.redis_errors.labels(op).inc()
        if self.available:
            log.warning("redis %s failed (%s); using L1 and the store for %.1fs",
                        op, type(exc).__name__, BREAKER_S)
        self._broken_until = time.monotonic() + BREAKER_S

    async def _call(self, op: str, coro: Any) -> Any:
        start = time.perf_counter()
        epoch = self.epoch
        try:
            async with asyncio.timeout(self._timeout * 2):  # no extra task, unlike wait_for
                result = await coro
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(op, exc)
            return None
        if self.epoch != epoch:
            # the primary changed under this call: a read may be the old primary's, a
            # write may be lost with it. A failure (retried where it matters), no breaker.
            self.metrics.redis_errors.labels(op).inc()
            return None
        self.metrics.redis_latency.labels(op).observe(time.perf_counter() - start)
        return result

    # -- L2 reads: concurrent lookups share one MGET (MGETS_IN_FLIGHT) ---------------

    async def get(self, key: str) -> bytes | None:
        """The cached bytes or None (miss, or Redis unavailable)."""
        if not self.l2_ready:
            return None
        loop = asyncio.get_running_loop()
        # One future per caller, so a cancelled caller cancels only its own wait.
        fut: asyncio.Future[bytes | None] = loop.create_future()
        waiters = self._pending.get(key)
        if waiters is None:
            self._pending[key] = [fut]
            self._schedule_flush()
        else:
            waiters.append(fut)
        return await fut

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and len(self._flushes) < MGETS_IN_FLIGHT:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._flush_scheduled = False
        task = asyncio.ensure_future(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Future[None]) -> None:
        self._flushes.discard(task)
        if self._pending:
            self._schedule_flush()

    async def _flush(self, batch: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        keys = list(batch)
        values = None
        try:
            if self.l2_ready:  # the breaker may have opened while these waited
                values = await self._call("mget", self._client.mget(keys))
        finally:  # also when cancelled (shutdown): no caller is left waiting
            for key, value in zip(keys, values or [None] * len(keys), strict=True):
                for fut in batch[key]:
                    if not fut.done():
                        fut.set_result(value)

    async def fill(self, key: str, tombstone: str, value: bytes, ttl_s: float) -> None:
        if self.l2_ready and ttl_s > 0:
            await self._call("fill", self._fill(keys=[key, tombstone],
                                                args=[value, max(1, int(ttl_s * 1000))]))

    async def delete_with_tombstone(self, pairs: list[tuple[str, str]]) -> bool:
        keys = [name for pair in pairs for name in pair]
        return await self._call("invalidate", self._invalidate(keys=keys, args=[TOMBSTONE_S])
                                ) is not None

    # -- rate-limit counters ---------------------------------------------------------

    async def incr_window(self, key: str, window_ms: int) -> tuple[int, int] | None:
        """(count, ms until the window resets) or None when Redis is unavailable."""
        if not self.available:
            return None
        result = await self._call("ratelimit", self._incr(keys=[key], args=[window_ms]))
        if result is None:
            return None
        return int(result[0]), int(result[1])

    # -- invalidation bus ------------------------------------------------------------

    async def publish_invalidation(self, digests: list[str], *, added: bool = False,
                                   seqs: Sequence[int] = ()) -> set[str] | None:
        """Publish and wait (up to ``ACK_WAIT_S``) until every subscribed replica has
        applied it: the ids of those that did, or None when it could not be published.
        ``added``: the digests are of new keys (see ``KeyCache.invalidate``), stored in the
        rows numbered ``seqs`` when those are imported keys (``UnkeyedFollower.learned``)."""
        nonce = uuid.uuid4().hex
        ack_key = f"gateway:ack:{nonce}"
        body: dict[str, Any] = {"d": digests, "ack": ack_key, "from": self.replica_id,
                                "a": added}
        if seqs:
            body["s"] = list(seqs)
        message = orjson.dumps(body)
        receivers = await self._call("publish", self._client.publish(self.channel, message))
        if receivers is None:
            return None
        deadline = time.monotonic() + ACK_WAIT_S
        acked: set[str] = set()
        answers = 0
        while answers < receivers:
            got = await self._call("ack", self._client.lpop(ack_key, receivers - answers))
            for replica in got or ():
                answers += 1
                acked.add(replica.decode() if isinstance(replica, bytes) else str(replica))
            if answers >= receivers:
                break
            if time.monotonic() >= deadline:
                self.metrics.invalidation_timeouts.inc()
                log.warning("invalidation acked by %d of %d replicas", answers, receivers)
                break
            await asyncio.sleep(ACK_POLL_S)
        return acked

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task that ``close`` cancels."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start_listener(self, on_invalidate: OnInvalidate) -> None:
        self._on_invalidate = on_invalidate
        self._listener = asyncio.create_task(self._listen(), name="redis-invalidation")
        if self._sentinel_url is not None:
            self._watch = asyncio.create_task(self._watch_primary(), name="redis-sentinel")
        try:
            await asyncio.wait_for(self.subscribed.wait(), 2.0)
        except TimeoutError:
            log.warning("redis invalidation channel not subscribed yet; will keep trying")

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            client = self._make_listener_client()
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(max(1.0, self._timeout * 8)):
                    await pubsub.subscribe(self.channel)
                epoch = self.epoch
                conn = getattr(pubsub, "connection", None)
                address = (getattr(conn, "host", None), getattr(conn, "port", None))
                if self.on_resubscribe is not None:
                    self.on_resubscribe()
                self.subscribed.set()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                    if message is not None and message.get("type") == "message":
                        await self._apply(message["data"])
                    if self.epoch != epoch and address != self._primary:
                        # a failover: this socket may be to the old primary, which need
                        # not close it. Resubscribe on the primary the Sentinels name.
                        raise _PrimaryMoved("the primary moved")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self.subscribed.clear()
                self.metrics.redis_errors.labels("subscribe").inc()
                if isinstance(exc, _PrimaryMoved):
                    log.warning("invalidation subscription moving to the new primary")
                else:
                    log.warning("invalidation subscription lost (%s); retrying",
                                type(exc).__name__)
                    # a new primary named meanwhile is tried at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._moved.wait(), backoff)
                    backoff = min(backoff * 2, 2.0)
                self._moved.clear()
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
                    await client.aclose()
                except Exception:
                    pass

    def _make_listener_client(self) -> aioredis.Redis:
        # No read timeout: the subscription idles between messages. No retries: redis-py
        # would resubscribe by itself after a lost connection, and the messages published
        # meanwhile would be missed without on_resubscribe hearing of it.
        if self._sentinel_url is not None:
            return self._primary_client(socket_keepalive=True)
        return aioredis.Redis.from_url(self._url, socket_connect_timeout=self._timeout,
                                       socket_keepalive=True, retry=Retry(NoBackoff(), 0))

    async def _apply(self, raw: bytes) -> None:
        large = len(raw) >= LARGE_MESSAGE
        if large:
            await asyncio.sleep(0)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if large:
            await asyncio.sleep(0)
        if self._on_invalidate is not None:
            try:
                seqs = message.get("s")
                await self._on_invalidate(
                    list(message.get("d", [])), bool(message.get("a")),
                    [s for s in seqs if type(s) is int] if type(seqs) is list else [])
            except Exception as exc:
                # The subscription must outlive a failing handler. What this replica cached
                # can no longer be trusted, and the publisher sees a missing ack.
                self.metrics.redis_errors.labels("apply").inc()
                log.error("applying an invalidation failed (%s); dropping L1",
                          type(exc).__name__)
                if self.on_resubscribe is not None:
                    self.on_resubscribe()
                return
        ack = message.get("ack")
        if isinstance(ack, str):
            if large:
                await asyncio.sleep(0)
            pipe = self._client.pipeline(transaction=False)
            pipe.rpush(ack, self.replica_id)
            pipe.expire(ack, 30)
            await self._call("ack", pipe.execute())

    async def close(self) -> None:
        for task in [*self._background, self._listener, self._watch]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._client.aclose()
        if self._sentinel is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._sentinel.aclose()


class _PrimaryMoved(RedisError):
    """The subscriber's socket is not to the primary the Sentinels now name."""
