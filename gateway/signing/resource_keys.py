"""Okta resource-server encryption keys: public RSA JWKs an authorization server would use to
encrypt the access tokens it mints, with an ``ACTIVE``/``INACTIVE`` lifecycle.

One plain (unsealed: public keys only) state document per authorization server,
``okta/resource-server-keys/<authServerId>``, updated by compare-and-set. Rules:

- add: ``kid`` required and unique on the server; ``status`` absent or ``INACTIVE``
  (``ACTIVE`` → 400); ``kty`` RSA with ``n``/``e`` of at least 2048 bits; ``use`` ``enc``;
- at most one ACTIVE key; activating one deactivates the current ACTIVE key;
- deactivate is allowed (the gateway never encrypts access tokens, so encryption is off);
- only INACTIVE keys can be deleted (ACTIVE → 400).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from gateway.audit.events import event
from gateway.clock import now_us
from gateway.crypto.jwk import JwkError, rsa_public_key
from gateway.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.signing.keyring import AUTHORIZATION_SERVERS
from gateway.signing.state import UNCHANGED, Documents, StateStore

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"
MAX_KEYS = 50
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def document_name(auth_server_id: str) -> str:
    return f"okta/resource-server-keys/{auth_server_id}"


def new_key_id() -> str:
    """An Okta-style id: ``apk`` + 17 alphanumerics."""
    return "apk" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


@dataclass(frozen=True)
class ResourceKey:
    id: str
    kid: str
    kty: str
    use: str
    n: str
    e: str
    status: str
    created: int  # µs
    last_updated: int  # µs

    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ResourceKey:
        return cls(**doc)


def name_target(auth_server_id: str) -> str:
    """The audit target of an authorization server's resource-server keys."""
    return f"authorizationServers/{auth_server_id}/resourceServerKeys"


def _string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name)
    if value is None or value == "":
        if default is None:
            raise InvalidArgument(f"{name}: is required")
        return default
    if not isinstance(value, str):
        raise InvalidArgument(f"{name}: must be a string")
    return value


class ResourceServerKeys:
    """The resource-server key lifecycle of each authorization server."""

    def __init__(self, store: StateStore, *, servers: Container[str] = AUTHORIZATION_SERVERS,
                 clock: Callable[[], int] = now_us) -> None:
        self._docs = Documents(store)
        self._servers = servers
        self._clock = clock

    def _server(self, auth_server_id: str) -> str:
        if auth_server_id not in self._servers:
            raise NotFound(f"Not found: Resource not found: {auth_server_id} "
                           "(AuthorizationServer)")
        return document_name(auth_server_id)

    @staticmethod
    def _keys(doc: Any) -> list[ResourceKey]:
        return [ResourceKey.from_doc(k) for k in (doc or {}).get("keys", [])]

    @staticmethod
    def _doc(keys: list[ResourceKey]) -> dict[str, Any]:
        return {"keys": [k.to_doc() for k in keys]}

    @staticmethod
    def _find(keys: list[ResourceKey], key_id: str) -> ResourceKey:
        for key in keys:
            if key.id == key_id:
                return key
        raise NotFound(f"Not found: Resource not found: {key_id} "
                       "(OAuth2ResourceServerJsonWebKey)")

    async def list_keys(self, auth_server_id: str) -> list[ResourceKey]:
        doc, _ = await self._docs.read(self._server(auth_server_id))
        return self._keys(doc)

    async def get(self, auth_server_id: str, key_id: str) -> ResourceKey:
        return self._find(await self.list_keys(auth_server_id), key_id)

    async def add(self, auth_server_id: str, body: Any) -> ResourceKey:
        name = self._server(auth_server_id)
        if not isinstance(body, dict):
            raise InvalidArgument("request body must be a JSON object")
        kid = _string(body, "kid")
        status = _string(body, "status", INACTIVE)
        if status == ACTIVE:
            raise InvalidArgument("status: a key is added INACTIVE; activate it afterwards")
        if status != INACTIVE:
            raise InvalidArgument("status: must be INACTIVE")
        if _string(body, "kty", "RSA") != "RSA":
            raise InvalidArgument("kty: only RSA keys are supported")
        use = _string(body, "use", "enc")
        if use != "enc":
            raise InvalidArgument("use: resource-server keys encrypt tokens; use must be enc")
        n, e = _string(body, "n"), _string(body, "e")
        try:
            rsa_public_key(n, e)
        except JwkError as exc:
            raise InvalidArgument(f"n, e: {exc}") from None
        now = self._clock()
        key = ResourceKey(new_key_id(), kid, "RSA", use, n, e, INACTIVE, now, now)

        def change(doc: Any) -> Any:
            keys = self._keys(doc)
            if any(k.kid == kid for k in keys):
                raise InvalidArgument(f"kid: a key with kid {kid!r} exists already")
            if len(keys) >= MAX_KEYS:
                raise InvalidArgument(f"an authorization server holds at most {MAX_KEYS} keys")
            return self._doc([*keys, key])

        await self._docs.update(name, change, [event(
            "resource_server_key.added", f"{name_target(auth_server_id)}/{key.id}", kid=kid)])
        return key

    async def _set_status(self, auth_server_id: str, key_id: str, status: str) -> ResourceKey:
        name = self._server(auth_server_id)

        def change(doc: Any) -> Any:
            keys = self._keys(doc)
            target = self._find(keys, key_id)
            if target.status == status:
                return UNCHANGED
            now = self._clock()
            out = []
            for key in keys:
                if key.id == key_id:
                    key = dataclasses.replace(key, status=status, last_updated=now)
                elif status == ACTIVE and key.status == ACTIVE:  # at most one ACTIVE
                    key = dataclasses.replace(key, status=INACTIVE, last_updated=now)
                out.append(key)
            return self._doc(out)

        action = "activated" if status == ACTIVE else "deactivated"
        doc, _ = await self._docs.update(name, change, [event(
            f"resource_server_key.{action}", f"{name_target(auth_server_id)}/{key_id}")])
        return self._find(self._keys(doc), key_id)

    async def activate(self, auth_server_id: str, key_id: str) -> ResourceKey:
        return await self._set_status(auth_server_id, key_id, ACTIVE)

    async def deactivate(self, auth_server_id: str, key_id: str) -> ResourceKey:
        return await self._set_status(auth_server_id, key_id, INACTIVE)

    async def delete(self, auth_server_id: str, key_id: str) -> None:
        name = self._server(auth_server_id)

        def change(doc: Any) -> Any:
            keys = self._keys(doc)
            if self._find(keys, key_id).status != INACTIVE:
                raise FailedPrecondition("only an INACTIVE key can be deleted; activate "
                                         "another key or deactivate this one first")
            return self._doc([k for k in keys if k.id != key_id])

        await self._docs.update(name, change, [event(
            "resource_server_key.deleted", f"{name_target(auth_server_id)}/{key_id}")])
