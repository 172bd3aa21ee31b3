"""A looked-up root key's verdict: its policy (revocation, expiry, IP allow-list,
audiences), then its rate limit; a valid use is recorded. Shared by API keys
(``Verifier``) and derived tokens, whose parent is judged the same way
(``DerivedVerifier``)."""

from __future__ import annotations

from dataclasses import replace

from gateway.cache.entry import Entry, address_in
from gateway.verify.outcomes import Outcome, Result
from gateway.verify.ratelimit import RateLimiter
from gateway.verify.usage import UsageRecorder


def ip_allowed(entry: Entry, client_ip: str | None) -> bool:
    if not entry.networks:
        return True
    return client_ip is not None and address_in(client_ip, entry.networks)


def judge(entry: Entry | None, level: str, client_ip: str | None,
          expected_audiences: tuple[str, ...]) -> Result:
    """Policy for a root key, except the rate limit (which needs a counter)."""
    if entry is None:
        return Result(Outcome.NOT_FOUND, cache=level)
    if entry.revoked:
        return Result(Outcome.REVOKED, entry, level)
    if not entry.unexpired():
        return Result(Outcome.EXPIRED, entry, level)
    if not ip_allowed(entry, client_ip):
        return Result(Outcome.IP_NOT_ALLOWED, entry, level)
    if expected_audiences:  # plain API keys name no audience
        return Result(Outcome.AUDIENCE_MISMATCH, entry, level)
    return Result(Outcome.VALID, entry, level)


_COUNTED = {o: o.value.upper() for o in Outcome}  # the outcome names usage counts by


class Policy:
    def __init__(self, limiter: RateLimiter, usage: UsageRecorder) -> None:
        self.limiter = limiter
        self.usage = usage

    async def decide(self, entry: Entry | None, level: str, client_ip: str | None,
                     expected_audiences: tuple[str, ...] = (), *, count: bool = True
                     ) -> Result:
        """``judge``, then the rate limit; a valid use is recorded (unless ``count`` is
        false: the rate limit is not spent either)."""
        result = judge(entry, level, client_ip, expected_audiences)
        if not count:
            return result
        if not result.valid:
            if entry is not None:  # a known key's refusal: its usage counts it
                self.usage.count(entry.key_id, _COUNTED[result.outcome])
            return result
        assert entry is not None
        if entry.rate_limit is not None:
            limit = await self.limiter.hit(entry.key_id, entry.rate_limit)
            outcome = Outcome.VALID if limit.allowed else Outcome.RATE_LIMITED
            result = replace(result, outcome=outcome, limit=limit)
            if not limit.allowed:
                self.usage.count(entry.key_id, "RATE_LIMITED")
                return result
        self.usage.record(entry.key_id)
        self.usage.count(entry.key_id, "VALID")
        return result
