"""Rendering faults into each API family's error body: one rendering for the hot routes
(``gateway.http.hot``) and the Starlette routes (``handles``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, Internal, MethodNotAllowed
from gateway.http.wire import Header

log = logging.getLogger("gateway.http")
Endpoint = Callable[[Request], Awaitable[Response]]
Render = Callable[[GatewayError], dict[str, Any]]
CHALLENGE = 'Bearer realm="gateway"'  # WWW-Authenticate of a 401 from an admin route


def ory_status(exc: GatewayError) -> dict[str, Any]:
    """google.rpc.Status as grpc-gateway emits it."""
    return {"code": exc.grpc_code, "message": exc.message, "details": exc.details}


def oauth2_error(exc: GatewayError) -> dict[str, Any]:
    """Ory's ErrorOAuth2 (JWK admin API)."""
    return {"error": exc.oauth_error, "error_description": exc.message,
            "status_code": exc.http_status}


def okta_error(exc: GatewayError) -> dict[str, Any]:
    error_id = "oae" + uuid.uuid4().hex[:19]
    return {"errorCode": exc.okta_code, "errorSummary": exc.message,
            "errorLink": exc.okta_code, "errorId": error_id,
            "errorCauses": [{"errorSummary": d.get("message", "")} for d in exc.details]}


class Family(NamedTuple):
    """An API family's errors: its body, and the statuses it gives gRPC codes where they
    differ from the fault's own."""

    render: Render
    statuses: Mapping[int, int] = {}


# Ory Talos answers FAILED_PRECONDITION (revoking a revoked key, rotating an inactive one)
# with 409, as AIP-193 does for a conflict with the resource's state.
ORY = Family(ory_status, {9: 409})
OAUTH2 = Family(oauth2_error)
OKTA = Family(okta_error)


def error_answer(exc: GatewayError, family: Family) -> tuple[int, bytes, list[Header]]:
    """(status, body, headers) of a fault, in the family's error body; a 401 says how to
    authenticate, a 405 which methods the route takes."""
    status = family.statuses.get(exc.grpc_code, exc.http_status)
    headers = [(b"www-authenticate", CHALLENGE.encode())] if status == 401 else []
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allow.encode()))
    return status, orjson.dumps(family.render(exc)), headers


def error_response(exc: GatewayError, family: Family) -> Response:
    """``error_answer`` as a Starlette response."""
    status, body, headers = error_answer(exc, family)
    return Response(body, status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


def internal_error(method: str, path: str, exc: Exception) -> GatewayError:
    """An unexpected fault: logged here with its traceback, answered as a bare 500."""
    log.error("unhandled error on %s %s: %s", method, path, type(exc).__name__, exc_info=exc)
    return Internal("internal error")


def handles(family: Family) -> Callable[[Endpoint], Endpoint]:
    """Decorator: faults raised by the endpoint become the family's error answer."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def handler(request: Request) -> Response:
            try:
                return await endpoint(request)
            except GatewayError as exc:
                error = exc
            except Exception as exc:
                error = internal_error(request.method, request.url.path, exc)
            return error_response(error, family)

        handler.__name__ = endpoint.__name__
        handler.__doc__ = endpoint.__doc__
        return handler

    return wrap


ory = handles(ORY)
oauth2 = handles(OAUTH2)
okta = handles(OKTA)
