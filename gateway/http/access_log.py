"""The access log (``GATEWAY_ACCESS_LOG=true``): one line per request on the
``gateway.access`` logger, with its route's template (never the path, which can hold a key
id), method, status, duration, cache level (``X-Cache``), request id and client address.
Nothing the caller sent besides its method and address is logged: no header, query string
or body, so no credential."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from gateway.http.client_ip import Trusted, client_ip
from gateway.http.ory_keys import KEY_TAIL, key_route

log = logging.getLogger("gateway.access")


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The template of the Starlette route a request matched (``scope["route"]``, set by
    the router; None: none), its parameters as ``{name}``; ory_keys' ``…/{tail}`` as
    ``…/{key_id}``, with the verb when it is one of the routes' own."""
    template: str | None = getattr(scope.get("route"), "path_format", None)
    if template is None or not template.endswith(KEY_TAIL):
        return template
    return key_route(template, str((scope.get("path_params") or {}).get("tail", "")))


class AccessLog:
    def __init__(self, trusted: Trusted) -> None:
        self._trusted = trusted

    def record(self, scope: MutableMapping[str, Any], route: str | None, status: int,
               headers: Iterable[tuple[bytes, bytes]], seconds: float, rid: str) -> None:
        """One request's line: ``route`` its template (None: no route matched), ``status``
        and ``headers`` its response's."""
        cache = None
        for name, value in headers:
            if name == b"x-cache":
                cache = value.decode("latin-1")
                break
        method = scope["method"]
        ms = round(seconds * 1000, 3)
        client = client_ip(scope, dict(scope["headers"]), self._trusted)
        log.info("%s %s %d %.3f ms cache=%s client=%s", method, route or "-", status, ms,
                 cache or "-", client or "-",
                 extra={"request_id": rid, "fields": {
                     "method": method, "route": route, "status": status, "duration_ms": ms,
                     "cache": cache, "client": client}})
