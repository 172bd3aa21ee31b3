from __future__ import annotations

import asyncio

import pytest

from gateway.crypto import jwk
from gateway.crypto import tokens as t
from gateway.errors import ConfigError, FailedPrecondition, Internal, NotFound
from gateway.signing import Keyring, Lifecycle, Sealer
from gateway.signing.keyring import document_name


class MemoryState:
    """``get_state``/``put_state`` with the Store's semantics; yields between steps so that
    concurrent callers really interleave. Counts reads for refresh assertions."""

    def __init__(self) -> None:
        self.docs: dict[str, str] = {}
        self.reads = 0

    async def get_state(self, name: str) -> str | None:
        self.reads += 1
        await asyncio.sleep(0)
        return self.docs.get(name)

    async def put_state(self, name: str, value: str, expected: str | None,
                        audit: object = ()) -> bool:
        await asyncio.sleep(0)
        if self.docs.get(name) != expected:
            return False
        self.docs[name] = value
        return True


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


NAME = document_name("default")
ISSUER = "https://gateway.test"
NOW = 1_900_000_000


def sealer(byte: bytes = b"k") -> Sealer:
    return Sealer(byte * 32)


def keyring(state, **kw) -> Keyring:
    kw.setdefault("sealer", sealer())
    kw.setdefault("refresh_interval", 0)
    kw.setdefault("rotation_check_s", 0)  # AUTO tests call rotate_if_due themselves
    return Keyring(state, **kw)


def mint(ring: Keyring) -> str:
    spec = t.DeriveSpec(issuer=ISSUER, subject="actor", parent_key_id="key-1",
                        expire_time=NOW + 3600)
    return t.mint_jwt(spec, ring.active_signer(), now=NOW).token


def verify(ring: Keyring, token: str) -> t.TokenResult:
    return t.verify_jwt(token, ring.public_key(t.jwt_key_id(token) or ""), issuer=ISSUER,
                        now=NOW + 60)


async def test_first_start_creates_an_active_and_a_next_generation(state):
    ring = keyring(state)
    await ring.start()
    gens = ring.generations()
    assert [g.status for g in gens] == [Lifecycle.ACTIVE, Lifecycle.NEXT]
    assert all(g.credential.alg == "RS256" and g.signer.alg == "EdDSA" for g in gens)
    assert ring.active_signer().kid == gens[0].signer.kid
    assert [k["kid"] for k in ring.jwks()] == [g.signer.kid for g in gens]


async def test_jwks_and_public_keys_carry_no_private_material(state):
    ring = keyring(state)
    await ring.start()
    assert all("d" not in k for k in ring.jwks())
    public = ring.public_key(ring.active_signer().kid)
    assert public is not None and not public.is_private and public.alg == "EdDSA"


async def test_private_keys_are_sealed_at_rest(state):
    ring = keyring(state)
    await ring.start()
    stored = state.docs[NAME]
    assert stored.startswith("sealed:v1:")
    assert ring.active_signer().kid not in stored
    with pytest.raises(Internal):
        await keyring(state, sealer=sealer(b"x")).start()


async def test_replicas_starting_together_converge_on_one_key_set(state):
    rings = [keyring(state) for _ in range(4)]
    await asyncio.gather(*(r.start() for r in rings))
    assert len({r.active_signer().kid for r in rings}) == 1
    assert len({tuple(k["kid"] for k in r.jwks()) for r in rings}) == 1


async def test_rotation_switches_the_signer_at_once_and_old_tokens_still_verify(state):
    ring = keyring(state)
    await ring.start()
    before = ring.generations()
    old_token = mint(ring)
    gens = await ring.rotate("default")
    assert [g.status for g in gens] == [Lifecycle.ACTIVE, Lifecycle.NEXT, Lifecycle.EXPIRED]
    assert gens[0].kid == before[1].kid  # NEXT became ACTIVE
    assert gens[2].kid == before[0].kid  # ACTIVE became EXPIRED
    assert ring.active_signer().kid == before[1].signer.kid
    new_token = mint(ring)
    assert t.jwt_key_id(new_token) != t.jwt_key_id(old_token)
    assert verify(ring, old_token).ok
    assert verify(ring, new_token).ok
    kids = {k["kid"] for k in ring.jwks()}
    assert {t.jwt_key_id(old_token), t.jwt_key_id(new_token)} <= kids


async def test_another_replica_picks_up_a_rotation_on_refresh(state):
    a, b = keyring(state), keyring(state)
    await a.start()
    await b.start()
    await a.rotate()
    assert b.active_signer().kid != a.active_signer().kid
    assert await b.refresh() is True
    assert b.active_signer().kid == a.active_signer().kid
    assert await b.refresh() is False


async def test_unknown_kid_refreshes_at_most_once_per_gap(state):
    clock = [0.0]
    a = keyring(state)
    b = keyring(state, monotonic=lambda: clock[0], miss_refresh_gap=5.0)
    await a.start()
    await b.start()
    await a.rotate()
    new_next = a.generations()[1].signer.kid
    assert b.public_key(new_next) is None
    reads = state.reads
    assert await b.resolve(new_next) is not None  # one refresh found it
    assert state.reads == reads + 1
    reads = state.reads
    assert await b.resolve("no-such-kid") is None  # within the gap: no store read
    assert state.reads == reads
    clock[0] = 6.0
    assert await b.resolve("no-such-kid") is None
    assert state.reads == reads + 1


async def test_a_burst_of_unknown_kids_shares_one_refresh(state):
    a, b = keyring(state), keyring(state)
    await a.start()
    await b.start()
    await a.rotate()
    new_next = a.generations()[1].signer.kid
    reads = state.reads
    found = await asyncio.gather(*(b.resolve(new_next) for _ in range(10)))
    assert all(k is not None and k.kid == new_next for k in found)
    assert state.reads == reads + 1


async def test_expired_generations_are_kept_for_the_retention_then_pruned(state):
    now = [NOW * 1_000_000]
    ring = keyring(state, clock=lambda: now[0], retain_expired_s=3600)
    await ring.start()
    first = ring.active_signer().kid
    await ring.rotate()
    now[0] += 1800 * 1_000_000
    await ring.rotate()
    assert ring.public_key(first) is not None  # retired 30 min ago: kept
    now[0] += 3600 * 1_000_000
    await ring.rotate()
    assert ring.public_key(first) is None  # retired 90 min ago: pruned
    assert [g.status for g in ring.generations()].count(Lifecycle.ACTIVE) == 1


async def test_concurrent_rotations_on_two_replicas_lose_no_update(state):
    a, b = keyring(state), keyring(state)
    await a.start()
    await b.start()
    await asyncio.gather(a.rotate(), b.rotate())
    await a.refresh()
    gens = a.generations()
    statuses = [g.status for g in gens]
    assert statuses.count(Lifecycle.ACTIVE) == 1 and statuses.count(Lifecycle.NEXT) == 1
    assert statuses.count(Lifecycle.EXPIRED) == 2


async def test_unknown_authorization_server_is_not_found(state):
    ring = keyring(state)
    await ring.start()
    with pytest.raises(NotFound):
        ring.generations("other")
    with pytest.raises(NotFound):
        await ring.rotate("other")
    with pytest.raises(NotFound):
        ring.generation("default", "no-such-kid")


async def test_a_configured_private_key_is_pinned_and_rotation_is_refused(state):
    pinned = jwk.generate("ES256", kid="pinned")
    trusted = jwk.generate("EdDSA", kid="trusted").public()
    assert trusted is not None
    ring = keyring(state, configured=[trusted, pinned])
    await ring.start()
    assert ring.active_signer().kid == "pinned"
    kids = [k["kid"] for k in ring.jwks()]
    assert kids[:2] == ["pinned", "trusted"]
    assert ring.public_key("trusted") is not None
    with pytest.raises(FailedPrecondition):
        await ring.rotate()
    token = mint(ring)
    assert verify(ring, token).ok


def test_configured_symmetric_keys_are_refused(state):
    with pytest.raises(ConfigError, match="GATEWAY_SIGNING_KEYS"):
        Keyring(state, configured=[jwk.generate("HS256", kid="h")])


async def test_the_active_signer_needs_a_started_keyring(state):
    with pytest.raises(Internal):
        keyring(state).active_signer()


async def test_refresh_loop_runs_and_stops(state):
    a = keyring(state)
    b = keyring(state, refresh_interval=0.01)
    await a.start()
    await b.start()
    await a.rotate()
    for _ in range(200):
        if b.active_signer().kid == a.active_signer().kid:
            break
        await asyncio.sleep(0.01)
    assert b.active_signer().kid == a.active_signer().kid
    await b.stop()


# -- AUTO rotation (Okta rotationMode AUTO) ---------------------------------------------

DAY_US = 86_400 * 1_000_000


def shape(ring: Keyring) -> list[tuple[Lifecycle, str, str, int]]:
    return [(g.status, g.kid, g.signer.kid, g.updated) for g in ring.generations()]


async def test_auto_rotation_waits_for_the_period_then_rotates_once(state):
    now = [NOW * 1_000_000]
    ring = keyring(state, clock=lambda: now[0], rotation_period_s=86_400)
    await ring.start()
    assert ring.rotation_mode == "AUTO"
    active, following = ring.generations()
    before = shape(ring)
    assert ring.next_rotation_us() == active.updated + DAY_US
    made = []
    generate = ring._new_generation
    ring._new_generation = lambda status: made.append(status) or generate(status)
    now[0] += DAY_US - 1
    assert await ring.rotate_if_due() is False
    assert shape(ring) == before and made == []  # not due: no key made for nothing
    now[0] += 1
    assert await ring.rotate_if_due() is True
    gens = ring.generations()
    assert [g.status for g in gens] == [Lifecycle.ACTIVE, Lifecycle.NEXT, Lifecycle.EXPIRED]
    assert gens[0].kid == following.kid and gens[2].kid == active.kid
    assert ring.active_signer().kid == following.signer.kid
    assert ring.next_rotation_us() == now[0] + DAY_US  # the new ACTIVE's period starts now
    assert await ring.rotate_if_due() is False


async def test_replicas_that_find_the_same_rotation_due_rotate_once(state):
    now = [NOW * 1_000_000]
    a = keyring(state, clock=lambda: now[0], rotation_period_s=86_400)
    b = keyring(state, clock=lambda: now[0], rotation_period_s=86_400)
    await a.start()
    await b.start()
    now[0] += DAY_US
    outcomes = await asyncio.gather(a.rotate_if_due(), b.rotate_if_due())
    assert sorted(outcomes) == [False, True]
    assert shape(a) == shape(b)  # the loser holds the winner's key set
    assert [g.status for g in a.generations()].count(Lifecycle.EXPIRED) == 1


async def test_a_manual_rotation_restarts_the_automatic_period(state):
    now = [NOW * 1_000_000]
    ring = keyring(state, clock=lambda: now[0], rotation_period_s=86_400)
    await ring.start()
    now[0] += DAY_US // 2
    await ring.rotate()
    assert ring.next_rotation_us() == now[0] + DAY_US
    now[0] += DAY_US // 2 + 1
    assert await ring.rotate_if_due() is False


async def test_manual_mode_never_rotates_by_itself(state):
    now = [NOW * 1_000_000]
    ring = keyring(state, clock=lambda: now[0])
    await ring.start()
    before = shape(ring)
    now[0] += 3650 * DAY_US
    assert ring.rotation_mode == "MANUAL" and ring.next_rotation_us() is None
    assert await ring.rotate_if_due() is False
    assert shape(ring) == before


async def test_the_schedule_rotates_in_the_background_and_reports_it(state):
    rotated = asyncio.Event()

    async def on_rotated() -> None:
        rotated.set()

    ring = keyring(state, rotation_period_s=0.2, rotation_check_s=0.05, rsa_bits=2048)
    await ring.start(on_rotated=on_rotated)
    try:
        first = ring.active_signer().kid
        await asyncio.wait_for(rotated.wait(), timeout=30)
        assert ring.active_signer().kid != first
        assert ring.public_key(first) is not None  # retired, still published
        stored = keyring(state)
        await stored.start()
        assert stored.active_signer().kid == ring.active_signer().kid  # persisted
    finally:
        await ring.stop()


def test_auto_rotation_refuses_a_pinned_signer(state):
    with pytest.raises(ConfigError, match="GATEWAY_SIGNING_ROTATION"):
        keyring(state, configured=[jwk.generate("EdDSA", kid="pinned")], rotation_period_s=86_400)


def test_settings_choose_the_rotation_mode(state):
    from gateway.crypto.digests import Digester
    from gateway.secret import Secret
    from gateway.settings import load_settings
    from gateway.signing import build_keyring

    digester = Digester(Secret("p" * 32))
    auto = load_settings({"GATEWAY_SIGNING_ROTATION": "AUTO",
                          "GATEWAY_SIGNING_ROTATION_PERIOD": "7d"})
    assert build_keyring(auto, state, digester).rotation_mode == "AUTO"
    assert build_keyring(load_settings({}), state, digester).rotation_mode == "MANUAL"
