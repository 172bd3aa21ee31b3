"""The keyring: signing keys of the authorization server, in memory, shared through the store.

Design. The gateway has one authorization server, ``default`` (its issuer is
``GATEWAY_ISSUER``); any other ``authServerId`` is unknown (404). Its keys come in
*generations*. A generation is one lifecycle slot as Okta shows it (``ACTIVE``, ``NEXT``,
``EXPIRED``) and holds two keys that share that status:

    credential   RSA 2048, RS256 — what the Okta credential-key API lists and rotates
                 (Okta's wire format allows ``kty: RSA`` only)
    signer       Ed25519, EdDSA — what signs derived JWTs (Ory: "JWT = EdDSA signed")

So the ACTIVE generation's signer signs every derived token, and rotating ``default``
(Okta ``keyRotate``) moves the derived-token signer at the same moment as the Okta key:
ACTIVE → EXPIRED, NEXT → ACTIVE, a fresh NEXT is made. NEXT signers are published ahead
of use, so other replicas and relying parties already know a key before it signs.
EXPIRED generations stay in memory and in the JWKS for ``retain_expired_s`` after they
were retired (default: the longest TTL a derived token may have), so tokens signed before
a rotation verify until they expire; older ones are pruned at the next rotation.

Each key is bound to its own ``alg`` (``Jwk.alg``): a token is checked with exactly that
algorithm, never with one named by the token alone.

Persistence. The generations of ``default`` are one document in the store's
``gateway_state`` table, name ``signing/authorization-servers/default``, private keys
included, sealed with AES-256-GCM under a key derived from the pepper (``seal.py``).
Public routes never see private parts: ``jwks()`` and the Okta views are public forms.
Writes are compare-and-set; creation is insert-if-absent, so replicas starting together
converge on one key set. Each replica re-reads the document every ``refresh_interval``
seconds, and at most once per ``miss_refresh_gap`` when asked for an unknown ``kid``, so a
rotation made on one replica reaches the others within the interval (sooner for a replica
that meets a token signed with the new key). Call ``refresh()`` from an invalidation bus to
make it immediate.

Rotation mode (Okta's ``credentials.signing.rotationMode``). ``MANUAL`` (the default):
keys move only on ``keyRotate``. ``AUTO`` (``rotation_period_s`` given): every replica
checks when the ACTIVE generation became active (its ``updated``, Okta's ``lastRotated``)
and rotates once it has signed for a whole period (Okta's ``nextRotation``). The due check
is made again inside the compare-and-set on the stored document, so replicas that find the
same rotation due rotate once between them; a manual rotation restarts the period.

Configured keys (``GATEWAY_SIGNING_KEYS``). Public-only configured keys are extra trusted
keys: they verify and are published (e.g. keys of a previous deployment). If any
configured key is private, the first private one is *pinned* as the derived-token signer:
the operator owns rotation (put the new key first, keep the old one listed until its
tokens expire), and ``keyRotate`` on ``default`` is refused (400) rather than pretending
to move a signer it cannot move.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from gateway.audit.events import event
from gateway.clock import now_us
from gateway.crypto import jwk as jwks_
from gateway.crypto.jwk import Jwk, JwkError
from gateway.errors import ConfigError, FailedPrecondition, GatewayError, Internal, NotFound
from gateway.signing.seal import Sealer
from gateway.signing.state import UNCHANGED, Documents, StateStore
from gateway.tasks import cancel

log = logging.getLogger("gateway.signing")

DEFAULT_SERVER = "default"
AUTHORIZATION_SERVERS: tuple[str, ...] = (DEFAULT_SERVER,)
CREDENTIAL_ALG = "RS256"
SIGNER_ALG = "EdDSA"
# algorithms a derived-token signing key may use: asymmetric only, its public half is published
DERIVED_ALGORITHMS = frozenset(a for a in jwks_.SIGNING if jwks_.ALGORITHMS[a][0] != "oct")
MAX_DERIVED_TTL_S = 315_360_000  # the longest TTL the API accepts (≈10 years)
# AUTO mode: the longest sleep between two looks at the schedule (0: no background
# schedule; the owner calls rotate_if_due, as tests do)
ROTATION_CHECK_S = 60.0


def document_name(auth_server_id: str) -> str:
    return f"signing/authorization-servers/{auth_server_id}"


class Lifecycle(Enum):
    """Okta's credential-key statuses."""

    ACTIVE = "ACTIVE"
    NEXT = "NEXT"
    EXPIRED = "EXPIRED"


_ORDER = {Lifecycle.ACTIVE: 0, Lifecycle.NEXT: 1, Lifecycle.EXPIRED: 2}


@dataclass(frozen=True)
class Generation:
    """One lifecycle slot: the Okta RSA credential key and the derived-token signer."""

    status: Lifecycle
    created: int  # µs
    updated: int  # µs; for EXPIRED: when it was retired
    credential: Jwk
    signer: Jwk

    @property
    def kid(self) -> str:
        """The Okta key id (of the credential key)."""
        return self.credential.kid

    def to_doc(self) -> dict[str, Any]:
        return {"status": self.status.value, "created": self.created, "updated": self.updated,
                "credential": self.credential.to_dict(), "signer": self.signer.to_dict()}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Generation:
        return cls(Lifecycle(doc["status"]), int(doc["created"]), int(doc["updated"]),
                   jwks_.from_dict(doc["credential"]), jwks_.from_dict(doc["signer"]))


def _sorted(gens: Sequence[Generation]) -> tuple[Generation, ...]:
    return tuple(sorted(gens, key=lambda g: (_ORDER[g.status], -g.updated)))


@dataclass(frozen=True)
class _View:
    """One immutable snapshot; swapped whole, so readers never see a half update."""

    raw: str | None
    generations: tuple[Generation, ...]
    signer: Jwk
    keys: Mapping[str, Jwk]  # kid → public verification key
    jwks: tuple[dict[str, Any], ...]


class Keyring:
    """Signing keys in memory; see the module docstring for the lifecycle."""

    def __init__(
        self,
        store: StateStore,
        *,
        sealer: Sealer | None = None,
        configured: Sequence[Jwk] = (),
        servers: Container[str] = AUTHORIZATION_SERVERS,
        refresh_interval: float = 30.0,
        miss_refresh_gap: float = 1.0,
        retain_expired_s: int = MAX_DERIVED_TTL_S,
        rsa_bits: int = jwks_.MIN_RSA_BITS,
        rotation_period_s: float | None = None,
        rotation_check_s: float = ROTATION_CHECK_S,
        clock: Callable[[], int] = now_us,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        for key in configured:
            if key.alg not in DERIVED_ALGORITHMS or key.use != "sig":
                raise ConfigError(f"GATEWAY_SIGNING_KEYS: key {key.kid!r} must be an "
                                  f"asymmetric signing key (alg {key.alg}, use {key.use})")
        pinned = next((k for k in configured if k.is_private), None)
        if rotation_period_s is not None and pinned is not None:
            raise ConfigError("GATEWAY_SIGNING_ROTATION: AUTO cannot move a signing key "
                              "pinned by GATEWAY_SIGNING_KEYS; use MANUAL")
        if rotation_period_s is not None and rotation_period_s <= 0:
            raise ConfigError("GATEWAY_SIGNING_ROTATION_PERIOD: must be positive")
        self._docs = Documents(store, sealer)
        self._name = document_name(DEFAULT_SERVER)
        self._configured = tuple(configured)
        self._pinned = pinned
        self._servers = servers
        self._refresh_interval = refresh_interval
        self._miss_refresh_gap = miss_refresh_gap
        self._retain_us = retain_expired_s * 1_000_000
        self._rsa_bits = rsa_bits
        self._period_us = None if rotation_period_s is None else int(rotation_period_s * 1e6)
        self._rotation_check_s = rotation_check_s
        self._clock = clock
        self._monotonic = monotonic
        self._view: _View | None = None
        self._last_miss_refresh = float("-inf")
        self._miss_refresh: asyncio.Future[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, on_rotated: Callable[[], Awaitable[None]] | None = None) -> None:
        """Load the key set, creating it (insert-if-absent) when there is none. In AUTO
        mode, also start the schedule; ``on_rotated`` runs after each rotation it makes
        (to tell the other replicas)."""
        await self._load_or_create()
        if self._tasks:
            return
        if self._refresh_interval > 0:
            self._tasks.append(asyncio.create_task(self._refresh_loop(),
                                                   name="keyring-refresh"))
        if self._period_us is not None and self._rotation_check_s > 0:
            log.info("signing keys rotate automatically; next rotation at %s",
                     _iso(self.next_rotation_us()))
            self._tasks.append(asyncio.create_task(self._rotation_loop(on_rotated),
                                                   name="keyring-rotation"))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel(task)
        self._tasks.clear()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
            except GatewayError as exc:
                log.warning("keyring refresh failed: %s", exc.message)
            except Exception:
                log.exception("keyring refresh failed")

    async def _rotation_loop(self, on_rotated: Callable[[], Awaitable[None]] | None) -> None:
        while True:
            due_us = self.next_rotation_us()
            wait = self._rotation_check_s if due_us is None else (due_us - self._clock()) / 1e6
            if wait > 0:  # looked at again at least every check, as the view may change
                await asyncio.sleep(min(wait, self._rotation_check_s))
                continue
            try:
                if await self.rotate_if_due() and on_rotated is not None:
                    await on_rotated()
            except GatewayError as exc:
                log.warning("scheduled key rotation failed: %s", exc.message)
                await asyncio.sleep(self._rotation_check_s)
            except Exception:
                log.exception("scheduled key rotation failed")
                await asyncio.sleep(self._rotation_check_s)

    async def _load_or_create(self) -> None:
        doc, raw = await self._docs.read(self._name)
        if doc is None:
            fresh = await asyncio.to_thread(self._fresh_document)
            # insert-if-absent: if another replica won the race, its document is returned
            doc, raw = await self._docs.update(
                self._name, lambda current: fresh if current is None else UNCHANGED)
        self._install(doc, raw)

    async def refresh(self) -> bool:
        """Re-read the key set from the store; True when it changed."""
        async with self._refresh_lock:
            doc, raw = await self._docs.read(self._name)
            if doc is None:
                await self._load_or_create()
                return True
            if self._view is not None and raw == self._view.raw:
                return False
            self._install(doc, raw)
            return True

    # -- the hot path: no I/O -----------------------------------------------------------

    def _current(self) -> _View:
        if self._view is None:
            raise Internal("the keyring is not started")
        return self._view

    def active_signer(self) -> Jwk:
        """The private key that signs derived tokens now (its ``alg`` and ``kid`` included)."""
        return self._current().signer

    def public_key(self, kid: str) -> Jwk | None:
        """The public verification key with this ``kid`` (ACTIVE, NEXT, retained EXPIRED or
        configured), or None. Its ``alg`` is the only algorithm it verifies."""
        return self._current().keys.get(kid)

    async def resolve(self, kid: str) -> Jwk | None:
        """``public_key(kid)``; on a miss, refresh from the store and look again.

        Misses share one in-flight refresh, and a new one starts at most once per
        ``miss_refresh_gap`` seconds, so a burst of tokens with a new kid costs one store
        read and random kids cannot hammer the store.
        """
        key = self.public_key(kid)
        if key is not None:
            return key
        task = self._miss_refresh
        if task is None or task.done():
            now = self._monotonic()
            if now - self._last_miss_refresh < self._miss_refresh_gap:
                return None
            self._last_miss_refresh = now
            task = self._miss_refresh = asyncio.ensure_future(self._refresh_quietly())
        await asyncio.shield(task)
        return self.public_key(kid)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except GatewayError as exc:
            log.warning("keyring refresh on unknown kid failed: %s", exc.message)

    def jwks(self) -> list[dict[str, Any]]:
        """Public JWKs of every key a derived token may carry: the active signer first, then
        NEXT, retained EXPIRED and configured keys. Never private parts."""
        return list(self._current().jwks)

    # -- the authorization server (Okta view) ----------------------------------------------

    def has_server(self, auth_server_id: str) -> bool:
        return auth_server_id in self._servers

    def require_server(self, auth_server_id: str) -> None:
        if not self.has_server(auth_server_id):
            raise NotFound(f"Not found: Resource not found: {auth_server_id} "
                           "(AuthorizationServer)")

    def generations(self, auth_server_id: str = DEFAULT_SERVER) -> tuple[Generation, ...]:
        """ACTIVE, NEXT, then EXPIRED (newest first). NotFound for an unknown server."""
        self.require_server(auth_server_id)
        return self._current().generations

    def generation(self, auth_server_id: str, kid: str) -> Generation:
        """The generation whose Okta credential key has this ``kid``; NotFound otherwise."""
        for gen in self.generations(auth_server_id):
            if gen.kid == kid:
                return gen
        raise NotFound(f"Not found: Resource not found: {kid} (AuthorizationServerKey)")

    @property
    def rotation_mode(self) -> str:
        """Okta's ``rotationMode``: ``AUTO`` or ``MANUAL``."""
        return "MANUAL" if self._period_us is None else "AUTO"

    def activated_us(self) -> int:
        """When the ACTIVE generation became ACTIVE (µs): Okta's ``lastRotated``."""
        return next(g.updated for g in self._current().generations
                    if g.status is Lifecycle.ACTIVE)

    def next_rotation_us(self) -> int | None:
        """AUTO mode: when the ACTIVE generation is due to retire (µs); None in MANUAL."""
        return self._due_us(self._current().generations)

    def _due_us(self, gens: Sequence[Generation]) -> int | None:
        """When the ACTIVE generation of ``gens`` is due to retire; None in MANUAL mode
        (or with no ACTIVE generation)."""
        if self._period_us is None:
            return None
        activated = next((g.updated for g in gens if g.status is Lifecycle.ACTIVE), None)
        return None if activated is None else activated + self._period_us

    def schedule(self) -> tuple[float, float | None] | None:
        """(activated, next rotation or None) in Unix seconds, for metrics; None before
        ``start``."""
        if self._view is None:
            return None
        due = self.next_rotation_us()
        return self.activated_us() / 1e6, None if due is None else due / 1e6

    async def rotate(self, auth_server_id: str = DEFAULT_SERVER) -> tuple[Generation, ...]:
        """ACTIVE → EXPIRED, NEXT → ACTIVE, a fresh NEXT; effective on this replica at once.

        Persisted by compare-and-set; returns the resulting generations.
        """
        self.require_server(auth_server_id)
        if self._pinned is not None:
            raise FailedPrecondition(
                "the derived-token signing key is pinned by GATEWAY_SIGNING_KEYS; rotate it "
                "by changing the configuration")
        await self._rotate(due_only=False)
        return self._current().generations

    async def rotate_if_due(self) -> bool:
        """AUTO mode's rotation: rotate when the stored ACTIVE generation has signed for a
        whole period. True when this call rotated; False when it was not due (another
        replica may just have rotated: this replica then holds that key set)."""
        due_us = self.next_rotation_us()
        if due_us is None or self._clock() < due_us:
            # this replica's view is never newer than the store's, so not due here means
            # not due there: no key is generated for nothing
            return False
        return await self._rotate(due_only=True)

    async def _rotate(self, *, due_only: bool) -> bool:
        fresh = await asyncio.to_thread(self._new_generation, Lifecycle.NEXT)
        rotated = False

        def change(doc: Any) -> Any:
            nonlocal rotated
            now = self._clock()
            gens = [Generation.from_doc(g) for g in (doc or {}).get("generations", [])]
            due = self._due_us(gens) if due_only else None  # checked again on the stored set
            if due is not None and now < due:
                rotated = False  # set by an earlier attempt that lost the compare-and-set
                return UNCHANGED
            rotated = True
            out: list[Generation] = []
            for gen in gens:
                if gen.status is Lifecycle.ACTIVE:
                    out.append(dataclasses.replace(gen, status=Lifecycle.EXPIRED, updated=now))
                elif gen.status is Lifecycle.NEXT:
                    out.append(dataclasses.replace(gen, status=Lifecycle.ACTIVE, updated=now))
                elif now - gen.updated <= self._retain_us:
                    out.append(gen)
            if not any(g.status is Lifecycle.ACTIVE for g in out):  # there was no NEXT
                out.append(self._new_generation(Lifecycle.ACTIVE))
            out.append(fresh)
            return {"v": 1, "generations": [g.to_doc() for g in _sorted(out)]}

        # automatic rotation is the gateway's own (principal "system"); keyRotate an admin's
        audit = [event("signing_keys.rotated", f"authorizationServers/{DEFAULT_SERVER}",
                       scheduled=due_only, next_kid=fresh.kid)]
        async with self._refresh_lock:
            doc, raw = await self._docs.update(self._name, change, audit)
            self._install(doc, raw)
        if rotated:
            view = self._current()
            due = self.next_rotation_us()
            log.info("rotated authorization server %s (%s): active signer is now %s%s",
                     DEFAULT_SERVER, "scheduled" if due_only else "keyRotate", view.signer.kid,
                     "" if due is None else f"; next rotation at {_iso(due)}")
        return rotated

    # -- building ------------------------------------------------------------------------

    def _new_generation(self, status: Lifecycle) -> Generation:
        now = self._clock()
        credential = jwks_.generate(CREDENTIAL_ALG, rsa_bits=self._rsa_bits)
        signer = jwks_.generate(SIGNER_ALG)
        return Generation(status, now, now, credential, signer)

    def _fresh_document(self) -> dict[str, Any]:
        gens = [self._new_generation(Lifecycle.ACTIVE), self._new_generation(Lifecycle.NEXT)]
        return {"v": 1, "generations": [g.to_doc() for g in gens]}

    def _install(self, doc: Any, raw: str | None) -> None:
        try:
            gens = _sorted([Generation.from_doc(g) for g in doc["generations"]])
        except (JwkError, KeyError, TypeError, ValueError) as exc:
            raise Internal(f"signing key document is malformed: {type(exc).__name__}"
                           ) from None
        active = next((g for g in gens if g.status is Lifecycle.ACTIVE), None)
        if active is None:
            raise Internal("signing key document has no ACTIVE generation")
        signer = self._pinned or active.signer
        keys: dict[str, Jwk] = {}
        published: list[dict[str, Any]] = []
        ordered = [signer, *self._configured, *(g.signer for g in gens)]
        for key in ordered:
            public = key.public()
            if public is None or public.kid in keys:
                continue
            keys[public.kid] = public
            published.append(public.to_dict(private=False) or {})
        self._view = _View(raw, gens, signer, keys, tuple(published))


def _iso(us: int | None) -> str:
    if us is None:
        return "never"
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")


def load_configured_keys(uris: Sequence[str]) -> list[Jwk]:
    """The keys named by ``GATEWAY_SIGNING_KEYS``; ConfigError naming the bad entry."""
    keys: list[Jwk] = []
    for index, uri in enumerate(uris, 1):
        try:
            keys.extend(jwks_.load_uri(uri))
        except JwkError as exc:
            raise ConfigError(f"GATEWAY_SIGNING_KEYS: entry {index} "
                              f"({jwks_.describe_uri(uri)}): {exc}") from None
    return keys
