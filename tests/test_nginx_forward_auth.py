"""nginx ``auth_request`` in front of a real gateway, configured by deploy/nginx/gateway-auth.conf.

The deploy file itself is rendered (only the two upstream addresses and the listen port are
substituted) and run by the Debian nginx binary under its own prefix, in front of a gateway
process and a tiny upstream that echoes the request it received as JSON. What a client sees
and what the upstream sees are both checked (``proxy_helpers.ForwardAuthContract``, plus the
nginx-only mapping of the gateway's answers below).

Skipped when nginx is not installed, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import httpx
import proxy_helpers as proxies
from conftest import free_port

TEMPLATE = proxies.DEPLOY / "nginx" / "gateway-auth.conf"


def _nginx_binary() -> str:
    """The nginx binary with auth_request; skip locally, fail on CI, when there is none."""
    path = proxies.find_binary("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
    if path is None:
        proxies.missing("nginx is not installed (Debian: apt-get install nginx-light)")
    build = subprocess.run([path, "-V"], capture_output=True, text=True).stderr
    if "--with-http_auth_request_module" not in build:
        proxies.missing(f"{path} is built without ngx_http_auth_request_module")
    return path


def render_site(template: str, *, gateway_port: int, upstream_port: int, listen_port: int
                ) -> str:
    """The deploy file with only its two upstream addresses and listen port changed."""
    for needle in ("server 127.0.0.1:4470;", "server 127.0.0.1:8080;", "listen 8000;"):
        assert template.count(needle) == 1, f"{TEMPLATE} should contain {needle!r} once"
    return proxies.render(TEMPLATE, template, {
        "server 127.0.0.1:4470;": f"server 127.0.0.1:{gateway_port};",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "listen 8000;": f"listen 127.0.0.1:{listen_port};",
    })


def main_conf(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf keeping every path (pid, logs, temp files) under ``prefix``."""
    # As root, nginx would run its workers as `nobody`, who cannot enter pytest's 0700 temp
    # directories; keep them as the current user instead. (Non-root: no `user` directive.)
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    temp = prefix / "temp"
    return f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site};
}}
"""


def start_nginx(binary: str, tmp: Path, gateway_port: int, upstream_port: int
                ) -> proxies.Proxy:
    prefix = tmp / "nginx"
    port = free_port()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    site = prefix / "gateway-auth.conf"
    site.write_text(render_site(TEMPLATE.read_text(), gateway_port=gateway_port,
                                upstream_port=upstream_port, listen_port=port))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, site))
    error_log = prefix / "error.log"
    cmd = [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", str(error_log)]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
    assert "[warn]" not in check.stderr, check.stderr
    return proxies.launch(cmd, port=port, output=prefix / "stderr.log", log=error_log,
                          warning=r"\[(warn|error|crit|alert|emerg)\]")


stack = proxies.stack_fixture("nginx", _nginx_binary, start_nginx)


class TestNginx(proxies.ForwardAuthContract):
    # auth_request only knows 2xx/401/403 and replaces the gateway's body: the config
    # answers with its own JSON in the gateway's error shape (gRPC codes).
    CODES = {401: 16, 403: 7, 429: 8}

    def assert_denial_body(self, resp: httpx.Response) -> None:
        assert resp.json()["code"] == self.CODES[resp.status_code], resp.text
