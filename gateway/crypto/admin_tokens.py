"""Admin bearer tokens: plain (development) or argon2id hashes.

argon2 is paid at most once per distinct presented token per process: the outcome is
remembered under the SHA-256 of the presented token (never the token itself), in a
bounded map.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.crypto.compare import constant_time_equal
from gateway.secret import Secret

PROFILES = {
    # RFC 9106 low-memory profile for production hashes; a cheap one for tests.
    "default": PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4),
    "test": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
}


def hash_token(token: str, profile: str = "default") -> str:
    return PROFILES[profile].hash(token)


class AdminTokens:
    """Checks presented admin tokens against the configured list."""

    def __init__(self, tokens: tuple[Secret, ...], memo_size: int = 4096) -> None:
        self._plain = [hashlib.sha256(t.reveal().encode()).digest()
                       for t in tokens if not t.reveal().startswith("$argon2")]
        self._hashed = [t.reveal() for t in tokens if t.reveal().startswith("$argon2")]
        self._memo: OrderedDict[bytes, bool] = OrderedDict()
        self._memo_size = memo_size
        self._hasher = PasswordHasher()

    @property
    def configured(self) -> bool:
        return bool(self._plain or self._hashed)

    def check(self, presented: str) -> bool:
        fp = hashlib.sha256(presented.encode()).digest()
        ok = False
        for candidate in self._plain:  # no early exit: same work whichever matches
            ok |= constant_time_equal(fp, candidate)
        if ok or not self._hashed:
            return ok
        known = self._memo.get(fp)
        if known is not None:
            self._memo.move_to_end(fp)
            return known
        result = any(self._verify(h, presented) for h in self._hashed)
        self._memo[fp] = result
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return result

    def _verify(self, stored: str, presented: str) -> bool:
        try:
            return self._hasher.verify(stored, presented)
        except (VerificationError, InvalidHashError):
            return False
