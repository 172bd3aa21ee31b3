"""Lifecycle operations on API keys: issue, import, list, update, revoke, rotate, delete.

Works on plain dicts (already-parsed JSON) and domain values; knows nothing of HTTP.
Every operation that changes whether a credential verifies calls ``KeyEvents.key_changed``
before returning, so caches are invalidated before the admin call answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.audit.events import AuditEvent, event
from gateway.clock import now_us, to_rfc3339
from gateway.crypto import secrets_format, tokens
from gateway.crypto.digests import imported_key_id
from gateway.crypto.peppers import Peppers
from gateway.errors import (
    AlreadyExists,
    FailedPrecondition,
    GatewayError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from gateway.keys import fields as f
from gateway.keys.durations import parse_ttl
from gateway.keys.listing import Filter, make_page_token, parse_page_token
from gateway.keys.masks import merge, parse_mask
from gateway.keys.model import ApiKey, KeyStatus, Kind, RevocationReason, Visibility
from gateway.keys.updates import FIELD_UPDATES
from gateway.keys.wire import rate_limit_wire
from gateway.store.base import Store

_CREATE_FIELDS = frozenset({"name", "actor_id", "scopes", "ttl", "metadata", "ip_restriction",
                            "rate_limit_policy", "visibility", "request_id"})
_IMPORT_FIELDS = _CREATE_FIELDS | {"raw_key"}
_ROTATE_FIELDS = frozenset({"name", "scopes", "metadata", "ip_restriction",
                            "rate_limit_policy", "visibility"})
_RESOURCE_FIELDS = frozenset({"key_id", "name", "actor_id", "scopes", "status", "visibility",
                              "metadata", "ip_restriction", "rate_limit_policy", "create_time",
                              "update_time", "expire_time", "last_used_time",
                              "revocation_reason", "revocation_description",
                              "revocation_reason_text"})
MAX_BATCH_IMPORT = 1000


def _target(key: ApiKey) -> str:
    return f"{key.kind.value}ApiKeys/{key.key_id}"


def _created(action: str, key: ApiKey) -> AuditEvent:
    """A new key's event: who it is for and what it may do (never its secret or digest)."""
    return event(action, _target(key), actor_id=key.actor_id, name=key.name,
                 scopes=list(key.scopes), visibility=key.visibility.value,
                 expire_time=None if key.expire_time is None else to_rfc3339(key.expire_time))


async def find_by_credential(store: Store, peppers: Peppers, credential: str
                             ) -> ApiKey | None:
    """The key a root-key credential names, under any pepper; a forged credential is
    refused with no store read (``Peppers.candidates``)."""
    for digest in peppers.candidates(credential):
        key = await store.get_by_digest(digest)
        if key is not None:
            return key
    return None


def _issued_shape(raw_key: str, issued_starts: tuple[str, ...]) -> str | None:
    """What of ours ``raw_key`` looks like (an API key secret, a JWT, a macaroon), or None."""
    if raw_key.startswith(issued_starts):
        return "an API key secret"
    kind = tokens.classify(raw_key)
    return None if kind is None else ("a JWT" if kind is tokens.TokenKind.JWT else "a macaroon")


def _exists(key: ApiKey) -> AlreadyExists:
    return AlreadyExists(
        f"an imported key with this raw_key exists already (key_id {key.key_id})")


def _unwrap(kind: Kind, body: object, update_mask: str | None
            ) -> tuple[dict[str, Any], str | None]:
    """The key an update request carries, and its mask. The body is the key itself, or
    wraps it as ``{"<kind>_api_key": {...}, "update_mask": "..."}``; a mask in the query
    wins over the wrapper's."""
    body = f.require_object(body)
    wrapper = f"{kind.value}_api_key"
    if wrapper not in body:
        return body, update_mask
    f.check_known(body, frozenset({wrapper, "update_mask"}), "update request")
    if update_mask is None and isinstance(body.get("update_mask"), str):
        update_mask = body["update_mask"]
    return f.require_object(body[wrapper], wrapper), update_mask


def _check_output_only(body: dict[str, Any], key_id: str) -> None:
    """Output-only fields are ignored (a key read back from GET may be sent as it is), but
    a key_id other than the path's, or a malformed value, is still an error."""
    if body.get("key_id") not in (None, "", key_id):
        raise InvalidArgument("key_id: does not match the key_id in the path")
    f.enum_value(body, "status", KeyStatus)
    f.enum_value(body, "revocation_reason", RevocationReason)
    for stamp in ("create_time", "update_time", "last_used_time"):
        if body.get(stamp) not in (None, ""):
            f.timestamp(body[stamp], stamp)


def _check_shapes(body: dict[str, Any]) -> None:
    """Every field an update carries is well formed, in the mask or not (a field outside
    the mask is ignored, but a malformed one is still a malformed request)."""
    f.text(body, "name")
    f.text(body, "actor_id")
    f.string_list(body, "scopes")
    f.metadata(body)
    f.enum_value(body, "visibility", Visibility)
    for name in ("ip_restriction", "rate_limit_policy"):
        if body.get(name) is not None:
            f.require_object(body[name], name)
    expire = body.get("expire_time")
    if expire is not None:
        if expire == "":
            raise InvalidArgument("expire_time: expected an RFC 3339 timestamp such as "
                                  "\"2030-01-01T00:00:00Z\" (null, or a mask naming it with "
                                  "none given, clears it)")
        f.timestamp(expire, "expire_time")


class KeyEvents(Protocol):
    """Told when a key changes in a way that can alter a verify answer."""

    async def key_changed(self, key: ApiKey, *old_digests: str) -> None: ...
    async def keys_added(self, keys: Sequence[ApiKey], *old_digests: str) -> None: ...


class NoEvents:
    async def key_changed(self, key: ApiKey, *old_digests: str) -> None:
        return None

    async def keys_added(self, keys: Sequence[ApiKey], *old_digests: str) -> None:
        return None


@dataclass(frozen=True)
class Issued:
    key: ApiKey
    secret: str


@dataclass(frozen=True)
class BatchItem:
    index: int
    key: ApiKey | None = None
    error: GatewayError | None = None


@dataclass(frozen=True)
class Page:
    keys: list[ApiKey]
    next_page_token: str


def new_key_id() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (26 chars)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> shift) & 31] for shift in range(125, -5, -5))


class KeyService:
    def __init__(
        self,
        store: Store,
        peppers: Peppers,
        *,
        key_prefix: str = "ory_ak",
        public_key_prefix: str = "ory_pk",
        default_ttl: str | None = None,
        max_ttl: str | None = None,
        events: KeyEvents | None = None,
    ) -> None:
        self.store = store
        self.digester = peppers.current
        self.key_prefix = key_prefix
        self.public_key_prefix = public_key_prefix
        self.peppers = peppers
        # the longest lifetime a key may be given (None: no limit), and the lifetime of a
        # key whose request gives none (by default the longest)
        self.max_ttl_s = parse_ttl(max_ttl, "max ttl") if max_ttl else None
        self.default_ttl_s = (parse_ttl(default_ttl, "default ttl") if default_ttl
                              else self.max_ttl_s)
        self.events: KeyEvents = events or NoEvents()
        # one per pepper, the current first: replays made before a pepper rotation still match
        self._idem_keys = [d.subkey("issue-idempotency") for d in peppers.all]
        self._fp_keys = [d.subkey("request-fingerprint") for d in peppers.all]

    # -- shared pieces ---------------------------------------------------------------

    def _fingerprint(self, body: dict[str, Any], generation: int = 0) -> str:
        """Same fingerprint for requests that mean the same (AIP-155 replays).

        Unset-equivalent values (null, "", [], ``*_UNSPECIFIED``) are left out, as proto3
        reads them as not provided: the SDK always sends ``visibility: …_UNSPECIFIED``.
        """
        meaningful = {k: v for k, v in body.items() if f.populated(v)}
        canonical = orjson.dumps(meaningful, option=orjson.OPT_SORT_KEYS)
        return hmac.new(self._fp_keys[generation], canonical, hashlib.sha256).hexdigest()

    def _expiry(self, body: dict[str, Any], now: int) -> int | None:
        """The expiry a create request asks for: its ``ttl`` (at most the longest lifetime),
        else the default lifetime; None (never) only when no limit and no default are set."""
        raw = body.get("ttl")
        ttl = parse_ttl(raw)
        if ttl is None and raw not in (None, ""):
            raise InvalidArgument("ttl: must be at least 1s (leave it out for the default "
                                  "lifetime)")
        if ttl is None:
            ttl = self.default_ttl_s
        elif self.max_ttl_s is not None and ttl > self.max_ttl_s:
            raise InvalidArgument(f"ttl: {raw!r} is longer than the longest key lifetime, "
                                  f"{self.max_ttl_s:g}s (GATEWAY_MAX_KEY_TTL)")
        return None if ttl is None else now + int(ttl * 1_000_000)

    def _common(self, body: dict[str, Any], now: int) -> dict[str, Any]:
        return {
            "name": f.text(body, "name") or "",
            "actor_id": f.actor_id(body) or "",
            "scopes": f.scopes(body) or (),
            "metadata": f.metadata(body),
            "allowed_cidrs": f.ip_restriction(body) or (),
            "rate_limit": f.rate_limit(body),
            "visibility": f.enum_value(body, "visibility", Visibility) or Visibility.SECRET,
            "expire_time": self._expiry(body, now),
            "request_id": f.text(body, "request_id", max_len=256) or None,
            "create_time": now,
            "update_time": now,
        }

    async def _replay(self, kind: Kind, request_id: str | None, body: dict[str, Any]
                      ) -> ApiKey | None:
        """The key a previous request with the same request_id created (AIP-155)."""
        if not request_id:
            return None
        existing = await self.store.get_by_request_id(kind, request_id)
        if existing is None:
            return None
        stored = existing.request_fingerprint or ""
        if not any(hmac.compare_digest(stored, self._fingerprint(body, generation))
                   for generation in range(len(self._fp_keys))):
            raise AlreadyExists(
                f"request_id {request_id!r} was already used with a different request"
            )
        return existing

    def _material(self, key_id: str, request_id: str, generation: int = 0) -> bytes:
        return hmac.new(self._idem_keys[generation], f"{key_id}\x00{request_id}".encode(),
                        hashlib.sha256).digest()

    def _secret_for(self, key_id: str, request_id: str | None, prefix: str) -> str:
        material = self._material(key_id, request_id) if request_id else None
        return self.peppers.format.new_secret(prefix, material)

    def _replayed_secret(self, key: ApiKey, prefix: str) -> str:
        """The secret an idempotent issue returned the first time: made under whichever
        pepper was current then, in whichever format was current then (v1 before v2)."""
        assert key.request_id is not None
        for generation, digester in enumerate(self.peppers.all):
            material = self._material(key.key_id, key.request_id, generation)
            for secret in (self.peppers.format.new_secret(prefix, material, generation),
                           secrets_format.legacy_secret(prefix, material)):
                if key.digest in (self.digester.digest(secret), digester.digest(secret)):
                    return secret
        raise Internal(f"the secret of API key {key.key_id!r} cannot be made again (was its "
                       "pepper removed from GATEWAY_PEPPER_RETIRED?)")

    async def move_to_current_pepper(self, key_id: str, old: str, new: str) -> None:
        """Store a key's digest under the current pepper (it was found under a retired one)."""
        moved = await self.store.move_digest(key_id, old, new)
        if moved is not None:
            if old in self.peppers.unkeyed:
                self.peppers.unkeyed.add(new)
            await self.events.keys_added([moved], old)

    async def get(self, kind: Kind, key_id: str) -> ApiKey:
        key = await self.store.get_key(key_id)
        if key is None or key.kind is not kind:
            raise NotFound(f"{kind.value} API key {key_id!r} not found")
        return key

    # -- issue / import --------------------------------------------------------------

    async def issue(self, body: dict[str, Any]) -> Issued:
        f.check_known(body, _CREATE_FIELDS, "IssueApiKeyRequest")
        now = now_us()
        values = self._common(body, now)
        fingerprint = self._fingerprint(body)
        prefix = (self.public_key_prefix if values["visibility"] is Visibility.PUBLIC
                  else self.key_prefix)
        replay = await self._replay(Kind.ISSUED, values["request_id"], body)
        if replay is not None:
            return Issued(replay, self._replayed_secret(replay, prefix))
        key_id = new_key_id()
        secret = self._secret_for(key_id, values["request_id"], prefix)
        key = ApiKey(key_id=key_id, kind=Kind.ISSUED, digest=self.digester.digest(secret),
                     request_fingerprint=fingerprint, **values)
        try:
            stored = await self.store.insert_key(key, [_created("key.issued", key)])
        except AlreadyExists:
            replay = await self._replay(Kind.ISSUED, values["request_id"], body)
            if replay is None:
                raise
            return Issued(replay, self._replayed_secret(replay, prefix))
        return Issued(stored, secret)

    def _imported(self, body: object) -> tuple[dict[str, Any], ApiKey]:
        """The key an ImportApiKeyRequest describes, checked (no I/O)."""
        body = f.require_object(body, "ImportApiKeyRequest")
        f.check_known(body, _IMPORT_FIELDS, "ImportApiKeyRequest")
        raw_key = f.text(body, "raw_key", required=True, max_len=f.MAX_CREDENTIAL_LENGTH)
        assert raw_key is not None
        f.text(body, "name", required=True)
        f.actor_id(body, required=True)
        shape = _issued_shape(raw_key, self.peppers.format.starts)
        if shape is not None:
            # it could never verify as an imported key: the verifier reads it as one of ours
            raise FailedPrecondition(f"raw_key: has the shape of {shape}, which this gateway "
                                     "issues itself: it cannot be imported")
        values = self._common(body, now_us())
        return body, ApiKey(key_id=imported_key_id(raw_key), kind=Kind.IMPORTED,
                            digest=self.digester.digest(raw_key),
                            request_fingerprint=self._fingerprint(body), **values)

    async def import_key(self, body: object) -> ApiKey:
        return await self._import(*self._imported(body))

    async def _import(self, body: dict[str, Any], key: ApiKey) -> ApiKey:
        """Insert a checked import (``_imported``), or return the key it replays."""
        replay = await self._replay(Kind.IMPORTED, key.request_id, body)
        if replay is not None:
            return replay
        try:
            stored = await self.store.insert_key(key, [_created("key.imported", key)])
        except AlreadyExists:
            replay = await self._replay(Kind.IMPORTED, key.request_id, body)
            if replay is not None:
                return replay
            raise _exists(key) from None
        self.peppers.unkeyed.add(stored.digest)  # from now on it is looked up here
        # The raw key may have been presented (and cached as not found) before the import;
        # the other replicas learn its digest from this invalidation, before it returns.
        await self.events.keys_added([stored])
        return stored

    async def batch_import(self, body: dict[str, Any]) -> list[BatchItem]:
        """Items with a request_id take ``import_key`` one by one (they may be replays);
        the others are inserted in one transaction and invalidated in one broadcast (a
        1,000-key batch is one round of acks, not 1,000)."""
        f.check_known(body, frozenset({"requests"}), "batch request")
        items = body.get("requests")
        if not isinstance(items, list):
            raise InvalidArgument("requests: expected an array of ImportApiKeyRequest")
        if not items:
            raise InvalidArgument("requests: must hold at least one item")
        if len(items) > MAX_BATCH_IMPORT:
            raise InvalidArgument(
                f"requests: {len(items)} items exceeds the limit of {MAX_BATCH_IMPORT}"
            )
        results: dict[int, BatchItem] = {}
        fresh: list[tuple[int, ApiKey]] = []
        for index, item in enumerate(items):
            try:
                checked, key = self._imported(item)
                if key.request_id:
                    results[index] = BatchItem(index, key=await self._import(checked, key))
                else:
                    fresh.append((index, key))
            except GatewayError as exc:
                results[index] = BatchItem(index, error=exc)
        failed = sum(1 for item in results.values() if item.error is not None)
        stored = await self.store.insert_new_keys(
            [key for _, key in fresh],
            [event("keys.batch_imported", "importedApiKeys", key_ids=[k.key_id for _, k in fresh],
                   failed_items=failed)]) if fresh else []
        for (index, key), row in zip(fresh, stored, strict=True):
            results[index] = (BatchItem(index, key=row) if row is not None
                              else BatchItem(index, error=_exists(key)))
        added = [row for row in stored if row is not None]
        self.peppers.unkeyed.add_many([row.digest for row in added])
        if added:
            await self.events.keys_added(added)
        return [results[index] for index in range(len(items))]

    # -- list ------------------------------------------------------------------------

    async def list(self, kind: Kind, flt: Filter, page_size: int, page_token: str | None
                   ) -> Page:
        after = parse_page_token(page_token, flt)
        rows = await self.store.list_keys(kind, actor_id=flt.actor_id, status=flt.status,
                                          now_us=now_us(), after_seq=after,
                                          limit=page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = make_page_token(rows[-1].seq, flt) if more and rows else ""
        return Page(rows, token)

    # -- update ----------------------------------------------------------------------

    async def update(self, kind: Kind, key_id: str, body: object, update_mask: str | None
                     ) -> ApiKey:
        body, update_mask = _unwrap(kind, body, update_mask)
        f.check_known(body, _RESOURCE_FIELDS, f"{kind.value} API key")
        _check_output_only(body, key_id)
        _check_shapes(body)
        mask = parse_mask(update_mask, body)
        current = await self.get(kind, key_id)
        if current.revoke_time is not None:
            raise FailedPrecondition(f"API key {key_id!r} is revoked and cannot be updated")
        now = now_us()
        changes: dict[str, Any] = {"update_time": max(now, current.update_time + 1)}
        for path in mask.fields:
            update = FIELD_UPDATES[path]
            changes[update.attribute] = update.read(body, current, now)
        changes.update(self._partial_changes(current, body, mask.parts))
        if "expire_time" in changes:
            self._check_lifetime(changes["expire_time"], now)
        updated = current.with_changes(**changes)
        changed = sorted({*mask.fields, *(f"{head}.{part}" for head, parts in mask.parts.items()
                                           for part in parts)})
        if not await self.store.update_key(updated, current.update_time,
                                           [event("key.updated", _target(current),
                                                  fields=changed)]):
            raise FailedPrecondition(
                f"API key {key_id!r} changed concurrently or was revoked; retry the update"
            )
        await self.events.key_changed(updated)
        return updated

    def _check_lifetime(self, expire_time: int | None, now: int) -> None:
        """An updated expiry keeps within GATEWAY_MAX_KEY_TTL, as a new key's ttl does."""
        if self.max_ttl_s is None:
            return
        if expire_time is None:
            raise InvalidArgument("expire_time: cannot be cleared: every key expires while "
                                  "GATEWAY_MAX_KEY_TTL is set")
        if expire_time > now + int(self.max_ttl_s * 1_000_000):
            raise InvalidArgument(f"expire_time: further than the longest key lifetime, "
                                  f"{self.max_ttl_s:g}s (GATEWAY_MAX_KEY_TTL), from now")

    @staticmethod
    def _partial_changes(current: ApiKey, body: dict[str, Any],
                         parts: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        """The changes of the mask's sub-paths: each named part is set from the body, or
        cleared, and the rest of the field is kept; the result is checked as a whole."""
        changes: dict[str, Any] = {}
        for head, names in parts.items():
            given = body.get(head)
            if head == "metadata":
                merged = merge(current.metadata, given, names, head)
                changes["metadata"] = f.metadata({head: merged}) if merged else None
            elif head == "rate_limit_policy":
                rl = current.rate_limit
                merged = merge(rate_limit_wire(rl) if rl else None, given, names, head)
                changes["rate_limit"] = f.rate_limit({head: merged})
        return changes

    # -- revoke / rotate / delete ----------------------------------------------------

    def _revocation(self, body: object) -> tuple[RevocationReason, str]:
        body = f.require_object(body)
        f.check_known(body, frozenset({"reason", "description"}), "revoke request")
        reason = f.enum_value(body, "reason", RevocationReason)
        if reason is None:
            raise InvalidArgument("reason: is required (REVOCATION_REASON_UNSPECIFIED is not "
                                  "accepted)")
        description = f.text(body, "description", max_len=1024) or ""
        if description and reason is not RevocationReason.PRIVILEGE_WITHDRAWN:
            raise InvalidArgument("description: only allowed with "
                                  "REVOCATION_REASON_PRIVILEGE_WITHDRAWN")
        return reason, description

    async def revoke(self, kinds: Sequence[Kind], key_id: str, body: object) -> ApiKey:
        reason, description = self._revocation(body)
        key = await self.store.get_key(key_id)
        if key is None or key.kind not in kinds:
            raise NotFound(f"API key {key_id!r} not found")
        if key.revoke_time is not None:
            raise FailedPrecondition(f"API key {key_id!r} is already revoked")
        revoked = await self.store.revoke_key(
            key_id, reason, description, now_us(),
            [event("key.revoked", _target(key), reason=reason.value)])
        if revoked is None:  # deleted or revoked since it was read: one revoke wins
            if await self.store.get_key(key_id) is None:
                raise NotFound(f"API key {key_id!r} not found")
            raise FailedPrecondition(f"API key {key_id!r} is already revoked")
        await self.events.key_changed(revoked)
        return revoked

    async def rotate(self, key_id: str, body: object) -> tuple[Issued, ApiKey]:
        body = f.require_object(body)
        f.check_known(body, _ROTATE_FIELDS, "AdminRotateIssuedApiKeyBody")
        old = await self.get(Kind.ISSUED, key_id)
        now = now_us()
        if old.status(now) is not KeyStatus.ACTIVE:
            raise FailedPrecondition(f"API key {key_id!r} is not active and cannot be rotated")
        values: dict[str, Any] = {
            "name": old.name if "name" not in body else f.text(body, "name") or "",
            "scopes": old.scopes if "scopes" not in body
            else f.scopes(body, held=old.scopes) or (),
            "metadata": old.metadata if "metadata" not in body else f.metadata(body),
            "allowed_cidrs": old.allowed_cidrs if "ip_restriction" not in body
            else f.ip_restriction(body) or (),
            "rate_limit": old.rate_limit if "rate_limit_policy" not in body
            else f.rate_limit(body),
            "visibility": f.enum_value(body, "visibility", Visibility) or old.visibility,
        }
        prefix = (self.public_key_prefix if values["visibility"] is Visibility.PUBLIC
                  else self.key_prefix)
        new_id = new_key_id()
        secret = self.peppers.format.new_secret(prefix)
        new = ApiKey(key_id=new_id, kind=Kind.ISSUED, digest=self.digester.digest(secret),
                     actor_id=old.actor_id, create_time=now, update_time=now,
                     expire_time=old.expire_time, **values)  # the same end, not a new life
        stored = await self.store.rotate_key(
            key_id, new, now, [event("key.rotated", _target(old), new_key_id=new_id)])
        if stored is None:
            raise FailedPrecondition(f"API key {key_id!r} was revoked concurrently")
        old_now = await self.get(Kind.ISSUED, key_id)
        await self.events.key_changed(old_now)
        return Issued(stored, secret), old_now

    async def delete_imported(self, key_id: str) -> None:
        key = await self.get(Kind.IMPORTED, key_id)
        if not await self.store.delete_key(key_id, [event("key.deleted", _target(key))]):
            raise NotFound(f"imported API key {key_id!r} not found")
        await self.events.key_changed(key)

    async def self_revoke(self, body: object) -> None:
        body = f.require_object(body)
        f.check_known(body, frozenset({"credential", "reason"}), "SelfRevokeApiKeyRequest")
        credential = f.credential(body)
        if tokens.classify(credential) is not None:
            raise InvalidArgument("credential: derived tokens cannot be revoked (they end with "
                                  "their expiry, or with their parent key)")
        reason = f.enum_value(body, "reason", RevocationReason)
        if reason is None:
            raise InvalidArgument("reason: is required (REVOCATION_REASON_UNSPECIFIED is not "
                                  "accepted)")
        if reason is RevocationReason.PRIVILEGE_WITHDRAWN:
            raise InvalidArgument("reason: REVOCATION_REASON_PRIVILEGE_WITHDRAWN is reserved "
                                  "for administrators")
        key = await find_by_credential(self.store, self.peppers, credential)
        if key is None:
            raise NotFound("API key not found")
        if key.revoke_time is not None:
            return
        if key.visibility is Visibility.PUBLIC:
            raise PermissionDenied("public keys cannot be self-revoked")
        revoked = await self.store.revoke_key(
            key.key_id, reason, "", now_us(),
            [event("key.self_revoked", _target(key), reason=reason.value)])
        if revoked is not None:
            await self.events.key_changed(revoked)


