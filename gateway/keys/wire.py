"""Domain key → Ory wire JSON (snake_case, enum names, int64 as strings, RFC 3339 times)."""

from __future__ import annotations

from typing import Any

from gateway.clock import to_rfc3339
from gateway.keys.durations import format_seconds
from gateway.keys.model import ApiKey, RateLimit


def rate_limit_wire(rl: RateLimit) -> dict[str, str]:
    return {"quota": str(rl.quota), "window": format_seconds(rl.window_s), "unit": rl.unit}


def key_wire(key: ApiKey, now_us: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key_id": key.key_id,
        "name": key.name,
        "actor_id": key.actor_id,
        "scopes": list(key.scopes),
        "status": key.status(now_us).value,
        "visibility": key.visibility.value,
        "create_time": to_rfc3339(key.create_time),
        "update_time": to_rfc3339(key.update_time),
    }
    if key.metadata is not None:
        out["metadata"] = key.metadata
    if key.allowed_cidrs:
        out["ip_restriction"] = {"allowed_cidrs": list(key.allowed_cidrs)}
    if key.rate_limit is not None:
        out["rate_limit_policy"] = rate_limit_wire(key.rate_limit)
    if key.expire_time is not None:
        out["expire_time"] = to_rfc3339(key.expire_time)
    if key.last_used_time is not None:
        out["last_used_time"] = to_rfc3339(key.last_used_time)
    if key.revocation_reason is not None:
        out["revocation_reason"] = key.revocation_reason.value
        if key.revocation_description:
            out["revocation_description"] = key.revocation_description
    return out
