"""What the reverse-proxy tests share: nginx, Envoy and Traefik in front of a real gateway.

Each proxy test renders a shipped config from deploy/ (only addresses, ports and file paths
changed), runs the real proxy binary in front of a gateway process (conftest's
``start_gateway``) and a tiny upstream that echoes the request it received as JSON, and runs
``ForwardAuthContract``: the behaviour every shipped config must have. What a client sees and
what the upstream sees are both checked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from conftest import Gateway, start_gateway, stop_process

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"

# A second loopback address: a client there is not one of the gateway's trusted proxies
# (127.0.0.1, ::1), as a real client would not be.
CLIENT_ADDRESS = "127.0.0.2"

# The identity headers the gateway asserts, and their aliases: the spellings that WSGI/CGI,
# PHP, Rack and the like read as the same header (case-insensitive; "_" or "." for "-").
IDENTITY = ("x-actor-id", "x-key-id", "x-scopes")


def _forged_spellings(name: str) -> list[str]:
    title = "-".join(p.capitalize() for p in name.split("-"))  # X-Actor-Id
    under = title.replace("-", "_")                             # X_Actor_Id
    return [title, under, name, name.upper(), under.capitalize(), title.replace("-", ".")]


FORGED_SPELLINGS = {name: _forged_spellings(name) for name in IDENTITY}


def alias_of(header: str) -> str:
    """The variable name such apps file a header under: X_Actor_Id → x_actor_id."""
    return re.sub(r"[^a-z0-9]", "_", header.lower())


# -- the binaries -----------------------------------------------------------------------------


def missing(problem: str) -> NoReturn:
    """A proxy binary is not there: skip locally, fail on CI (``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def find_binary(name: str, *extra: str) -> str | None:
    """``name`` next to this interpreter (a wheel's console script), on PATH, or in ``extra``."""
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name) or next((p for p in extra if os.access(p, os.X_OK)), None)


def render(source: Path, text: str, replacements: dict[str, str]) -> str:
    """The shipped ``text`` with each needle (which must be in it) replaced everywhere."""
    for needle, value in replacements.items():
        assert needle in text, f"{source} should contain {needle!r}"
        text = text.replace(needle, value)
    return text


# -- the upstream: echoes what the proxy sent it --------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": list(self.headers.items()),  # every line, as spelled
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


@contextmanager
def echo_upstream() -> Iterator[int]:
    """A running echo upstream on 127.0.0.1; its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# -- the proxy process -----------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    warning: re.Pattern[str]  # a log line the proxy writes for a warning (or worse)
    started: int = 0  # how much it had logged when it became ready

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def startup_warnings(self) -> list[str]:
        """The warnings it logged while starting, i.e. about its config."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.logs()[:self.started])  # Traefik colours
        return [line for line in plain.splitlines() if self.warning.search(line)]

    def stop(self) -> None:
        stop_process(self.proc)


def launch(cmd: list[str], *, port: int, output: Path, log: Path | None = None,
           warning: str, ready: Callable[[str], bool] | None = None) -> Proxy:
    """Run ``cmd`` (stdout and stderr to ``output``) until it listens on ``port`` and, if
    given, ``ready(url)`` holds. ``log``: where the proxy logs, when not ``output``."""
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    proxy = Proxy(url=f"http://127.0.0.1:{port}", proc=proc, log=log or output,
                  warning=re.compile(warning))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early:\n{proxy.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            if ready is None or ready(proxy.url):
                proxy.started = len(proxy.logs())
                return proxy
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"{cmd[0]} did not become ready:\n{proxy.logs()}")


# -- the stack: gateway + proxy + upstream ---------------------------------------------------


@dataclass
class Raw:
    """An answer to a request sent byte for byte (no client-side normalisation)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    gateway: Gateway
    proxy: Proxy

    def issue(self, actor_id: str, scopes: list[str], **extra: Any) -> tuple[str, str]:
        """Issue a key through the admin API; ``(key_id, secret)``."""
        body = {"name": "proxy-test", "actor_id": actor_id, "scopes": scopes, **extra}
        resp = httpx.post(f"{self.gateway.url}/v2alpha1/admin/issuedApiKeys", json=body,
                          headers=self.gateway.auth, timeout=10)
        assert resp.status_code == 201, resp.text
        data = resp.json()
        return data["issued_api_key"]["key_id"], data["secret"]

    def revoke(self, key_id: str) -> None:
        resp = httpx.post(
            f"{self.gateway.url}/v2alpha1/admin/issuedApiKeys/{key_id}:revoke",
            json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"}, headers=self.gateway.auth,
            timeout=10)
        assert resp.status_code == 204, resp.text

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.proxy.url}{path}", timeout=10, **kw)

    def raw(self, path: str, headers: list[tuple[str, str]], method: str = "GET") -> Raw:
        """Send ``path`` and ``headers`` exactly as given: repeated names, any spelling."""
        netloc = urlsplit(self.proxy.url).netloc
        conn = http.client.HTTPConnection(netloc, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            return Raw(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def diagnostics(self) -> str:
        return (f"\n--- proxy:\n{self.proxy.logs()[-3000:]}"
                f"\n--- gateway:\n{self.gateway.logs()[-3000:]}")

    def echo(self, resp: httpx.Response | Raw) -> dict[str, Any]:
        """The upstream's record of the proxied request (asserts the request got through)."""
        status, text = ((resp.status_code, resp.text) if isinstance(resp, httpx.Response)
                        else (resp.status, resp.body.decode("utf-8", "replace")))
        assert status == 200, f"{status} {text}{self.diagnostics()}"
        assert resp.headers.get("x-upstream") == "echo"
        echoed: dict[str, Any] = resp.json()
        return echoed


# (binary, directory, gateway port, upstream port) → the running proxy
StartProxy = Callable[[str, Path, int, int], Proxy]


@contextmanager
def forward_auth_stack(tmp: Path, start: Callable[[Path, int, int], Proxy],
                       gateway_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A gateway (with ``gateway_env`` set), an echo upstream and ``start``'s proxy in
    front of both, until exit."""
    with echo_upstream() as upstream_port:
        gateway = start_gateway(tmp, gateway_env or {})
        try:
            proxy = start(tmp, int(gateway.url.rsplit(":", 1)[1]), upstream_port)
            try:
                yield Stack(gateway=gateway, proxy=proxy)
            finally:
                proxy.stop()
        finally:
            gateway.stop()


def stack_fixture(name: str, binary: Callable[[], str], start: StartProxy,
                  gateway_env: dict[str, str] | None = None) -> Any:
    """The module-scoped ``stack`` fixture of a proxy's test module (``binary`` finds the
    proxy, or skips / fails; ``gateway_env``: the gateway's settings besides the tests')."""

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        path = binary()
        tmp = tmp_path_factory.mktemp(f"{name}-forward-auth")
        with forward_auth_stack(tmp, lambda *a: start(path, *a), gateway_env) as running:
            yield running

    return stack


def app_view(path: str) -> str:
    """The path as a typical app routes it: decoded once, slashes merged, dots resolved."""
    segments: list[str] = []
    for part in re.sub("/+", "/", unquote(path.split("?", 1)[0])).split("/")[1:]:
        if part == "..":
            if segments:
                segments.pop()
        elif part != ".":
            segments.append(part)
    return "/" + "/".join(segments)


# -- what every shipped config must do -------------------------------------------------------


class ForwardAuthContract:
    """Tests run against each proxy; a subclass ``TestX`` in the proxy's module collects
    them, and that module provides the ``stack`` fixture. The config protects every path with
    "any valid key" and /admin/ with the scope "admin"."""

    def assert_denial_body(self, resp: httpx.Response) -> None:
        """The proxy passes the gateway's JSON error through (nginx maps it: overridden)."""
        assert "error" in resp.json(), resp.text

    # -- allowed -----------------------------------------------------------------------

    @pytest.mark.parametrize("how", ["bearer", "x-api-key"])
    def test_valid_key_reaches_upstream_with_identity_headers(self, stack: Stack, unique: str,
                                                              how: str) -> None:
        key_id, secret = stack.issue(f"actor-{unique}", ["read"])
        headers = ({"Authorization": f"Bearer {secret}"} if how == "bearer"
                   else {"X-API-Key": secret})
        seen = stack.echo(stack.get("/orders/42?expand=items", headers=headers))
        assert seen["path"] == "/orders/42?expand=items"
        assert seen["headers"]["x-actor-id"] == f"actor-{unique}"
        assert seen["headers"]["x-key-id"] == key_id
        assert "read" in seen["headers"]["x-scopes"]

    def test_upstream_gets_the_verdict_not_the_secret(self, stack: Stack, unique: str) -> None:
        _, secret = stack.issue(f"actor-{unique}", ["read"])
        seen = stack.echo(stack.get("/", headers={"X-API-Key": secret,
                                                  "Authorization": f"Bearer {secret}"}))
        assert "x-api-key" not in seen["headers"]
        assert "authorization" not in seen["headers"]
        assert secret not in json.dumps(seen)

    @pytest.mark.parametrize("path", ["/orders", "/admin/users"])
    def test_client_cannot_forge_identity_headers_in_any_spelling(
            self, stack: Stack, unique: str, path: str) -> None:
        """Every spelling of every identity header, sent at once: the upstream gets exactly
        one of each, the gateway's, and nothing an app could read as another copy."""
        key_id, secret = stack.issue(f"actor-{unique}", ["read", "admin"])
        forged = [(spelling, f"forged-{i}") for spellings in FORGED_SPELLINGS.values()
                  for i, spelling in enumerate(spellings)]
        seen = stack.echo(stack.raw(path, [("X-API-Key", secret), *forged]))
        lines = seen["header_list"]
        assert not [v for _, v in lines if v.startswith("forged")], lines
        gateway = {"x-actor-id": f"actor-{unique}", "x-key-id": key_id}
        for name in IDENTITY:
            copies = [(n, v) for n, v in lines if alias_of(n) == alias_of(name)]
            assert len(copies) == 1, (name, lines)
            assert copies[0][0].lower() == name, (name, lines)  # the dash spelling only
            if name in gateway:
                assert copies[0][1] == gateway[name]
        assert not [n for n, _ in lines if "_" in n], lines

    def test_forged_scopes_do_not_survive_a_key_without_scopes(self, stack: Stack,
                                                               unique: str) -> None:
        """The gateway's X-Scopes is empty here: the client's must not fill the gap."""
        _, secret = stack.issue(f"actor-{unique}", [])
        seen = stack.echo(stack.raw("/orders", [("X-API-Key", secret), ("X-Scopes", "admin"),
                                                ("X_Scopes", "admin")]))
        assert "admin" not in json.dumps(seen["header_list"]), seen["header_list"]

    def test_request_body_and_method_reach_upstream(self, stack: Stack, unique: str) -> None:
        _, secret = stack.issue(f"actor-{unique}", ["read"])
        resp = httpx.post(f"{stack.proxy.url}/orders", content=b'{"qty": 3}',
                          headers={"X-API-Key": secret, "Content-Type": "application/json"},
                          timeout=10)
        seen = stack.echo(resp)
        assert seen["method"] == "POST"
        assert seen["body"] == '{"qty": 3}'

    def test_route_scope_is_granted_to_a_key_holding_it(self, stack: Stack,
                                                        unique: str) -> None:
        _, secret = stack.issue(f"actor-{unique}", ["read", "admin"])
        seen = stack.echo(stack.get("/admin/users", headers={"X-API-Key": secret}))
        assert seen["path"] == "/admin/users"

    # -- denied ------------------------------------------------------------------------

    def test_no_key_is_401_with_www_authenticate(self, stack: Stack) -> None:
        resp = stack.get("/orders")
        assert resp.status_code == 401, resp.text
        assert resp.headers.get("www-authenticate"), resp.headers
        assert resp.headers.get("x-upstream") is None
        self.assert_denial_body(resp)

    def test_unknown_key_is_401(self, stack: Stack) -> None:
        resp = stack.get("/orders", headers={"X-API-Key": "ory_ak_v1_" + "A" * 49})
        assert resp.status_code == 401, resp.text
        assert resp.headers.get("x-upstream") is None

    def test_revoked_key_is_401_at_once(self, stack: Stack, unique: str) -> None:
        key_id, secret = stack.issue(f"actor-{unique}", ["read"])
        headers = {"Authorization": f"Bearer {secret}"}
        stack.echo(stack.get("/orders", headers=headers))  # verdict now cached in the gateway
        stack.revoke(key_id)
        resp = stack.get("/orders", headers=headers)
        assert resp.status_code == 401, resp.text
        assert resp.headers.get("x-upstream") is None

    def test_missing_route_scope_is_403(self, stack: Stack, unique: str) -> None:
        _, secret = stack.issue(f"actor-{unique}", ["read"])
        resp = stack.get("/admin/users", headers={"X-API-Key": secret})
        assert resp.status_code == 403, resp.text
        assert resp.headers.get("x-upstream") is None
        self.assert_denial_body(resp)

    def test_client_cannot_drop_the_route_scope(self, stack: Stack, unique: str) -> None:
        """The scope comes from the proxy's config; a client's own X-Required-Scope (or
        ?scope=) does not replace it."""
        _, secret = stack.issue(f"actor-{unique}", ["read"])
        resp = stack.get("/admin/users?scope=", headers={"X-API-Key": secret,
                                                         "X-Required-Scope": ""})
        assert resp.status_code == 403, resp.text

    @pytest.mark.parametrize("path", [
        "/admin%2Fusers", "/admin%2fusers", "//admin/users", "/./admin/users",
        "/x/../admin/users", "/x/..%2Fadmin/users", "/%61dmin/users"])
    def test_path_tricks_do_not_dodge_the_route_scope(self, stack: Stack, unique: str,
                                                      path: str) -> None:
        """A spelling of /admin/… that the app would route to /admin/ either meets the
        scope check or is refused; it never reaches the app with a key lacking the scope."""
        _, secret = stack.issue(f"actor-{unique}", ["read"])
        resp = stack.raw(path, [("X-API-Key", secret)])
        if resp.status == 200 and resp.headers.get("x-upstream") == "echo":
            reached = resp.json()["path"]
            assert not app_view(reached).startswith("/admin/"), (path, reached)
        else:
            assert resp.status in (301, 302, 307, 308, 400, 403, 404), (resp.status, path)

    def test_ip_allow_list_is_checked_against_the_client_address(self, stack: Stack,
                                                                 unique: str) -> None:
        """The proxy tells the gateway the address it saw; a client-sent chain does not
        count."""
        _, outside = stack.issue(f"actor-{unique}", ["read"],
                                 ip_restriction={"allowed_cidrs": ["10.0.0.0/8"]})
        _, inside = stack.issue(f"actor-{unique}", ["read"],
                                ip_restriction={"allowed_cidrs": [f"{CLIENT_ADDRESS}/32"]})
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
        with httpx.Client(base_url=stack.proxy.url, transport=transport, timeout=10) as client:
            resp = client.get("/orders", headers={"X-API-Key": outside,
                                                  "X-Forwarded-For": "10.1.2.3"})
            assert resp.status_code == 403, resp.text
            stack.echo(client.get("/orders", headers={"X-API-Key": inside,
                                                      "X-Forwarded-For": "10.1.2.3"}))

    def test_rate_limited_key_is_429_with_retry_after(self, stack: Stack, unique: str) -> None:
        _, secret = stack.issue(f"actor-{unique}", ["read"],
                                rate_limit_policy={"quota": "2", "window": "60s"})
        statuses = [stack.get("/orders", headers={"X-API-Key": secret}) for _ in range(6)]
        codes = [r.status_code for r in statuses]
        if 429 not in codes and all(c == 200 for c in codes):
            pytest.skip("the gateway does not enforce rate_limit_policy (informational mode)")
        limited = next(r for r in statuses if r.status_code != 200)
        assert limited.status_code == 429, codes
        assert limited.headers.get("retry-after", "").isdigit(), limited.headers
        self.assert_denial_body(limited)

    # -- the config itself -------------------------------------------------------------

    def test_proxy_starts_without_warnings(self, stack: Stack) -> None:
        """Warnings at start are about the shipped config (or the proxy's defaults it
        should override): keep it clean so a new one is noticed."""
        assert stack.proxy.startup_warnings() == [], stack.proxy.logs()[:3000]


def launch_envoy(binary: str, config: str, tmp: Path, port: int, name: str = "envoy"
                 ) -> Proxy:
    """Envoy on ``config`` (written to ``tmp``/``name``.yaml; checked with
    ``--mode validate`` first), listening on ``port``; warnings in its log fail the test."""
    conf = tmp / f"{name}.yaml"
    conf.write_text(config)
    # No shared memory for hot restart: several envoys (or test runs) may share the host.
    cmd = [binary, "-c", str(conf), "--disable-hot-restart", "--concurrency", "1",
           "-l", "info"]
    check = subprocess.run([*cmd, "--mode", "validate"], capture_output=True, text=True)
    assert check.returncode == 0, f"envoy --mode validate failed:\n{check.stdout}{check.stderr}"
    return launch(cmd, port=port, output=tmp / f"{name}.log",
                  warning=r"\[(warning|error|critical)\]")
