"""Persistent storage: the Store protocol and its SQLite and PostgreSQL backends."""

from __future__ import annotations

from gateway.settings import Settings, sqlite_path
from gateway.store.base import Store

__all__ = ["Store", "build_store"]


def build_store(settings: Settings) -> Store:
    if settings.is_sqlite:
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(settings.database_url))
    from gateway.store.postgres import PostgresStore

    return PostgresStore(settings.database_url)
