"""Admin authentication for the admin routes of every family (hot routes included)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request

from gateway.errors import Unauthenticated
from gateway.http.client_ip import client_ip
from gateway.http.wire import bearer_token


async def authenticate_admin(services: Any, authorization: str | None,
                             scope: MutableMapping[str, Any],
                             schemes: tuple[str, ...] = ("bearer",)) -> str:
    """The admin principal of a request's ``Authorization`` header, or Unauthenticated
    (ResourceExhausted while argon2 guesses from this client are being slowed); refusals
    are answered late (``AdminTokens.refused``)."""
    def who() -> str:  # the client's address: only asked for when the token fails
        return client_ip(scope, dict(scope.get("headers") or ()), services.trusted) or ""

    token = bearer_token(authorization, schemes)
    if token is None:
        await services.admin_tokens.refused(who())
        raise Unauthenticated("missing admin credential: send Authorization: Bearer <token>")
    principal: str | None = await services.admin_tokens.authenticate(token, who)
    if principal is None:
        raise Unauthenticated("invalid admin credential")
    return principal


async def require_admin(request: Request, schemes: tuple[str, ...] = ("bearer",)) -> str:
    """The admin principal, or Unauthenticated unless the request carries an admin token."""
    return await authenticate_admin(request.app.state.services,
                                    request.headers.get("authorization"), request.scope, schemes)
