"""Digests of credentials: the only form in which secrets are kept or looked up.

``Digester.digest(credential)`` is HMAC-SHA256 under the server pepper, hex-encoded with
an algorithm tag so a stored verifier names its own algorithm (``hs256:…``).
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.secret import Secret

ALGORITHM = "hs256"


class Digester:
    """Computes peppered digests; the pepper never leaves this object."""

    __slots__ = ("_inner", "_key", "_outer")

    def __init__(self, pepper: Secret) -> None:
        self._key = hashlib.sha256(b"gateway/digest/v1\x00" + pepper.reveal().encode()).digest()
        # HMAC (RFC 2104) with the keyed inner and outer SHA-256 states computed once:
        # H((K ^ opad) || H((K ^ ipad) || m)). Copying two hashlib states per call costs
        # about half of what hmac.new / hmac.digest do (they re-key, or wrap in Python);
        # tests/crypto/test_digests.py checks it against the standard library.
        block = self._key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, credential: str) -> str:
        inner = self._inner.copy()
        inner.update(credential.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return "hs256:" + outer.hexdigest()

    def subkey(self, purpose: str) -> bytes:
        """A key for another purpose, independent of the digest key."""
        return hmac.new(self._key, b"subkey\x00" + purpose.encode(), hashlib.sha256).digest()


def imported_key_id(raw_key: str) -> str:
    """Ory's id for an imported key: the SHA-512/256 hex of the raw key."""
    return hashlib.new("sha512_256", raw_key.encode()).hexdigest()
