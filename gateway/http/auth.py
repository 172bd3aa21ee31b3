"""Admin authentication for the admin routes of every family."""

from __future__ import annotations

from starlette.requests import Request

from gateway.errors import Unauthenticated
from gateway.http.wire import bearer_token


def require_admin(request: Request, schemes: tuple[str, ...] = ("bearer",)) -> None:
    """Raise Unauthenticated unless the request carries a configured admin token."""
    token = bearer_token(request.headers.get("authorization"), schemes)
    if token is None:
        raise Unauthenticated("missing admin credential: send Authorization: Bearer <token>")
    if not request.app.state.services.admin_tokens.check(token):
        raise Unauthenticated("invalid admin credential")
