"""The pepper and the retired ones: digests, secret checksums, and what a presented root-key
credential may be, decided without I/O.

``GATEWAY_PEPPER`` makes every new digest and checksum; ``GATEWAY_PEPPER_RETIRED`` lists
peppers that were current before. A credential whose digest was made under a retired
pepper still verifies (its lookup falls back to that pepper's digest), and the verify that
finds it moves the stored digest to the current pepper. A v2 secret's checksum names the
pepper it was made under, so a retired pepper's checksum keeps passing while that pepper is
listed: retire a pepper for good only once the keys issued under it are rotated or gone.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.crypto.digests import Digester
from gateway.crypto.secrets_format import DigestSet, SecretFormat, crc_ok

# checksum verdicts kept (about 160 bytes each: 2.6 MB when full; then emptied). With L1
# off it spared a verify answered from Redis 20,900 of its 289,700 instructions (64
# connections in-process, callgrind).
CHECKED_MEMO = 16_384


class Peppers:
    def __init__(self, current: Digester, retired: Sequence[Digester],
                 prefixes: Sequence[str]) -> None:
        self.current = current
        self.all: tuple[Digester, ...] = (current, *retired)
        self.format = SecretFormat(prefixes, self.all)
        # the store's keys without a keyed checksum: v1 and imported (Services follows them)
        self.unkeyed = DigestSet()
        # the pepper generation of the v2 secrets whose checksum passed, by digest (never
        # the secret): a checksum is a function of the secret alone, so the verdict never
        # goes stale; a forged one is never kept
        self._checked: dict[str, int] = {}

    def candidates(self, credential: str, digest: str | None = None) -> tuple[str, ...]:
        """The digests a root-key credential may be stored under, the current pepper's
        first; () when it is refused without a lookup: a v2 secret with a checksum we did
        not make, or any other credential (v1, imported, junk) whose digest is not one of
        the store's v1 or imported keys. ``digest``: the current pepper's, when the caller
        has it."""
        digest = digest or self.current.digest(credential)
        fmt = self.format
        if credential.startswith(fmt.v2_starts):
            generation = self._checked.get(digest)
            if generation is None:
                generation = fmt.generation(credential)
                if generation is None:
                    return ()
                if len(self._checked) >= CHECKED_MEMO:
                    self._checked.clear()
                self._checked[digest] = generation
            return (digest,) if generation == 0 else (
                digest, self.all[generation].digest(credential))
        if credential.startswith(fmt.v1_starts) and not crc_ok(credential):
            return ()
        retired = tuple(d.digest(credential) for d in self.all[1:])
        if not any(d in self.unkeyed for d in (digest, *retired)):
            return ()  # no v1 or imported key has this digest: made up
        return (digest, *retired)
