"""Minting derived tokens (JWT or macaroon) from a root API key.

The parent is read fresh from the store (derivation is an admin call, not the hot path):
an unknown or expired parent is a 401, a revoked one a 403. Scopes may only narrow the
parent's (403 otherwise). The TTL defaults to 1 h; one longer than the parent's remaining
life or than ``GATEWAY_MAX_KEY_TTL`` is a 400, never silently shortened.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.audit.events import event
from gateway.clock import now_us, to_rfc3339
from gateway.crypto import tokens
from gateway.crypto.peppers import Peppers
from gateway.errors import InvalidArgument, PermissionDenied, Unauthenticated
from gateway.keys import fields as f
from gateway.keys.durations import parse_ttl
from gateway.keys.model import KeyStatus
from gateway.keys.service import find_by_credential
from gateway.observability.metrics import Metrics
from gateway.signing import Keyring
from gateway.store.base import Store

DEFAULT_TTL_S = 3600
_FIELDS = frozenset({"credential", "algorithm", "ttl", "scopes", "audiences", "custom_claims"})
_ALGORITHMS = ("TOKEN_ALGORITHM_UNSPECIFIED", "TOKEN_ALGORITHM_JWT", "TOKEN_ALGORITHM_MACAROON")


class Deriver:
    def __init__(self, store: Store, peppers: Peppers, keyring: Keyring, metrics: Metrics,
                 *, issuer: str, max_ttl_s: float | None = None) -> None:
        self.store = store
        # the longest lifetime a token may be asked for (GATEWAY_MAX_KEY_TTL, as the keys'
        # own: ``KeyService.max_ttl_s``; None: none)
        self.max_ttl_s = max_ttl_s
        self.peppers = peppers
        self.keyring = keyring
        self.metrics = metrics
        self.issuer = issuer
        self.macaroon_subkey = peppers.current.subkey(tokens.MACAROON_SUBKEY_PURPOSE)
        self.macaroon_tag_key = peppers.current.subkey(tokens.MACAROON_TAG_PURPOSE)

    async def derive(self, body: object) -> dict[str, Any]:
        """The DeriveTokenResponse for a DeriveTokenRequest body."""
        body = f.require_object(body, "DeriveTokenRequest")
        f.check_known(body, _FIELDS, "DeriveTokenRequest")
        credential = f.credential(body)
        algorithm = body.get("algorithm") or "TOKEN_ALGORITHM_UNSPECIFIED"
        if algorithm not in _ALGORITHMS:
            raise InvalidArgument(f"algorithm: unknown value {algorithm!r}; expected "
                                  "TOKEN_ALGORITHM_JWT or TOKEN_ALGORITHM_MACAROON")
        label = "macaroon" if algorithm == "TOKEN_ALGORITHM_MACAROON" else "jwt"
        try:
            result = await self._derive(body, credential, label)
        except Exception:
            self.metrics.derivations.labels(label, "refused").inc()
            raise
        self.metrics.derivations.labels(label, "minted").inc()
        return result

    async def _derive(self, body: dict[str, Any], credential: str, label: str
                      ) -> dict[str, Any]:
        if tokens.classify(credential) is not None:
            raise InvalidArgument("credential: derived tokens cannot derive further tokens")
        ttl = parse_ttl(body.get("ttl")) or DEFAULT_TTL_S
        if self.max_ttl_s is not None and ttl > self.max_ttl_s:
            raise InvalidArgument(f"ttl: {body.get('ttl')!r} is longer than the longest "
                                  f"lifetime, {self.max_ttl_s:g}s (GATEWAY_MAX_KEY_TTL)")
        # As Ory Talos answers: the credential does not authenticate (unknown, expired):
        # 401; it is known but may not derive (revoked, a scope it lacks): 403.
        parent = await find_by_credential(self.store, self.peppers, credential)
        if parent is None:
            raise Unauthenticated("credential: not a valid API key")
        now = now_us()
        status = parent.status(now)
        if status is KeyStatus.REVOKED:
            raise PermissionDenied("credential: the API key is revoked")
        if status is KeyStatus.EXPIRED:
            raise Unauthenticated("credential: the API key has expired")
        # the exact lifetime asked for, or a 400: callers cache and retry by it
        expire = int(time.time() + ttl)
        if parent.expire_time is not None and expire > parent.expire_time // 1_000_000:
            left = max(0, parent.expire_time // 1_000_000 - int(time.time()))
            raise InvalidArgument(f"ttl: {ttl:g}s is longer than the parent key's remaining "
                                  f"lifetime ({left}s)")
        requested = f.string_list(body, "scopes")
        scopes = requested or parent.scopes
        wider = [s for s in scopes if s not in parent.scopes]
        if wider:
            raise PermissionDenied(f"scopes: {wider[0]!r} is not held by the parent key; a "
                                   "derived token may only narrow the parent's scopes")
        audiences = f.string_list(body, "audiences") or ()
        custom = f.metadata(body, "custom_claims")
        spec = tokens.DeriveSpec(issuer=self.issuer, subject=parent.actor_id,
                                 parent_key_id=parent.key_id, expire_time=expire,
                                 audiences=audiences, scopes=scopes,
                                 allowed_cidrs=parent.allowed_cidrs, custom_claims=custom)
        if label == "macaroon":
            root = tokens.macaroon_root_key(self.macaroon_subkey, parent.key_id)
            minted = tokens.mint_macaroon(spec, root, tag_key=self.macaroon_tag_key)
        else:
            minted = tokens.mint_jwt(spec, self.keyring.active_signer())
        await self.store.insert_audit([event(
            "token.derived", f"{parent.kind.value}ApiKeys/{parent.key_id}",
            token_id=minted.token_id, algorithm=label, ttl_seconds=ttl,
            scopes=list(scopes), audiences=list(audiences))])
        token: dict[str, Any] = {"token": minted.token, "claims": minted.claims,
                                 "expire_time": to_rfc3339(minted.expire_time * 1_000_000),
                                 "scopes": list(scopes), "audiences": list(audiences)}
        return {"token": token}
