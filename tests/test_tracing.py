"""Optional OpenTelemetry tracing (gateway/observability/tracing.py).

In-process, the spans are caught by the SDK's in-memory exporter, handed to
``build_services`` in place of the OTLP one; one test runs a real gateway against a tiny
OTLP/HTTP collector. With tracing off, a child process shows that nothing of OpenTelemetry
is imported and the app, store and Redis client are the plain ones.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.crypto.digests import PREFIX
from gateway.errors import ConfigError
from gateway.observability.tracing import Tracing, traces_url
from gateway.services import Services, build_services
from gateway.settings import load_settings
from tests.conftest import ADMIN_TOKEN, PEPPER, start_gateway

VERIFY = "/v2alpha1/admin/apiKeys:verify"
ISSUED = "/v2alpha1/admin/issuedApiKeys"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"


@dataclass
class Traced:
    services: Services
    exporter: InMemorySpanExporter
    client: httpx.AsyncClient

    def spans(self) -> list[ReadableSpan]:
        assert self.services.tracing is not None
        self.services.tracing.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    async def issue(self) -> tuple[str, str, str]:
        """A new key's (secret, digest, key_id)."""
        issued = await self.services.keys.issue({"name": "k", "actor_id": "actor-1",
                                                 "scopes": ["read"]})
        return issued.secret, issued.key.digest, issued.key.key_id

    async def verify(self, secret: str, **headers: str) -> httpx.Response:
        response = await self.client.post(VERIFY, content=orjson.dumps({"credential": secret}),
                                          headers={**AUTH, **headers})
        assert response.status_code == 200
        return response


@asynccontextmanager
async def traced_gateway(tmp_path: Path, **env: str) -> AsyncIterator[Traced]:
    settings = load_settings({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                              "GATEWAY_PEPPER": PEPPER, "GATEWAY_ADMIN_TOKENS": ADMIN_TOKEN,
                              "GATEWAY_ADMIN_REFUSAL_DELAY": "0.001", **env})
    exporter = InMemorySpanExporter()
    services = build_services(settings, tracing=Tracing(exporter))
    await services.start()
    try:
        transport = httpx.ASGITransport(app=create_app(services))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Traced(services, exporter, client)
    finally:
        await services.stop()


@pytest.fixture(autouse=True)
def _default_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's resource variables unset: the service is named ``gateway``."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    async with traced_gateway(tmp_path) as gateway:
        yield gateway


def _server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.SERVER]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


def _texts(span: ReadableSpan) -> Iterator[str]:
    """Every string a span exports: its name, attributes, events, links and status."""
    yield span.name
    for attributes in (span.attributes, *(e.attributes for e in span.events),
                       *(link.attributes for link in span.links)):
        for key, value in (attributes or {}).items():
            yield key
            yield str(value)
    yield from (event.name for event in span.events)
    yield span.status.description or ""


def assert_nothing_secret(spans: list[ReadableSpan], *secrets: str) -> None:
    assert spans
    for span in spans:
        for text in _texts(span):
            for secret in secrets:
                assert secret not in text, (span.name, text)


# --- the route span, its children, and what they never hold --------------------------------

async def test_a_request_continues_the_callers_trace_and_store_spans_are_its_children(
        traced: Traced) -> None:
    secret, digest, _ = await traced.issue()
    traced.exporter.clear()
    await traced.verify(secret, traceparent=TRACEPARENT, tracestate="vendor=1")
    spans = traced.spans()
    [server] = _server_spans(spans)
    assert server.name == f"POST {VERIFY}"
    assert server.context is not None and server.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert server.parent.is_remote
    assert server.context.trace_state.get("vendor") == "1"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == VERIFY
    assert server.resource.attributes["service.name"] == "gateway"
    # the key was looked up in the store (not cached yet), under the request's span
    store = [s for s in _children(spans, server) if s.name.startswith("store.")]
    assert "store.get_by_digest" in {s.name for s in store}
    for span in store:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None and span.attributes["db.system"] == "sqlite"
        assert span.context is not None and format(span.context.trace_id, "032x") == TRACE_ID
    assert_nothing_secret(spans, secret, digest.removeprefix(PREFIX), ADMIN_TOKEN)


async def test_a_request_without_traceparent_starts_a_trace(traced: Traced) -> None:
    secret, _, _ = await traced.issue()
    traced.exporter.clear()
    await traced.verify(secret)
    await traced.verify(secret)  # from L1, by the hot path: a span all the same
    spans = _server_spans(traced.spans())
    assert [s.name for s in spans] == [f"POST {VERIFY}"] * 2
    assert all(s.parent is None for s in spans)


async def test_spans_are_named_by_route_templates_and_hold_no_credential_or_key_id(
        traced: Traced) -> None:
    secret, digest, key_id = await traced.issue()
    traced.exporter.clear()
    client = traced.client
    assert (await client.get(f"{ISSUED}/{key_id}", headers=AUTH)).status_code == 200
    assert (await client.get(f"{ISSUED}?page_size=5&filter=actor_id%3D%22actor-1%22",
                             headers=AUTH)).status_code == 200
    revoke = await client.post(f"{ISSUED}/{key_id}:revoke", headers=AUTH,
                               content=orjson.dumps({"reason": "REVOCATION_REASON_SUPERSEDED"}))
    assert revoke.status_code == 204, revoke.text
    assert (await client.post(f"{ISSUED}/{key_id}:{secret}", headers=AUTH)).status_code == 404
    assert (await client.get(f"/v2alpha1/decisions/app/{key_id}",
                             headers={"X-API-Key": secret})).status_code == 401
    assert (await client.get(f"/nowhere/{key_id}")).status_code == 404
    assert (await client.get("/health/ready")).status_code == 200  # not traced
    await traced.verify(secret, authorization=f"Bearer {ADMIN_TOKEN}")
    spans = traced.spans()
    names = [s.name for s in _server_spans(spans)]
    assert names == [f"GET {ISSUED}/{{key_id}}", f"GET {ISSUED}",
                     f"POST {ISSUED}/{{key_id}}:revoke", f"POST {ISSUED}/{{key_id}}:{{verb}}",
                     "GET /v2alpha1/decisions/{path}", "GET", f"POST {VERIFY}"]
    statuses = [s.attributes["http.response.status_code"]  # type: ignore[index]
                for s in _server_spans(spans)]
    assert statuses == [200, 200, 204, 404, 401, 404, 200]
    assert any(s.name == "store.revoke_key" for s in spans)
    assert_nothing_secret(spans, secret, digest.removeprefix(PREFIX), ADMIN_TOKEN, key_id,
                          "actor-1", "page_size")


async def test_a_redis_operation_is_a_span_under_the_request(
        tmp_path: Path, redis_url: str) -> None:
    async with traced_gateway(tmp_path, GATEWAY_REDIS_URL=redis_url) as traced:
        assert type(traced.services.redis).__name__ == "TracedRedisBackend"
        secret, digest, _ = await traced.issue()
        traced.exporter.clear()
        await traced.verify(secret, traceparent=TRACEPARENT)
        spans = traced.spans()
    [server] = _server_spans(spans)
    redis = [s for s in spans if s.name.startswith("redis.")]
    assert "redis.mget" in {s.name for s in redis}  # the L2 lookup before the store
    for span in redis:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None and span.attributes["db.system"] == "redis"
        assert span.context is not None and format(span.context.trace_id, "032x") == TRACE_ID
    assert {s.name for s in _children(spans, server)} >= {"redis.mget", "store.get_by_digest"}
    assert_nothing_secret(spans, secret, digest.removeprefix(PREFIX), ADMIN_TOKEN)


async def test_a_failing_store_call_is_marked_by_its_type_alone(traced: Traced) -> None:
    store: Any = traced.services.store
    secret, digest, _ = await traced.issue()

    async def failing(digest: str) -> None:
        raise RuntimeError(f"row {digest} is broken")

    store._store.get_by_digest = failing  # under the tracing proxy
    traced.exporter.clear()
    await traced.client.post(VERIFY, content=orjson.dumps({"credential": secret}),
                             headers=AUTH)
    spans = traced.spans()
    [failed] = [s for s in spans if s.name == "store.get_by_digest"]
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes is not None and failed.attributes["error.type"] == "RuntimeError"
    assert not failed.events  # no exception event: its message holds the digest
    assert_nothing_secret(spans, secret, digest.removeprefix(PREFIX), "is broken")


# --- off by default: nothing imported, nothing in the way ----------------------------------

_CHILD = """
import asyncio, json, sys, tempfile
env, without_otel = json.loads(sys.argv[1]), sys.argv[2] == "1"
if without_otel:  # as if the extra were not installed: any import of it fails
    sys.modules["opentelemetry"] = None
import httpx
from gateway.app import create_app
from gateway.services import build_services
from gateway.settings import load_settings

async def main(extra):
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/g.db", "GATEWAY_PEPPER": "p" * 32,
               "GATEWAY_ADMIN_TOKENS": "t" * 32, **extra}
        with_redis = build_services(load_settings(
            {**env, "GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0"}))  # built, not started
        services = build_services(load_settings(env))
        app = create_app(services)
        await services.start()
        try:
            key = await services.keys.issue({"name": "k", "actor_id": "a", "scopes": []})
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                for _ in range(2):
                    r = await c.post("/v2alpha1/admin/apiKeys:verify",
                                     headers={"Authorization": "Bearer " + "t" * 32},
                                     json={"credential": key.secret})
                    assert r.status_code == 200 and r.json()["is_valid"], r.text
        finally:
            await services.stop()
        return {"app": type(app).__name__, "store": type(services.store).__name__,
                "redis": type(with_redis.redis).__name__,
                "tracing": services.tracing is not None,
                "loaded": [m for m in TRACING if m in sys.modules]}

print(json.dumps(asyncio.run(main(env))))
"""
# what tracing loads. redis-py (8.x) itself imports opentelemetry.sdk.metrics when it is
# installed, so "opentelemetry" alone is in sys.modules whatever the setting.
TRACING = ("gateway.observability.tracing", "opentelemetry.sdk.trace",
           "opentelemetry.trace.propagation.tracecontext",
           "opentelemetry.exporter.otlp.proto.http.trace_exporter")


def _child(env: dict[str, str], *, without_otel: bool = False) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", f"TRACING = {TRACING!r}\n" + _CHILD, json.dumps(env),
         "1" if without_otel else "0"], check=True, capture_output=True, text=True, timeout=60,
        env={**os.environ, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})  # (seconds) nothing listens
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


PLAIN = {"app": "HotPath", "store": "SqliteStore", "redis": "RedisBackend", "tracing": False,
         "loaded": []}


def test_off_nothing_of_tracing_is_imported_and_the_objects_are_the_plain_ones() -> None:
    assert _child({}) == PLAIN


def test_off_the_gateway_runs_without_opentelemetry_installed() -> None:
    assert _child({}, without_otel=True) == PLAIN


def test_on_the_app_store_and_redis_client_are_traced() -> None:
    # port 9: nothing listens; the two requests' spans are dropped at shutdown, after 1 s
    on = _child({"GATEWAY_OTEL_ENDPOINT": "http://127.0.0.1:9"})
    assert on == {"app": "TracingMiddleware", "store": "TracedStore",
                  "redis": "TracedRedisBackend", "tracing": True, "loaded": list(TRACING)}


# --- the setting -------------------------------------------------------------------------

def test_the_endpoint_setting_is_validated() -> None:
    assert load_settings({}).otel_endpoint is None
    url = "http://collector:4318"
    assert load_settings({"GATEWAY_OTEL_ENDPOINT": url}).otel_endpoint == url
    with pytest.raises(ConfigError, match=r"^GATEWAY_OTEL_ENDPOINT: expected an OTLP/HTTP URL"):
        load_settings({"GATEWAY_OTEL_ENDPOINT": "collector:4317"})
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"


def test_the_endpoint_setting_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    with pytest.raises(ConfigError, match=r"^GATEWAY_OTEL_ENDPOINT: tracing needs the otel "
                                          r"extra: pip install 'gateway\[otel\]'$"):
        load_settings({"GATEWAY_OTEL_ENDPOINT": "http://collector:4318"})


# --- end to end: a real gateway exports over OTLP/HTTP -----------------------------------

class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _exported_spans(payloads: list[bytes]) -> list[tuple[str, str, dict[str, str]]]:
    """(span name, trace id, resource attributes) of every span in the OTLP payloads."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    out = []
    for payload in payloads:
        for resource_spans in ExportTraceServiceRequest.FromString(payload).resource_spans:
            resource = {a.key: a.value.string_value
                        for a in resource_spans.resource.attributes}
            out.extend((span.name, span.trace_id.hex(), resource)
                       for scope_spans in resource_spans.scope_spans
                       for span in scope_spans.spans)
    return out


def test_a_real_gateway_exports_its_spans_over_otlp_http(tmp_path: Path) -> None:
    received: list[bytes] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = start_gateway(tmp_path, {
            "GATEWAY_OTEL_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "gateway-e2e"})
        try:
            with gw.client() as client:
                listed = client.get(ISSUED, headers={**gw.auth, "traceparent": TRACEPARENT})
                assert listed.status_code == 200
            deadline = time.monotonic() + 15
            want = (f"GET {ISSUED}", TRACE_ID)
            while time.monotonic() < deadline:
                spans = _exported_spans(list(received))
                if want in {(name, trace) for name, trace, _ in spans}:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"no span {want} exported; got {spans}:\n{gw.logs()}")
            assert {r["service.name"] for _, _, r in spans} == {"gateway-e2e"}
            assert not any(name.startswith("GET /health") for name, _, _ in spans)
        finally:
            gw.stop()
    finally:
        server.shutdown()
        server.server_close()


def test_key_routes_below_a_key_are_named_by_their_template() -> None:
    from gateway.observability.tracing import _key_route

    def name(raw: bytes) -> str:
        return _key_route(f"{ISSUED}/{{tail}}", {"raw_path": raw, "path": raw.decode()})

    assert name(f"{ISSUED}/01ABC/usage?interval=hour".encode()) == f"{ISSUED}/{{key_id}}/usage"
    assert name(f"{ISSUED}/01ABC:rotate".encode()) == f"{ISSUED}/{{key_id}}:rotate"
    assert name(f"{ISSUED}/01ABC:secret".encode()) == f"{ISSUED}/{{key_id}}:{{verb}}"
    assert name(f"{ISSUED}/01ABC".encode()) == f"{ISSUED}/{{key_id}}"
