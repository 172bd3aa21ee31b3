"""Verification of derived tokens (JWT and macaroon), on the same path as API keys.

A derived token is checked in memory (JWT: signature against the keyring; macaroon: its
HMAC chain from the parent's root key), then its *parent* key is judged like an API key
through the same caches, keyed by key id. So a token stops verifying as soon as its parent
is revoked: revocation invalidates the parent's cache entries on every replica before the
admin call returns, and the cached answer needs no store round trip.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from gateway.cache.entry import Entry
from gateway.cache.keycache import CacheMode, KeyCache, key_id_cache_key
from gateway.cache.l1 import L1
from gateway.clock import to_rfc3339
from gateway.crypto import tokens
from gateway.crypto.peppers import Peppers
from gateway.errors import Unavailable
from gateway.observability.metrics import Metrics
from gateway.signing import Keyring
from gateway.verify.outcomes import Outcome, Result
from gateway.verify.policy import Policy

VERIFIED_TTL_S = 60.0
VERIFIED_SIZE = 100_000
# A token that does not verify (malformed, foreign, forged, not yet valid, an unknown
# caveat) is SIGNATURE_INVALID, as Ory Talos answers; a valid one that does not apply says
# why (expired, audience, address).
_OUTCOMES: dict[tokens.Outcome, Outcome] = {
    tokens.Outcome.EXPIRED: Outcome.EXPIRED,
    tokens.Outcome.AUDIENCE_MISMATCH: Outcome.AUDIENCE_MISMATCH,
    tokens.Outcome.IP_NOT_ALLOWED: Outcome.IP_NOT_ALLOWED,
}


class DerivedVerifier:
    def __init__(self, policy: Policy, keyring: Keyring, cache: KeyCache,
                 peppers: Peppers, metrics: Metrics, issuer: str) -> None:
        self.policy = policy
        self.keyring = keyring
        self.cache = cache
        self.metrics = metrics
        self.issuer = issuer
        self.digester = peppers.current
        # per pepper, the current first: macaroons minted before a pepper rotation verify
        self.macaroon_subkeys = [d.subkey(tokens.MACAROON_SUBKEY_PURPOSE) for d in peppers.all]
        self.macaroon_tag_keys = [d.subkey(tokens.MACAROON_TAG_PURPOSE) for d in peppers.all]
        # tokens whose signature or HMAC chain checked out, by digest; claims are still
        # checked on every use, and the parent is judged on every use
        self.verified: L1[tokens.DerivedClaims] = L1(VERIFIED_SIZE, VERIFIED_TTL_S)

    def forget(self) -> None:
        """Drop the tokens checked so far (the signing keys changed)."""
        self.verified.clear()

    def claims_token(self, credential: str) -> bool:
        return tokens.classify(credential) is not None

    async def _parent(self, key_id: str, mode: CacheMode) -> tuple[Entry | None, str]:
        return await self.cache.lookup(key_id_cache_key(key_id), mode)

    async def verify(self, credential: str, *, client_ip: str | None, mode: CacheMode,
                     expected_audiences: tuple[str, ...]) -> Result:
        kind = tokens.classify(credential)
        label = "jwt" if kind is tokens.TokenKind.JWT else "macaroon"
        started = time.monotonic()
        cache_key = self.digester.digest(credential)
        hit, known = (self.verified.get(cache_key, started) if mode is CacheMode.DEFAULT
                      else (False, None))
        parent: tuple[Entry | None, str] | None = None
        try:
            if hit and known is not None:  # signature checked before: only the claims now
                checked = tokens.check_claims(known, issuer=self.issuer,
                                              expected_audiences=expected_audiences,
                                              client_ip=client_ip)
            elif kind is tokens.TokenKind.JWT:
                key = await self.keyring.resolve(tokens.jwt_key_id(credential) or "")
                checked = tokens.verify_jwt(credential, key, issuer=self.issuer,
                                            expected_audiences=expected_audiences,
                                            client_ip=client_ip)
            else:
                head = tokens.inspect_macaroon(credential)
                if head is None:
                    return self._count(label, Result(Outcome.SIGNATURE_INVALID))
                generation = head.generation(self.macaroon_tag_keys)
                if generation is None:  # not minted here: refused before any lookup
                    return self._count(label, Result(Outcome.SIGNATURE_INVALID))
                root = tokens.macaroon_root_key(self.macaroon_subkeys[generation],
                                                head.parent_key_id)
                checked = tokens.verify_macaroon(head, root, issuer=self.issuer,
                                                 expected_audiences=expected_audiences,
                                                 client_ip=client_ip)
            if not checked.ok or checked.claims is None:
                return self._count(label, Result(_OUTCOMES.get(checked.outcome,
                                                               Outcome.SIGNATURE_INVALID)))
            claims = checked.claims
            if not hit and mode is not CacheMode.NO_STORE:
                self.verified.put(cache_key, claims,
                                  min(VERIFIED_TTL_S, claims.expire_time - time.time()), started)
            if parent is None:
                parent = await self._parent(claims.parent_key_id, mode)
        except Unavailable:
            return Result(Outcome.UNAVAILABLE)
        entry, level = parent
        # the parent is judged like an API key (its rate limit spent, its use recorded);
        # the token already carries the audience check
        result = await self.policy.decide(entry, level, client_ip, ())
        if result.valid:
            result = replace(result, audiences=claims.audiences, token=_token_fields(claims))
        if result.outcome is Outcome.NOT_FOUND:  # a deleted parent: its tokens are dead too
            result = replace(result, outcome=Outcome.REVOKED)
        return self._count(label, result)

    def _count(self, kind: str, result: Result) -> Result:
        self.metrics.derived_verifications.labels(kind, result.outcome.value).inc()
        return result


def _token_fields(claims: tokens.DerivedClaims) -> dict[str, Any]:
    return {"actor_id": claims.subject, "scopes": list(claims.scopes),
            "expire_time": to_rfc3339(claims.expire_time * 1_000_000),
            "audiences": list(claims.audiences)}
