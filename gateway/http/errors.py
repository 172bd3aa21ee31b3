"""Rendering faults into each API family's error body: one rendering for the hot routes
(``gateway.http.hot``) and the Starlette routes (``family``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

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


def error_answer(exc: GatewayError, render: Render) -> tuple[int, bytes, list[Header]]:
    """(status, body, headers) of a fault, in the family's error body (``render``); a 401
    says how to authenticate, a 405 which methods the route takes."""
    headers = [(b"www-authenticate", CHALLENGE.encode())] if exc.http_status == 401 else []
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allow.encode()))
    return exc.http_status, orjson.dumps(render(exc)), headers


def error_response(exc: GatewayError, render: Render) -> Response:
    """``error_answer`` as a Starlette response."""
    status, body, headers = error_answer(exc, render)
    return Response(body, status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


def internal_error(method: str, path: str, exc: Exception) -> GatewayError:
    """An unexpected fault: logged here with its traceback, answered as a bare 500."""
    log.error("unhandled error on %s %s: %s", method, path, type(exc).__name__, exc_info=exc)
    return Internal("internal error")


def family(render: Render) -> Callable[[Endpoint], Endpoint]:
    """Decorator: faults raised by the endpoint become ``render``'s body and status."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def handler(request: Request) -> Response:
            try:
                return await endpoint(request)
            except GatewayError as exc:
                error = exc
            except Exception as exc:
                error = internal_error(request.method, request.url.path, exc)
            return error_response(error, render)

        handler.__name__ = endpoint.__name__
        handler.__doc__ = endpoint.__doc__
        return handler

    return wrap


ory = family(ory_status)
oauth2 = family(oauth2_error)
okta = family(okta_error)
