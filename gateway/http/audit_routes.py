"""``GET /v2alpha1/admin/auditEvents``: the audit trail, newest first (this gateway's own
extension of the Ory API-keys family: its error bodies, its admin token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.audit.query import (
    MAX_PAGE_SIZE,
    make_token,
    page_size,
    parse_audit_filter,
    parse_token,
)
from gateway.http.auth import require_admin
from gateway.http.errors import ory
from gateway.http.openapi import STR, TIME, Operation, add_operations, obj, ref
from gateway.http.wire import JSONResponse
from gateway.keys.listing import MAX_FILTER_LENGTH
from gateway.store.base import Store

PATH = "/v2alpha1/admin/auditEvents"


@ory
async def audit_events(request: Request) -> Response:
    await require_admin(request)
    store: Store = request.app.state.services.store
    q = request.query_params
    flt = parse_audit_filter(q.get("filter"))
    size = page_size(q.get("page_size"))
    events = await store.list_audit(flt, parse_token(q.get("page_token"), flt), size + 1)
    token = make_token(events[size - 1].seq, flt) if len(events) > size else ""
    return JSONResponse({"audit_events": [e.wire() for e in events[:size]],
                         "next_page_token": token})


_SCHEMAS = {
    "AuditEvent": obj(
        id=STR, time=TIME, action=STR, target=STR, principal=STR, client_address=STR,
        request_id=STR, outcome={"type": "string", "enum": ["success", "failure"]},
        details={"type": "object", "additionalProperties": True}),
    "ListAuditEventsResponse": obj(audit_events={"type": "array", "items": ref("AuditEvent")},
                                   next_page_token=STR),
}
_OPERATIONS: list[Operation] = [
    ("get", PATH, "adminListAuditEvents", 200, None, "ListAuditEventsResponse", True)]
add_operations(_OPERATIONS, _SCHEMAS, query={"adminListAuditEvents": [
    {"name": "page_size", "in": "query", "schema": {
        "type": "integer", "minimum": 0, "description": f"at most {MAX_PAGE_SIZE}"}},
    {"name": "page_token", "in": "query", "schema": {"type": "string", "format": "page-token"}},
    {"name": "filter", "in": "query", "schema": {
        "type": "string", "format": "aip160-audit-filter", "maxLength": MAX_FILTER_LENGTH,
        "description": 'action, target, principal, outcome with =; time with >=, >, <=, < '
                       '(action="key.revoked" AND time >= "2026-12-01T00:00:00Z")'}}]})


def routes() -> list[BaseRoute]:
    return [Route(PATH, audit_events, methods=["GET"])]
