"""Admin bearer tokens: what ``GATEWAY_ADMIN_TOKENS`` holds, and the check of a presented one.

Three forms of entry (``parse_entries`` splits the list; an argon2 hash's own commas never
split it, and a malformed entry is a configuration error, never a token):

``gwa_<id>.<salt>.<mac>``
    The verifier of a generated token ``gwa_<id>_<secret>`` (``gateway hash-token``): the
    token is 256 random bits with a public 12-character id; the verifier is
    HMAC-SHA256 of the token under its own random salt. A presented token names its id, so
    it is checked against at most one verifier, in microseconds. The id is the principal.
plain token (at least 16 characters)
    Development. Compared as SHA-256 fingerprints, in constant time, against every plain
    entry.
``$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>``
    An operator-chosen password. argon2 is expensive on purpose (about 0.2 s of CPU at the
    RFC 9106 low-memory profile), so a wrong guess must not be able to make us pay it at
    will: it runs on a worker thread, never on the event loop, one at a time, within a
    global budget (``argon2_rate`` a second), and a client whose guess failed waits an
    exponentially growing time before its next one is even computed (ResourceExhausted, 429,
    meanwhile). A token that passed once is remembered (by SHA-256, in memory), so a real
    admin pays argon2 once per process.

Every refusal, of any form or of a missing token, is answered late (``refused``): a flood
of wrong tokens cannot take the event loop from the verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.crypto.compare import constant_time_equal
from gateway.crypto.secrets_format import base62
from gateway.errors import ConfigError, ResourceExhausted
from gateway.secret import Secret

PROFILES = {
    # RFC 9106 low-memory profile for production hashes; a cheap one for tests.
    "default": PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4),
    "test": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
}
TOKEN_PREFIX = "gwa_"
ID_LEN = 12
SECRET_LEN = 43
MIN_PLAIN = 16
MAX_COUNTED_CLIENTS = 1000  # refusals counted by address; further addresses as "other"
FORGET_S = 10.0  # a client's failures count towards its delay while they come this close
_TOKEN = re.compile(rf"gwa_([0-9A-Za-z]{{{ID_LEN}}})_[0-9A-Za-z]{{{SECRET_LEN}}}")
_VERIFIER = re.compile(rf"gwa_([0-9A-Za-z]{{{ID_LEN}}})\.([0-9a-f]{{32}})\.([0-9a-f]{{64}})")
_ARGON2 = re.compile(r"\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+(?:,[^$,\s]*)*"
                     r"\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")
_SEPARATORS = re.compile(r"[,\s]+")


def parse_entries(value: str) -> tuple[str, ...]:
    """The entries of ``GATEWAY_ADMIN_TOKENS``: separated by commas or whitespace, argon2
    hashes whole. Raises ConfigError for an entry that is none of the three forms."""
    entries = _ARGON2.findall(value)
    rest = _ARGON2.sub(",", value)
    for number, part in enumerate((p for p in _SEPARATORS.split(rest) if p), 1):
        if part.startswith("$"):
            raise ConfigError(f"GATEWAY_ADMIN_TOKENS: entry {number} starts with '$' but is "
                              "not a whole argon2 hash ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")
        if part.startswith(TOKEN_PREFIX) and _VERIFIER.fullmatch(part) is None:
            raise ConfigError(f"GATEWAY_ADMIN_TOKENS: entry {number} starts with "
                              f"{TOKEN_PREFIX!r} but is not a verifier from `gateway hash-token`"
                              " (gwa_<id>.<salt>.<mac>); configure the verifier, not the token")
        if len(part) < MIN_PLAIN:
            raise ConfigError(f"GATEWAY_ADMIN_TOKENS: entry {number} is {len(part)} characters;"
                              f" a plain token needs at least {MIN_PLAIN}")
        entries.append(part)
    return tuple(entries)


def new_token() -> tuple[str, str]:
    """A generated admin token and the verifier to configure: ``(token, verifier)``."""
    token_id = base62(int.from_bytes(secrets.token_bytes(9), "big"), ID_LEN)
    secret = base62(int.from_bytes(secrets.token_bytes(32), "big"), SECRET_LEN)
    token = f"{TOKEN_PREFIX}{token_id}_{secret}"
    salt = secrets.token_bytes(16)
    return token, f"{TOKEN_PREFIX}{token_id}.{salt.hex()}.{_mac(salt, token).hex()}"


def hash_token(token: str, profile: str = "default") -> str:
    """An argon2id hash of an operator-chosen token."""
    return PROFILES[profile].hash(token)


def _mac(salt: bytes, token: str) -> bytes:
    return hmac.new(salt, b"gateway/admin-token/v1\x00" + token.encode(), hashlib.sha256).digest()


def _fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AdminTokens:
    """Checks presented admin tokens against the configured entries; ``authenticate``
    returns the principal (a non-secret name) or None."""

    def __init__(self, entries: tuple[Secret, ...], *, argon2_rate: float = 1.0,
                 argon2_burst: float = 2.0, delay_base: float = 0.05, delay_max: float = 5.0,
                 flood_rate: int = 100, memo_size: int = 4096) -> None:
        self._verifiers: dict[str, tuple[bytes, bytes]] = {}
        self._plain: list[tuple[bytes, str]] = []
        self._hashed: list[str] = []
        for entry in entries:
            value = entry.reveal()
            verifier = _VERIFIER.fullmatch(value)
            if verifier is not None:
                token_id, salt, mac = verifier.groups()
                self._verifiers[token_id] = (bytes.fromhex(salt), bytes.fromhex(mac))
            elif value.startswith("$argon2"):
                self._hashed.append(value)
            else:
                fp = _fingerprint(value)
                self._plain.append((fp, "plain:" + fp.hex()[:12]))
        self._hasher = PasswordHasher()
        self._memo: OrderedDict[bytes, str | None] = OrderedDict()
        self._memo_size = memo_size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()  # one argon2 computation at a time
        self._rate, self._burst = argon2_rate, argon2_burst
        self._budget, self._budget_at = argon2_burst, time.monotonic()
        # client -> (failures, no argon2 before, last failure)
        self._backoff: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self.refusals: dict[str, int] = {}  # by client address, since the audit took them
        self._delay_base, self._delay_max, self._flood_rate = delay_base, delay_max, flood_rate
        self._window_at, self._window_count = 0.0, 0

    @property
    def configured(self) -> bool:
        return bool(self._verifiers or self._plain or self._hashed)

    def check_fast(self, presented: str) -> str | bool | None:
        """The principal, or None (refused) when no argon2 work is needed to decide;
        False when only argon2 can tell (see ``authenticate``)."""
        generated = _TOKEN.fullmatch(presented)
        if generated is not None:
            stored = self._verifiers.get(generated.group(1))
            if stored is None or not constant_time_equal(_mac(stored[0], presented), stored[1]):
                return None
            return generated.group(1)
        fp = _fingerprint(presented)
        principal = None
        for candidate, name in self._plain:  # no early exit: same work whichever matches
            if constant_time_equal(fp, candidate):
                principal = name
        if principal is not None or not self._hashed:
            return principal
        if fp in self._memo:
            self._memo.move_to_end(fp)
            return self._memo[fp]
        return False

    async def authenticate(self, presented: str, who: Callable[[], str]) -> str | None:
        """The principal of a configured admin token, or None (answered late: ``refused``).
        argon2 work (only for argon2 entries) runs off the event loop within the budget; a
        client whose last guess failed moments ago, or a spent budget, get
        ResourceExhausted without any argon2 work. ``who`` names the client; it is asked
        only when the token does not pass at once."""
        fast = self.check_fast(presented)
        if isinstance(fast, str):
            return fast
        client = who()
        if fast is None:
            await self.refused(client)
            return None
        fp = _fingerprint(presented)
        now = time.monotonic()
        if now < self._backoff.get(client, (0, 0.0, 0.0))[1]:
            await self.refused(client)
            raise ResourceExhausted("too many failed admin authentications from this client; "
                                    "retry later")
        self._refill(now)
        if self._budget < 1:
            await self.refused(client)
            raise ResourceExhausted("admin authentication is busy; retry shortly")
        self._budget -= 1
        async with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="argon2")
            loop = asyncio.get_running_loop()
            principal = await loop.run_in_executor(self._executor, self._argon2, presented)
        self._memo[fp] = principal
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        if principal is None:
            await self.refused(client)
        return principal

    async def refused(self, client: str) -> None:
        """Called for every refused admin authentication (a wrong token, none at all): the
        refusal is answered late, later for each failure of the same client within
        ``FORGET_S`` (``delay_base`` doubling up to ``delay_max``), and ``delay_max`` for
        everyone while refusals run above ``flood_rate`` a second. A client waiting for its
        answer sends nothing more on that connection, so a flood of wrong tokens costs the
        event loop a few requests a second per connection, and asleep they cost no CPU. A
        right token is never delayed. The client's next argon2 guess waits as long."""
        counts = self.refusals  # taken by the audit trail, one event a minute
        key = client if client in counts or len(counts) < MAX_COUNTED_CLIENTS else "other"
        counts[key] = counts.get(key, 0) + 1
        now = time.monotonic()
        failures, _, last = self._backoff.get(client, (0, 0.0, 0.0))
        failures = failures + 1 if now - last < FORGET_S else 1
        delay = min(self._delay_max, self._delay_base * 2 ** min(failures - 1, 30))
        if now - self._window_at >= 1.0:
            self._window_at, self._window_count = now, 0
        self._window_count += 1
        if self._window_count > self._flood_rate:
            delay = self._delay_max
        self._backoff[client] = (failures, now + delay, now)
        self._backoff.move_to_end(client)
        if len(self._backoff) > 65536:
            self._backoff.popitem(last=False)
        await asyncio.sleep(delay)

    def _argon2(self, presented: str) -> str | None:
        for index, stored in enumerate(self._hashed):
            try:
                if self._hasher.verify(stored, presented):
                    return f"argon2:{index + 1}"
            except (VerificationError, InvalidHashError):
                continue
        return None

    def _refill(self, now: float) -> None:
        self._budget = min(self._burst, self._budget + (now - self._budget_at) * self._rate)
        self._budget_at = now

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
