"""Admin authentication for the admin routes of every family, hot routes included."""

from __future__ import annotations

from collections.abc import MutableMapping
from hmac import compare_digest
from typing import Any

from starlette.requests import Request

from gateway.audit import events as audit
from gateway.crypto.admin_tokens import AdminTokens
from gateway.errors import Unauthenticated
from gateway.http.client_ip import Trusted, client_ip
from gateway.http.wire import bearer_token

BEARER = ("bearer",)


class AdminGate:
    """``principal``: the admin principal of a request's ``Authorization`` header, or
    Unauthenticated (ResourceExhausted while argon2 guesses from this client are being
    slowed); refusals are answered late (``AdminTokens.refused``).

    The header of the last call that passed is remembered with its principal, per scheme
    set, so the same admin client's next call costs one constant-time comparison. It is
    held in memory only, never logged: it is a credential the process trusts. Admin tokens
    are fixed for the life of the process, so a remembered header stays valid."""

    def client(self, scope: MutableMapping[str, Any]) -> str:
        """The client's address, as the trusted proxies say it."""
        return client_ip(scope, dict(scope.get("headers") or ()), self._trusted) or ""

    def __init__(self, tokens: AdminTokens, trusted: Trusted) -> None:
        self._tokens = tokens
        self._trusted = trusted
        self._last: dict[tuple[str, ...], tuple[bytes, str]] = {}
        # the bearer header of the last admin call that passed: a hot route's fast half
        # compares it itself (no coroutine), and takes the general half when it differs
        self.last_bearer: bytes | None = None

    async def principal(self, raw: bytes | None, scope: MutableMapping[str, Any],
                        schemes: tuple[str, ...] = BEARER) -> str:
        last = self._last.get(schemes)
        if raw is not None and last is not None and compare_digest(raw, last[0]):
            return last[1]

        def who() -> str:  # the client's address: only asked for when the token fails
            return self.client(scope)

        token = bearer_token(raw.decode("latin-1") if raw else None, schemes)
        if raw is None or token is None:
            await self._tokens.refused(who())
            raise Unauthenticated("missing admin credential: send Authorization: Bearer <token>")
        principal: str | None = await self._tokens.authenticate(token, who)
        if principal is None:
            raise Unauthenticated("invalid admin credential")
        self._last[schemes] = (raw, principal)
        if schemes == BEARER:
            self.last_bearer = raw
        return principal


async def require_admin(request: Request, schemes: tuple[str, ...] = BEARER) -> str:
    """The admin principal, or Unauthenticated unless the request carries an admin token.
    The principal and the client's address are the actor of the audit events the request
    causes (``gateway.audit``)."""
    gate: AdminGate = request.app.state.services.admin_gate
    raw = request.headers.get("authorization")
    principal = await gate.principal(raw.encode("latin-1") if raw is not None else None,
                                     request.scope, schemes)
    audit.actor.set(audit.Actor(principal, gate.client(request.scope)))
    return principal


def key_holder(request: Request) -> None:
    """The actor of a request made with a key of its own (self-revoke), not an admin's."""
    gate: AdminGate = request.app.state.services.admin_gate
    audit.actor.set(audit.Actor(audit.KEY_HOLDER, gate.client(request.scope)))
