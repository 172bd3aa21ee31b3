"""Optional OpenTelemetry tracing: the ``otel`` extra, on when ``GATEWAY_OTEL_ENDPOINT`` is set.

Only the composition root (``build_services``) imports this module, and only then: with
tracing off nothing of OpenTelemetry is loaded, and the app, the store and the Redis client
are the plain ones, so the hot path costs what it did.

What is recorded, exported over OTLP/HTTP (protobuf) in batches:

- a SERVER span per request, outermost, continuing the caller's W3C ``traceparent`` /
  ``tracestate``; named by the route template (``GET /v2alpha1/admin/issuedApiKeys/
  {key_id}``), never the raw path; attributes: method, route, scheme, status code;
- inside a request, a CLIENT span per Store method call (``store.get_by_digest``, with
  ``db.system``) and per Redis operation (``redis.mget``, ``redis.ratelimit``…).

Never recorded: paths, query strings, headers (credentials, Authorization), bodies, a
store call's arguments or a Redis command's keys and values (they hold digests), nor
exception messages (a driver's error can quote a row): a failure is its type name alone.
Store and Redis calls made outside a request (the change-log follower polls twice a
second) are not traced, nor are the health probes and ``/metrics``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.routing import BaseRoute, Match

from gateway.cache.redis_backend import RedisBackend
from gateway.http.hot import ASGIApp, Message, Receive, Scope, Send
from gateway.http.ory_keys import KEY_TAIL, key_route
from gateway.observability.metrics import Metrics
from gateway.store.base import Store
from gateway.version import VERSION

_PROPAGATOR = TraceContextTextMapPropagator()
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNTRACED = frozenset({"/health/alive", "/health/ready", "/metrics"})
# the verbs of ``…/{key_id}:<verb>`` (gateway.http.ory_keys); any other text is a caller's
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _resource() -> Resource:
    """``service.name`` is ``gateway`` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
    name it (the SDK reads them)."""
    detected = Resource.create({SERVICE_VERSION: VERSION})
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: "gateway"}))
    return detected


class Tracing:
    """The tracer of one process, its spans exported in batches through ``exporter``."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("gateway", VERSION)

    @classmethod
    def otlp(cls, endpoint: str) -> Tracing:
        """Exporting to a collector's OTLP/HTTP base URL; OTEL_EXPORTER_OTLP_HEADERS,
        _TIMEOUT, _COMPRESSION and _CERTIFICATE apply as the exporter reads them."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(OTLPSpanExporter(endpoint=traces_url(endpoint)))

    def shutdown(self) -> None:
        """Export what is pending and stop (blocking: run it off the event loop)."""
        self.provider.shutdown()

    def app(self, app: ASGIApp, hot: Iterable[tuple[str, bool]],
            routes: Sequence[BaseRoute]) -> ASGIApp:
        """``app`` behind the SERVER-span middleware. ``hot``: the plain-ASGI routes'
        ``(path, below)``; ``routes``: Starlette's, for the templates of the rest."""
        return TracingMiddleware(app, self.tracer, RouteNames(hot, routes))

    def store(self, store: Store, system: str) -> Store:
        """``store`` with a span per method call; ``system``: sqlite or postgresql."""
        return cast(Store, TracedStore(store, self.tracer, system))

    def redis(self, url: str, metrics: Metrics) -> RedisBackend:
        return TracedRedisBackend(url, metrics, tracer=self.tracer)


def _mark_failed(span: Span, exc: BaseException) -> None:
    """The failure's type alone: its message may quote what must not be exported."""
    name = type(exc).__qualname__
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, name))


def _child(tracer: Tracer, name: str, attributes: dict[str, str]
           ) -> AbstractContextManager[Span] | None:
    """A CLIENT span under the current one, or None outside a traced request."""
    if not trace.get_current_span().is_recording():
        return None
    return tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes,
                                        record_exception=False,
                                        set_status_on_exception=False)


# -- the route span ------------------------------------------------------------------------

class RouteNames:
    """A request's route template: a hot route's path, or the Starlette route it matches,
    its parameters as ``{name}``; None when no route matches."""

    def __init__(self, hot: Iterable[tuple[str, bool]], routes: Sequence[BaseRoute]) -> None:
        hot = tuple(hot)
        self._hot = frozenset(path for path, _ in hot)
        self._below = tuple((path + "/", path + "/{path}") for path, below in hot if below)
        self._routes = [(route, _PARAM.sub(r"{\1}", path)) for route in routes
                        if isinstance(path := getattr(route, "path", None), str)]

    def __call__(self, scope: Scope) -> str | None:
        path: str = scope["path"]
        if path in self._hot:
            return path
        for prefix, name in self._below:
            if path.startswith(prefix):
                return name
        for route, template in self._routes:
            if route.matches(scope)[0] is not Match.NONE:
                return _key_route(template, scope) if template.endswith(KEY_TAIL) else template
        return None


def _key_route(template: str, scope: Scope) -> str:
    """``…/{tail}`` → ``…/{key_id}``, with the verb when the path has one."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    prefix = template.removesuffix(KEY_TAIL) + "/"
    tail = raw.decode("latin-1").split("?", 1)[0].removeprefix(prefix)
    return key_route(template, tail, unknown=":{verb}")


class TracingMiddleware:
    """Outermost: one SERVER span per HTTP request, continuing the caller's trace."""

    def __init__(self, app: ASGIApp, tracer: Tracer,
                 route_of: Callable[[Scope], str | None]) -> None:
        self.app = app
        self.tracer = tracer
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        route = self.route_of(scope)
        attributes = {"http.request.method": method, "url.scheme": scope.get("scheme", "http")}
        if route is not None:
            attributes["http.route"] = route
        with self.tracer.start_as_current_span(
                f"{method} {route}" if route else method, context=_extract(scope),
                kind=SpanKind.SERVER, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            except Exception as exc:
                _mark_failed(span, exc)
                raise


def _extract(scope: Scope) -> Any:
    """The caller's trace context, from ``traceparent`` and ``tracestate`` alone."""
    carrier: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in (b"traceparent", b"tracestate"):
            key = name.decode()
            text = value.decode("latin-1")
            carrier[key] = f"{carrier[key]},{text}" if key in carrier else text
    return _PROPAGATOR.extract(carrier) if carrier else None


# -- store and Redis spans -----------------------------------------------------------------

class TracedStore:
    """A Store whose every protocol method call, inside a traced request, is a span
    ``store.<method>``: its name and ``db.system``, never its arguments."""

    def __init__(self, store: Store, tracer: Tracer, system: str) -> None:
        self._store = store
        self._tracer = tracer
        self._attributes = {"db.system": system}

    def __getattr__(self, name: str) -> Any:  # anything else a backend has
        return getattr(self._store, name)


def _traced(name: str) -> Callable[..., Awaitable[Any]]:
    span_name = f"store.{name}"

    async def method(self: TracedStore, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self._store, name)
        span = _child(self._tracer, span_name, self._attributes)
        if span is None:
            return await call(*args, **kwargs)
        with span as current:
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                _mark_failed(current, exc)
                raise

    method.__name__ = method.__qualname__ = name
    return method


STORE_METHODS = tuple(name for name, value in vars(Store).items()
                      if inspect.iscoroutinefunction(value))
for _name in STORE_METHODS:
    setattr(TracedStore, _name, _traced(_name))


class TracedRedisBackend(RedisBackend):
    """Each Redis operation inside a traced request is a span ``redis.<op>``: the operation
    alone (mget, fill, ratelimit, publish…), never a key or a value."""

    def __init__(self, url: str, metrics: Metrics, *, tracer: Tracer,
                 timeout: float = 0.25) -> None:
        super().__init__(url, metrics, timeout=timeout)
        self._tracer = tracer

    async def _call(self, op: str, coro: Any) -> Any:
        span = _child(self._tracer, f"redis.{op}",
                      {"db.system": "redis", "db.operation.name": op})
        if span is None:
            return await super()._call(op, coro)
        with span:
            return await super()._call(op, coro)

    def _failed(self, op: str, exc: BaseException) -> None:
        # within _call: the current span is this operation's (a failure is not raised)
        _mark_failed(trace.get_current_span(), exc)
        super()._failed(op, exc)
