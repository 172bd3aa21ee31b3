"""Sealing of private key material at rest (AES-256-GCM).

Signing keys and JWK sets are kept in the store's ``gateway_state`` table. Their private
parts are sealed with a key derived from the server pepper (``digester.subkey``), so a
database dump alone does not reveal them; every replica derives the same key because
every replica must share the pepper anyway. The document name is bound as associated
data, so a sealed blob cannot be moved to another document. Changing the pepper makes
sealed documents unreadable (as it makes every stored API-key digest useless).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEAL_PURPOSE = "signing-state-seal/v1"
_PREFIX = "sealed:v1:"


class SealError(ValueError):
    """A sealed document cannot be opened (wrong pepper, or it was tampered with)."""


class Sealer:
    """Seals and opens text documents; the key never leaves this object."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, name: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), name.encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, name: str) -> str:
        if not stored.startswith(_PREFIX):
            raise SealError(f"state document {name!r} is not sealed")
        try:
            raw = base64.b64decode(stored[len(_PREFIX):], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], name.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"state document {name!r} cannot be opened (pepper changed?)"
                            ) from exc

    def __repr__(self) -> str:
        return "Sealer(**********)"
