"""The fault tree of the gateway.

    GatewayError                 a request cannot be served; carries a gRPC code and HTTP status
    ├── InvalidArgument          400  malformed body, wrong type, bad enum, out-of-range value
    ├── FailedPrecondition       400  the resource is in the wrong state for this call
    ├── Unauthenticated          401  missing or wrong admin credential
    ├── PermissionDenied         403  authenticated but not allowed
    ├── NotFound                 404  no such resource
    ├── MethodNotAllowed         405  the route exists, not for this method
    ├── AlreadyExists            409  the resource (or request id) exists already
    ├── PayloadTooLarge          413  the body is over the route's size limit
    ├── ResourceExhausted        429  a quota is used up
    ├── Unavailable              503  a backend (store) cannot be reached
    └── Internal                 500  a bug or unexpected backend reply
    ConfigError                  bad configuration, raised at start-up only

Each API family renders a GatewayError into its own body (see ``gateway.http.errors``).
Driver errors are translated into these once, in the store and cache adapters.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConfigError(Exception):
    """Configuration is invalid; the message names the offending key."""


class GatewayError(Exception):
    """Base of every fault that becomes an error response."""

    grpc_code: ClassVar[int] = 2
    http_status: ClassVar[int] = 500
    okta_code: ClassVar[str] = "E0000009"
    oauth_error: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidArgument(GatewayError):
    """The request is malformed or a value is out of range (400)."""

    grpc_code = 3
    http_status = 400
    okta_code = "E0000001"
    oauth_error = "invalid_request"


class FailedPrecondition(GatewayError):
    """The resource is not in a state that allows the call (400)."""

    grpc_code = 9
    http_status = 400
    okta_code = "E0000001"
    oauth_error = "invalid_request"


class Unauthenticated(GatewayError):
    """Missing or invalid admin credential (401)."""

    grpc_code = 16
    http_status = 401
    okta_code = "E0000011"
    oauth_error = "unauthorized"


class PermissionDenied(GatewayError):
    """The caller may not do this (403)."""

    grpc_code = 7
    http_status = 403
    okta_code = "E0000006"
    oauth_error = "forbidden"


class NotFound(GatewayError):
    """No such resource (404)."""

    grpc_code = 5
    http_status = 404
    okta_code = "E0000007"
    oauth_error = "not_found"


class AlreadyExists(GatewayError):
    """The resource or idempotency key exists already (409)."""

    grpc_code = 6
    http_status = 409
    okta_code = "E0000001"
    oauth_error = "conflict"


class MethodNotAllowed(GatewayError):
    """The route exists but not for this HTTP method (405)."""

    grpc_code = 12
    http_status = 405
    okta_code = "E0000022"
    oauth_error = "method_not_allowed"

    def __init__(self, method: str, path: str, allow: str) -> None:
        super().__init__(f"method {method} is not allowed on {path} (allowed: {allow})")
        self.allow = allow  # the Allow header's value: the methods the route takes


class PayloadTooLarge(GatewayError):
    """The request body is larger than the route accepts (413)."""

    grpc_code = 3
    http_status = 413
    okta_code = "E0000001"
    oauth_error = "invalid_request"


class ResourceExhausted(GatewayError):
    """A quota is exhausted (429)."""

    grpc_code = 8
    http_status = 429
    okta_code = "E0000047"
    oauth_error = "too_many_requests"


class Unavailable(GatewayError):
    """A backend the call needs cannot be reached (503)."""

    grpc_code = 14
    http_status = 503
    okta_code = "E0000009"
    oauth_error = "temporarily_unavailable"


class Internal(GatewayError):
    """An unexpected failure (500); details are logged, not returned."""

    grpc_code = 13
    http_status = 500
    okta_code = "E0000009"
    oauth_error = "server_error"
