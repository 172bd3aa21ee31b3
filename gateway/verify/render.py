"""Result → VerifyApiKeyResponse. A plain cached "yes" is pre-rendered bytes."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.clock import to_rfc3339
from gateway.verify.outcomes import TABLE, Outcome, Result

_KNOWN_KEY = {Outcome.REVOKED, Outcome.EXPIRED, Outcome.IP_NOT_ALLOWED, Outcome.RATE_LIMITED,
              Outcome.AUDIENCE_MISMATCH}


def response_fields(result: Result) -> dict[str, Any]:
    entry = result.entry
    if result.valid and entry is not None:
        fields = entry.valid_fields()
    else:
        wire = TABLE[result.outcome]
        fields = {"is_valid": False, "error_code": wire.error_code,
                  "error_message": wire.message}
        if entry is not None and result.outcome in _KNOWN_KEY:
            fields.update(key_id=entry.key_id, actor_id=entry.actor_id)
            if result.outcome is Outcome.EXPIRED:
                fields["status"] = "KEY_STATUS_EXPIRED"
    if result.limit is not None:
        fields["rate_limit_remaining"] = str(result.limit.remaining)
        fields["rate_limit_reset_time"] = to_rfc3339(result.limit.reset_us)
    if result.token is not None:
        fields.update(result.token)
    return fields


def response_body(result: Result) -> bytes:
    entry = result.entry
    if result.valid and entry is not None and result.limit is None and result.token is None:
        return entry.valid_body
    return orjson.dumps(response_fields(result))
