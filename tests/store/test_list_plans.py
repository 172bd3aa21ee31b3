"""Every filter the list API accepts walks an index at 1,000,000 keys (issue 16, item 5).

PostgreSQL: a fresh database, migrated, filled by one ``INSERT ... SELECT FROM
generate_series`` with 1,000,000 keys (most active, the oldest ones revoked or expired,
imported keys hardly ever revoked, four actors with 50,000 keys each and 200,000 with a few,
both kinds) and ANALYZEd. For every filter ``gateway.keys.listing`` accepts (none, actor_id,
status, actor_id and status), both kinds and three pages (the first, the next one by its
cursor, one in the middle of the table), the SQL ``list_keys`` runs (``list_keys_query``)
is explained with EXPLAIN ANALYZE as a custom and as a generic plan (asyncpg prepares its
statements; PostgreSQL may switch to the generic plan after five runs). Neither may hold a
Seq Scan of api_keys, nor read more than 2% of the table: an index walked from the start
with a filter that throws the rows away is a scan by another name. The time of each
``list_keys`` call is printed (``-s``), not asserted.

SQLite: the same queries on 20,000 keys (its planner does not need the size to choose),
with and without ANALYZE statistics: EXPLAIN QUERY PLAN shows an index search, never a scan
of api_keys nor a sort.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import PG_ADMIN_DSN, require_service

from gateway.keys.listing import DEFAULT_PAGE_SIZE
from gateway.keys.model import KeyStatus, Kind
from gateway.store.base import list_keys_query
from gateway.store.postgres import PostgresStore, _numbered
from gateway.store.sqlite import SqliteStore

N = 1_000_000
T_NOW = 1_760_000_000_000_000  # the "now" of every query, in microseconds
MINUTE = 60_000_000
TTL = 680 * 24 * 60 * MINUTE  # the keys created in the first ~14 of the 694 days expired
LIMIT = DEFAULT_PAGE_SIZE + 1  # what KeyService.list asks for
MAX_READ = N // 50  # rows a query may read (returned or thrown away): 2% of the table

STATUSES = (None, KeyStatus.ACTIVE, KeyStatus.REVOKED, KeyStatus.EXPIRED)
# big-0: 40,000 issued and 10,000 imported keys. big-1: 50,000 issued keys, no imported one.
# user-123: five keys. nobody: none.
ACTORS = (None, "big-0", "big-1", "user-123", "nobody")

# One key a minute for N minutes, seq = i. 30% of the keys expire TTL after creation, so
# only the oldest have expired (~6,000). 5% of the issued keys in the oldest 40% are
# revoked (~18,000), and one imported key in 5,000 (~20).
FILL = f"""
INSERT INTO api_keys (key_id, kind, digest, name, actor_id, visibility, create_time,
                      update_time, expire_time, revoke_time, revocation_reason, secret_format)
SELECT 'k-' || lpad(i::text, 8, '0'), kind, 'hs256:' || lpad(i::text, 8, '0'), 'key ' || i,
       CASE WHEN i % 100 < 20 THEN 'big-' || (i % 4) ELSE 'user-' || (i % 200000) END,
       'KEY_VISIBILITY_SECRET', ct, ct,
       CASE WHEN expiring THEN ct + {TTL} END,
       CASE WHEN revoked THEN ct + {MINUTE} END,
       CASE WHEN revoked THEN 'REVOCATION_REASON_SUPERSEDED' END,
       CASE WHEN kind = 'issued' THEN 'v2' ELSE 'raw' END
FROM (SELECT i, kind, ct, r2 < 0.3 AS expiring,
             (kind = 'issued' AND i < {N * 4 // 10} AND r1 < 0.05)
             OR (kind = 'imported' AND r1 < 0.0002) AS revoked
      FROM (SELECT i, CASE WHEN i % 10 = 0 THEN 'imported' ELSE 'issued' END AS kind,
                   {T_NOW} - ({N} - i) * {MINUTE} AS ct, random() AS r1, random() AS r2
            FROM generate_series(1::bigint, {N}) AS i) AS r) AS g
"""


def _label(kind: Kind, actor: str | None, status: KeyStatus | None) -> str:
    return f"{kind.value}-{actor or 'any'}-{status.name if status else 'ANY'}"


COMBINATIONS = [
    pytest.param(kind, actor, status, id=_label(kind, actor, status))
    for kind in Kind for actor in ACTORS for status in STATUSES
]


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def million() -> Iterator[str]:
    """A database of its own, migrated, holding N keys; dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"gw_plans_{uuid.uuid4().hex[:10]}"
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fill() -> None:
        store = PostgresStore(dsn)
        await store.open()
        try:
            assert "0003_list_filter_indexes.sql" in await store.migrate()
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            await conn.execute("SELECT setseed(0.16)")
            await conn.execute(FILL, timeout=300)
            await conn.execute("ANALYZE api_keys")
            print(f"\n{N:,} keys inserted and analyzed in {time.perf_counter() - started:.1f} s")
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        asyncio.run(fill())
        yield dsn
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if node.get("Relation Name") == "api_keys":
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def _shape(node: dict[str, Any]) -> str:
    name = node["Node Type"] + (f" {node['Index Name']}" if "Index Name" in node else "")
    children = [_shape(c) for c in node.get("Plans", [])]
    return name + (" > " + ", ".join(children) if children else "")


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any], mode: str
                   ) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``sql`` prepared as asyncpg prepares it, planned as ``mode``."""
    await conn.execute(f"SET plan_cache_mode = {mode}")
    await conn.execute(f"PREPARE list_page AS {_numbered(sql)}")
    try:
        raw = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE list_page"
            f"({', '.join(_literal(a) for a in args)})")
    finally:
        await conn.execute("DEALLOCATE list_page")
    plan: dict[str, Any] = json.loads(raw)[0]
    return plan


def _check(plan: dict[str, Any], what: str) -> None:
    scans = list(_scans(plan["Plan"]))
    assert scans, f"{what}: no scan of api_keys in {_shape(plan['Plan'])}"
    for scan in scans:
        assert scan["Node Type"] != "Seq Scan", f"{what}: {_shape(plan['Plan'])}"
        read = (scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
                + scan.get("Rows Removed by Index Recheck", 0)) * scan["Actual Loops"]
        assert read <= MAX_READ, (
            f"{what}: reads {read:,} rows of api_keys for {scan['Actual Rows']} "
            f"({_shape(plan['Plan'])})")


@pytest.mark.parametrize(("kind", "actor", "status"), COMBINATIONS)
async def test_postgres_list_filter_uses_an_index(million: str, kind: Kind, actor: str | None,
                                                  status: KeyStatus | None) -> None:
    store = PostgresStore(million, min_size=1, max_size=1)
    await store.open()
    conn = await asyncpg.connect(million)
    try:
        afters = [0]
        first = await store.list_keys(kind, actor_id=actor, status=status, now_us=T_NOW,
                                      after_seq=0, limit=LIMIT)
        if len(first) == LIMIT:
            afters.append(first[-2].seq)  # the cursor of the second page
        afters.append(N // 2)
        for after in afters:
            sql, args = list_keys_query(kind, actor_id=actor, status=status, now_us=T_NOW,
                                        after_seq=after, limit=LIMIT)
            what = f"{_label(kind, actor, status)} after seq {after}"
            custom = await _explain(conn, sql, args, "force_custom_plan")
            generic = await _explain(conn, sql, args, "force_generic_plan")
            _check(custom, what)
            _check(generic, f"{what} (generic plan)")
            times = []
            for _ in range(3):
                started = time.perf_counter()
                rows = await store.list_keys(kind, actor_id=actor, status=status,
                                             now_us=T_NOW, after_seq=after, limit=LIMIT)
                times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == custom["Plan"]["Actual Rows"]
            print(f"\n{what:40} {len(rows):3} rows {statistics.median(times):7.2f} ms "
                  f"(server {custom['Execution Time']:6.2f} ms) {_shape(custom['Plan'])}")
    finally:
        await conn.close()
        await store.close()


# -- SQLite -------------------------------------------------------------------------------

SQLITE_N = 20_000
SQLITE_FILL = f"""
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {SQLITE_N})
INSERT INTO api_keys (key_id, kind, digest, actor_id, visibility, create_time, update_time,
                      expire_time, revoke_time)
SELECT 'k-' || i, CASE WHEN i % 10 = 0 THEN 'imported' ELSE 'issued' END, 'hs256:' || i,
       CASE WHEN i % 100 < 20 THEN 'big-' || (i % 4) ELSE 'user-' || (i % 4000) END,
       'KEY_VISIBILITY_SECRET', i, i,
       CASE WHEN (i * 7919) % 10 < 3 THEN i + 1000 END,
       CASE WHEN i < {SQLITE_N * 4 // 10} AND (i * 104729) % 100 < 5 THEN i + 1 END
FROM g
"""


async def test_sqlite_list_filters_search_an_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "plans.db")
    await store.open()  # migrates
    await store.close()
    db = sqlite3.connect(tmp_path / "plans.db")
    try:
        db.execute(SQLITE_FILL)
        db.commit()
        for analyzed in (False, True):
            if analyzed:
                db.execute("ANALYZE")
            for kind in Kind:
                for actor in (None, "big-0", "big-1", "user-12", "nobody"):
                    for status in STATUSES:
                        for after in (0, SQLITE_N // 2):
                            sql, args = list_keys_query(
                                kind, actor_id=actor, status=status, now_us=5_000,
                                after_seq=after, limit=LIMIT)
                            plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
                            what = (f"{_label(kind, actor, status)} after seq {after}"
                                    f"{' (ANALYZE)' if analyzed else ''}: {plan}")
                            assert any(step.startswith("SEARCH api_keys USING ")
                                       for step in plan), what
                            assert not any(step.startswith("SCAN api_keys") for step in plan), what
                            assert not any("TEMP B-TREE" in step for step in plan), what
    finally:
        db.close()
