"""SQLite backend: the embedded default. The file is created and migrated on first open."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

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
    """One connection in WAL mode; a lock keeps transactions from interleaving."""

    BACKEND = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self.migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

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
        async with self._conn() as conn:
            assert self._db is not None
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def pending_migrations(self) -> list[str]:
        async with self._conn() as c:
            await c.execute(migrations.CREATE_TABLE)
            done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
        return [name for v, name, _ in migrations.available("sqlite") if v not in done]
