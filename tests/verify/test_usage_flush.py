"""The verify path writes nothing to the store: ``last_used_time`` is aggregated in memory
and flushed in batches (every few seconds, and once more on a graceful shutdown).

Proof without timing: while the test holds SQLite's write lock (WAL mode: readers go on,
writers wait and then fail), every kind of verify still answers "valid", and the row is
unchanged; once the lock is released the flush lands.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Gateway, sqlite_last_used, start_gateway
from verify_helpers import ISSUED, batch, decide, http, issue, verify, wait_until

from gateway.verify.usage import UsageRecorder


@contextmanager
def _write_locked(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def _adminsqlite_last_used(gw: Gateway, key_id: str) -> str | None:
    r = http().get(f"{gw.url}{ISSUED}/{key_id}", headers=gw.auth)
    assert r.status_code == 200
    return r.json().get("last_used_time")


def test_verify_writes_nothing_and_usage_is_flushed_later(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_L1_TTL": "0"})  # every verify reads the store
    db = tmp_path / "gateway.db"
    try:
        a, key_a = issue(gw)
        b, key_b = issue(gw, rate_limit_policy={"quota": "100", "window": "3600s"})
        assert sqlite_last_used(db, key_a["key_id"]) is None
        with _write_locked(db) as conn:
            for _ in range(3):
                assert verify(gw, a).json()["is_valid"] is True
                assert verify(gw, b).json()["is_valid"] is True
                assert verify(gw, a, headers={"Cache-Control": "no-store"}).json()["is_valid"]
                assert decide(gw, a).status_code == 200
                assert decide(gw, b).status_code == 200
                results = batch(gw, [a, b]).json()["results"]
                assert [r["is_valid"] for r in results] == [True, True]
            for key in (key_a, key_b):
                row = conn.execute("SELECT last_used_time FROM api_keys WHERE key_id = ?",
                                   (key["key_id"],)).fetchone()
                assert row == (None,)
        # the lock is gone: the periodic flush writes what was aggregated
        wait_until(lambda: _adminsqlite_last_used(gw, key_a["key_id"]), timeout=30,
                   message="the usage flush")
        wait_until(lambda: sqlite_last_used(db, key_b["key_id"]), timeout=30,
                   message="the usage flush")
        used = sqlite_last_used(db, key_a["key_id"])
        assert used is not None and used >= _created(db, key_a["key_id"])
    finally:
        gw.stop()
    assert "Traceback" not in gw.logs()


def test_uses_answered_from_l1_outside_the_fast_path_get_their_real_time(
        tmp_path: Path) -> None:
    """A required scope (forward auth) or a derived-token parent takes the general L1
    answer rather than the fast path; its use must be stamped on the same clock."""
    gw = start_gateway(tmp_path, {})
    db = tmp_path / "gateway.db"
    try:
        secret, key = issue(gw, scopes=["read"])
        for _ in range(3):  # the first fills L1, the others are answered from it
            r = decide(gw, secret, headers={"X-Required-Scope": "read"})
            assert r.status_code == 200 and r.headers["x-cache"] in ("STORE", "L1")
        wait_until(lambda: sqlite_last_used(db, key["key_id"]), timeout=30,
                   message="the usage flush")
        used = sqlite_last_used(db, key["key_id"])
        assert used is not None
        assert _created(db, key["key_id"]) <= used <= time.time_ns() // 1000
    finally:
        gw.stop()


def test_usage_is_flushed_on_graceful_shutdown(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {})
    db = tmp_path / "gateway.db"
    try:
        secret, key = issue(gw)
        with _write_locked(db):  # no periodic flush can land before the shutdown
            assert verify(gw, secret).json()["is_valid"] is True
            assert verify(gw, secret).json()["is_valid"] is True
    finally:
        gw.stop()  # SIGTERM: the drain, then the lifespan shutdown, which flushes
    assert gw.proc.returncode == 0
    used = sqlite_last_used(db, key["key_id"])
    assert used is not None and used >= _created(db, key["key_id"])


def test_an_unused_key_keeps_no_last_used_time(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {})
    db = tmp_path / "gateway.db"
    try:
        used, used_key = issue(gw)
        _, idle_key = issue(gw)
        revoked, revoked_key = issue(gw)
        http().post(f"{gw.url}{ISSUED}/{revoked_key['key_id']}:revoke", headers=gw.auth,
                    json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
        verify(gw, used)
        verify(gw, revoked)  # a refused verify is not a use
    finally:
        gw.stop()
    assert sqlite_last_used(db, used_key["key_id"]) is not None
    assert sqlite_last_used(db, idle_key["key_id"]) is None
    assert sqlite_last_used(db, revoked_key["key_id"]) is None


def _created(db: Path, key_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT create_time FROM api_keys WHERE key_id = ?",
                                (key_id,)).fetchone()[0])


class _SlowStore:
    """record_usage: the first call hangs (a write stuck behind a lock)."""

    def __init__(self) -> None:
        self.written: list[dict[str, int]] = []
        self.entered = asyncio.Event()

    async def record_usage(self, usage: dict[str, int]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            await asyncio.sleep(3600)
        self.written.append(dict(usage))


async def test_a_flush_cut_short_by_shutdown_is_written_by_the_final_flush() -> None:
    store = _SlowStore()
    usage = UsageRecorder(store, interval_s=0.01)  # type: ignore[arg-type]
    usage.start()
    usage.record("key-1")
    await store.entered.wait()  # the periodic flush took the batch and hangs
    await usage.stop()
    assert [set(batch) for batch in store.written] == [{"key-1"}]


class _RecordingStore:
    def __init__(self) -> None:
        self.written: list[dict[str, int]] = []

    async def record_usage(self, usage: dict[str, int]) -> None:
        self.written.append(dict(usage))


async def test_a_use_stamped_on_the_monotonic_clock_is_written_as_wall_time() -> None:
    store = _RecordingStore()
    usage = UsageRecorder(store)  # type: ignore[arg-type]
    pending = usage.pending
    usage.record("key-1", time.monotonic() - 2.0)  # used two seconds ago
    pending["key-2"] = time.monotonic()  # as the hot path writes it
    await usage.flush()
    assert usage.pending is pending and not pending  # the same dict, emptied
    [batch] = store.written
    now_us = time.time_ns() // 1000
    assert abs(batch["key-1"] - (now_us - 2_000_000)) < 500_000
    assert abs(batch["key-2"] - now_us) < 500_000


def test_last_used_never_moves_backwards_when_uses_are_recorded_out_of_order() -> None:
    """A request that started earlier and finished later records an earlier use after a
    later one: the later one stays (the store keeps the later one as well)."""
    usage = UsageRecorder(_RecordingStore())  # type: ignore[arg-type]
    usage.record("key-1", 100.0)
    usage.record("key-1", 98.0)
    usage.record("key-2", 5.0)
    assert usage.pending == {"key-1": 100.0, "key-2": 5.0}
    usage.record("key-1", 101.0)
    assert usage.pending["key-1"] == 101.0


async def test_a_large_flush_is_written_a_chunk_at_a_time_and_a_failed_chunk_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop runs between chunks (a request is answered mid-flush); the chunk that fails
    and the ones after it are kept for the next flush, the written ones are not."""
    from gateway.errors import Unavailable
    from gateway.verify import usage as usage_module

    monkeypatch.setattr(usage_module, "CHUNK", 3)
    ticks: list[int] = []

    class ChunkStore(_RecordingStore):
        async def record_usage(self, usage: dict[str, int]) -> None:
            ticks.append(len(self.written))
            await asyncio.sleep(0)
            if len(self.written) == 2:
                raise Unavailable("the key store is unavailable")
            await super().record_usage(usage)

    async def other_request() -> None:
        while len(ticks) < 3:
            await asyncio.sleep(0)
        ticks.append(-1)  # ran while the flush was between chunks

    store = ChunkStore()
    recorder = UsageRecorder(store)  # type: ignore[arg-type]
    for n in range(10):
        recorder.record(f"key-{n}")
    await asyncio.gather(recorder.flush(), other_request())
    assert [len(batch) for batch in store.written] == [3, 3]
    assert sorted(recorder.pending) == [f"key-{n}" for n in range(6, 10)]
    assert -1 in ticks


async def test_counts_are_written_a_chunk_at_a_time_and_a_failed_chunk_is_counted_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts go out ``CHUNK`` rows a transaction with the loop free between them (100,000
    keys' counts merged and sorted at once held it 120-210 ms); a statement never names a
    bucket twice (the hot path's and the general path's counts of the same key go in
    different ones); what fails, and everything after it, is counted again next time."""
    from gateway.errors import Unavailable
    from gateway.verify import usage as usage_module

    monkeypatch.setattr(usage_module, "CHUNK", 3)
    ticks: list[int] = []
    written: list[list[tuple[str, int, str, int]]] = []

    class CountStore:
        async def add_usage_counts(self, rows: list[tuple[str, int, str, int]]) -> None:
            ticks.append(len(written))
            await asyncio.sleep(0)
            if len(written) == 3:
                raise Unavailable("the key store is unavailable")
            written.append(rows)

    async def other_request() -> None:
        while len(ticks) < 2:
            await asyncio.sleep(0)
        ticks.append(-1)  # ran while the flush was between chunks

    recorder = UsageRecorder(CountStore())  # type: ignore[arg-type]
    for n in range(5):
        recorder.valid[f"key-{n}"] = n + 1  # as the hot path counts
    for n in range(4):
        recorder.count("key-0", "VALID")
        recorder.count(f"key-{n}", "REVOKED")
    with pytest.raises(Unavailable):
        await asyncio.gather(recorder.flush_counts(), other_request())
    assert -1 in ticks
    assert [len(rows) for rows in written] == [3, 2, 3]  # the hot path's 5, then 3 of 5
    assert [r[2] for r in written[0] + written[1]] == ["VALID"] * 5
    for rows in written:
        assert len({(r[0], r[1], r[2]) for r in rows}) == len(rows)  # each bucket once
    assert {(r[0], r[2]): r[3] for r in written[0] + written[1]} == {
        (f"key-{n}", "VALID"): n + 1 for n in range(5)}
    # the general path's first three rows were written; the rest is counted again
    sent = {(r[0], r[2]): r[3] for r in written[2]}
    assert sent == {("key-0", "VALID"): 4, ("key-0", "REVOKED"): 1, ("key-1", "REVOKED"): 1}
    assert recorder.outcomes == {("key-2", "REVOKED"): 1, ("key-3", "REVOKED"): 1}
    assert not recorder.valid
