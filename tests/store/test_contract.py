"""The Store contract: every backend (SQLite, PostgreSQL) must pass this one suite."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.events import AuditEvent
from gateway.audit.query import AuditFilter
from gateway.errors import AlreadyExists
from gateway.keys.model import ApiKey, KeyStatus, Kind, RateLimit, RevocationReason, Visibility
from gateway.store import migrations
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

T0 = 1_700_000_000_000_000  # a fixed instant in microseconds; the store never reads the clock


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A closed store of each kind (PostgreSQL: the session's fresh database)."""
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "contract.db")
    return PostgresStore(request.getfixturevalue("pg_database"))


@pytest.fixture
async def store(backend: Store) -> AsyncIterator[Store]:
    s = backend
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def make_key(actor: str, *, kind: Kind = Kind.ISSUED, seconds: int = 0, **changes: object
             ) -> ApiKey:
    token = secrets.token_hex(8)
    key = ApiKey(key_id=f"k-{token}", kind=kind, digest=f"hs256:{token}",
                 create_time=T0 + seconds * 1_000_000, update_time=T0 + seconds * 1_000_000,
                 actor_id=actor, name=f"name-{token}")
    return key.with_changes(**changes) if changes else key


@pytest.fixture
def actor() -> str:
    return f"actor-{secrets.token_hex(6)}"


async def test_migrate_is_idempotent(store: Store) -> None:
    assert await store.migrate() == []
    assert await store.pending_migrations() == []


@pytest.fixture
def fresh_postgres(fresh_pg_database: str) -> Store:
    return PostgresStore(fresh_pg_database)


async def test_first_migrate_applies_every_pending_migration_once(fresh_postgres: Store
                                                                  ) -> None:
    await fresh_postgres.open()
    try:
        pending = await fresh_postgres.pending_migrations()
        assert pending and pending[0].startswith("0001_")
        assert await fresh_postgres.migrate() == pending
        assert await fresh_postgres.pending_migrations() == []
        assert await fresh_postgres.migrate() == []
    finally:
        await fresh_postgres.close()


async def test_sqlite_migrates_itself_on_first_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new" / "gateway.db")
    await store.open()
    try:
        assert await store.pending_migrations() == []
        assert await store.migrate() == []
        await store.ping()
    finally:
        await store.close()


async def test_insert_then_get_round_trips_every_field(store: Store, actor: str) -> None:
    key = make_key(
        actor, scopes=("read", "write"), visibility=Visibility.PUBLIC,
        metadata={"env": "prod", "nested": {"n": 1, "list": [1, "two", None]}},
        allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"), rate_limit=RateLimit(100, 60),
        expire_time=T0 + 3_600_000_000, last_used_time=T0 + 5, request_id="req-1",
        request_fingerprint="fp-1",
    )
    stored = await store.insert_key(key)
    assert stored.seq > 0
    got = await store.get_key(key.key_id)
    assert got == key
    assert got is not None and got.seq == stored.seq


async def test_get_unknown_key_returns_none(store: Store) -> None:
    assert await store.get_key("no-such-key") is None
    assert await store.get_by_digest("hs256:no-such-digest") is None
    assert await store.get_by_request_id(Kind.ISSUED, "no-such-request") is None


async def test_get_by_digest_finds_the_key(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    got = await store.get_by_digest(key.digest)
    assert got is not None and got.key_id == key.key_id


async def test_get_by_request_id_is_scoped_by_kind(store: Store, actor: str) -> None:
    request_id = f"req-{actor}"
    issued = await store.insert_key(make_key(actor, request_id=request_id))
    imported = await store.insert_key(make_key(actor, kind=Kind.IMPORTED, request_id=request_id))
    got_issued = await store.get_by_request_id(Kind.ISSUED, request_id)
    got_imported = await store.get_by_request_id(Kind.IMPORTED, request_id)
    assert got_issued is not None and got_issued.key_id == issued.key_id
    assert got_imported is not None and got_imported.key_id == imported.key_id


@pytest.mark.parametrize("clash", ["key_id", "digest", "request_id"])
async def test_unique_violation_raises_already_exists_and_writes_nothing(
    store: Store, actor: str, clash: str
) -> None:
    first = await store.insert_key(make_key(actor, request_id=f"req-{actor}"))
    second = make_key(actor, request_id=f"other-{actor}")
    second = second.with_changes(**{clash: getattr(first, clash)})
    with pytest.raises(AlreadyExists):
        await store.insert_key(second)
    rows = await store.list_keys(Kind.ISSUED, actor_id=actor, status=None, now_us=T0,
                                 after_seq=0, limit=10)
    assert [k.key_id for k in rows] == [first.key_id]


async def test_list_keys_filters_by_kind_and_actor(store: Store, actor: str) -> None:
    mine = await store.insert_key(make_key(actor))
    await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
    await store.insert_key(make_key(actor + "-other"))
    rows = await store.list_keys(Kind.ISSUED, actor_id=actor, status=None, now_us=T0,
                                 after_seq=0, limit=10)
    assert [k.key_id for k in rows] == [mine.key_id]


async def test_list_keys_filters_by_status_at_the_given_instant(store: Store, actor: str
                                                                ) -> None:
    active = await store.insert_key(make_key(actor))
    expiring = await store.insert_key(make_key(actor, expire_time=T0 + 10))
    revoked = await store.insert_key(make_key(actor))
    await store.revoke_key(revoked.key_id, RevocationReason.KEY_COMPROMISE, "", T0)

    async def ids(status: KeyStatus | None, now: int) -> list[str]:
        rows = await store.list_keys(Kind.ISSUED, actor_id=actor, status=status, now_us=now,
                                     after_seq=0, limit=10)
        return [k.key_id for k in rows]

    assert await ids(KeyStatus.ACTIVE, T0) == [active.key_id, expiring.key_id]
    assert await ids(KeyStatus.ACTIVE, T0 + 10) == [active.key_id]
    assert await ids(KeyStatus.EXPIRED, T0 + 10) == [expiring.key_id]
    assert await ids(KeyStatus.EXPIRED, T0) == []
    assert await ids(KeyStatus.REVOKED, T0) == [revoked.key_id]
    assert await ids(None, T0) == [active.key_id, expiring.key_id, revoked.key_id]


async def test_list_keys_pages_by_seq_without_gaps_or_repeats(store: Store, actor: str) -> None:
    inserted = [await store.insert_key(make_key(actor)) for _ in range(7)]
    seen: list[str] = []
    after = 0
    while True:
        rows = await store.list_keys(Kind.ISSUED, actor_id=actor, status=None, now_us=T0,
                                     after_seq=after, limit=3)
        if not rows:
            break
        assert len(rows) <= 3
        seqs = [r.seq for r in rows]
        assert seqs == sorted(seqs) and seqs[0] > after
        seen += [r.key_id for r in rows]
        after = rows[-1].seq
    assert seen == [k.key_id for k in inserted]


async def test_update_key_applies_when_update_time_matches(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    changed = key.with_changes(
        name="renamed", scopes=("admin",), metadata={"a": 1}, allowed_cidrs=("192.0.2.0/24",),
        rate_limit=RateLimit(5, 1), expire_time=T0 + 99, update_time=T0 + 1)
    assert await store.update_key(changed, key.update_time) is True
    assert await store.get_key(key.key_id) == changed


async def test_update_key_refuses_a_stale_update_time(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    first = key.with_changes(name="first", update_time=T0 + 1)
    second = key.with_changes(name="second", update_time=T0 + 2)
    assert await store.update_key(first, key.update_time) is True
    assert await store.update_key(second, key.update_time) is False
    got = await store.get_key(key.key_id)
    assert got is not None and got.name == "first"


async def test_update_key_refuses_a_revoked_key(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    revoked = await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + 1)
    assert revoked is not None
    attempt = revoked.with_changes(name="after-revoke", update_time=T0 + 2)
    assert await store.update_key(attempt, revoked.update_time) is False
    got = await store.get_key(key.key_id)
    assert got is not None and got.name == key.name


async def test_revoke_key_records_reason_and_time(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    revoked = await store.revoke_key(
        key.key_id, RevocationReason.PRIVILEGE_WITHDRAWN, "left the team", T0 + 7)
    assert revoked is not None
    assert revoked.revoke_time == T0 + 7
    assert revoked.revocation_reason is RevocationReason.PRIVILEGE_WITHDRAWN
    assert revoked.revocation_description == "left the team"
    assert revoked.status(T0 + 8) is KeyStatus.REVOKED
    assert await store.get_key(key.key_id) == revoked


async def test_revoke_key_twice_keeps_the_first_revocation(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    first = await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + 1)
    again = await store.revoke_key(key.key_id, RevocationReason.SUPERSEDED, "", T0 + 2)
    assert first is not None and again is None  # the second call revoked nothing
    assert await store.get_key(key.key_id) == first


async def test_of_concurrent_revokes_exactly_one_revokes(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    results = await asyncio.gather(*(
        store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + i)
        for i in range(1, 9)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get_key(key.key_id) == winners[0]


async def test_revoke_unknown_key_returns_none(store: Store) -> None:
    assert await store.revoke_key("no-such-key", RevocationReason.KEY_COMPROMISE, "", T0) is None


async def test_rotate_key_revokes_old_as_superseded_and_inserts_new(store: Store, actor: str
                                                                    ) -> None:
    old = await store.insert_key(make_key(actor))
    new = make_key(actor, seconds=1)
    stored = await store.rotate_key(old.key_id, new, T0 + 1_000_000)
    assert stored is not None and stored.seq > old.seq
    assert await store.get_key(new.key_id) == new
    old_now = await store.get_key(old.key_id)
    assert old_now is not None
    assert old_now.revocation_reason is RevocationReason.SUPERSEDED
    assert old_now.revoke_time == T0 + 1_000_000


async def test_rotate_key_of_a_revoked_key_returns_none_and_inserts_nothing(
    store: Store, actor: str
) -> None:
    old = await store.insert_key(make_key(actor))
    await store.revoke_key(old.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + 1)
    new = make_key(actor)
    assert await store.rotate_key(old.key_id, new, T0 + 2) is None
    assert await store.get_key(new.key_id) is None
    old_now = await store.get_key(old.key_id)
    assert old_now is not None and old_now.revocation_reason is RevocationReason.KEY_COMPROMISE


async def test_rotate_key_of_an_unknown_key_returns_none_and_inserts_nothing(
    store: Store, actor: str
) -> None:
    new = make_key(actor)
    assert await store.rotate_key("no-such-key", new, T0) is None
    assert await store.get_key(new.key_id) is None


async def test_rotate_key_rolls_back_the_revocation_when_the_insert_fails(
    store: Store, actor: str
) -> None:
    old = await store.insert_key(make_key(actor))
    other = await store.insert_key(make_key(actor))
    clashing = make_key(actor).with_changes(digest=other.digest)
    with pytest.raises(AlreadyExists):
        await store.rotate_key(old.key_id, clashing, T0 + 1)
    old_now = await store.get_key(old.key_id)
    assert old_now is not None and old_now.revoke_time is None
    assert await store.get_key(clashing.key_id) is None


async def test_delete_key_removes_it_once(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
    assert await store.delete_key(key.key_id) is True
    assert await store.get_key(key.key_id) is None
    assert await store.delete_key(key.key_id) is False


async def test_record_usage_sets_last_used_time(store: Store, actor: str) -> None:
    a = await store.insert_key(make_key(actor))
    b = await store.insert_key(make_key(actor))
    await store.record_usage({a.key_id: T0 + 10, b.key_id: T0 + 20, "no-such-key": T0})
    got_a, got_b = await store.get_key(a.key_id), await store.get_key(b.key_id)
    assert got_a is not None and got_a.last_used_time == T0 + 10
    assert got_b is not None and got_b.last_used_time == T0 + 20


async def test_record_usage_never_moves_last_used_time_backwards(store: Store, actor: str
                                                                 ) -> None:
    key = await store.insert_key(make_key(actor))
    await store.record_usage({key.key_id: T0 + 50})
    await store.record_usage({key.key_id: T0 + 40})
    got = await store.get_key(key.key_id)
    assert got is not None and got.last_used_time == T0 + 50
    await store.record_usage({key.key_id: T0 + 60})
    got = await store.get_key(key.key_id)
    assert got is not None and got.last_used_time == T0 + 60


async def test_record_usage_does_not_touch_update_time(store: Store, actor: str) -> None:
    key = await store.insert_key(make_key(actor))
    await store.record_usage({key.key_id: T0 + 50})
    got = await store.get_key(key.key_id)
    assert got is not None and got.update_time == key.update_time


async def test_put_state_creates_only_when_absent(store: Store, actor: str) -> None:
    name = f"state-{actor}"
    assert await store.get_state(name) is None
    assert await store.put_state(name, "v1", None) is True
    assert await store.put_state(name, "v1-again", None) is False
    assert await store.get_state(name) == "v1"


async def test_put_state_compare_and_set(store: Store, actor: str) -> None:
    name = f"state-{actor}"
    await store.put_state(name, "v1", None)
    assert await store.put_state(name, "v2", "wrong") is False
    assert await store.get_state(name) == "v1"
    assert await store.put_state(name, "v2", "v1") is True
    assert await store.get_state(name) == "v2"
    assert await store.put_state(name, "v3", "v1") is False
    assert await store.get_state(name) == "v2"


async def test_put_state_with_expected_value_does_not_create(store: Store, actor: str) -> None:
    name = f"state-{actor}"
    assert await store.put_state(name, "v1", "anything") is False
    assert await store.get_state(name) is None


async def test_ping_answers_when_open(store: Store) -> None:
    await store.ping()


async def test_concurrent_usage_flushes_in_opposite_orders_do_not_deadlock(
    store: Store, actor: str
) -> None:
    keys = [await store.insert_key(make_key(actor)) for _ in range(40)]
    for round_ in range(1, 6):
        forward = {k.key_id: T0 + 2 * round_ for k in keys}
        backward = {k.key_id: T0 + 2 * round_ + 1 for k in reversed(keys)}
        await asyncio.gather(store.record_usage(forward), store.record_usage(backward))
    for key in keys:
        got = await store.get_key(key.key_id)
        assert got is not None and got.last_used_time == T0 + 11


async def test_insert_new_keys_writes_a_batch_and_skips_what_exists(store: Store) -> None:
    """A batch import's insert: one transaction; a key whose key_id or digest exists
    already, or repeats within the batch, comes back as None and is not written."""
    import dataclasses

    existing = await store.insert_key(_batch_key(0))
    batch = [_batch_key(n) for n in range(1, 1201)]  # more than one statement's worth
    batch.insert(10, _batch_key(0))  # exists already
    batch.insert(20, batch[5])  # twice in the batch
    batch.insert(30, dataclasses.replace(_batch_key(9999), digest=existing.digest))
    stored = await store.insert_new_keys(batch)
    assert [i for i, k in enumerate(stored) if k is None] == [10, 20, 30]
    assert all(k is not None and k.seq > existing.seq for i, k in enumerate(stored)
               if i not in (10, 20, 30))
    for key in (batch[0], batch[-1]):
        found = await store.get_by_digest(key.digest)
        assert found is not None and found.key_id == key.key_id
    assert await store.get_key(_batch_key(9999).key_id) is None


def _batch_key(n: int) -> ApiKey:
    now = time.time_ns() // 1000
    return ApiKey(key_id=f"batch-{n}", kind=Kind.IMPORTED, digest=f"hs256:{n:064x}",
                  create_time=now, update_time=now, actor_id="actor")


async def test_every_change_writes_its_change_log_row_in_its_own_transaction(
        store: Store) -> None:
    first = await store.first_change_since(time.time_ns() // 1000)
    key = await store.insert_key(_batch_key(50_001))
    assert (await store.follow_changes(first))[1] == []  # a new key changes no answer
    assert await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", 1)
    assert await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", 2) is None
    other = await store.insert_key(_batch_key(50_002))
    assert await store.update_key(other.with_changes(name="renamed"), other.update_time)
    assert not await store.update_key(other.with_changes(name="again"), other.update_time - 1)
    moved = await store.move_digest(other.key_id, other.digest, "hs256:" + "9" * 64)
    assert moved is not None
    assert await store.delete_key(other.key_id)
    assert not await store.delete_key(other.key_id)
    at, rows = await store.follow_changes(first)
    assert [items for _, items in rows] == [
        [(key.digest, key.key_id)],  # the second revoke changed nothing: no row
        [(other.digest, other.key_id)],
        [(other.digest, other.key_id), ("hs256:" + "9" * 64, other.key_id)],
        [("hs256:" + "9" * 64, other.key_id)]]
    assert abs(at - time.time_ns() // 1000) < 5_000_000  # the store's clock
    assert await store.first_change_since(2**62) == rows[-1][0]  # none after: the last
    assert await store.first_change_since(0) < rows[0][0]
    assert [r[0] for r in (await store.follow_changes(first, limit=2))[1]] == [
        r[0] for r in rows[:2]]
    await store.prune_changes(2**62)
    assert (await store.follow_changes(first))[1] == []


async def test_replicas_record_how_far_they_followed_the_change_log(store: Store) -> None:
    """``unconfirmed``: the other replicas trusted past a time that have not followed
    past it; a replica that left, or whose lease ran out, is not waited for. (Gateways of
    other tests share the session's database: only this test's replicas are looked at.)"""
    async def unconfirmed(replica: str, at: int | None = None) -> tuple[int, list[str]]:
        when, waiting = await store.unconfirmed(replica, at)
        return when, [r for r in waiting if r in set("abcdex")]

    at, _ = await unconfirmed("a")
    await store.heartbeat("a", at - 10, at + 1_000_000)
    await store.heartbeat("b", at - 10, at + 1_000_000)  # read the log before ``at``
    await store.heartbeat("c", at + 10, at + 1_000_000)  # after it
    await store.heartbeat("d", at - 10, at - 1)  # its lease ran out before ``at``
    await store.heartbeat("e", at - 10, at + 1)  # after ``at``, but it is over now
    await asyncio.sleep(0.01)
    assert await unconfirmed("a", at) == (at, ["b"])
    assert await unconfirmed("b", at) == (at, ["a"])
    await store.heartbeat("b", at + 20, at + 2_000_000)  # the upsert
    assert await unconfirmed("a", at) == (at, [])
    later, waiting = await unconfirmed("c")  # the store's time now
    assert later >= at and waiting == ["a", "b"]
    await store.leave("b")
    assert await unconfirmed("c", later) == (later, ["a"])
    await store.prune_changes(at + 500_000)  # drops replicas trusted until before it
    assert await unconfirmed("x", at) == (at, ["a"])  # "c" (followed), "d" gone
    await store.prune_changes(2**62)
    assert await store.unconfirmed("x", at) == (at, [])


# -- the audit trail -------------------------------------------------------------------


def _event(n: int, *, at: int, action: str = "key.issued", principal: str = "p"
           ) -> AuditEvent:
    return AuditEvent(id=f"ev-{secrets.token_hex(6)}-{n}", at=at, action=action,
                      target=f"t-{n}", principal=principal, client_address="10.0.0.1",
                      request_id=f"r-{n}", outcome="success", details={"n": n})


async def test_audit_events_list_newest_first_filtered_and_paged(store: Store) -> None:
    base = T0 + secrets.randbelow(10**12)  # apart from other runs' events in the database
    mine = f"p-{secrets.token_hex(4)}"
    events = [_event(n, at=base + n, principal=mine,
                     action="key.revoked" if n % 2 else "key.issued") for n in range(6)]
    await store.insert_audit(events[:3])
    await store.insert_audit(events[3:])
    flt = AuditFilter({"principal": mine})
    listed = await store.list_audit(flt, None, 10)
    assert [e.id for e in listed] == [e.id for e in reversed(events)]
    assert listed[0] == dataclasses.replace(events[-1], seq=listed[0].seq)  # as written
    assert [e.id for e in await store.list_audit(flt, listed[1].seq, 2)] == [
        events[3].id, events[2].id]
    revoked = await store.list_audit(AuditFilter({"principal": mine, "action": "key.revoked"},
                                                 since=base + 2, until=base + 5), None, 10)
    assert [e.id for e in revoked] == [events[3].id]


async def test_a_change_whose_event_cannot_be_written_is_not_made(store: Store, actor: str
                                                                   ) -> None:
    key = await store.insert_key(make_key(actor))
    clash = _event(0, at=T0)
    await store.insert_audit([clash])
    with pytest.raises(Exception):  # noqa: B017 (the event's id exists: the write fails)
        await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + 1,
                               [clash])
    got = await store.get_key(key.key_id)
    assert got is not None and got.revoke_time is None
    assert await store.revoke_key(key.key_id, RevocationReason.KEY_COMPROMISE, "", T0 + 1,
                                  [_event(1, at=T0)]) is not None


async def test_audit_events_are_pruned_by_age(store: Store) -> None:
    mine = f"p-{secrets.token_hex(4)}"
    await store.insert_audit([_event(0, at=5, principal=mine),
                              _event(1, at=T0 * 2, principal=mine)])
    assert await store.prune_audit(6) >= 1
    assert [e.at for e in await store.list_audit(AuditFilter({"principal": mine}), None, 10)
            ] == [T0 * 2]


async def test_a_database_of_the_previous_release_migrates(tmp_path: Path) -> None:
    """0006 (the audit trail) applies over a database that 0001 to 0005 made and that holds
    keys: they stay, and changes are recorded from then on."""
    import sqlite3

    path = tmp_path / "previous.db"
    db = sqlite3.connect(path)
    db.execute(migrations.CREATE_TABLE)
    for version, name, sql in migrations.available("sqlite"):
        if version >= 6:
            break
        for stmt in migrations.statements(sql):
            db.execute(stmt)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, "then"))
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        key = await store.insert_key(make_key("old-actor"))  # opened: migrated already
        assert await store.pending_migrations() == []
        assert await store.delete_key(key.key_id, [_event(0, at=T0)])
        assert len(await store.list_audit(AuditFilter(), None, 10)) == 1
    finally:
        await store.close()


# -- usage analytics -------------------------------------------------------------------


async def test_usage_counts_add_up_per_minute_and_outcome(store: Store, actor: str) -> None:
    key_id = f"usage-{actor}"
    await store.add_usage_counts([(key_id, 600, "VALID", 3), (key_id, 600, "REVOKED", 1),
                                  (key_id, 660, "VALID", 2)])
    await store.add_usage_counts([(key_id, 600, "VALID", 4)])  # a later flush adds
    assert await store.usage_counts(key_id, 0, 10**9) == [
        (600, "REVOKED", 1), (600, "VALID", 7), (660, "VALID", 2)]
    assert await store.usage_counts(key_id, 660, 720) == [(660, "VALID", 2)]
    assert await store.prune_usage(660) >= 2
    assert await store.usage_counts(key_id, 0, 10**9) == [(660, "VALID", 2)]


async def test_unkeyed_digests_leave_out_the_seqs_read_already(store: Store, actor: str
                                                               ) -> None:
    """The imported-digest follower's read: the keys after a seq (and up to one), in seq
    order, but those whose seqs it names (read already within the store's ``seq_lag``)."""
    keys = [await store.insert_key(make_key(actor, kind=Kind.IMPORTED)) for _ in range(4)]
    seqs = [k.seq for k in keys]
    mine = {k.seq: k.digest for k in keys}

    async def read(skip: list[int]) -> list[tuple[int, str]]:
        rows = await store.unkeyed_digests(seqs[0] - 1, 1000, skip)
        return [row for row in rows if row[0] in mine]

    assert await read([]) == [(s, mine[s]) for s in seqs]
    assert await read([seqs[1], seqs[3], 10**12]) == [(s, mine[s]) for s in (seqs[0], seqs[2])]
    assert await read(seqs) == []
    assert store.seq_lag == (0 if isinstance(store, SqliteStore) else 2_000)
    # up to a seq, that one included (rows above it wait for the follower's next round)
    assert await store.unkeyed_digests(seqs[0] - 1, 1000, [seqs[0]], seqs[2]) == [
        (s, mine[s]) for s in seqs[1:3]]
    assert await store.unkeyed_digests(seqs[0], 1000, (), seqs[0]) == []


async def test_count_unkeyed_counts_the_rows_unkeyed_digests_reads(store: Store, actor: str
                                                                   ) -> None:
    """The follower's count: the imported (and v1) keys in a seq range, not issued v2
    ones, bounds excluded below and included above."""
    first = await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
    issued = await store.insert_key(make_key(actor))
    last = await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
    assert first.seq < issued.seq < last.seq
    assert await store.count_unkeyed(first.seq - 1, last.seq) == 2
    assert await store.count_unkeyed(first.seq, last.seq) == 1
    assert await store.count_unkeyed(first.seq - 1, issued.seq) == 1
    assert await store.count_unkeyed(last.seq, last.seq + 10) == 0


@contextlib.asynccontextmanager
async def _pg_follower(pg_database: str) -> AsyncIterator[tuple[Any, Any, Any, list[int]]]:
    """A PostgreSQL store, an imported-digest follower caught up on it, and the seqs of
    the rows it reads from now on (``record_unkeyed_reads``)."""
    from conftest import record_unkeyed_reads

    from gateway.crypto.secrets_format import DigestSet
    from gateway.keys.unkeyed import UnkeyedFollower

    store = PostgresStore(pg_database)
    await store.open()
    await store.migrate()
    try:
        digests = DigestSet()
        follower = UnkeyedFollower(store, digests)
        await follower.load()
        await follower.follow()
        yield store, digests, follower, record_unkeyed_reads(store)
    finally:
        await store.close()


async def test_the_digest_follower_passes_learned_rows_and_still_reads_a_late_commit(
        pg_database: str, actor: str) -> None:
    """Rows named by a broadcast (``learned``) are passed after one count, a round after;
    a PostgreSQL row that commits after them with an earlier seq is still read, once."""
    from gateway.store.base import _INSERT, _secret_format, key_params

    async with _pg_follower(pg_database) as (store, digests, follower, read):
        late = make_key(actor, kind=Kind.IMPORTED)
        async with store._tx() as c:  # late takes its seq, and commits last
            late_seq = (await c.fetch(_INSERT, *key_params(late), _secret_format(late)))[0][0]
            keys = [await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
                    for _ in range(3)]
            digests.add_many([k.digest for k in keys])  # as the broadcast does
            follower.learned([k.seq for k in keys])
            await follower.follow()  # learned this round: counted in the next
            assert read == [] and follower._seq < keys[-1].seq
            await follower.follow()
            assert read == [] and follower._seq == keys[-1].seq
        await follower.follow()
        assert read == [late_seq] and late.digest in digests
        await follower.follow()
        assert read == [late_seq]


async def test_the_digest_follower_passes_interleaved_postgres_batches_without_reading(
        pg_database: str, actor: str) -> None:
    """On PostgreSQL an import's concurrent batches interleave their seqs: the rows a newer
    broadcast named lie among the ones counted, and count as held (the count fell short
    and the follower read most rounds of an import)."""
    async with _pg_follower(pg_database) as (store, digests, follower, read):
        counted: list[tuple[int, int]] = []
        count = store.count_unkeyed

        async def counting(after_seq: int, upto_seq: int) -> int:
            counted.append((after_seq, upto_seq))
            return await count(after_seq, upto_seq)

        store.count_unkeyed = counting  # type: ignore[method-assign]
        keys = [await store.insert_key(make_key(actor, kind=Kind.IMPORTED)) for _ in range(6)]
        first, second = keys[0::2], keys[1::2]  # two batches, seqs interleaved
        for batch in (first, second):
            digests.add_many([k.digest for k in batch])  # as the broadcasts do
            follower.learned([k.seq for k in batch])
            await follower.follow()
        await follower.follow()
        # the first batch counted with the second's rows among it, then the second's last
        assert read == [] and [top for _, top in counted] == [first[-1].seq, keys[-1].seq]
        assert follower._seq == keys[-1].seq


async def test_the_digest_follower_reads_a_postgres_row_once_and_a_late_commit_still(
        pg_database: str, actor: str) -> None:
    """On PostgreSQL a key can commit after a later one (its seq taken first): the follower
    reaches ``seq_lag`` back for it, but does not read again the rows it has read."""
    from conftest import record_unkeyed_reads

    from gateway.crypto.secrets_format import DigestSet
    from gateway.keys.unkeyed import UnkeyedFollower
    from gateway.store.base import _INSERT, _secret_format, key_params

    store = PostgresStore(pg_database)
    await store.open()
    await store.migrate()
    try:
        for _ in range(3):
            await store.insert_key(make_key(actor, kind=Kind.IMPORTED))
        digests = DigestSet()
        follower = UnkeyedFollower(store, digests)
        await follower.load()
        await follower.follow()  # the lag window, once
        read = record_unkeyed_reads(store)
        await follower.follow()
        assert read == []  # idle: nothing read again
        late, later = (make_key(actor, kind=Kind.IMPORTED) for _ in range(2))
        async with store._tx() as c:  # late takes its seq, and commits last
            late_seq = (await c.fetch(_INSERT, *key_params(late), _secret_format(late)))[0][0]
            later_seq = (await store.insert_key(later)).seq
            await follower.follow()
            assert read == [later_seq] and later.digest in digests
            assert late.digest not in digests
        await follower.follow()
        assert read == [later_seq, late_seq] and late_seq < later_seq
        assert late.digest in digests
        await follower.follow()
        assert read == [later_seq, late_seq]
    finally:
        await store.close()
