"""Named JWK sets managed through Ory's JWK admin API (Hydra's ``/admin/keys/{set}``).

One sealed state document per set (``jwk/sets/<set>``), holding each key's stored form
(private parts included when it has them) next to its public form (None for ``oct``).
A set with no keys does not exist (the store has no delete; deleting writes an empty set).

Rules (private-key exposure is always off here):

- reads and the create response return public forms only; ``oct`` keys are left out;
- create (POST) adds a generated key and keeps the others (rotation); a taken kid → 409;
- PUT set replaces the whole set; PUT key upserts one key, the path ``kid`` decides;
- a PUT that would leave the set without a private key is refused (400), so a set can
  always still sign; DELETE is always allowed (it is how an operator retires a key).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from gateway.audit.events import event
from gateway.crypto import jwk as jwks_
from gateway.crypto.jwk import JwkError
from gateway.errors import AlreadyExists, InvalidArgument, NotFound
from gateway.signing.seal import Sealer
from gateway.signing.state import Documents, StateStore

MAX_SET_ID = 200
MAX_KEYS = 100


def document_name(set_id: str) -> str:
    return f"jwk/sets/{set_id}"


def _check_set_id(set_id: str) -> None:
    if not set_id or len(set_id) > MAX_SET_ID:
        raise InvalidArgument(f"set: must be 1 to {MAX_SET_ID} characters")


def _entry(data: Mapping[str, Any], default_kid: str | None = None) -> dict[str, Any]:
    """Validate one JWK; its stored entry ``{"key": stored form, "public": public form}``."""
    try:
        key = jwks_.from_dict(data, default_kid=default_kid)
    except JwkError as exc:
        raise InvalidArgument(str(exc)) from None
    return {"key": key.to_dict(private=key.is_private), "public": key.to_dict(private=False)}


def _keys_of(doc: Any) -> list[dict[str, Any]]:
    return list((doc or {}).get("keys", []))


def _has_private(entries: list[dict[str, Any]]) -> bool:
    return any(jwks_.has_private_members(e["key"]) for e in entries)


def _public(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["public"] for e in entries if e["public"] is not None]


class JwkSets:
    """CRUD of JWK sets with the safety rules in the module docstring."""

    def __init__(self, store: StateStore, sealer: Sealer | None, *,
                 rsa_bits: int = jwks_.MIN_RSA_BITS) -> None:
        self._docs = Documents(store, sealer)
        self._rsa_bits = rsa_bits

    async def _entries(self, set_id: str) -> list[dict[str, Any]]:
        _check_set_id(set_id)
        doc, _ = await self._docs.read(document_name(set_id))
        entries = _keys_of(doc)
        if not entries:
            raise NotFound(f"JSON Web Key Set {set_id!r} was not found")
        return entries

    async def generate(self, set_id: str, body: Any) -> list[dict[str, Any]]:
        """Add a generated key (CreateJsonWebKeySet body); public forms of the new key."""
        _check_set_id(set_id)
        if not isinstance(body, dict):
            raise InvalidArgument("request body must be a JSON object")
        alg, use, kid = body.get("alg"), body.get("use"), body.get("kid")
        if not isinstance(alg, str) or alg not in jwks_.GENERATE:
            raise InvalidArgument(f"alg: must be one of {', '.join(jwks_.GENERATE)}")
        if not isinstance(use, str) or use not in jwks_.USES:
            raise InvalidArgument(f"use: must be one of {', '.join(jwks_.USES)}")
        if kid is not None and not isinstance(kid, str):
            raise InvalidArgument("kid: must be a string")
        kid = kid or secrets.token_hex(16)  # "" or null: one is made
        key = await asyncio.to_thread(jwks_.generate, alg, kid, use, rsa_bits=self._rsa_bits)
        entry = {"key": key.to_dict(), "public": key.to_dict(private=False)}

        def change(doc: Any) -> Any:
            entries = _keys_of(doc)
            if any(e["key"]["kid"] == kid for e in entries):
                raise AlreadyExists(f"key {kid!r} exists already in set {set_id!r}")
            if len(entries) >= MAX_KEYS:
                raise InvalidArgument(f"a set holds at most {MAX_KEYS} keys")
            return {"keys": [*entries, entry]}

        await self._docs.update(document_name(set_id), change, [
            event("jwk.generated", f"jwk_sets/{set_id}/{kid}", alg=alg, use=use)])
        return _public([entry])

    async def get_set(self, set_id: str) -> list[dict[str, Any]]:
        return _public(await self._entries(set_id))

    async def get_key(self, set_id: str, kid: str) -> list[dict[str, Any]]:
        """A set holding the one key (empty if it has no public form)."""
        entries = [e for e in await self._entries(set_id) if e["key"]["kid"] == kid]
        if not entries:
            raise NotFound(f"JSON Web Key {kid!r} was not found in set {set_id!r}")
        return _public(entries)

    async def replace_set(self, set_id: str, body: Any) -> list[dict[str, Any]]:
        """PUT set: the body's keys replace the set's; returns the stored forms."""
        _check_set_id(set_id)
        if body is None or body == {}:
            body = {"keys": []}
        if not isinstance(body, dict) or not isinstance(body.get("keys", []), list):
            raise InvalidArgument("request body must be a JSON Web Key Set {\"keys\": [...]}")
        entries = [_entry(k) for k in body.get("keys", [])]
        kids = [e["key"]["kid"] for e in entries]
        if len(set(kids)) != len(kids):
            raise InvalidArgument("keys: kid values must be unique within the set")
        if len(entries) > MAX_KEYS:
            raise InvalidArgument(f"a set holds at most {MAX_KEYS} keys")
        if not _has_private(entries):
            raise InvalidArgument("the set would hold no private key; while private keys "
                                  "are not exposed a set must keep at least one")
        await self._docs.update(document_name(set_id), lambda _doc: {"keys": entries},
                                [event("jwk_set.replaced", f"jwk_sets/{set_id}", kids=kids)])
        return [e["key"] for e in entries]

    async def put_key(self, set_id: str, kid: str, body: Any) -> dict[str, Any]:
        """PUT key: upsert under the path ``kid``; returns the stored form."""
        _check_set_id(set_id)
        if not isinstance(body, dict):
            raise InvalidArgument("request body must be a JSON Web Key object")
        body_kid = body.get("kid")
        if body_kid not in (None, "") and body_kid != kid:
            raise InvalidArgument(f"kid in the body ({body_kid!r}) does not match the kid in "
                                  f"the path ({kid!r})")
        entry = _entry({**body, "kid": kid})

        def change(doc: Any) -> Any:
            entries = _keys_of(doc)
            replaced = [e for e in entries if e["key"]["kid"] != kid]
            updated = [*replaced, entry]
            if len(updated) > MAX_KEYS:
                raise InvalidArgument(f"a set holds at most {MAX_KEYS} keys")
            if not _has_private(updated):
                raise InvalidArgument(
                    "this would leave the set without a private key; while private keys "
                    "are not exposed a set must keep at least one")
            return {"keys": updated}

        await self._docs.update(document_name(set_id), change,
                                [event("jwk.replaced", f"jwk_sets/{set_id}/{kid}")])
        stored: dict[str, Any] = entry["key"]
        return stored

    async def delete_set(self, set_id: str) -> None:
        _check_set_id(set_id)

        def change(doc: Any) -> Any:
            if not _keys_of(doc):
                raise NotFound(f"JSON Web Key Set {set_id!r} was not found")
            return {"keys": []}

        await self._docs.update(document_name(set_id), change,
                                [event("jwk_set.deleted", f"jwk_sets/{set_id}")])

    async def delete_key(self, set_id: str, kid: str) -> None:
        _check_set_id(set_id)

        def change(doc: Any) -> Any:
            entries = _keys_of(doc)
            kept = [e for e in entries if e["key"]["kid"] != kid]
            if len(kept) == len(entries):
                raise NotFound(f"JSON Web Key {kid!r} was not found in set {set_id!r}")
            return {"keys": kept}

        await self._docs.update(document_name(set_id), change,
                                [event("jwk.deleted", f"jwk_sets/{set_id}/{kid}")])

