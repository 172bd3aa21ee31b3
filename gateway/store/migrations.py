"""Versioned SQL migrations: ``migrations/<backend>/NNNN_name.sql``, applied in order, once."""

from __future__ import annotations

from importlib import resources


def available(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file of ``backend``, in order."""
    folder = resources.files("gateway.store").joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """Split a migration into statements (migrations hold no semicolons inside strings)."""
    return [s.strip() for s in sql.split(";") if s.strip()]


CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
