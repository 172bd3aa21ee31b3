"""SQLite: writes run on their own connection, so no read waits for a write (WAL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.keys.model import ApiKey, Kind
from gateway.store.sqlite import SqliteStore


def _key(n: int) -> ApiKey:
    now = time.time_ns() // 1000
    return ApiKey(key_id=f"key-{n}", kind=Kind.ISSUED, digest=f"hs256:{n:064x}",
                  create_time=now, update_time=now, actor_id="actor")


async def test_a_read_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    await store.open()
    try:
        await store.insert_key(_key(1))
        release = asyncio.Event()

        async def long_write() -> None:
            async with store._tx() as c:  # a write transaction that stays open
                await c.execute("UPDATE api_keys SET name = 'x' WHERE key_id = 'key-1'")
                await release.wait()

        writer = asyncio.create_task(long_write())
        await asyncio.sleep(0.05)
        found = await asyncio.wait_for(store.get_by_digest(_key(1).digest), 1.0)
        assert found is not None and found.name == ""  # the last committed state
        release.set()
        await writer
        after = await store.get_by_digest(_key(1).digest)
        assert after is not None and after.name == "x"  # and the commit is seen at once
    finally:
        await store.close()


async def test_a_usage_flush_of_many_keys_is_a_few_statements(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    await store.open()
    try:
        for n in range(50):
            await store.insert_key(_key(n))
        statements: list[str] = []
        await store._writer.set_trace_callback(statements.append)  # type: ignore[union-attr]
        usage = {f"key-{n}": 1_000_000 + n for n in range(10_000)}  # most unknown: ignored
        await store.record_usage(usage)
        updates = [s for s in statements if s.startswith("UPDATE")]
        assert len(updates) == -(-10_000 // SqliteStore.USAGE_CHUNK)
        key = await store.get_key("key-7")
        assert key is not None and key.last_used_time == 1_000_007
        await store.record_usage({"key-7": 5})  # never backwards
        key = await store.get_key("key-7")
        assert key is not None and key.last_used_time == 1_000_007
    finally:
        await store.close()
