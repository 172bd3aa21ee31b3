"""create_app(services): routes, lifespan, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import MethodNotAllowed, NotFound
from gateway.ext_authz import grpc_ext_authz
from gateway.http import (
    audit_routes,
    health,
    jwk_admin,
    jwks,
    metrics,
    okta_keys,
    openapi,
    ory_keys,
)
from gateway.http.access_log import AccessLog
from gateway.http.decisions import DecisionsRoute
from gateway.http.errors import ORY, error_response
from gateway.http.hot import ASGIApp, HotPath, Message, Receive, Scope, Send
from gateway.http.l1_answers import L1Answers
from gateway.http.request_ids import RequestIds, request_id_of
from gateway.http.verify_routes import BatchVerifyRoute, VerifyRoute
from gateway.http.wire import RENDERED, SecurityHeaders
from gateway.services import Services

CORS_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "Cache-Control", "Pragma", "X-API-Key",
                "X-Request-ID"]
CORS_EXPOSED = ["Location", "X-Cache", "Ory-Talos-Cache", "RateLimit", "RateLimit-Policy",
                "Retry-After", "X-Request-ID"]


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(NotFound(f"no route for {request.url.path}"), ORY)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
    return error_response(MethodNotAllowed(request.method, request.url.path, allow), ORY)


class _CORS(CORSMiddleware):
    """Starlette's CORS middleware, its preflight answers with a request id too (it answers
    them itself; every other answer has its id from the app within)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        response.headers["x-request-id"] = request_id_of(request_headers.raw).decode("ascii")
        return response


class Unrendered:
    """``app`` with the rendered heads of its answers dropped (``RENDERED``, which our
    server writes as they are): a middleware around it may change an answer's headers
    (CORS adds its own), and they must reach the wire. Only when there is one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def plain(message: Message) -> None:
            if RENDERED in message:
                message = {k: v for k, v in message.items() if k != RENDERED}
            await send(message)

        await self.app(scope, receive, plain)


def create_app(services: Services) -> ASGIApp:
    """The Starlette app for every route, behind the plain-ASGI hot routes."""
    l1 = L1Answers(services)
    gate = services.admin_gate
    starlette = create_starlette_app(services)
    hot = (VerifyRoute(services, gate, l1), BatchVerifyRoute(services, gate, l1),
           DecisionsRoute(services, l1))
    access = AccessLog(services.trusted) if services.settings.access_log else None
    app: ASGIApp = HotPath(RequestIds(SecurityHeaders(starlette), access,
                                      services.metrics.http_request), hot, access)
    origins = services.settings.cors_origins
    if origins or services.tracing is not None:  # middlewares that may change headers
        app = Unrendered(app)
    if origins:  # off by default: no browser origin may call, and nothing is paid for it
        app = _CORS(app, allow_origins=list(origins), allow_methods=CORS_METHODS,
                             allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED,
                             max_age=600)
    if services.tracing is not None:  # off by default (GATEWAY_OTEL_ENDPOINT): outermost
        app = services.tracing.app(app, [(r.path, r.below) for r in hot], starlette.routes)
    return app


def worker_app() -> ASGIApp:
    """The app of one worker of ``gateway serve --workers N``, from the environment."""
    from gateway.observability.logging import configure_logging
    from gateway.services import build_services
    from gateway.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.access_log)
    return create_app(build_services(settings))


def create_starlette_app(services: Services) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            async with grpc_ext_authz(services):  # GATEWAY_GRPC_PORT: Envoy ext_authz (gRPC)
                yield
        finally:
            await services.stop()

    routes = [*health.routes(), *ory_keys.routes(), *openapi.routes(), *metrics.routes(),
              *jwks.routes(), *jwk_admin.routes(), *okta_keys.routes(),
              *audit_routes.routes()]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: _not_found, 405: _method_not_allowed})
    app.state.services = services
    return app
