"""Sealing of private key material at rest (AES-256-GCM).

Signing keys and JWK sets are kept in the store's ``gateway_state`` table. Their private
parts are sealed with a key derived from the server pepper (``digester.subkey``), so a
database dump alone does not reveal them; every replica derives the same key because
every replica must share the pepper anyway. The document name is bound as associated
data, so a sealed blob cannot be moved to another document. A retired pepper
(``GATEWAY_PEPPER_RETIRED``) still opens the documents sealed under it.
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

    __slots__ = ("_aead", "_retired")

    def __init__(self, key: bytes, *retired: bytes) -> None:
        """Seals under ``key``; opens under it or any ``retired`` key (those of retired
        peppers), so a pepper rotation leaves every document readable; each is sealed
        under the current key again when it is next written."""
        if any(len(k) != 32 for k in (key, *retired)):
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)
        self._retired = tuple(AESGCM(k) for k in retired)

    def seal(self, plaintext: str, name: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), name.encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, name: str) -> str:
        if not stored.startswith(_PREFIX):
            raise SealError(f"state document {name!r} is not sealed")
        try:
            raw = base64.b64decode(stored[len(_PREFIX):], validate=True)
        except ValueError as exc:
            raise SealError(f"state document {name!r} is not a sealed document") from exc
        for aead in (self._aead, *self._retired):
            try:
                return aead.decrypt(raw[:12], raw[12:], name.encode()).decode()
            except (InvalidTag, ValueError):
                continue
        raise SealError(f"state document {name!r} cannot be opened (pepper changed? list "
                        "the previous one in GATEWAY_PEPPER_RETIRED)")

    def sealed_by_retired(self, stored: str, name: str) -> bool:
        """True when ``stored`` opens only under a retired key."""
        if not self._retired:
            return False
        try:
            raw = base64.b64decode(stored[len(_PREFIX):], validate=True)
            self._aead.decrypt(raw[:12], raw[12:], name.encode())
        except (InvalidTag, ValueError):
            return True
        return False

    def __repr__(self) -> str:
        return "Sealer(**********)"
