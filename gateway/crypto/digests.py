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

    __slots__ = ("_base", "_key")

    def __init__(self, pepper: Secret) -> None:
        self._key = hashlib.sha256(b"gateway/digest/v1\x00" + pepper.reveal().encode()).digest()
        # keyed once; copying the keyed state is cheaper than re-keying per call
        self._base = hmac.new(self._key, digestmod=hashlib.sha256)

    def digest(self, credential: str) -> str:
        mac = self._base.copy()
        mac.update(credential.encode())
        return "hs256:" + mac.hexdigest()

    def subkey(self, purpose: str) -> bytes:
        """A key for another purpose, independent of the digest key."""
        return hmac.new(self._key, b"subkey\x00" + purpose.encode(), hashlib.sha256).digest()


def imported_key_id(raw_key: str) -> str:
    """Ory's id for an imported key: the SHA-512/256 hex of the raw key."""
    return hashlib.new("sha512_256", raw_key.encode()).hexdigest()
