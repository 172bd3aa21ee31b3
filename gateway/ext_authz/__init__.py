"""Envoy's external authorization over gRPC (``envoy.service.auth.v3.Authorization``), on
its own port when ``GATEWAY_GRPC_PORT`` is set (``gateway.ext_authz.server``; needs the
``grpc`` extra). Off by default: then nothing of gRPC is imported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def grpc_ext_authz(services: Any) -> AsyncIterator[None]:
    """Serve the Check API for the body of the ``async with`` (the app's lifespan), when
    ``GATEWAY_GRPC_PORT`` is set; stop gracefully after it."""
    settings = services.settings
    if settings.grpc_port is None:
        yield
        return
    from gateway.ext_authz.server import ExtAuthzServer

    server = ExtAuthzServer(services)
    await server.start(settings.grpc_host or settings.host, settings.grpc_port,
                       reuse_port=settings.workers > 1)
    try:
        yield
    finally:
        await server.stop()
