"""Digests of credentials: the only form in which secrets are kept or looked up.

``Digester.digest(credential)`` is HMAC-SHA256 under the server pepper, hex-encoded with
an algorithm tag so a stored verifier names its own algorithm (``hs256:…``);
``Digester.digest_many`` is the same for a list (a batchVerify in one call).

Both are the C extension ``gateway.crypto._hmac256`` (OpenSSL's SHA-256 with the keyed
states set up once: about 0.2 µs a digest against 0.75-1.2 µs here) when it was built, and
the Python functions below otherwise. ``NATIVE`` says which; the tests hold both to the
standard library's ``hmac``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from gateway.secret import Secret

try:
    from gateway.crypto._hmac256 import Hmac256
except ImportError:  # built without a C compiler or OpenSSL headers (setup.py: optional)
    Hmac256 = None  # type: ignore[assignment,misc]

ALGORITHM = "hs256"
PREFIX = ALGORITHM + ":"
NATIVE = Hmac256 is not None


class Digester:
    """Computes peppered digests; the pepper never leaves this object."""

    __slots__ = ("_inner", "_key", "_outer", "digest", "digest_many")

    digest: Callable[[str], str]
    digest_many: Callable[[list[str]], list[str]]

    def __init__(self, pepper: Secret | None = None, *, key: bytes | None = None,
                 native: bool = NATIVE) -> None:
        """Digests under ``pepper`` (the credential digests), or under a raw ``key`` (a
        subkey of a pepper, for another purpose)."""
        if key is None:
            if pepper is None:
                raise TypeError("Digester needs a pepper or a key")
            key = hashlib.sha256(b"gateway/digest/v1\x00" + pepper.reveal().encode()).digest()
        self._key = key
        if native and Hmac256 is not None:
            fast = Hmac256(self._key, PREFIX)
            self.digest, self.digest_many = fast.digest, fast.digest_many
            return
        # HMAC (RFC 2104) with the keyed inner and outer SHA-256 states computed once:
        # H((K ^ opad) || H((K ^ ipad) || m)). Copying two hashlib states per call costs
        # about half of what hmac.new / hmac.digest do (they re-key, or wrap in Python).
        block = self._key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.digest, self.digest_many = self._digest, self._digest_many

    def _digest(self, credential: str) -> str:
        inner = self._inner.copy()
        inner.update(credential.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return PREFIX + outer.hexdigest()

    def _digest_many(self, credentials: list[str]) -> list[str]:
        digest = self._digest
        return [digest(c) for c in credentials]

    def subkey(self, purpose: str) -> bytes:
        """A key for another purpose, independent of the digest key."""
        return hmac.new(self._key, b"subkey\x00" + purpose.encode(), hashlib.sha256).digest()


def imported_key_id(raw_key: str) -> str:
    """Ory's id for an imported key: the SHA-512/256 hex of the raw key."""
    return hashlib.new("sha512_256", raw_key.encode()).hexdigest()
