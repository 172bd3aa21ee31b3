"""Rendering faults into each API family's error body."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, Internal
from gateway.http.wire import JSONResponse

log = logging.getLogger("gateway.http")
Endpoint = Callable[[Request], Awaitable[Response]]


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


def _internal(request: Request, exc: Exception) -> GatewayError:
    log.error("unhandled error on %s %s: %s", request.method, request.url.path,
              type(exc).__name__, exc_info=exc)
    return Internal("internal error")


def family(render: Callable[[GatewayError], dict[str, Any]]
           ) -> Callable[[Endpoint], Endpoint]:
    """Decorator: faults raised by the endpoint become ``render``'s body and status."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def handler(request: Request) -> Response:
            try:
                return await endpoint(request)
            except GatewayError as exc:
                error = exc
            except Exception as exc:
                error = _internal(request, exc)
            headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else None
            return JSONResponse(render(error), status_code=error.http_status, headers=headers)

        handler.__name__ = endpoint.__name__
        handler.__doc__ = endpoint.__doc__
        return handler

    return wrap


ory = family(ory_status)
oauth2 = family(oauth2_error)
okta = family(okta_error)
