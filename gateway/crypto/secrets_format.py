"""The format of issued secrets: ``<prefix>_v2_<43 base62 random><8 base62 keyed checksum>``.

43 base62 characters carry 256 bits of randomness. The checksum is a MAC of everything
before it, under a key derived from the pepper (``CHECKSUM_PURPOSE``, a subkey independent
of the digest key), so only the gateway can make one: a forged secret is refused before
any cache or store access. 8 base62 characters keep about 47 bits of the MAC: a forger
needs about 10^14 tries for one that even reaches a lookup. Secret scanners match
``<prefix>_v2_[0-9A-Za-z]{51}`` (and ``<prefix>_v1_[0-9A-Za-z]{49}`` for the old format).

The old format ``<prefix>_v1_<43 random><6 base62 CRC32>`` (before the keyed checksum)
keeps verifying: anyone can compute a CRC, so a v1 credential, like an imported key, is
looked up only when its digest is one the store holds (``DigestSet``).
"""

from __future__ import annotations

import asyncio
import secrets
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from hmac import compare_digest

from gateway.crypto.digests import Digester

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
RANDOM_LEN = 43
CHECKSUM_LEN = 8
LEGACY_CHECKSUM_LEN = 6
VERSION = "v2"
LEGACY_VERSION = "v1"
CHECKSUM_PURPOSE = "secret-checksum/v2"
_MODULUS = 62**CHECKSUM_LEN


def base62(number: int, width: int) -> str:
    """``number`` (mod 62**width) as ``width`` base62 characters."""
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 62**2 two-character digits


def _checksum_digits(number: int) -> str:
    """``base62(number, CHECKSUM_LEN)`` four characters at a time: every verify that L1
    does not answer checks a checksum (0.31 against 1.1 us a call)."""
    high, low = divmod(number, 62**4)
    a, b = divmod(high, 62**2)
    c, d = divmod(low, 62**2)
    return _PAIRS[a] + _PAIRS[b] + _PAIRS[c] + _PAIRS[d]


def body_from_bytes(raw: bytes) -> str:
    """43 base62 characters from 32+ bytes of key material."""
    return base62(int.from_bytes(raw, "big"), RANDOM_LEN)


def _material(material: bytes | None) -> str:
    return body_from_bytes(material if material is not None else secrets.token_bytes(32))


def _tail_ok(credential: str, checksum_len: int) -> bool:
    """``_`` then the random part and checksum, all ``[0-9A-Za-z]`` (no regex)."""
    start = len(credential) - RANDOM_LEN - checksum_len
    tail = credential[start:]
    return start >= 1 and credential[start - 1] == "_" and tail.isascii() and tail.isalnum()


# -- v1: CRC32, kept for the secrets issued before v2 -------------------------------------


def _crc(head: str) -> str:
    return base62(zlib.crc32(head.encode()), LEGACY_CHECKSUM_LEN)


def legacy_secret(prefix: str, material: bytes | None = None) -> str:
    """A v1 secret: only for replaying an idempotent issue made before v2, and tests."""
    head = f"{prefix}_{LEGACY_VERSION}_{_material(material)}"
    return head + _crc(head)


def crc_ok(credential: str) -> bool:
    """Shape and CRC check of a v1 secret (public: anyone can compute it)."""
    if not _tail_ok(credential, LEGACY_CHECKSUM_LEN):
        return False
    value = 0
    for char in credential[-LEGACY_CHECKSUM_LEN:]:
        value = value * 62 + _INDEX[char]
    return value == zlib.crc32(credential[:-LEGACY_CHECKSUM_LEN].encode())


# -- v2: keyed checksum ------------------------------------------------------------------


class SecretFormat:
    """Makes and checks issued secrets. ``peppers``: one Digester per pepper, the current
    first, then the retired ones (``GATEWAY_PEPPER_RETIRED``), whose checksums still pass."""

    def __init__(self, prefixes: Sequence[str], peppers: Sequence[Digester]) -> None:
        self.v2_starts = tuple(f"{p}_{VERSION}_" for p in prefixes)
        self.v1_starts = tuple(f"{p}_{LEGACY_VERSION}_" for p in prefixes)
        self.starts = self.v2_starts + self.v1_starts  # both formats, for str.startswith
        self._macs = tuple(Digester(key=d.subkey(CHECKSUM_PURPOSE)).digest for d in peppers)

    def _checksum(self, head: str, generation: int = 0) -> str:
        mac = self._macs[generation](head)  # "hs256:" + 64 hex digits
        return _checksum_digits(int(mac[6:22], 16) % _MODULUS)

    def new_secret(self, prefix: str, material: bytes | None = None, generation: int = 0
                   ) -> str:
        """A fresh v2 secret; ``material`` (32 bytes) makes it deterministic (replays);
        ``generation``: the pepper whose checksum it carries (0, the current, but for a
        replay of a key issued under a retired one)."""
        head = f"{prefix}_{VERSION}_{_material(material)}"
        return head + self._checksum(head, generation)

    def generation(self, credential: str) -> int | None:
        """The pepper (0 = current) whose checksum this v2 secret carries, or None."""
        if not _tail_ok(credential, CHECKSUM_LEN):
            return None
        head, tail = credential[:-CHECKSUM_LEN], credential[-CHECKSUM_LEN:]
        for generation in range(len(self._macs)):
            # constant_time_equal, without its encoding: both are ASCII (_tail_ok)
            if compare_digest(self._checksum(head, generation), tail):
                return generation
        return None


_BEYOND = 1 << 64  # above every 64-bit prefix
MERGE_SLICE = 2_048  # entries merged between two yields to the loop: 0.2 ms a slice (16,384: 6.7)


try:
    from gateway.crypto import _merge as _native
except ImportError:  # not built (setup.py): merged and sorted on the event loop in slices
    _native = None  # type: ignore[assignment]


async def merged(a: Sequence[int], b: Sequence[int]) -> Sequence[int]:
    """The sorted union (with repeats) of two sorted runs of 64-bit prefixes (``array("Q")``
    or a ``memoryview`` of format ``Q``): in a thread, without the GIL, by the C extension
    ``_merge`` (a merge into 1,000,000 entries held the loop for some 500 slices of 0.2 ms
    in Python, and a replica's p99 during a bulk import grew with its table), which also
    makes the output there (``memoryview`` of its bytes: making an ``array`` of 1,000,000
    on the loop held it 8-10 ms); else ``_merged_in_slices``."""
    if _native is None:
        return await _merged_in_slices(a, b)
    return memoryview(await asyncio.to_thread(_native.merge, a, b)).cast("Q")


async def _merged_in_slices(a: Sequence[int], b: Sequence[int]) -> array[int]:
    """``merged`` on the event loop, built a slice at a time with a yield to the loop
    after each: merging into a million entries never stalls it
    (one ``sorted`` of the whole took 0.15 s, and 1.5 s to load a million). Each slice
    takes the values up to the smaller of the two runs' next ``MERGE_SLICE`` boundaries,
    so at most ``MERGE_SLICE`` from each (and the repeats of that value) whatever the two
    sizes: bounded by ``a``'s slices alone, 8 entries merged into 65,536 held the loop
    7.8 ms in one slice."""
    out = array("Q")
    i = j = 0
    while i < len(a) or j < len(b):
        i_end, j_end = i + MERGE_SLICE, j + MERGE_SLICE
        if i_end < len(a) or j_end < len(b):
            pivot = min(a[i_end] if i_end < len(a) else _BEYOND,
                        b[j_end] if j_end < len(b) else _BEYOND)
            # the run the pivot came from moves at least to it: every slice progresses
            i_end, j_end = bisect_right(a, pivot, i), bisect_right(b, pivot, j)
        else:
            i_end, j_end = len(a), len(b)
        # two sorted runs: Timsort merges them in linear time
        out.extend(sorted([*a[i:i_end], *b[j:j_end]]))
        i, j = i_end, j_end
        await asyncio.sleep(0)
    return out


async def sorted_runs(runs: list[Sequence[int]]) -> Sequence[int]:
    """``merged`` pairwise until one sorted run is left (empty for none)."""
    while len(runs) > 1:
        runs = [await merged(*runs[i:i + 2]) if i + 1 < len(runs) else runs[i]
                for i in range(0, len(runs), 2)]
    return runs[0] if runs else array("Q")


async def sorted_array(values: array[int]) -> Sequence[int]:
    """``values`` sorted: in place, in a thread, by ``_merge``; else a slice at a time (a
    sort of 65,536 at once held the loop 25 ms)."""
    if _native is not None:
        await asyncio.to_thread(_native.sort, values)
        return values
    runs: list[Sequence[int]] = []
    for i in range(0, len(values), MERGE_SLICE):
        runs.append(array("Q", sorted(values[i:i + MERGE_SLICE])))
        await asyncio.sleep(0)
    return await sorted_runs(runs)


class DigestSet:
    """Digests of the store's keys whose credentials carry no keyed checksum (v1 secrets
    and imported keys), as 64-bit prefixes (8 bytes a key): such a credential is looked up
    only when its digest is here, so made-up strings cost no I/O either. A false "maybe"
    (2^-64 a try) only costs a lookup, which then finds nothing. Recent additions sit in a
    dict, and in arrival order in an array; ``merge`` sorts that array and merges it into
    the sorted run in a thread (an import of a million keys stays linear, and no merge
    stalls the event loop: built from the dict on the loop, the array to sort held it 2-3
    ms a merge)."""

    MERGE_AT = 65_536

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._sorted: Sequence[int] = array("Q", sorted({self.prefix(d) for d in digests}))
        # dicts, not sets, of prefixes: a dict of ints is never tracked by the garbage
        # collector, a set always is, and each full collection walked its 65,536 entries
        self._recent: dict[int, None] = {}
        self._fresh = array("Q")  # the same prefixes in arrival order (repeats harmless)
        self._merging: dict[int, None] = {}  # recent additions that ``merge`` is moving

    @staticmethod
    def prefix(digest: str) -> int:
        """The 64 bits of a digest that stand for it here."""
        return int(digest[6:22], 16)  # after "hs256:"

    def __len__(self) -> int:
        return len(self._sorted) + len(self._merging) + len(self._recent)

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str):
            return False
        prefix = self.prefix(digest)
        return (prefix in self._recent or prefix in self._merging
                or _holds(self._sorted, prefix))

    def add(self, digest: str) -> None:
        if digest not in self:
            prefix = self.prefix(digest)
            self._recent[prefix] = None
            self._fresh.append(prefix)

    def add_many(self, digests: list[str]) -> None:
        """``add`` for each (a prefix merged already may be held twice: harmless). The
        importing replica adds its keys, then again from its own broadcast: the second
        time they are recent, and not queued for the merge again."""
        prefix, recent = self.prefix, self._recent
        prefixes = [p for d in digests if (p := prefix(d)) not in recent]
        recent.update(dict.fromkeys(prefixes))
        self._fresh.extend(prefixes)

    @property
    def merge_due(self) -> bool:
        return len(self._fresh) >= self.MERGE_AT

    async def merge(self) -> None:
        """Move the recent additions into the sorted run (they answer meanwhile)."""
        self._merging, self._recent = self._recent, {}
        fresh, self._fresh = self._fresh, array("Q")
        self._sorted = await merged(self._sorted, await sorted_array(fresh))
        self._merging = {}

    def replace(self, digests: Iterable[str]) -> None:
        """Hold exactly these."""
        self._sorted = array("Q", sorted({self.prefix(d) for d in digests}))
        self._recent = {}
        self._fresh = array("Q")

    def replace_sorted(self, prefixes: Sequence[int]) -> None:
        """Hold these sorted prefixes (a full reload), and the additions made meanwhile."""
        self._sorted = prefixes


def _holds(values: Sequence[int], prefix: int) -> bool:
    i = bisect_left(values, prefix)
    return i < len(values) and values[i] == prefix
