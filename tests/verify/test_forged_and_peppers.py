"""Forged credentials cost no I/O; v1 secrets keep verifying; peppers rotate without downtime.

Driven in-process against the real services (SQLite file, and the real Redis for the L2
count), with every store read and every Redis call counted.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import REDIS_URL, record_unkeyed_reads, require_service

from gateway.crypto import secrets_format, tokens
from gateway.crypto.digests import Digester
from gateway.errors import NotFound, Unauthenticated
from gateway.secret import Secret
from gateway.services import Services, build_services
from gateway.settings import load_settings
from gateway.store import migrations
from gateway.verify.outcomes import Outcome

OLD_PEPPER, NEW_PEPPER = "o" * 32, "n" * 32
ADMIN = "admin-token-" + "z" * 20
READS = ("get_by_digest", "get_key", "get_by_request_id", "list_keys")


@asynccontextmanager
async def running(db: Path, pepper: str, *, retired: str = "", redis: bool = False
                  ) -> AsyncIterator[Services]:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{db}", "GATEWAY_PEPPER": pepper,
           "GATEWAY_ADMIN_TOKENS": ADMIN, "GATEWAY_PEPPER_RETIRED": retired}
    if redis:
        env["GATEWAY_REDIS_URL"] = REDIS_URL
    services = build_services(load_settings(env))
    await services.start()
    try:
        yield services
    finally:
        await services.stop()


def count_calls(obj: Any, names: tuple[str, ...]) -> list[str]:
    """Wrap ``obj``'s async methods ``names``; the list gets a name per call."""
    calls: list[str] = []
    for name in names:
        real = getattr(obj, name)

        def wrap(real: Callable[..., Any] = real, name: str = name) -> Callable[..., Any]:
            async def counted(*args: Any, **kw: Any) -> Any:
                calls.append(name)
                return await real(*args, **kw)
            return counted

        setattr(obj, name, wrap())
    return calls


def redis_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command this process sends to any Redis (commands, pipelines, scripts)."""
    from redis.asyncio.connection import Connection

    calls: list[bytes] = []
    real = Connection.send_packed_command

    async def counted(self: Connection, command: Any, *args: Any, **kw: Any) -> None:
        calls.append(command if isinstance(command, bytes) else b"".join(command))
        await real(self, command, *args, **kw)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    return calls


async def issue(services: Services, **fields: Any) -> str:
    issued = await services.keys.issue({"name": "k", "actor_id": "actor-1", **fields})
    return issued.secret


async def outcome(services: Services, credential: str, client_ip: str | None = "10.0.0.1"
                  ) -> Outcome:
    return (await services.verifier.verify(credential, client_ip=client_ip)).outcome


def forged_v2(services: Services) -> str:
    """Well formed (our prefix, v2, 51 base62 characters), with a checksum we did not make."""
    fmt = secrets_format.SecretFormat(("ory_ak",), (Digester(Secret(secrets.token_hex(16))),))
    return fmt.new_secret("ory_ak")


def forged_v1() -> str:
    """Well formed v1 with a correct CRC: anyone can make one."""
    return secrets_format.legacy_secret("ory_ak")


# -- forged credentials ------------------------------------------------------------------


@pytest.mark.parametrize("redis", [False, True], ids=["sqlite", "sqlite+redis"])
async def test_forged_keys_cost_no_store_read_and_no_redis_command(
        tmp_path: Path, redis: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if redis:
        require_service("Redis", "127.0.0.1", 6379)
    async with running(tmp_path / "g.db", NEW_PEPPER, redis=redis) as services:
        real = await issue(services)
        reads = count_calls(services.store, READS)
        commands = redis_calls(monkeypatch) if redis else []
        for _ in range(500):
            assert await outcome(services, forged_v2(services)) is Outcome.NOT_FOUND
            assert await outcome(services, forged_v1()) is Outcome.NOT_FOUND
        assert reads == [] and commands == []
        services.cache.invalidate_local([services.digester.digest(real)])
        assert await outcome(services, real) is Outcome.VALID  # the counters do count:
        assert reads == ["get_by_digest"] or commands


async def test_forged_keys_are_refused_on_every_route_without_a_read(tmp_path: Path) -> None:
    async with running(tmp_path / "g.db", NEW_PEPPER) as services:
        reads = count_calls(services.store, READS)
        for forged in (forged_v2(services), forged_v1()):
            with pytest.raises(NotFound):
                await services.keys.self_revoke({"credential": forged,
                                                 "reason": "REVOCATION_REASON_KEY_COMPROMISE"})
            with pytest.raises(Unauthenticated):  # 401 on derive, as Ory Talos
                await services.deriver.derive({"credential": forged})
        assert reads == []


async def test_a_forged_macaroon_is_refused_before_its_parent_is_looked_up(tmp_path: Path
                                                                           ) -> None:
    async with running(tmp_path / "g.db", NEW_PEPPER) as services:
        parent = await issue(services, scopes=["read"])
        minted = await services.deriver.derive({"credential": parent,
                                                "algorithm": "TOKEN_ALGORITHM_MACAROON"})
        real = minted["token"]["token"]
        spec = tokens.DeriveSpec(issuer=services.settings.issuer, subject="x",
                                 parent_key_id=secrets.token_hex(16), expire_time=2**31,
                                 audiences=(), scopes=("read",))
        reads = count_calls(services.store, READS)
        for _ in range(50):  # random parents, keys the attacker made up
            forged = tokens.mint_macaroon(spec, secrets.token_bytes(32),
                                          tag_key=secrets.token_bytes(32)).token
            assert await outcome(services, forged) is Outcome.SIGNATURE_INVALID
        assert reads == []
        assert await outcome(services, real) is Outcome.VALID


# -- v1 secrets: the migration path ------------------------------------------------------


def _old_schema_with_a_v1_key(db: Path, pepper: str) -> str:
    """A database as the previous version left it (migration 0001 only) holding one key
    issued as a v1 secret; returns that secret."""
    secret = secrets_format.legacy_secret("ory_ak")
    digest = Digester(Secret(pepper)).digest(secret)
    (version, name, sql), *_ = migrations.available("sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute(migrations.CREATE_TABLE)
        for statement in migrations.statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'then')", (version, name))
        conn.execute("INSERT INTO api_keys (key_id, kind, digest, actor_id, visibility, "
                     "create_time, update_time) VALUES ('old-key', 'issued', ?, 'actor-1', "
                     "'KEY_VISIBILITY_SECRET', 1, 1)", (digest,))
    return secret


async def test_a_v1_secret_issued_before_the_upgrade_keeps_verifying(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    old = _old_schema_with_a_v1_key(db, NEW_PEPPER)
    async with running(db, NEW_PEPPER) as services:  # start migrates to 0002
        assert await outcome(services, old) is Outcome.VALID
        assert len(services.peppers.unkeyed) == 1
        new = await issue(services)
        assert new.startswith("ory_ak_v2_")
        await services.unkeyed.load()
        assert len(services.peppers.unkeyed) == 1  # v2 keys are not among them
        reads = count_calls(services.store, READS)
        assert await outcome(services, forged_v1()) is Outcome.NOT_FOUND
        assert reads == []


# -- pepper rotation ---------------------------------------------------------------------


async def test_keys_made_before_a_pepper_rotation_keep_verifying_and_move(tmp_path: Path
                                                                          ) -> None:
    db = tmp_path / "g.db"
    v1 = _old_schema_with_a_v1_key(db, OLD_PEPPER)
    async with running(db, OLD_PEPPER) as before:
        v2 = await issue(before, request_id="replayed-issue")
        raw = "sk_live_" + secrets.token_hex(20)
        await before.keys.import_key({"name": "i", "actor_id": "actor-1", "raw_key": raw})
        macaroon = (await before.deriver.derive(
            {"credential": v2, "algorithm": "TOKEN_ALGORITHM_MACAROON"}))["token"]["token"]
        jwt = (await before.deriver.derive({"credential": v2}))["token"]["token"]

    async with running(db, NEW_PEPPER, retired=OLD_PEPPER) as after:
        current = after.peppers.current
        for credential in (v1, v2, raw, macaroon, jwt):
            assert await outcome(after, credential) is Outcome.VALID, credential[:12]
        for _ in range(100):  # the moves run in the background
            if all([await after.store.get_by_digest(current.digest(c)) for c in (v1, v2, raw)]):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the keys were not moved to the current pepper")
        after.cache.invalidate_local([current.digest(c) for c in (v1, v2, raw)])
        for credential in (v1, v2, raw, macaroon, jwt):
            assert await outcome(after, credential) is Outcome.VALID, credential[:12]
        # an idempotent replay still returns the first secret
        replay = await after.keys.issue({"name": "k", "actor_id": "actor-1",
                                         "request_id": "replayed-issue"})
        assert replay.secret == v2
        fresh = await issue(after)
        assert after.peppers.format.generation(fresh) == 0

    async with running(db, NEW_PEPPER) as retired_for_good:
        # moved digests need no retired pepper; a v2 secret's checksum names its pepper
        assert await outcome(retired_for_good, v1) is Outcome.VALID
        assert await outcome(retired_for_good, raw) is Outcome.VALID
        assert await outcome(retired_for_good, fresh) is Outcome.VALID
        assert await outcome(retired_for_good, v2) is Outcome.NOT_FOUND


async def test_a_retired_pepper_must_be_a_pepper() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_PEPPER_RETIRED"):
        load_settings({"GATEWAY_PEPPER_RETIRED": "short"})
    settings = load_settings({"GATEWAY_PEPPER_RETIRED": f"{'a' * 16}, {'b' * 20}"})
    assert [p.reveal() for p in settings.pepper_retired] == ["a" * 16, "b" * 20]


# -- addresses fail closed ---------------------------------------------------------------


async def test_a_holder_s_ip_caveat_is_refused_when_the_forwarded_address_does_not_parse(
        tmp_path: Path) -> None:
    from gateway.http.client_ip import Trusted, client_ip

    trusted = Trusted(("127.0.0.1",))
    scope: dict[str, Any] = {"client": ("127.0.0.1", 5000)}
    assert client_ip(scope, {b"x-forwarded-for": b"not-an-address"}, trusted) is None
    assert client_ip(scope, {b"x-forwarded-for": b"10.1.2.3"}, trusted) == "10.1.2.3"
    assert client_ip({"client": ("10.9.9.9", 1)}, {b"x-forwarded-for": b"1.1.1.1"},
                     trusted) == "10.9.9.9"  # an untrusted peer's header is not believed
    async with running(tmp_path / "g.db", NEW_PEPPER) as services:
        parent = await issue(services)  # no allow-list of its own
        minted = await services.deriver.derive({"credential": parent,
                                                "algorithm": "TOKEN_ALGORITHM_MACAROON"})
        narrowed = tokens.attenuate(minted["token"]["token"],
                                    tokens.caveat("ip", "=", ["10.0.0.0/8"]))
        assert await outcome(services, narrowed, "10.1.2.3") is Outcome.VALID
        assert await outcome(services, narrowed, "192.168.0.1") is Outcome.IP_NOT_ALLOWED
        assert await outcome(services, narrowed, None) is Outcome.IP_NOT_ALLOWED
        assert await outcome(services, minted["token"]["token"], None) is Outcome.VALID


async def test_without_redis_another_replica_learns_an_imported_key_within_a_second(
        tmp_path: Path) -> None:
    """Made-up strings are refused in memory, so a replica must learn new imported keys'
    digests: through the invalidation with Redis, by following the store without."""
    db = tmp_path / "g.db"
    async with running(db, NEW_PEPPER) as a, running(db, NEW_PEPPER) as b:
        raw = "sk_live_" + secrets.token_hex(20)
        reads = count_calls(b.store, READS)
        assert await outcome(b, raw) is Outcome.NOT_FOUND
        assert reads == []
        await a.keys.import_key({"name": "i", "actor_id": "actor-1", "raw_key": raw})
        b.cache.invalidate_local([b.digester.digest(raw)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        while await outcome(b, raw) is not Outcome.VALID:
            assert loop.time() - started < 3.0, "b did not learn the imported key"
            await asyncio.sleep(0.05)
        assert loop.time() - started <= 1.5


async def test_the_digests_of_imported_keys_are_read_a_page_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.keys.unkeyed as unkeyed

    monkeypatch.setattr(unkeyed, "PAGE", 7)
    async with running(tmp_path / "g.db", NEW_PEPPER) as services:
        raws = [f"sk_live_{n}_{secrets.token_hex(8)}" for n in range(30)]
        await services.keys.batch_import({"requests": [
            {"raw_key": raw, "name": "i", "actor_id": "a"} for raw in raws]})
        services.peppers.unkeyed.replace([])
        await services.unkeyed.load()  # 5 pages, each sorted, merged pairwise
        known = services.peppers.unkeyed
        assert len(known) == 30 and list(known._sorted) == sorted(known._sorted)
        assert [await outcome(services, raw) for raw in raws] == [Outcome.VALID] * 30


async def test_on_sqlite_the_imported_digests_are_followed_without_reading_back(
        tmp_path: Path) -> None:
    """SQLite commits one writer at a time, so a follow starts after the last key read
    (PostgreSQL's reads ``seq_lag`` back): an idle replica reads no digest again, and a
    key imported meanwhile is still learned."""
    db = tmp_path / "g.db"
    async with running(db, NEW_PEPPER) as a, running(db, NEW_PEPPER) as b:
        assert b.store.seq_lag == 0
        raws = [f"sk_live_{n}_{secrets.token_hex(8)}" for n in range(5)]
        await a.keys.batch_import({"requests": [
            {"raw_key": raw, "name": "i", "actor_id": "a"} for raw in raws]})
        await b.unkeyed.follow()
        read = record_unkeyed_reads(b.store)
        await b.unkeyed.follow()
        assert read == []
        late = "sk_live_late_" + secrets.token_hex(8)
        await a.keys.import_key({"name": "i", "actor_id": "a", "raw_key": late})
        await b.unkeyed.follow()
        assert len(read) == 1
        assert b.digester.digest(late) in b.peppers.unkeyed
        assert all(b.digester.digest(raw) in b.peppers.unkeyed for raw in raws)


async def test_a_replica_passes_the_imported_rows_named_in_the_broadcast_without_reading(
        tmp_path: Path) -> None:
    """An import's broadcast names its rows (their seqs): the other replica's store
    follower passes them after one count, a round after it learned them (a sibling's
    broadcast may still be on its way), and reads only the rows no broadcast named (a key
    stored by another way), even when a named one was deleted since."""
    require_service("Redis", "127.0.0.1", 6379)
    db = tmp_path / "g.db"
    async with (running(db, NEW_PEPPER, redis=True) as a,
                running(db, NEW_PEPPER, redis=True) as b):
        await b.unkeyed.follow()
        read = record_unkeyed_reads(b.store)
        counted = count_calls(b.store, ("count_unkeyed",))
        raws = [f"sk_live_{n}_{secrets.token_hex(8)}" for n in range(50)]
        items = await a.keys.batch_import({"requests": [
            {"raw_key": raw, "name": "i", "actor_id": "a"} for raw in raws]})
        top = max(item.key.seq for item in items if item.key is not None)
        await b.unkeyed.follow()  # learned this round: neither counted nor read yet
        assert read == [] and counted == [] and b.unkeyed._seq < top
        await b.unkeyed.follow()
        assert read == [] and counted == ["count_unkeyed"]
        assert b.unkeyed._seq == top
        assert all(b.digester.digest(raw) in b.peppers.unkeyed for raw in raws)
        assert [await outcome(b, raw) for raw in raws[:3]] == [Outcome.VALID] * 3

        # a row no broadcast named (stored by another replica while Redis was away)
        quiet = "sk_live_quiet_" + secrets.token_hex(8)
        stored = await a.store.insert_key(a.keys._imported(
            {"raw_key": quiet, "name": "q", "actor_id": "a"})[1])
        await b.unkeyed.follow()
        assert read == [stored.seq] and b.digester.digest(quiet) in b.peppers.unkeyed

        # a named row deleted before the follow: the count falls short, the read finds
        # nothing else, and the follower moves past it (the next import passes by count)
        gone = await a.keys.batch_import({"requests": [
            {"raw_key": f"sk_live_gone_{n}_{secrets.token_hex(8)}", "name": "g",
             "actor_id": "a"} for n in range(3)]})
        assert gone[2].key is not None
        await a.store.delete_key(gone[2].key.key_id)
        await b.unkeyed.follow()
        await b.unkeyed.follow()
        assert read == [stored.seq] and b.unkeyed._seq == gone[2].key.seq
        more = await a.keys.batch_import({"requests": [
            {"raw_key": f"sk_live_more_{n}_{secrets.token_hex(8)}", "name": "m",
             "actor_id": "a"} for n in range(3)]})
        counted.clear()
        await b.unkeyed.follow()
        await b.unkeyed.follow()
        assert read == [stored.seq] and counted == ["count_unkeyed"]
        assert more[2].key is not None and b.unkeyed._seq == more[2].key.seq

        # while broadcasts are arriving, a row above the counted ones waits a round (its
        # broadcast may be on its way); with none arriving it is read at once (above)
        late = "sk_live_late_" + secrets.token_hex(8)
        named = await a.keys.batch_import({"requests": [
            {"raw_key": f"sk_live_named_{secrets.token_hex(8)}", "name": "n",
             "actor_id": "a"}]})
        unnamed = await a.store.insert_key(a.keys._imported(
            {"raw_key": late, "name": "l", "actor_id": "a"})[1])
        assert named[0].key is not None and named[0].key.seq < unnamed.seq
        await b.unkeyed.follow()
        assert read == [stored.seq] and b.digester.digest(late) not in b.peppers.unkeyed
        await b.unkeyed.follow()
        assert read == [stored.seq, unnamed.seq]
        assert b.digester.digest(late) in b.peppers.unkeyed


def test_the_follower_picks_a_seq_range_walking_the_smaller_side() -> None:
    """``_within``: the same seqs whichever side it walks; a seq far above the others (a
    failed round, a bogus broadcast) does not make it walk a range of 10^15."""
    from gateway.keys import unkeyed

    seqs = {3, 5, 8, 13, 21}
    for low, high in [(0, 2), (2, 13), (4, 100), (0, 4), (20, 21), (21, 30)]:
        assert unkeyed._within(seqs, low, high) == {s for s in seqs if low < s <= high}
    assert unkeyed._within(set(range(1, 1001)), 990, 995) == {991, 992, 993, 994, 995}
    assert unkeyed._within({7, 10**15}, 6, 10**15) == {7, 10**15}


def test_a_broadcast_that_would_pass_max_held_is_not_kept(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The rows held stay at most ``MAX_HELD``, one broadcast included (the check came
    before the update: one large broadcast went past it)."""
    from gateway.crypto.secrets_format import DigestSet
    from gateway.keys import unkeyed

    monkeypatch.setattr(unkeyed, "MAX_HELD", 10)
    follower = unkeyed.UnkeyedFollower(None, DigestSet())  # type: ignore[arg-type]
    follower.learned(list(range(1, 8)))
    follower.learned(list(range(8, 12)))  # 7 + 4 > 10: its rows will be read instead
    assert follower._fresh == set(range(1, 8))
    follower.learned([8, 9, 10])
    assert follower._fresh == set(range(1, 11))
