"""Fixed-window rate limits per key: counters in Redis when configured, in-process otherwise
(and as the fallback while Redis is unavailable)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.cache.redis_backend import RedisBackend
from gateway.keys.model import RateLimit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_us: int  # when the window ends and the quota is fully restored

    @property
    def retry_after_s(self) -> int:
        return max(1, -(-(self.reset_us - time.time_ns() // 1000) // 1_000_000))


class RateLimiter:
    def __init__(self, redis: RedisBackend | None = None) -> None:
        self.redis = redis
        self._local: dict[str, tuple[int, int]] = {}  # counter -> (count, window end ms)

    async def hit(self, key_id: str, policy: RateLimit) -> Decision:
        window_ms = policy.window_s * 1000
        now_ms = time.time_ns() // 1_000_000
        end_ms = (now_ms // window_ms + 1) * window_ms
        counter = f"gw:rl:{key_id}:{policy.window_s}:{end_ms}"
        result = None
        if self.redis is not None:
            result = await self.redis.incr_window(counter, window_ms)
        count = result[0] if result is not None else self._local_hit(counter, end_ms, now_ms)
        return Decision(count <= policy.quota, max(0, policy.quota - count), end_ms * 1000)

    def _local_hit(self, counter: str, end_ms: int, now_ms: int) -> int:
        if len(self._local) > 50_000:
            self._local = {k: v for k, v in self._local.items() if v[1] > now_ms}
        count = self._local.get(counter, (0, end_ms))[0] + 1
        self._local[counter] = (count, end_ms)
        return count
