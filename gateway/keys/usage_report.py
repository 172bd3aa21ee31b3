"""A key's verifications over time: the per-minute counts summed into minutes, hours or
days (``GET …/{key_id}/usage``)."""

from __future__ import annotations

import time
from typing import Any

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.errors import InvalidArgument
from gateway.store.base import Store

INTERVALS = {"minute": 60, "hour": 3600, "day": 86_400}
DEFAULT_SPAN = {"minute": 3600, "hour": 86_400, "day": 30 * 86_400}  # seconds before end
MAX_BUCKETS = 10_000


def _interval(raw: str | None) -> str:
    name = (raw or "hour").lower().removeprefix("interval_")
    if name not in INTERVALS:
        raise InvalidArgument(f"interval: {raw!r} is not one of minute, hour, day")
    return name


async def usage_report(store: Store, key_id: str, interval: str | None,
                       start_time: str | None, end_time: str | None) -> dict[str, Any]:
    name = _interval(interval)
    step = INTERVALS[name]
    end = (parse_rfc3339(end_time, "end_time") // 1_000_000 if end_time is not None
           else int(time.time()) + 1)
    start = (parse_rfc3339(start_time, "start_time") // 1_000_000 if start_time is not None
             else end - DEFAULT_SPAN[name])
    start -= start % step  # whole buckets
    if end <= start:
        raise InvalidArgument("end_time: must be after start_time")
    if (end - start) / step > MAX_BUCKETS:
        raise InvalidArgument(f"start_time, end_time: more than {MAX_BUCKETS} {name}s apart; "
                              "use a longer interval")
    buckets: dict[int, dict[str, int]] = {}
    for minute, outcome, count in await store.usage_counts(key_id, start, end):
        counts = buckets.setdefault(minute - minute % step, {})
        counts[outcome] = counts.get(outcome, 0) + count
    out = [{"start_time": to_rfc3339(at * 1_000_000), "counts": counts,
            "total": sum(counts.values())} for at, counts in sorted(buckets.items())]
    return {"key_id": key_id, "interval": name, "start_time": to_rfc3339(start * 1_000_000),
            "end_time": to_rfc3339(end * 1_000_000), "buckets": out,
            "total": sum(b["total"] for b in out)}
