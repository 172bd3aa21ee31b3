"""nginx ``auth_request`` in front of a real gateway, configured by deploy/nginx/gateway-auth.conf.

The deploy file itself is rendered (only the two upstream addresses and the listen port are
substituted) and run by the Debian nginx binary under its own prefix, in front of a gateway
process and a tiny upstream that echoes the request it received as JSON. What a client sees
and what the upstream sees are both checked.

Skipped when nginx is not installed, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Gateway, free_port, start_gateway

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "gateway-auth.conf"
TEMPLATE_GATEWAY = "server 127.0.0.1:4470;"
TEMPLATE_UPSTREAM = "server 127.0.0.1:8080;"
TEMPLATE_LISTEN = "listen 8000;"


def _nginx_binary() -> str:
    """The nginx binary with auth_request; skip locally, fail on CI, when there is none."""
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    problem = None
    if path is None:
        problem = "nginx is not installed (Debian: apt-get install nginx-light)"
    else:
        build = subprocess.run([path, "-V"], capture_output=True, text=True).stderr
        if "--with-http_auth_request_module" not in build:
            problem = f"{path} is built without ngx_http_auth_request_module"
    if problem is None:
        assert path is not None
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


# -- the upstream: echoes what nginx sent it ------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "echo")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Nginx:
    url: str
    proc: subprocess.Popen[bytes]
    error_log: Path

    def logs(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def render_site(template: str, *, gateway_port: int, upstream_port: int, listen_port: int
                ) -> str:
    """The deploy file with only its two upstream addresses and listen port changed."""
    for needle in (TEMPLATE_GATEWAY, TEMPLATE_UPSTREAM, TEMPLATE_LISTEN):
        assert template.count(needle) == 1, f"{TEMPLATE} should contain {needle!r} once"
    return (template
            .replace(TEMPLATE_GATEWAY, f"server 127.0.0.1:{gateway_port};")
            .replace(TEMPLATE_UPSTREAM, f"server 127.0.0.1:{upstream_port};")
            .replace(TEMPLATE_LISTEN, f"listen 127.0.0.1:{listen_port};"))


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


def start_nginx(binary: str, prefix: Path, *, gateway_port: int, upstream_port: int) -> Nginx:
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
    with open(prefix / "stderr.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(url=f"http://127.0.0.1:{port}", proc=proc, error_log=error_log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited early:\n{nginx.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return nginx
        except OSError:
            time.sleep(0.05)
    nginx.stop()
    raise RuntimeError(f"nginx did not start listening:\n{nginx.logs()}")


@dataclass
class Stack:
    gateway: Gateway
    nginx: Nginx

    def issue(self, actor_id: str, scopes: list[str], **extra: Any) -> tuple[str, str]:
        """Issue a key through the admin API; ``(key_id, secret)``."""
        body = {"name": "nginx-test", "actor_id": actor_id, "scopes": scopes, **extra}
        resp = httpx.post(f"{self.gateway.url}/v2alpha1/admin/issuedApiKeys", json=body,
                          headers=self.gateway.auth, timeout=10)
        assert resp.status_code == 201, resp.text
        data = resp.json()
        return data["issued_api_key"]["key_id"], data["secret"]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.nginx.url}{path}", timeout=10, **kw)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = _nginx_binary()
    tmp = tmp_path_factory.mktemp("nginx-forward-auth")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    gateway: Gateway | None = None
    nginx: Nginx | None = None
    try:
        gateway = start_gateway(tmp, {})
        nginx = start_nginx(binary, tmp / "nginx", gateway_port=int(gateway.url.rsplit(":", 1)[1]),
                            upstream_port=upstream.server_address[1])
        yield Stack(gateway=gateway, nginx=nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        if gateway is not None:
            gateway.stop()
        upstream.shutdown()
        upstream.server_close()


def _echo(resp: httpx.Response, stack: Stack) -> dict[str, Any]:
    """The upstream's record of the proxied request (asserts the request got through)."""
    assert resp.status_code == 200, (
        f"{resp.status_code} {resp.text}\n--- nginx:\n{stack.nginx.logs()[-3000:]}"
        f"\n--- gateway:\n{stack.gateway.logs()[-3000:]}")
    assert resp.headers.get("x-upstream") == "echo"
    echoed: dict[str, Any] = resp.json()
    return echoed


# -- allowed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
def test_valid_key_reaches_upstream_with_identity_headers(stack: Stack, unique: str,
                                                          how: str) -> None:
    key_id, secret = stack.issue(f"actor-{unique}", ["read"])
    headers = ({"Authorization": f"Bearer {secret}"} if how == "bearer"
               else {"X-API-Key": secret})
    seen = _echo(stack.get("/orders/42?expand=items", headers=headers), stack)
    assert seen["path"] == "/orders/42?expand=items"
    assert seen["headers"]["x-actor-id"] == f"actor-{unique}"
    assert seen["headers"]["x-key-id"] == key_id
    assert "read" in seen["headers"]["x-scopes"]


def test_upstream_gets_the_verdict_not_the_secret(stack: Stack, unique: str) -> None:
    _, secret = stack.issue(f"actor-{unique}", ["read"])
    seen = _echo(stack.get("/", headers={"X-API-Key": secret,
                                         "Authorization": f"Bearer {secret}"}), stack)
    assert "x-api-key" not in seen["headers"]
    assert "authorization" not in seen["headers"]
    assert secret not in json.dumps(seen)


def test_client_cannot_forge_identity_headers(stack: Stack, unique: str) -> None:
    key_id, secret = stack.issue(f"actor-{unique}", ["read"])
    forged = {"X-API-Key": secret, "X-Actor-Id": "admin", "X-Key-Id": "other",
              "X-Scopes": "admin"}
    seen = _echo(stack.get("/", headers=forged), stack)
    assert seen["headers"]["x-actor-id"] == f"actor-{unique}"
    assert seen["headers"]["x-key-id"] == key_id
    assert "admin" not in seen["headers"]["x-scopes"]


def test_request_body_and_method_reach_upstream(stack: Stack, unique: str) -> None:
    _, secret = stack.issue(f"actor-{unique}", ["read"])
    resp = httpx.post(f"{stack.nginx.url}/orders", content=b'{"qty": 3}',
                      headers={"X-API-Key": secret, "Content-Type": "application/json"},
                      timeout=10)
    seen = _echo(resp, stack)
    assert seen["method"] == "POST"
    assert seen["body"] == '{"qty": 3}'


def test_location_scope_is_granted_to_a_key_holding_it(stack: Stack, unique: str) -> None:
    _, secret = stack.issue(f"actor-{unique}", ["read", "admin"])
    seen = _echo(stack.get("/admin/users", headers={"X-API-Key": secret}), stack)
    assert seen["path"] == "/admin/users"


# -- denied ----------------------------------------------------------------------------------


def test_no_key_is_401_with_www_authenticate(stack: Stack) -> None:
    resp = stack.get("/orders")
    assert resp.status_code == 401, resp.text
    assert resp.headers.get("www-authenticate"), resp.headers
    assert resp.headers.get("x-upstream") is None
    assert resp.json()["code"] == 16


def test_unknown_key_is_401(stack: Stack) -> None:
    resp = stack.get("/orders", headers={"X-API-Key": "ory_ak_v1_" + "A" * 49})
    assert resp.status_code == 401, resp.text


def test_revoked_key_is_401_at_once(stack: Stack, unique: str) -> None:
    key_id, secret = stack.issue(f"actor-{unique}", ["read"])
    headers = {"Authorization": f"Bearer {secret}"}
    _echo(stack.get("/orders", headers=headers), stack)  # verdict now cached in the gateway
    revoke = httpx.post(
        f"{stack.gateway.url}/v2alpha1/admin/issuedApiKeys/{key_id}:revoke",
        json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"}, headers=stack.gateway.auth,
        timeout=10)
    assert revoke.status_code == 204, revoke.text
    resp = stack.get("/orders", headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.headers.get("x-upstream") is None


def test_missing_location_scope_is_403(stack: Stack, unique: str) -> None:
    _, secret = stack.issue(f"actor-{unique}", ["read"])
    resp = stack.get("/admin/users", headers={"X-API-Key": secret})
    assert resp.status_code == 403, resp.text
    assert resp.headers.get("x-upstream") is None
    assert resp.json()["code"] == 7


def test_client_cannot_drop_the_location_scope(stack: Stack, unique: str) -> None:
    """The scope comes from nginx's config; a client's X-Required-Scope is overwritten."""
    _, secret = stack.issue(f"actor-{unique}", ["read"])
    resp = stack.get("/admin/users", headers={"X-API-Key": secret, "X-Required-Scope": ""})
    assert resp.status_code == 403, resp.text


def test_ip_allow_list_is_checked_against_the_client_address(stack: Stack, unique: str) -> None:
    """nginx sends X-Forwarded-For = client address; a client-sent chain does not count."""
    _, secret = stack.issue(f"actor-{unique}", ["read"],
                            ip_restriction={"allowed_cidrs": ["10.0.0.0/8"]})
    resp = stack.get("/orders", headers={"X-API-Key": secret, "X-Forwarded-For": "10.1.2.3"})
    assert resp.status_code == 403, resp.text


def test_rate_limited_key_is_429_with_retry_after(stack: Stack, unique: str) -> None:
    """auth_request would turn the gateway's 429 into a 500; the config maps it back."""
    _, secret = stack.issue(f"actor-{unique}", ["read"],
                            rate_limit_policy={"quota": "2", "window": "60s"})
    statuses = [stack.get("/orders", headers={"X-API-Key": secret}) for _ in range(6)]
    codes = [r.status_code for r in statuses]
    if 429 not in codes and all(c == 200 for c in codes):
        pytest.skip("the gateway does not enforce rate_limit_policy (informational mode)")
    limited = next(r for r in statuses if r.status_code != 200)
    assert limited.status_code == 429, codes
    assert limited.headers.get("retry-after", "").isdigit(), limited.headers
    assert limited.json()["code"] == 8
