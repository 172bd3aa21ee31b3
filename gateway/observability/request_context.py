"""What the request being served is, for the log lines and audit events it causes.

Set once per request by the HTTP layer (the request id, accepted from the caller's
``X-Request-ID`` or generated); read anywhere below it without passing it along.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return request_id.get()
