"""PostgreSQL backend (asyncpg pool). The schema is applied by ``gateway migrate``."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gateway.errors import AlreadyExists, Unavailable
from gateway.store import migrations
from gateway.store.base import SqlStore, Tx

_LOCK_ID = 0x6761_7465  # advisory lock held while migrating


@lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """``?`` placeholders → ``$1, $2 …``."""
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        constraint = exc.constraint_name or ""
        what = ("request_id" if "request" in constraint else
                "key material" if "digest" in constraint else "key_id")
        return AlreadyExists(f"a key with the same {what} exists already")
    return Unavailable("the key store is unavailable")


_DRIVER_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError)


class _Conn:
    def __init__(self, conn: Any) -> None:  # a Connection or a pool's proxy of one
        self._c = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await self._c.fetch(_numbered(sql), *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._c.execute(_numbered(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


def _connect_failure(dsn: str, exc: BaseException) -> str:
    """What stopped the connection, naming the server and database (never the password)."""
    url = urlsplit(dsn)
    where = f"{url.hostname or 'localhost'}:{url.port or 5432}"
    database = url.path.lstrip("/") or url.username or "postgres"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f"PostgreSQL at {where} has no database {database!r}: create it, or fix "
                "GATEWAY_DATABASE_URL")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError
                  | asyncpg.InvalidPasswordError):
        return f"PostgreSQL at {where} refused the login to database {database!r}: {exc}"
    reasons: dict[type[BaseException], str] = {ConnectionRefusedError: "connection refused",
                                               TimeoutError: "timed out"}
    reason = reasons.get(type(exc), type(exc).__name__)
    return f"cannot connect to PostgreSQL at {where} (database {database!r}): {reason}"


class PostgresStore(SqlStore):
    BACKEND = "postgres"
    # A sequence number is taken at INSERT and becomes visible at COMMIT, in any order
    # among concurrent transactions: a bound, not a guarantee (one import of 1,000 keys
    # takes 1,000 numbers; a few in flight stay well under it)
    seq_lag = 2_000
    # a hashed subplan in every plan (``<> ALL($n)`` is hashed only where the array is a
    # constant, not in a prepared statement's generic plan)
    _NOT_AMONG = "seq NOT IN (SELECT unnest(?::bigint[]))"

    @staticmethod
    def _seqs(seqs: Sequence[int]) -> Any:
        return list(seqs)

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._min, self._max = min_size, max_size

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min, max_size=self._max, command_timeout=5,
                timeout=5,
            )
        except _DRIVER_ERRORS as exc:
            raise Unavailable(_connect_failure(self._dsn, exc)) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        if self._pool is None:
            raise Unavailable("the key store is not open")
        try:
            async with self._pool.acquire(timeout=5) as conn:
                yield _Conn(conn)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        if self._pool is None:
            raise Unavailable("the key store is not open")
        try:
            async with self._pool.acquire(timeout=5) as conn, conn.transaction():
                yield _Conn(conn)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def pending_migrations(self) -> list[str]:
        async with self._conn() as c:
            rows = await c.fetch("SELECT to_regclass('schema_migrations') IS NOT NULL")
            done: set[int] = set()
            if rows[0][0]:
                done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
        return [name for v, name, _ in migrations.available("postgres") if v not in done]

    async def record_usage(self, usage: dict[str, int]) -> None:
        """One statement for the whole batch; its rows are locked in key order first, so
        concurrent flushes (replicas) cannot deadlock. last_used_time only moves forwards."""
        if not usage:
            return
        ids, used = zip(*sorted(usage.items()), strict=True)
        async with self._conn() as c:
            await c.execute(
                "WITH v AS (SELECT * FROM unnest(?::text[], ?::bigint[]) AS v(key_id, used)), "
                "locked AS (SELECT a.key_id FROM api_keys a JOIN v USING (key_id) "
                "ORDER BY a.key_id FOR UPDATE OF a) "
                "UPDATE api_keys SET last_used_time = v.used FROM v, locked "
                "WHERE api_keys.key_id = v.key_id AND locked.key_id = v.key_id "
                "AND (api_keys.last_used_time IS NULL OR api_keys.last_used_time < v.used)",
                list(ids), list(used))

    async def _now_us(self, c: Tx) -> int:
        rows = await c.fetch("SELECT (EXTRACT(EPOCH FROM now()) * 1000000)::bigint")
        return int(rows[0][0])

    async def _lock_migrations(self, c: Tx) -> None:
        await c.fetch("SELECT pg_advisory_xact_lock(?)", _LOCK_ID)
