"""Liveness and readiness (Ory's health routes). A draining server (SIGTERM: see
gateway/http/server.py) is alive but not ready."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.errors import GatewayError
from gateway.http.server import draining
from gateway.http.wire import JSONResponse
from gateway.version import VERSION

log = logging.getLogger("gateway.health")


async def alive(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def version(request: Request) -> Response:
    """The running version (Ory's ``GET /version``)."""
    return JSONResponse({"version": VERSION})


async def ready(request: Request) -> Response:
    if draining(request.scope):
        return JSONResponse({"errors": {"server": "shutting down"}}, status_code=503)
    try:
        await request.app.state.services.store.ping()
    except GatewayError as exc:
        log.warning("readiness: store unavailable: %s", exc.message)
        return JSONResponse({"errors": {"store": "unavailable"}}, status_code=503)
    return JSONResponse({"status": "ok"})


def routes() -> list[BaseRoute]:
    return [Route("/health/alive", alive), Route("/health/ready", ready),
            Route("/version", version)]
