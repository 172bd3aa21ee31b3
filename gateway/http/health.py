"""Liveness and readiness (Ory's health routes)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.errors import GatewayError
from gateway.http.wire import JSONResponse

log = logging.getLogger("gateway.health")


async def alive(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    try:
        await request.app.state.services.store.ping()
    except GatewayError as exc:
        log.warning("readiness: store unavailable: %s", exc.message)
        return JSONResponse({"errors": {"store": "unavailable"}}, status_code=503)
    return JSONResponse({"status": "ok"})


def routes() -> list[BaseRoute]:
    return [Route("/health/alive", alive), Route("/health/ready", ready)]
