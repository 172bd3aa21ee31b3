"""The store: a small protocol, and the SQL shared by the SQLite and PostgreSQL backends.

Every backend passes ``tests/store/test_contract.py``. Driver exceptions are translated
into ``gateway.errors`` here, at the adapter, and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.audit import events as audit_events
from gateway.audit.events import AuditEvent
from gateway.audit.query import AuditFilter
from gateway.keys.model import ApiKey, KeyStatus, Kind, RateLimit, RevocationReason, Visibility
from gateway.store import migrations

COLUMNS = (
    "key_id, kind, digest, name, actor_id, scopes, visibility, metadata, allowed_cidrs, "
    "rate_limit, create_time, update_time, expire_time, last_used_time, revoke_time, "
    "revocation_reason, revocation_description, request_id, request_fingerprint"
)
SELECT = f"SELECT seq, {COLUMNS} FROM api_keys"


# The audit events of a change, written in the change's own transaction (gateway.audit).
Audit = Sequence[AuditEvent]


USAGE_CHUNK = 500  # usage rows a statement (4 parameters each)


class Store(Protocol):
    """What the gateway needs from persistent storage."""

    # How many sequence numbers (``seq``) back a key can become visible after later ones
    # were read: a transaction that took its numbers before another and committed after
    # it. Followers of new keys reach that far back on every read.
    seq_lag: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def migrate(self) -> list[str]: ...
    async def pending_migrations(self) -> list[str]: ...
    async def insert_key(self, key: ApiKey, audit: Audit = ()) -> ApiKey: ...
    async def insert_new_keys(self, keys: Sequence[ApiKey], audit: Audit = ()
                              ) -> list[ApiKey | None]: ...
    async def get_key(self, key_id: str) -> ApiKey | None: ...
    async def get_by_digest(self, digest: str) -> ApiKey | None: ...
    async def get_by_request_id(self, kind: Kind, request_id: str) -> ApiKey | None: ...
    async def list_keys(
        self,
        kind: Kind,
        *,
        actor_id: str | None,
        status: KeyStatus | None,
        now_us: int,
        after_seq: int,
        limit: int,
    ) -> list[ApiKey]: ...
    async def update_key(self, key: ApiKey, expected_update_time: int, audit: Audit = ()
                         ) -> bool: ...
    async def revoke_key(
        self, key_id: str, reason: RevocationReason, description: str, now_us: int,
        audit: Audit = ()
    ) -> ApiKey | None: ...
    async def rotate_key(self, old_key_id: str, new: ApiKey, now_us: int, audit: Audit = ()
                         ) -> ApiKey | None: ...
    async def delete_key(self, key_id: str, audit: Audit = ()) -> bool: ...
    async def prune_changes(self, before_us: int) -> None: ...
    async def first_change_since(self, at_us: int) -> int: ...
    async def follow_changes(self, after_id: int, limit: int = 10_000
                             ) -> tuple[int, list[tuple[int, list[tuple[str, str]]]]]: ...
    async def heartbeat(self, replica_id: str, followed_at: int, trusted_until: int
                        ) -> None: ...
    async def unconfirmed(self, replica_id: str, at_us: int | None = None
                          ) -> tuple[int, list[str]]: ...
    async def leave(self, replica_id: str) -> None: ...
    async def unkeyed_digests(self, after_seq: int = 0, limit: int = 100_000,
                              skip: Sequence[int] = (), upto_seq: int | None = None
                              ) -> list[tuple[int, str]]: ...
    async def count_unkeyed(self, after_seq: int, upto_seq: int) -> int: ...
    async def move_digest(self, key_id: str, old: str, new: str) -> ApiKey | None: ...
    async def record_usage(self, usage: dict[str, int]) -> None: ...
    async def add_usage_counts(self, counts: Sequence[tuple[str, int, str, int]]) -> None: ...
    async def usage_counts(self, key_id: str, start_minute: int, end_minute: int
                           ) -> list[tuple[int, str, int]]: ...
    async def prune_usage(self, before_minute: int) -> int: ...
    async def get_state(self, name: str) -> str | None: ...
    async def put_state(self, name: str, value: str, expected: str | None,
                        audit: Audit = ()) -> bool: ...
    async def insert_audit(self, events: Audit) -> None: ...
    async def list_audit(self, flt: AuditFilter, before_seq: int | None, limit: int
                         ) -> list[AuditEvent]: ...
    async def prune_audit(self, before_us: int) -> int: ...


class Tx(Protocol):
    """One connection (inside a transaction or not) with ``?`` placeholders."""

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...
    async def execute(self, sql: str, *args: Any) -> int: ...


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def key_params(key: ApiKey) -> tuple[Any, ...]:
    rl = key.rate_limit
    return (
        key.key_id,
        key.kind.value,
        key.digest,
        key.name,
        key.actor_id,
        _json(list(key.scopes)),
        key.visibility.value,
        _json(key.metadata),
        _json(list(key.allowed_cidrs)),
        _json({"quota": rl.quota, "window_s": rl.window_s, "unit": rl.unit}) if rl else None,
        key.create_time,
        key.update_time,
        key.expire_time,
        key.last_used_time,
        key.revoke_time,
        key.revocation_reason.value if key.revocation_reason else None,
        key.revocation_description,
        key.request_id,
        key.request_fingerprint,
    )


def row_to_key(row: Sequence[Any]) -> ApiKey:
    rl = orjson.loads(row[10]) if row[10] else None
    return ApiKey(
        seq=row[0],
        key_id=row[1],
        kind=Kind(row[2]),
        digest=row[3],
        name=row[4],
        actor_id=row[5],
        scopes=tuple(orjson.loads(row[6])),
        visibility=Visibility(row[7]),
        metadata=orjson.loads(row[8]) if row[8] is not None else None,
        allowed_cidrs=tuple(orjson.loads(row[9])),
        rate_limit=RateLimit(rl["quota"], rl["window_s"], rl["unit"]) if rl else None,
        create_time=row[11],
        update_time=row[12],
        expire_time=row[13],
        last_used_time=row[14],
        revoke_time=row[15],
        revocation_reason=RevocationReason(row[16]) if row[16] else None,
        revocation_description=row[17],
        request_id=row[18],
        request_fingerprint=row[19],
    )


_INSERT = (f"INSERT INTO api_keys ({COLUMNS}, secret_format) VALUES ({', '.join('?' * 20)}) "
           "RETURNING seq")


INSERT_CHUNK = 500  # keys per INSERT of a batch import (20 parameters each)


def _secret_format(key: ApiKey) -> str:
    """'v2' for an issued key (this version issues v2 secrets only), 'raw' for imported."""
    return "v2" if key.kind is Kind.ISSUED else "raw"
_UPDATE = (
    "UPDATE api_keys SET name = ?, actor_id = ?, scopes = ?, visibility = ?, metadata = ?, "
    "allowed_cidrs = ?, rate_limit = ?, expire_time = ?, update_time = ? "
    "WHERE key_id = ? AND update_time = ? AND revoke_time IS NULL"
)
_REVOKE = (
    "UPDATE api_keys SET revoke_time = ?, revocation_reason = ?, revocation_description = ?, "
    "update_time = ? WHERE key_id = ? AND revoke_time IS NULL"
)


_INT64_MIN = -(2**63)


def list_keys_query(kind: Kind, *, actor_id: str | None, status: KeyStatus | None,
                    now_us: int, after_seq: int, limit: int) -> tuple[str, list[Any]]:
    """The (sql, args) ``list_keys`` runs: a page in seq order after ``after_seq``.

    Each filter is written so that a partial index of migration 0003 matches it (the
    index predicates on revoke_time and expire_time appear verbatim) and the page is an
    index walk in seq order (``tests/store/test_list_plans.py`` checks the plans)."""
    where = ["kind = ?", "seq > ?"]
    args: list[Any] = [kind.value, after_seq]
    if actor_id is not None:
        where.append("actor_id = ?")
        args.append(actor_id)
    if status is KeyStatus.REVOKED:
        where.append("revoke_time IS NOT NULL")
    elif status is KeyStatus.EXPIRED:
        # A range rather than ``expire_time <= ?``: the lower bound excludes nothing, but a
        # generic plan (PostgreSQL's, for a statement prepared and run many times) then
        # guesses that few keys match, not a third of them, and walks api_keys_kind_expiring
        # instead of the primary key with a filter, through the whole table.
        where.append("revoke_time IS NULL AND expire_time IS NOT NULL "
                     "AND expire_time BETWEEN ? AND ?")
        args.extend((_INT64_MIN, now_us))
    elif status is KeyStatus.ACTIVE:
        where.append("revoke_time IS NULL AND (expire_time IS NULL OR expire_time > ?)")
        args.append(now_us)
    return f"{SELECT} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", [*args, limit]


async def _log_change(c: Tx, items: list[tuple[str, str]]) -> None:
    """A change-log row, in the change's own transaction: ``[(digest, key_id), ...]``."""
    await c.execute("INSERT INTO key_changes (items, at) VALUES (?, ?)",
                    orjson.dumps(items).decode(), int(datetime.now(UTC).timestamp() * 1e6))


async def _write_audit(c: Tx, events: Audit) -> None:
    """The change's audit events, in its own transaction."""
    if events:
        row = f"({', '.join('?' * 9)})"
        await c.execute(
            f"INSERT INTO audit_events ({audit_events.COLUMNS}) VALUES "
            f"{', '.join([row] * len(events))}",
            *(v for e in events for v in audit_events.row(e)))


class SqlStore:
    """The store logic in portable SQL; subclasses supply connections and a backend name."""

    BACKEND = ""  # the folder of gateway/store/migrations this backend reads
    # a condition: ``seq`` is not among a list of them, passed as one parameter (``_seqs``)
    _NOT_AMONG = ""

    @staticmethod
    def _seqs(seqs: Sequence[int]) -> Any:
        raise NotImplementedError

    async def _lock_migrations(self, c: Tx) -> None:
        """Serialise concurrent ``migrate`` runs (the transaction suffices for SQLite)."""

    async def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction; idempotent."""
        applied = []
        async with self._tx() as c:
            await self._lock_migrations(c)
            await c.execute(migrations.CREATE_TABLE)
            done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations.available(self.BACKEND):
                if version in done:
                    continue
                for stmt in migrations.statements(sql):
                    await c.execute(stmt)
                await c.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    version, name, datetime.now(UTC).isoformat(),
                )
                applied.append(name)
        return applied

    def _conn(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def _one(self, sql: str, *args: Any) -> ApiKey | None:
        async with self._conn() as c:
            rows = await c.fetch(sql, *args)
        return row_to_key(rows[0]) if rows else None

    async def ping(self) -> None:
        async with self._conn() as c:
            await c.fetch("SELECT 1")

    async def insert_key(self, key: ApiKey, audit: Audit = ()) -> ApiKey:
        async with self._tx() as c:
            rows = await c.fetch(_INSERT, *key_params(key), _secret_format(key))
            await _write_audit(c, audit)
        audit_events.emit(audit)
        return key.with_seq(rows[0][0])

    async def insert_new_keys(self, keys: Sequence[ApiKey], audit: Audit = ()
                              ) -> list[ApiKey | None]:
        """Insert in one transaction, one statement per ``INSERT_CHUNK`` keys; each key as
        stored, or None where a key with its key_id or digest exists already (nothing is
        written for it, nor for a second copy within ``keys``). ``audit`` is written when
        any key is."""
        stored: dict[str, int] = {}
        async with self._tx() as c:
            for start in range(0, len(keys), INSERT_CHUNK):
                chunk = keys[start:start + INSERT_CHUNK]
                row = f"({', '.join('?' * 20)})"
                rows = await c.fetch(
                    f"INSERT INTO api_keys ({COLUMNS}, secret_format) VALUES "
                    f"{', '.join([row] * len(chunk))} "
                    "ON CONFLICT DO NOTHING RETURNING key_id, seq",
                    *(v for key in chunk for v in (*key_params(key), _secret_format(key))))
                stored.update((r[0], r[1]) for r in rows)
            if stored:
                await _write_audit(c, audit)
        if stored:
            audit_events.emit(audit)
        out: list[ApiKey | None] = []
        for key in keys:
            seq = stored.pop(key.key_id, None)  # a second copy of one key gets None
            out.append(None if seq is None else key.with_seq(seq))
        return out

    async def get_key(self, key_id: str) -> ApiKey | None:
        return await self._one(f"{SELECT} WHERE key_id = ?", key_id)

    async def get_by_digest(self, digest: str) -> ApiKey | None:
        return await self._one(f"{SELECT} WHERE digest = ?", digest)

    async def get_by_request_id(self, kind: Kind, request_id: str) -> ApiKey | None:
        return await self._one(
            f"{SELECT} WHERE kind = ? AND request_id = ?", kind.value, request_id
        )

    async def list_keys(
        self,
        kind: Kind,
        *,
        actor_id: str | None,
        status: KeyStatus | None,
        now_us: int,
        after_seq: int,
        limit: int,
    ) -> list[ApiKey]:
        sql, args = list_keys_query(kind, actor_id=actor_id, status=status, now_us=now_us,
                                    after_seq=after_seq, limit=limit)
        async with self._conn() as c:
            rows = await c.fetch(sql, *args)
        return [row_to_key(r) for r in rows]

    async def update_key(self, key: ApiKey, expected_update_time: int, audit: Audit = ()
                         ) -> bool:
        p = key_params(key)
        async with self._tx() as c:
            n = await c.execute(
                _UPDATE, p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[12], p[11],
                key.key_id, expected_update_time,
            )
            if n == 1:
                await _log_change(c, [(key.digest, key.key_id)])
                await _write_audit(c, audit)
        if n == 1:
            audit_events.emit(audit)
        return n == 1

    async def revoke_key(
        self, key_id: str, reason: RevocationReason, description: str, now_us: int,
        audit: Audit = ()
    ) -> ApiKey | None:
        """The key as this call revoked it; None when it did not (no such key, or revoked
        already: of two concurrent revokes exactly one gets the key)."""
        async with self._tx() as c:
            n = await c.execute(_REVOKE, now_us, reason.value, description, now_us, key_id)
            if n != 1:
                return None
            rows = await c.fetch(f"{SELECT} WHERE key_id = ?", key_id)
            await _log_change(c, [(rows[0][3], key_id)])
            await _write_audit(c, audit)
        audit_events.emit(audit)
        return row_to_key(rows[0])

    async def rotate_key(self, old_key_id: str, new: ApiKey, now_us: int, audit: Audit = ()
                         ) -> ApiKey | None:
        """Revoke the old key and insert the new one atomically; None if old was not active."""
        async with self._tx() as c:
            n = await c.execute(
                _REVOKE, now_us, RevocationReason.SUPERSEDED.value, "", now_us, old_key_id
            )
            if n != 1:
                return None
            old = await c.fetch("SELECT digest FROM api_keys WHERE key_id = ?", old_key_id)
            await _log_change(c, [(old[0][0], old_key_id)])
            rows = await c.fetch(_INSERT, *key_params(new), _secret_format(new))
            await _write_audit(c, audit)
        audit_events.emit(audit)
        return new.with_seq(rows[0][0])

    async def prune_changes(self, before_us: int) -> None:
        """Drop change-log rows, and replicas trusted until, before ``before_us``."""
        async with self._tx() as c:
            await c.execute("DELETE FROM key_changes WHERE at < ?", before_us)
            await c.execute("DELETE FROM replicas WHERE trusted_until < ?", before_us)

    async def _now_us(self, c: Tx) -> int:
        """The store's clock, in microseconds (SQLite's is this host's; PostgreSQL's is
        the server's, so that every replica's times compare)."""
        return int(time.time() * 1e6)

    async def first_change_since(self, at_us: int) -> int:
        """The id just before the first change-log row written at or after ``at_us``."""
        async with self._conn() as c:
            rows = await c.fetch("SELECT MIN(id) FROM key_changes WHERE at >= ?", at_us)
            if rows[0][0] is None:
                rows = await c.fetch("SELECT COALESCE(MAX(id), 0) + 1 FROM key_changes")
        return int(rows[0][0]) - 1

    async def follow_changes(self, after_id: int, limit: int = 10_000
                             ) -> tuple[int, list[tuple[int, list[tuple[str, str]]]]]:
        """(store time, rows after ``after_id``): every change committed before that time
        is among the rows, unless ``limit`` of them came back (the time is read first, and
        the rows in a later statement, so in a later snapshot)."""
        async with self._conn() as c:
            at = await self._now_us(c)
            rows = await c.fetch("SELECT id, items FROM key_changes WHERE id > ? "
                                 "ORDER BY id LIMIT ?", after_id, limit)
        return at, [(r[0], [(d, k) for d, k in orjson.loads(r[1])]) for r in rows]

    async def heartbeat(self, replica_id: str, followed_at: int, trusted_until: int
                        ) -> None:
        """Record that ``replica_id`` applied every change before ``followed_at`` and may
        answer from its caches until ``trusted_until`` (store times, µs)."""
        async with self._tx() as c:
            await c.execute(
                "INSERT INTO replicas (replica_id, followed_at, trusted_until) "
                "VALUES (?, ?, ?) ON CONFLICT (replica_id) DO UPDATE SET "
                "followed_at = excluded.followed_at, trusted_until = excluded.trusted_until",
                replica_id, followed_at, trusted_until)

    async def unconfirmed(self, replica_id: str, at_us: int | None = None
                          ) -> tuple[int, list[str]]:
        """(``at_us``, or the store's time now when None; the replicas other than
        ``replica_id`` that have not followed the change log past it and may still answer
        from their caches now)."""
        async with self._conn() as c:
            now = await self._now_us(c)
            at = now if at_us is None else at_us
            rows = await c.fetch("SELECT replica_id FROM replicas WHERE replica_id <> ? "
                                 "AND trusted_until > ? AND followed_at <= ? "
                                 "ORDER BY replica_id", replica_id, max(now, at), at)
        return at, [r[0] for r in rows]

    async def leave(self, replica_id: str) -> None:
        async with self._tx() as c:
            await c.execute("DELETE FROM replicas WHERE replica_id = ?", replica_id)

    async def unkeyed_digests(self, after_seq: int = 0, limit: int = 100_000,
                              skip: Sequence[int] = (), upto_seq: int | None = None
                              ) -> list[tuple[int, str]]:
        """``(seq, digest)`` of the keys whose credentials carry no keyed checksum (v1
        secrets, imported keys) written after ``after_seq`` (and up to ``upto_seq``), in
        seq order, at most ``limit`` of them (a page); none whose seq is in ``skip`` (read
        already)."""
        where, args = "seq > ? AND secret_format <> 'v2'", [after_seq]
        if upto_seq is not None:
            where += " AND seq <= ?"
            args.append(upto_seq)
        if skip:
            where += f" AND {self._NOT_AMONG}"
            args.append(self._seqs(skip))
        async with self._conn() as c:
            rows = await c.fetch(f"SELECT seq, digest FROM api_keys WHERE {where} "
                                 "ORDER BY seq LIMIT ?", *args, limit)
        return [(r[0], r[1]) for r in rows]

    async def count_unkeyed(self, after_seq: int, upto_seq: int) -> int:
        """How many of the keys ``unkeyed_digests`` reads have a seq in (``after_seq``,
        ``upto_seq``]: one walk of the primary key's range, no row sent."""
        async with self._conn() as c:
            rows = await c.fetch("SELECT count(*) FROM api_keys WHERE seq > ? AND seq <= ? "
                                 "AND secret_format <> 'v2'", after_seq, upto_seq)
        return int(rows[0][0])

    async def move_digest(self, key_id: str, old: str, new: str) -> ApiKey | None:
        """Store a key's digest under the current pepper; the key, or None when its digest
        is no longer ``old`` (moved already, rotated or deleted)."""
        async with self._tx() as c:
            n = await c.execute("UPDATE api_keys SET digest = ? WHERE key_id = ? AND digest = ?",
                                new, key_id, old)
            rows = await c.fetch(f"{SELECT} WHERE key_id = ?", key_id) if n == 1 else []
            if rows:
                await _log_change(c, [(old, key_id), (new, key_id)])
        return row_to_key(rows[0]) if rows else None

    async def delete_key(self, key_id: str, audit: Audit = ()) -> bool:
        async with self._tx() as c:
            rows = await c.fetch("SELECT digest FROM api_keys WHERE key_id = ?", key_id)
            if not rows:
                return False
            await c.execute("DELETE FROM api_keys WHERE key_id = ?", key_id)
            await _log_change(c, [(rows[0][0], key_id)])
            await _write_audit(c, audit)
        audit_events.emit(audit)
        return True

    async def record_usage(self, usage: dict[str, int]) -> None:
        if not usage:
            return
        async with self._tx() as c:
            # One lock order for every writer: concurrent flushes (replicas) cannot deadlock.
            for key_id, used in sorted(usage.items()):
                await c.execute(
                    "UPDATE api_keys SET last_used_time = ? WHERE key_id = ? "
                    "AND (last_used_time IS NULL OR last_used_time < ?)",
                    used, key_id, used,
                )

    # -- usage analytics -----------------------------------------------------------------

    async def add_usage_counts(self, counts: Sequence[tuple[str, int, str, int]]) -> None:
        """Add ``(key_id, minute, outcome, count)`` rows to the buckets, in one
        transaction, in key order (concurrent flushes of replicas cannot deadlock)."""
        rows = sorted(counts)
        async with self._tx() as c:
            for start in range(0, len(rows), USAGE_CHUNK):
                chunk = rows[start:start + USAGE_CHUNK]
                await c.execute(
                    "INSERT INTO key_usage (key_id, minute, outcome, count) VALUES "
                    f"{', '.join(['(?, ?, ?, ?)'] * len(chunk))} "
                    "ON CONFLICT (key_id, minute, outcome) "
                    "DO UPDATE SET count = key_usage.count + excluded.count",
                    *(v for r in chunk for v in r))

    async def usage_counts(self, key_id: str, start_minute: int, end_minute: int
                           ) -> list[tuple[int, str, int]]:
        """``(minute, outcome, count)`` of one key with start <= minute < end, in order."""
        async with self._conn() as c:
            rows = await c.fetch(
                "SELECT minute, outcome, count FROM key_usage WHERE key_id = ? "
                "AND minute >= ? AND minute < ? ORDER BY minute, outcome",
                key_id, start_minute, end_minute)
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def prune_usage(self, before_minute: int) -> int:
        async with self._tx() as c:
            return await c.execute("DELETE FROM key_usage WHERE minute < ?", before_minute)

    async def get_state(self, name: str) -> str | None:
        async with self._conn() as c:
            rows = await c.fetch("SELECT value FROM gateway_state WHERE name = ?", name)
        return rows[0][0] if rows else None

    async def put_state(self, name: str, value: str, expected: str | None,
                        audit: Audit = ()) -> bool:
        """Compare-and-set of a named document (signing keys, JWK sets…); ``audit`` is
        written with it when it is set."""
        async with self._tx() as c:
            if expected is None:
                rows = await c.fetch(
                    "INSERT INTO gateway_state (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO NOTHING RETURNING name", name, value,
                )
                done = bool(rows)
            else:
                done = await c.execute(
                    "UPDATE gateway_state SET value = ? WHERE name = ? AND value = ?",
                    value, name, expected,
                ) == 1
            if done:
                await _write_audit(c, audit)
        if done:
            audit_events.emit(audit)
        return done

    # -- the audit trail ---------------------------------------------------------------

    async def insert_audit(self, events: Audit) -> None:
        """Events of no store change (a derived token, counted refusals)."""
        async with self._tx() as c:
            await _write_audit(c, events)
        audit_events.emit(events)

    async def list_audit(self, flt: AuditFilter, before_seq: int | None, limit: int
                         ) -> list[AuditEvent]:
        """Newest first, below ``before_seq``."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in sorted(flt.equals.items()):  # columns from a fixed list
            where.append(f"{column} = ?")
            args.append(value)
        for clause, bound in (("at >= ?", flt.since), ("at < ?", flt.until),
                              ("seq < ?", before_seq)):
            if bound is not None:
                where.append(clause)
                args.append(bound)
        sql = (f"SELECT seq, {audit_events.COLUMNS} FROM audit_events"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq DESC LIMIT ?")
        async with self._conn() as c:
            rows = await c.fetch(sql, *args, limit)
        return [audit_events.from_row(r) for r in rows]

    async def prune_audit(self, before_us: int) -> int:
        async with self._tx() as c:
            return await c.execute("DELETE FROM audit_events WHERE at < ?", before_us)
