"""SQLite backend: the embedded default. The file is created and migrated on first open."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from gateway.errors import AlreadyExists, Unavailable
from gateway.store import migrations
from gateway.store.base import SqlStore


def _translate(exc: sqlite3.Error) -> Exception:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in text:
        column = text.rsplit(".", 1)[-1]
        return AlreadyExists(f"a key with the same {_FIELD.get(column, column)} exists already")
    return Unavailable("the key store is unavailable")


_FIELD = {"digest": "key material", "key_id": "key_id", "request_id": "request_id",
          "name": "name"}


class _Conn:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cur:
            return cur.rowcount


class SqliteStore(SqlStore):
    """Two connections to one file in WAL mode: the lookups read on one, transactions
    write on the other (each behind its own lock, each on its own aiosqlite thread). A
    write, however long (a usage flush of 200,000 keys), never holds up a read: in WAL a
    reader sees the last committed state while a writer works."""

    BACKEND = "sqlite"
    USAGE_CHUNK = 4_000  # keys per UPDATE of a usage flush (2 parameters each)
    # One writer at a time (BEGIN IMMEDIATE, across processes): a transaction's rows are
    # committed before the next one takes a seq, so a reader that saw seq N saw every
    # row below it. (With 2,000, every replica re-read the last 2,000 imported keys'
    # digests every second, and about a quarter of its reads during a bulk import.)
    seq_lag = 0
    # The writer's pages: a 64 MiB cache (default 2 MiB) and a checkpoint every 16,000 WAL
    # pages (64 MiB; default 1,000). A bulk import dirties index pages all over the
    # key_id and digest indexes (both random); with the defaults each 1,000-key commit
    # re-read them and a checkpoint wrote them back almost every commit. The INSERTs of
    # 1,000,000 keys in 1,000-key transactions, alone: 72.7 -> 52.3 us of CPU per key,
    # 100.7 -> 67.9 s (either setting alone: 60.5 us); a 256 MiB cache measured the same.
    WRITER_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=16000")
    _NOT_AMONG = "seq NOT IN (SELECT value FROM json_each(?))"

    @staticmethod
    def _seqs(seqs: Sequence[int]) -> Any:
        return orjson.dumps(list(seqs)).decode()

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None  # reads
        self._writer: aiosqlite.Connection | None = None  # transactions
        self._lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        return db

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        for pragma in self.WRITER_PRAGMAS:
            await self._writer.execute(pragma)
        self._db = await self._connect()
        await self.migrate()

    async def close(self) -> None:
        for db in (self._db, self._writer):
            if db is not None:
                await db.close()
        self._db = self._writer = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        if self._db is None:
            raise Unavailable("the key store is not open")
        async with self._lock:
            try:
                yield _Conn(self._db)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        db = self._writer
        if db is None:
            raise Unavailable("the key store is not open")
        async with self._write_lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Conn(db)
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    async def record_usage(self, usage: dict[str, int]) -> None:
        """One UPDATE per ``USAGE_CHUNK`` keys (not one per key), each its own transaction
        on the writer connection, so that other writes (the change-log heartbeat, whose
        lateness would end the replica's lease on its caches) wait for one chunk, not the
        whole flush: last_used_time only ever moves forwards."""
        items = sorted(usage.items())
        for start in range(0, len(items), self.USAGE_CHUNK):
            chunk = items[start:start + self.USAGE_CHUNK]
            values = ", ".join(["(?, ?)"] * len(chunk))
            async with self._tx() as c:
                await c.execute(
                    "UPDATE api_keys SET last_used_time = v.column2 "  # (key_id, used)
                    f"FROM (VALUES {values}) AS v WHERE api_keys.key_id = v.column1 "
                    "AND (api_keys.last_used_time IS NULL "
                    "OR api_keys.last_used_time < v.column2)",
                    *(x for pair in chunk for x in pair))

    async def pending_migrations(self) -> list[str]:
        async with self._conn() as c:
            await c.execute(migrations.CREATE_TABLE)
            done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
        return [name for v, name, _ in migrations.available("sqlite") if v not in done]
