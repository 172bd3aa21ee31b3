"""Ory API keys v2alpha1 admin and public routes (transport only).

Paths carry AIP-136 colon verbs (``…/{key_id}:revoke``). The SDK percent-encodes ``key_id``
fully, so the verb is split off the *raw* path, where a literal ``:`` can only be the verb.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import Receive, Scope, Send

from gateway.clock import now_us
from gateway.errors import GatewayError, InvalidArgument, MethodNotAllowed, NotFound
from gateway.http.auth import key_holder, require_admin
from gateway.http.errors import ory
from gateway.http.wire import JSONResponse, read_json
from gateway.keys.fields import require_object
from gateway.keys.listing import parse_filter, parse_page_size
from gateway.keys.model import Kind
from gateway.keys.names import snake_fields
from gateway.keys.service import BatchItem, Issued, KeyService
from gateway.keys.usage_report import usage_report
from gateway.keys.wire import key_wire

# A batch of up to 1000 keys in at most 16 MiB and 500,000 JSON values: parsed, that is at
# most about 70 MB (the raw body, and about 60 bytes a value); larger imports are split.
BATCH_BODY_LIMIT = 16 << 20
BATCH_MAX_VALUES = 500_000
_BATCH_CODES = {3: "INVALID_ARGUMENT", 6: "ALREADY_EXISTS", 9: "FAILED_PRECONDITION",
                8: "RESOURCE_EXHAUSTED"}


def _keys(request: Request) -> KeyService:
    keys: KeyService = request.app.state.services.keys
    return keys


KEY_TAIL = "/{tail}"  # the routes below: a key id, maybe with a verb
KEY_VERBS = {"revoke": ":revoke", "rotate": ":rotate", "usage": "/usage"}


def split_key_tail(tail: str) -> tuple[str, str]:
    """``(key part, verb)`` of what follows a key collection: ``KEY:verb`` or
    ``KEY/usage`` (the key's usage, a sub-resource); the verb is "" when there is none."""
    key_part, _, verb = tail.partition(":")
    if not verb and key_part.endswith("/usage"):
        key_part, verb = key_part[:-len("/usage")], "usage"
    return key_part, verb


def key_route(template: str, tail: str, unknown: str = "") -> str:
    """The template of a request below a key route (``…/{tail}``): ``…/{key_id}`` with
    its verb when it is one of the routes' own, else ``unknown`` (never the path's text,
    which holds a key id and could hold anything)."""
    _, verb = split_key_tail(tail)
    base = template.removesuffix(KEY_TAIL) + "/{key_id}"
    return base + (KEY_VERBS.get(verb, unknown) if verb else "")


def _split_tail(request: Request, collection: str) -> tuple[str, str]:
    """``(key_id, verb)`` from the raw path below ``/v2alpha1/admin/<collection>/``."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    tail = raw.decode("latin-1").split("?", 1)[0].split(f"/{collection}/", 1)[1]
    key_part, verb = split_key_tail(tail)
    key_id = unquote(key_part)
    if not key_id or "/" in key_part:
        raise NotFound(f"no route for {request.url.path}")
    return key_id, verb


async def _message(request: Request, *limits: int) -> Any:
    """The request body, its field names as the proto's (protojson's ``actorId`` too)."""
    return snake_fields(await read_json(request, *limits))


def _created(body: dict[str, Any], collection: str, key_id: str) -> Response:
    """201 with ``Location`` naming the new key, as Ory Talos answers a create."""
    return JSONResponse(body, status_code=201, headers={
        "Location": f"/v2alpha1/admin/{collection}/{quote(key_id, safe='')}"})


def _issued(result: Issued) -> dict[str, Any]:
    return {"issued_api_key": key_wire(result.key, now_us()), "secret": result.secret}


# -- issued keys -----------------------------------------------------------------------


@ory
async def issued_collection(request: Request) -> Response:
    await require_admin(request)
    keys = _keys(request)
    if request.method == "POST":
        body = require_object(await _message(request))
        issued = await keys.issue(body)
        return _created(_issued(issued), "issuedApiKeys", issued.key.key_id)
    return await _list(request, Kind.ISSUED)


@ory
async def issued_item(request: Request) -> Response:
    await require_admin(request)
    keys = _keys(request)
    key_id, verb = _split_tail(request, "issuedApiKeys")
    method = _method(request)
    if verb == "" and method == "GET":
        return JSONResponse(key_wire(await keys.get(Kind.ISSUED, key_id), now_us()))
    if verb == "" and method == "PATCH":
        key = await keys.update(Kind.ISSUED, key_id, await _message(request),
                                request.query_params.get("update_mask"))
        return JSONResponse(key_wire(key, now_us()))
    if verb == "revoke" and method == "POST":
        await keys.revoke((Kind.ISSUED,), key_id, await _message(request))
        return Response(status_code=204)
    if verb == "usage" and method == "GET":
        return await _usage(request, Kind.ISSUED, key_id)
    if verb == "rotate" and method == "POST":
        new, old = await keys.rotate(key_id, await _message(request))
        body = _issued(new)
        body["old_issued_api_key"] = key_wire(old, now_us())
        return _created(body, "issuedApiKeys", new.key.key_id)
    raise _no_route(request, verb, {"": ("GET", "HEAD", "PATCH"), "revoke": ("POST",),
                                    "rotate": ("POST",), "usage": ("GET", "HEAD")})


# -- imported keys ---------------------------------------------------------------------


@ory
async def imported_collection(request: Request) -> Response:
    await require_admin(request)
    if request.method == "POST":
        key = await _keys(request).import_key(await _message(request))
        return _created(key_wire(key, now_us()), "importedApiKeys", key.key_id)
    return await _list(request, Kind.IMPORTED)


@ory
async def imported_item(request: Request) -> Response:
    await require_admin(request)
    keys = _keys(request)
    key_id, verb = _split_tail(request, "importedApiKeys")
    method = _method(request)
    if verb == "" and method == "GET":
        return JSONResponse(key_wire(await keys.get(Kind.IMPORTED, key_id), now_us()))
    if verb == "" and method == "PATCH":
        key = await keys.update(Kind.IMPORTED, key_id, await _message(request),
                                request.query_params.get("update_mask"))
        return JSONResponse(key_wire(key, now_us()))
    if verb == "" and method == "DELETE":
        await keys.delete_imported(key_id)
        return Response(status_code=204)
    if verb == "revoke" and method == "POST":
        await keys.revoke((Kind.IMPORTED,), key_id, await _message(request))
        return Response(status_code=204)
    if verb == "usage" and method == "GET":
        return await _usage(request, Kind.IMPORTED, key_id)
    raise _no_route(request, verb, {"": ("GET", "HEAD", "PATCH", "DELETE"),
                                    "revoke": ("POST",), "usage": ("GET", "HEAD")})


def _batch_endpoint(enum_prefix: str) -> Any:
    @ory
    async def batch(request: Request) -> Response:
        await require_admin(request)
        body = require_object(await _message(request, BATCH_BODY_LIMIT, BATCH_MAX_VALUES))
        items = await _keys(request).batch_import(body)
        return _batch_response(items, enum_prefix)

    batch.__name__ = f"batch_{enum_prefix.lower()}"
    return batch


def _batch_response(items: list[BatchItem], prefix: str) -> Response:
    now = now_us()
    results = []
    for item in items:
        result: dict[str, Any] = {"index": item.index}
        if item.key is not None:
            result["imported_api_key"] = key_wire(item.key, now)
            result["error_code"] = f"{prefix}UNSPECIFIED"
        else:
            assert item.error is not None
            result["error_code"] = prefix + _BATCH_CODES.get(item.error.grpc_code, "INTERNAL")
            result["error_message"] = item.error.message
        results.append(result)
    failures = [i for i in items if i.error is not None]
    if len(failures) == len(items):
        first = failures[0].error
        assert first is not None
        same = all(type(i.error) is type(first) for i in failures)
        cls: type[GatewayError] = type(first) if same else InvalidArgument
        raise cls(f"all {len(items)} items failed; first (index 0): {first.message}",
                  details=[{"@type": "type.googleapis.com/google.rpc.DebugInfo",
                            "results": results}])
    return JSONResponse({"results": results, "success_count": len(items) - len(failures),
                         "failure_count": len(failures)})


# -- the older combined revoke route and self-revoke -------------------------------------


@ory
async def legacy_revoke(request: Request) -> Response:
    await require_admin(request)
    key_id, verb = _split_tail(request, "apiKeys")
    if verb != "revoke" or request.method != "POST":
        raise _no_route(request, verb, {"revoke": ("POST",)})
    await _keys(request).revoke((Kind.ISSUED, Kind.IMPORTED), key_id, await _message(request))
    return Response(status_code=204)


@ory
async def derive(request: Request) -> Response:
    await require_admin(request)
    body = await _message(request)
    return JSONResponse(await request.app.state.services.deriver.derive(body))


@ory
async def self_revoke(request: Request) -> Response:
    key_holder(request)
    await _keys(request).self_revoke(await _message(request))
    return JSONResponse({})


async def _usage(request: Request, kind: Kind, key_id: str) -> Response:
    """The key's verifications by outcome, in minute, hour or day buckets."""
    keys = _keys(request)
    await keys.get(kind, key_id)  # 404 for a key that is not there
    q = request.query_params
    return JSONResponse(await usage_report(keys.store, key_id, q.get("interval"),
                                           q.get("start_time"), q.get("end_time")))


async def _list(request: Request, kind: Kind) -> Response:
    q = request.query_params
    page = await _keys(request).list(kind, parse_filter(q.get("filter")),
                                     parse_page_size(q.get("page_size")), q.get("page_token"))
    now = now_us()
    return JSONResponse({f"{kind.value}_api_keys": [key_wire(k, now) for k in page.keys],
                         "next_page_token": page.next_page_token})


def _method(request: Request) -> str:
    """The request's method, HEAD read as GET (the server sends no body for HEAD)."""
    return "GET" if request.method == "HEAD" else request.method


def _no_route(request: Request, verb: str, table: dict[str, tuple[str, ...]]) -> GatewayError:
    if verb in table:
        return MethodNotAllowed(request.method, request.url.path, ", ".join(table[verb]))
    return NotFound(f"no route for {request.url.path}")


class AnyMethod:
    """An endpoint that is handed every method: Starlette gives a function endpoint GET
    alone unless told its methods, and answers the others itself."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def routes() -> list[BaseRoute]:
    base = "/v2alpha1/admin"
    return [
        Route(f"{base}/issuedApiKeys", issued_collection, methods=["GET", "POST"]),
        Route(f"{base}/importedApiKeys:batchCreate",
              _batch_endpoint("BATCH_CREATE_IMPORTED_API_KEYS_ERROR_"), methods=["POST"]),
        Route(f"{base}/importedApiKeys:batchImport", _batch_endpoint("BATCH_IMPORT_ERROR_"),
              methods=["POST"]),
        Route(f"{base}/importedApiKeys", imported_collection, methods=["GET", "POST"]),
        # every method: the handler knows which ones the resource under the path (the key,
        # or one of its :verbs) takes, and answers the others 405 naming exactly those
        Route(f"{base}/issuedApiKeys/{{tail:path}}", AnyMethod(issued_item)),
        Route(f"{base}/importedApiKeys/{{tail:path}}", AnyMethod(imported_item)),
        Route(f"{base}/apiKeys/{{tail:path}}", AnyMethod(legacy_revoke)),
        Route(f"{base}/apiKeys:derive", derive, methods=["POST"]),
        Route("/v2alpha1/apiKeys:selfRevoke", self_revoke, methods=["POST"]),
    ]
