"""Envoy ext_authz over gRPC, in-process: ``gateway.ext_authz.server`` on a port of its own,
called through a ``grpc.aio`` channel as Envoy calls it (no Envoy here: see
tests/test_envoy_grpc_ext_authz.py), its answers compared with HTTP forward auth's
(``/v2alpha1/decisions``, asked of the same services through the ASGI hot path).

Every branch: a pass (from the store, then from L1; Bearer and X-API-Key; a derived
token), no credential, an unknown, forged or revoked key, a missing scope (the route's
context extension or X-Required-Scope), an expected audience, an IP allow-list (the
address Envoy reports, believed from a trusted peer only), a spent rate limit, the store
down (fail-closed: a DENIED 503, not a gRPC error), an unexpected fault, oversized input,
client-sent identity headers, the settings and the lifespan (graceful stop).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from conftest import free_port

from gateway.errors import ConfigError, Unavailable
from gateway.ext_authz.protos.base_pb2 import HeaderValue, HeaderValueOption
from gateway.ext_authz.protos.external_auth_pb2 import (
    AttributeContext,
    CheckRequest,
    CheckResponse,
)
from gateway.ext_authz.server import (
    CHECK,
    MAX_MESSAGE,
    ExtAuthzServer,
    aliases,
    peer_address,
)
from gateway.http.decisions import DecisionsRoute
from gateway.http.hot import HotPath
from gateway.http.l1_answers import L1Answers
from gateway.http.server import HEAD_TOO_LARGE, MAX_HEADERS
from gateway.keys.model import Kind
from gateway.services import Services, build_services
from gateway.settings import load_settings

PEPPER = "p" * 32
OK, UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL = (
    0, 16, 7, 8, 14, 13)
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


@dataclass
class Answer:
    """A CheckResponse, read: allowed, the HTTP status, headers (lower-case) and body."""

    response: CheckResponse

    @property
    def allowed(self) -> bool:
        return self.response.status.code == OK

    @property
    def code(self) -> int:
        return self.response.status.code

    @property
    def status(self) -> int:
        return 200 if self.allowed else self.response.denied_response.status.code

    @property
    def headers(self) -> dict[str, str]:
        options = (self.response.ok_response.headers if self.allowed
                   else self.response.denied_response.headers)
        return {o.header.key: o.header.value for o in options}

    @property
    def body(self) -> bytes:
        return self.response.denied_response.body.encode()

    @property
    def removed(self) -> list[str]:
        return list(self.response.ok_response.headers_to_remove)


class Stack:
    """The services, the gRPC server and a channel to it, and the HTTP hot path."""

    def __init__(self, services: Services, server: ExtAuthzServer, channel: Any) -> None:
        self.services = services
        self.server = server
        self.channel = channel
        self._check = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                                          response_deserializer=CheckResponse.FromString)
        self.http = HotPath(_no_route, (DecisionsRoute(services, L1Answers(services)),))

    async def check(self, headers: Mapping[str, str] | None = None, *,
                    source: str = "203.0.113.7", path: str = "/orders/42",
                    extensions: Mapping[str, str] | None = None) -> Answer:
        return Answer(await self._check(request(headers, source=source, path=path,
                                                extensions=extensions)))

    async def decide(self, headers: Mapping[str, str] | None = None, *,
                     client: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
        """HTTP forward auth's answer to the same request (status, headers, body)."""
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/v2alpha1/decisions/orders/42",
                 "query_string": b"", "client": (client, 5000),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in
                             (headers or {}).items()]}
        await self.http(scope, receive, send)
        start, end = sent
        return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
                end.get("body", b""))

    async def issue(self, **fields: Any) -> tuple[str, str]:
        """(secret, key id) of a new key with the scope "read"."""
        issued = await self.services.keys.issue({"name": "k", "actor_id": "actor-1",
                                                 "scopes": ["read"], **fields})
        return issued.secret, issued.key.key_id


async def _no_route(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError(f"not a forward-auth path: {scope['path']}")


def request(headers: Mapping[str, str] | None = None, *, source: str = "203.0.113.7",
            path: str = "/orders/42", extensions: Mapping[str, str] | None = None
            ) -> CheckRequest:
    """A CheckRequest as Envoy makes one (lower-case header names)."""
    http = AttributeContext.HttpRequest(
        method="GET", path=path, host="app.example", scheme="http", protocol="HTTP/1.1",
        headers={k.lower(): v for k, v in (headers or {}).items()})
    attributes = AttributeContext(request=AttributeContext.Request(http=http),
                                  context_extensions=dict(extensions or {}))
    attributes.source.address.socket_address.address = source
    attributes.source.address.socket_address.port_value = 40000
    return CheckRequest(attributes=attributes)


async def start_stack(tmp: Path, env: Mapping[str, str] | None = None
                      ) -> tuple[Services, ExtAuthzServer, Any]:
    settings = load_settings({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'g.db'}",
                              "GATEWAY_PEPPER": PEPPER,
                              "GATEWAY_ADMIN_TOKENS": "test-admin-token-" + "x" * 16,
                              **(env or {})})
    services = build_services(settings)
    await services.start()
    server = ExtAuthzServer(services)
    port = await server.start("127.0.0.1", 0)
    return services, server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    services, server, channel = await start_stack(tmp_path)
    try:
        yield Stack(services, server, channel)
    finally:
        await channel.close()
        await server.stop(0)
        await services.stop()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def assert_same_refusal(stack: Stack, answer: Answer, headers: Mapping[str, str],
                              status: int) -> None:
    """A DENIED answer is HTTP forward auth's refusal: status, body and the headers the
    client gets (all but X-Cache and the security headers of every HTTP answer)."""
    assert not answer.allowed and answer.status == status, answer.response
    http_status, http_headers, http_body = await stack.decide(headers)
    assert (http_status, http_body) == (status, answer.body)
    headers = answer.headers
    assert headers.pop("content-type") == "application/json"
    shared = {k: v for k, v in http_headers.items() if k not in (
        "x-cache", "content-length", "content-type", "x-request-id", "x-content-type-options",
        "x-frame-options", "referrer-policy", "content-security-policy")}
    assert headers == shared


# -- passes ------------------------------------------------------------------------------


async def test_a_valid_key_passes_with_the_identity_headers_then_from_l1(stack: Stack) -> None:
    secret, key_id = await stack.issue(scopes=["read", "orders:write"])
    first = await stack.check(bearer(secret))
    assert first.allowed and first.code == OK, first.response
    assert first.headers == {"x-actor-id": "actor-1", "x-key-id": key_id,
                             "x-scopes": "read,orders:write"}
    assert all(o.append_action == OVERWRITE for o in first.response.ok_response.headers)
    assert first.removed == []
    hot = stack.services.metrics.hot
    before = hot.l1_valid
    second = await stack.check(bearer(secret))
    assert hot.l1_valid == before + 1  # answered from L1 alone
    assert second.response == first.response
    # the HTTP route's identity headers are the same
    status, headers, _ = await stack.decide(bearer(secret))
    assert status == 200
    assert {k: headers[k] for k in ("x-actor-id", "x-key-id", "x-scopes")} == first.headers


async def test_the_configured_header_carries_a_credential_too(stack: Stack) -> None:
    secret, key_id = await stack.issue()
    answer = await stack.check({"x-api-key": secret})
    assert answer.allowed and answer.headers["x-key-id"] == key_id
    # Authorization is read first: a wrong bearer is not rescued by a right X-API-Key
    refused = await stack.check({"authorization": "Bearer ory_ak_v2_nope", "x-api-key": secret})
    await assert_same_refusal(stack, refused, {"authorization": "Bearer ory_ak_v2_nope",
                                               "x-api-key": secret}, 401)


async def test_a_derived_token_passes_with_its_own_actor_and_scopes(stack: Stack) -> None:
    secret, key_id = await stack.issue(scopes=["read", "write"])
    token = await stack.services.deriver.derive({
        "credential": secret, "algorithm": "TOKEN_ALGORITHM_JWT", "ttl": "300s",
        "scopes": ["read"]})
    answer = await stack.check(bearer(token["token"]["token"]))
    assert answer.allowed, answer.response
    assert answer.headers == {"x-actor-id": "actor-1", "x-key-id": key_id, "x-scopes": "read"}


# -- refusals ----------------------------------------------------------------------------


async def test_no_credential_is_401_as_over_http(stack: Stack) -> None:
    answer = await stack.check({"accept": "*/*"})
    assert answer.code == UNAUTHENTICATED
    assert answer.headers["www-authenticate"] == 'Bearer realm="gateway"'
    await assert_same_refusal(stack, answer, {"accept": "*/*"}, 401)
    assert orjson.loads(answer.body) == {"error": "credential required"}


@pytest.mark.parametrize("credential", ["unknown", "forged", "malformed"])
async def test_a_credential_that_does_not_pass_is_401_invalid_token(stack: Stack,
                                                                     credential: str) -> None:
    secret, _ = await stack.issue()
    presented = {"unknown": "sk_live_" + "z" * 30,
                 "forged": secret[:-1] + ("A" if secret[-1] != "A" else "B"),
                 "malformed": "é" * 10}[credential]
    answer = await stack.check(bearer(presented))
    assert answer.code == UNAUTHENTICATED
    assert answer.headers["www-authenticate"] == 'Bearer realm="gateway", error="invalid_token"'
    await assert_same_refusal(stack, answer, bearer(presented), 401)


async def test_a_revoked_key_is_401_at_once_even_when_it_was_cached(stack: Stack) -> None:
    secret, key_id = await stack.issue()
    assert (await stack.check(bearer(secret))).allowed
    assert (await stack.check(bearer(secret))).allowed  # from L1
    await stack.services.keys.revoke([Kind.ISSUED], key_id,
                                     {"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
    answer = await stack.check(bearer(secret))
    await assert_same_refusal(stack, answer, bearer(secret), 401)


async def test_a_missing_scope_is_403_from_the_route_or_the_header(stack: Stack) -> None:
    secret, _ = await stack.issue(scopes=["read"])
    by_route = await stack.check(bearer(secret), extensions={"required_scope": "admin"})
    assert by_route.code == PERMISSION_DENIED
    await assert_same_refusal(stack, by_route, {**bearer(secret), "x-required-scope": "admin"},
                              403)
    assert orjson.loads(by_route.body)["error"] == "scope_missing"
    by_header = await stack.check({**bearer(secret), "x-required-scope": "read admin"})
    assert by_header.status == 403
    # a client's own (empty) X-Required-Scope cannot drop the route's scope
    assert (await stack.check({**bearer(secret), "x-required-scope": ""},
                              extensions={"required_scope": "admin"})).status == 403
    # scopes the key has pass, from either place, in any separator
    assert (await stack.check(bearer(secret), extensions={"required_scope": "read"})).allowed
    assert (await stack.check({**bearer(secret), "x-required-scope": "read,read"})).allowed


async def test_an_expected_audience_comes_from_the_route_only(stack: Stack) -> None:
    secret, _ = await stack.issue()
    answer = await stack.check(bearer(secret), extensions={"expected_audience": "billing"})
    await assert_same_refusal(stack, answer,
                              {**bearer(secret), "x-expected-audience": "billing"}, 403)
    assert orjson.loads(answer.body)["error"] == "audience_mismatch"
    # a client-sent X-Expected-Audience is the client's: not read
    assert (await stack.check({**bearer(secret), "x-expected-audience": "billing"})).allowed


async def test_an_ip_allow_list_is_checked_against_the_address_envoy_reports(
        stack: Stack) -> None:
    secret, _ = await stack.issue(ip_restriction={"allowed_cidrs": ["203.0.113.0/24"]})
    # the channel connects from 127.0.0.1, a trusted proxy by default: Envoy's report counts
    assert (await stack.check(bearer(secret), source="203.0.113.9")).allowed
    outside = await stack.check(bearer(secret), source="198.51.100.1")
    assert outside.status == 403 and orjson.loads(outside.body)["error"] == "ip_not_allowed"
    # a client-sent X-Forwarded-For does not move the address Envoy saw
    assert (await stack.check({**bearer(secret), "x-forwarded-for": "203.0.113.9"},
                              source="198.51.100.1")).status == 403


def test_the_client_address_is_believed_from_trusted_peers_only(stack: Stack) -> None:
    service = stack.server.service
    attributes = request(source="198.51.100.1").attributes
    find = service._client_ip
    assert find(attributes, {}, "ipv4:127.0.0.1:5000") == "198.51.100.1"
    assert find(attributes, {}, "ipv6:%5B::1%5D:5000") == "198.51.100.1"
    # any other peer is the client itself, whatever it reports
    assert find(attributes, {}, "ipv4:10.9.8.7:5000") == "10.9.8.7"
    assert find(attributes, {"x-forwarded-for": "203.0.113.1"}, "ipv4:10.9.8.7:1") == "10.9.8.7"
    # the reported address is a trusted proxy itself (a balancer before Envoy): its chain
    # counts, from the right, as over HTTP
    behind = request(source="127.0.0.1").attributes
    assert find(behind, {"x-forwarded-for": "192.0.2.1, 203.0.113.5"},
                "ipv4:127.0.0.1:1") == "203.0.113.5"
    assert find(behind, {"x-real-ip": "203.0.113.6"}, "ipv4:127.0.0.1:1") == "203.0.113.6"
    assert find(AttributeContext(), {}, "ipv4:127.0.0.1:1") == "127.0.0.1"  # no report
    assert find(attributes, {}, "unix:/tmp/socket") is None


def test_peer_addresses_are_read_from_grpc_peer_strings() -> None:
    assert peer_address("ipv4:10.0.0.1:5000") == "10.0.0.1"
    assert peer_address("ipv6:[2001:db8::1]:443") == "2001:db8::1"
    assert peer_address("ipv6:%5B::1%5D:5000") == "::1"
    assert peer_address("ipv6:[::ffff:127.0.0.1]:5000") == "127.0.0.1"
    assert peer_address("ipv6:[::ffff:7f00:1]:5000") == "::ffff:7f00:1"
    assert peer_address("unix:/run/gw.sock") is None
    assert peer_address("") is None


async def test_a_spent_rate_limit_is_429_with_retry_after(stack: Stack) -> None:
    secret, _ = await stack.issue(rate_limit_policy={"quota": "2", "window": "3600s"})
    answers = [await stack.check(bearer(secret)) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    limited = answers[2]
    assert limited.code == RESOURCE_EXHAUSTED
    assert limited.headers["retry-after"].isdigit()
    assert limited.headers["ratelimit-policy"] == '"key";q=2;w=3600'
    await assert_same_refusal(stack, limited, bearer(secret), 429)
    assert orjson.loads(limited.body)["error"] == "rate_limited"


async def test_the_store_down_is_a_denied_503_not_a_grpc_error(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail-closed whatever Envoy's failure_mode_allow says: the call succeeds, and its
    answer is DENIED 503 (status UNAVAILABLE) with HTTP forward auth's body."""
    cached, _ = await stack.issue()
    assert (await stack.check(bearer(cached))).allowed  # now in L1
    uncached, _ = await stack.issue()

    async def down(*args: Any, **kw: Any) -> Any:
        raise Unavailable("the key store is unavailable")

    monkeypatch.setattr(stack.services.store, "get_by_digest", down)
    answer = await stack.check(bearer(uncached))
    assert answer.code == UNAVAILABLE
    await assert_same_refusal(stack, answer, bearer(uncached), 503)
    assert orjson.loads(answer.body)["error"] == "unavailable"
    assert (await stack.check(bearer(cached))).allowed  # a cached key still answers


async def test_an_unexpected_fault_is_a_denied_500(stack: Stack,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(stack.services.verifier, "verify", broken)
    secret, _ = await stack.issue()
    answer = await stack.check(bearer(secret))
    assert (answer.code, answer.status) == (INTERNAL, 500)
    assert orjson.loads(answer.body)["message"] == "internal error"


# -- bounds ------------------------------------------------------------------------------


async def test_too_many_headers_are_refused_as_over_http(stack: Stack) -> None:
    secret, _ = await stack.issue()
    many = {**bearer(secret), **{f"x-h{i}": "v" for i in range(MAX_HEADERS)}}
    answer = await stack.check(many)
    assert answer.status == 431 and answer.body == HEAD_TOO_LARGE
    fine = {**bearer(secret), **{f"x-h{i}": "v" for i in range(MAX_HEADERS - 1)}}
    assert (await stack.check(fine)).allowed


async def test_headers_over_the_head_limit_are_431_and_a_larger_message_is_refused(
        stack: Stack) -> None:
    secret, _ = await stack.issue()
    large = await stack.check({**bearer(secret), "x-big": "a" * (64 * 1024)})
    assert large.status == 431 and large.body == HEAD_TOO_LARGE
    assert (await stack.check({**bearer(secret), "x-big": "a" * (60 * 1024)})).allowed
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.check({**bearer(secret), "x-big": "a" * MAX_MESSAGE})
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# -- identity headers the client sent -----------------------------------------------------


async def test_client_sent_spellings_of_the_identity_headers_are_removed(stack: Stack) -> None:
    secret, key_id = await stack.issue()
    forged = {"x-actor-id": "admin", "x_actor_id": "admin", "x.key.id": "k", "x_scopes": "*",
              "x-actor-ids": "not one", "x_other": "kept"}
    answer = await stack.check({**bearer(secret), **forged})
    assert answer.allowed
    # the names themselves are overwritten (Envoy removes after it sets): not removed
    assert answer.headers["x-actor-id"] == "actor-1" and answer.headers["x-key-id"] == key_id
    assert answer.removed == ["x.key.id", "x_actor_id", "x_scopes"]
    assert aliases({"x~scopes": "c", "x-actor-id": "b", "X_Actor_Id": "a"}) == (
        "X_Actor_Id", "x~scopes")


async def test_raw_header_maps_are_read_like_the_header_map(stack: Stack) -> None:
    """Envoy's encode_raw_headers sends header_map instead of headers."""
    secret, key_id = await stack.issue()
    check = request()
    check.attributes.request.http.header_map.headers.extend([
        HeaderValue(key="authorization", raw_value=f"Bearer {secret}".encode()),
        HeaderValue(key="x_actor_id", raw_value=b"admin")])
    answer = Answer(await stack._check(check))
    assert answer.allowed and answer.headers["x-key-id"] == key_id
    assert answer.removed == ["x_actor_id"]


# -- metrics, settings, lifespan ---------------------------------------------------------


async def test_checks_are_timed_by_status(stack: Stack) -> None:
    secret, _ = await stack.issue()
    await stack.check(bearer(secret))
    await stack.check({})
    by_status = stack.services.metrics.hot.answered["grpc_check"].by_status
    assert sum(by_status[200].counts) == 1 and sum(by_status[401].counts) == 1
    from prometheus_client import generate_latest

    text = generate_latest(stack.services.metrics.registry).decode()
    assert 'gateway_request_duration_seconds_count{route="grpc_check",status="401"} 1.0' in text


@pytest.mark.parametrize(("env", "message"), [
    ({"GATEWAY_GRPC_PORT": "0"}, "GATEWAY_GRPC_PORT: must be between 1 and 65535"),
    ({"GATEWAY_GRPC_PORT": "x"}, "GATEWAY_GRPC_PORT: expected a number, got 'x'"),
    ({"GATEWAY_GRPC_PORT": "4470"}, "GATEWAY_GRPC_PORT: must differ from GATEWAY_PORT"),
])
def test_grpc_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env)
    assert str(refused.value) == message


def test_grpc_is_off_unless_configured() -> None:
    settings = load_settings({})
    assert settings.grpc_port is None and settings.grpc_host is None
    on = load_settings({"GATEWAY_GRPC_PORT": "4471", "GATEWAY_GRPC_HOST": "0.0.0.0"})
    assert (on.grpc_port, on.grpc_host) == (4471, "0.0.0.0")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_the_lifespan_starts_and_stops_the_grpc_server(tmp_path: Path) -> None:
    from gateway.app import create_starlette_app

    port = free_port()
    settings = load_settings({"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
                              "GATEWAY_PEPPER": PEPPER, "GATEWAY_GRPC_PORT": str(port),
                              "GATEWAY_ADMIN_TOKENS": "test-admin-token-" + "x" * 16})
    services = build_services(settings)
    app = create_starlette_app(services)
    assert not _listening(port)
    async with app.router.lifespan_context(app):
        issued = await services.keys.issue({"name": "k", "actor_id": "a"})
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                                        response_deserializer=CheckResponse.FromString)
            answer = Answer(await check(request(bearer(issued.secret))))
            assert answer.allowed
    assert not _listening(port)


async def test_a_check_in_flight_finishes_during_the_graceful_stop(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    secret, _ = await stack.issue()
    verify = stack.services.verifier.verify
    started = asyncio.Event()

    async def slow(*args: Any, **kw: Any) -> Any:
        started.set()
        await asyncio.sleep(0.3)
        return await verify(*args, **kw)

    monkeypatch.setattr(stack.services.verifier, "verify", slow)
    pending = asyncio.ensure_future(stack.check(bearer(secret)))
    await started.wait()
    await stack.server.stop(grace=5)
    assert (await pending).allowed
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # and none is taken after
        await stack.check(bearer(secret))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_the_credential_header_is_the_configured_one(tmp_path: Path) -> None:
    services, server, channel = await start_stack(
        tmp_path, {"GATEWAY_CREDENTIAL_HEADER": "X-Custom-Key"})
    try:
        custom = Stack(services, server, channel)
        secret, key_id = await custom.issue()
        assert (await custom.check({"x-custom-key": secret})).headers["x-key-id"] == key_id
        await assert_same_refusal(custom, await custom.check({"x-api-key": secret}),
                                  {"x-api-key": secret}, 401)
    finally:
        await channel.close()
        await server.stop(0)
        await services.stop()


def test_a_grpc_port_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """``gateway serve`` checks the gRPC port before serving: a port in use is one line
    naming the setting (exit 2), not the lifespan's traceback."""
    import os
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/gateway.db",
               "GATEWAY_PEPPER": PEPPER, "GATEWAY_ADMIN_TOKENS": "t" * 32,
               "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(free_port()),
               "GATEWAY_GRPC_PORT": str(port)}
        run = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"gateway: GATEWAY_GRPC_PORT: cannot listen on 127.0.0.1:{port}: "), run.stderr
    assert "Traceback" not in run.stderr
