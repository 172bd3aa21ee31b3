"""The format of issued secrets: ``<prefix>_v1_<43 base62 random><6 base62 checksum>``.

43 base62 characters carry 256 bits of randomness. The checksum is CRC32 of everything
before it (as GitHub tokens do), so mistyped or forged keys are rejected without a store
lookup, and secret scanners can match ``<prefix>_v1_[0-9A-Za-z]{49}`` with few false hits.
"""

from __future__ import annotations

import secrets
import zlib

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
RANDOM_LEN = 43
CHECKSUM_LEN = 6
VERSION = "v1"


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LEN)


def body_from_bytes(raw: bytes) -> str:
    """43 base62 characters from 32+ bytes of key material."""
    return _base62(int.from_bytes(raw, "big"), RANDOM_LEN)


def new_secret(prefix: str, material: bytes | None = None) -> str:
    """A fresh secret; ``material`` (32 bytes) makes it deterministic (idempotent replays)."""
    raw = material if material is not None else secrets.token_bytes(32)
    head = f"{prefix}_{VERSION}_{body_from_bytes(raw)}"
    return head + _checksum(head)


def issued_prefixes(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The literal starts of our secrets, for ``str.startswith``."""
    return tuple(f"{p}_{VERSION}_" for p in prefixes)


def looks_issued(credential: str, prefixes: tuple[str, ...]) -> bool:
    """True when the credential claims to be one of ours (by prefix)."""
    return credential.startswith(issued_prefixes(prefixes))


def checksum_ok(credential: str) -> bool:
    """Shape and CRC check. The CRC is computable by anyone from the public head, so
    comparing it is not a secret comparison; the secret itself is only ever compared as
    a peppered digest."""
    start = len(credential) - RANDOM_LEN - CHECKSUM_LEN
    tail = credential[start:]
    # "_" then 49 characters of [0-9A-Za-z] (isalnum on ASCII), without a regex
    if start < 1 or credential[start - 1] != "_" or not (tail.isascii() and tail.isalnum()):
        return False
    value = 0
    for char in credential[-CHECKSUM_LEN:]:
        value = value * 62 + _INDEX[char]
    return value == zlib.crc32(credential[:-CHECKSUM_LEN].encode())


def forged(credential: str, starts: tuple[str, ...]) -> bool:
    """True when a credential claims one of our prefixes (``issued_prefixes``) but fails
    the checksum: it is refused without a store lookup, with the answer an unknown key gets."""
    return credential.startswith(starts) and not checksum_ok(credential)
