"""Graceful drain: on SIGTERM a replica fails readiness, keeps answering for
GATEWAY_DRAIN_SECONDS with ``Connection: close`` on every response (so each keep-alive
client moves to a new connection), then shuts down gracefully, flushes usage and exits 0.

Real ``gateway serve`` processes; the clients are raw sockets, one connection each, reused
until the gateway answers ``Connection: close`` (so no client library retries a request
behind the test's back).

The clients open new connections (to the same gateway) until shortly before the drain
ends, as a load balancer told by the failing readiness or the pod's termination would:
the drain ends by closing the listener, and any TCP server's close resets a connection
the kernel has completed but the server has not accepted yet. Requests on connections
already open are sent until the process exits; those must all be answered.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import Gateway, sqlite_last_used, start_gateway

from gateway.errors import ConfigError
from gateway.settings import load_settings

VERIFY = "/v2alpha1/admin/apiKeys:verify"
ISSUED = "/v2alpha1/admin/issuedApiKeys"
DRAIN = 1.5
CLIENTS = 6
# the clients stop opening connections this long before the drain ends (see above)
NEW_CONNECTIONS_MARGIN = 0.4


def _issue(gw: Gateway) -> tuple[str, str]:
    r = httpx.post(gw.url + ISSUED, headers=gw.auth, timeout=10,
                   json={"name": "drain", "actor_id": f"actor-{secrets.token_hex(4)}"})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["secret"], body["issued_api_key"]["key_id"]


def _verify_request(gw: Gateway, secret: str) -> bytes:
    body = json.dumps({"credential": secret}).encode()
    host = gw.url.removeprefix("http://")
    return (f"POST {VERIFY} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {gw.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response ({len(buf)} bytes)")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "content-length" in headers, headers
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the response body")
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _closes(headers: dict[str, str]) -> bool:
    return "close" in headers.get("connection", "").lower()


@dataclass
class _Client:
    """One keep-alive client verifying its key in a loop."""

    address: tuple[str, int]
    request: bytes
    exited: threading.Event  # the gateway process has exited
    cutoff: list[float]  # [monotonic time after which no new connection is opened] once set
    ok: int = 0
    ok_on_reused: int = 0  # answered on a connection that had answered before
    ok_after_close: int = 0  # answered on a connection opened after a Connection: close
    closes: list[float] = field(default_factory=list)  # when a response said close
    successes: list[float] = field(default_factory=list)  # monotonic, per answered request
    last_sent_us: int = 0  # wall clock (µs) of the last answered request's send
    connections: int = 0
    failures: list[str] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # connect refused (listener closed)

    def run(self) -> None:
        sock: socket.socket | None = None
        answered_here = 0
        after_close = False
        try:
            while not self.exited.is_set():
                if sock is None:
                    if self.cutoff and time.monotonic() >= self.cutoff[0]:
                        return  # the load balancer sends new connections elsewhere now
                    try:
                        sock = socket.create_connection(self.address, timeout=15)
                    except ConnectionRefusedError:
                        self.refused.append(time.monotonic())
                        return
                    self.connections += 1
                    answered_here = 0
                alive = not self.exited.is_set()
                sent_us = time.time_ns() // 1000
                try:
                    sock.sendall(self.request)
                    status, headers, body = _read_response(sock)
                except OSError as exc:
                    if alive:
                        self.failures.append(f"no answer ({answered_here} answered on this "
                                             f"connection before): {exc!r}")
                    return
                if status != 200 or json.loads(body).get("is_valid") is not True:
                    self.failures.append(f"answered {status}: {body[:200]!r}")
                    return
                self.ok += 1
                self.successes.append(time.monotonic())
                self.last_sent_us = sent_us
                if answered_here:
                    self.ok_on_reused += 1
                if after_close:
                    self.ok_after_close += 1
                answered_here += 1
                if _closes(headers):
                    self.closes.append(time.monotonic())
                    sock.close()
                    sock = None
                    after_close = True
        finally:
            if sock is not None:
                sock.close()


def test_keep_alive_clients_lose_no_request_across_the_drain(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_DRAIN_SECONDS": str(DRAIN)})
    db = tmp_path / "gateway.db"
    exited = threading.Event()
    cutoff: list[float] = []
    try:
        keys = [_issue(gw) for _ in range(CLIENTS)]
        clients = [_Client(_address(gw), _verify_request(gw, secret), exited, cutoff)
                   for secret, _ in keys]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while min(c.ok_on_reused for c in clients) < 20:
            assert time.monotonic() < deadline, "the clients did not get going"
            assert not any(c.failures for c in clients), [c.failures for c in clients]
            time.sleep(0.02)
        assert not any(c.closes for c in clients), "Connection: close before the drain"
        assert all(c.connections == 1 for c in clients), "keep-alive connections are reused"

        term = time.monotonic()
        cutoff.append(term + DRAIN - NEW_CONNECTIONS_MARGIN)
        gw.proc.send_signal(signal.SIGTERM)
        readiness: list[tuple[float, int]] = []
        while time.monotonic() < cutoff[0]:
            status = httpx.get(gw.url + "/health/ready", timeout=5).status_code
            readiness.append((time.monotonic(), status))
            time.sleep(0.05)
        alive_after = httpx.get(gw.url + "/health/alive", timeout=5).status_code
        code = gw.proc.wait(timeout=DRAIN + 15)
        exited.set()
        for t in threads:
            t.join(10)
    finally:
        exited.set()
        gw.stop()
    logs = gw.logs()

    assert code == 0, logs
    assert "Traceback" not in logs, logs
    failures = [f for c in clients for f in c.failures]
    assert not failures, failures
    # nothing was refused while the drain lasted: the listener stays open for it
    assert all(t >= term + DRAIN for c in clients for t in c.refused), \
        [(t - term) for c in clients for t in c.refused]

    # readiness failed at once, liveness did not
    first_503 = next(t for t, status in readiness if status == 503)
    assert first_503 - term < 1.0, readiness
    assert all(status == 503 for t, status in readiness if t >= first_503), readiness
    assert alive_after == 200
    for c in clients:
        # the client went on being answered while the replica was not ready ...
        assert any(first_503 < t < term + DRAIN for t in c.successes), "no answer while draining"
        # ... was told to close its keep-alive connection, and its next connection answered
        assert c.closes and c.closes[0] > term, "no Connection: close in the drain"
        assert c.ok_after_close >= 1

    # usage of the last request of every client was flushed at the shutdown
    for client, (_, key_id) in zip(clients, keys, strict=True):
        used = sqlite_last_used(db, key_id)
        assert used is not None, "usage was not flushed"
        assert used >= client.last_sent_us - 50_000, (used, client.last_sent_us)


def _wait_listener_closed(address: tuple[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=2).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.01)
    raise AssertionError("the listener did not close")


def test_requests_arriving_as_the_drain_ends_are_answered(tmp_path: Path) -> None:
    """At the end of the drain the listener closes; a connection whose request is still
    arriving (its body, its head, or nothing yet: the client connected just before) is
    answered, with Connection: close, before the process exits."""
    gw = start_gateway(tmp_path, {"GATEWAY_DRAIN_SECONDS": "0.5"})
    address = _address(gw)
    try:
        secret, _ = _issue(gw)
        request = _verify_request(gw, secret)
        head_end = request.index(b"\r\n\r\n") + 4
        gw.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(gw.url + "/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # in the drain: three connections, each holding back part of its request
        body_pending = socket.create_connection(address, timeout=15)
        body_pending.sendall(request[:head_end + 5])
        head_pending = socket.create_connection(address, timeout=15)
        head_pending.sendall(request[:20])
        silent = socket.create_connection(address, timeout=15)
        time.sleep(0.1)  # the server has accepted them
        _wait_listener_closed(address, timeout=10)
        assert gw.proc.poll() is None, "the process exited with requests still arriving"
        body_pending.sendall(request[head_end + 5:])
        head_pending.sendall(request[20:])
        silent.sendall(request)
        for sock in (body_pending, head_pending, silent):
            with sock:
                status, headers, body = _read_response(sock)
                assert status == 200 and json.loads(body)["is_valid"] is True
                assert _closes(headers)
                assert sock.recv(1) == b""  # and the server closed the connection
        assert gw.proc.wait(timeout=15) == 0
    finally:
        gw.stop()
    assert "Traceback" not in gw.logs(), gw.logs()


def test_a_connection_that_sends_nothing_is_closed_after_the_grace(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_DRAIN_SECONDS": "0"})
    try:
        idle = socket.create_connection(_address(gw), timeout=15)
        time.sleep(0.1)
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        with idle:
            assert idle.recv(1) == b""  # closed without an answer: no request was made
        assert gw.proc.wait(timeout=15) == 0
        assert 1.5 < time.monotonic() - start < 10
    finally:
        gw.stop()


def test_without_a_drain_the_gateway_stops_at_once_and_exits_0(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"GATEWAY_DRAIN_SECONDS": "0"})
    db = tmp_path / "gateway.db"
    try:
        secret, key_id = _issue(gw)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            r = client.post(VERIFY, headers=gw.auth, json={"credential": secret})
            assert r.json()["is_valid"] is True
            assert "close" not in r.headers.get("connection", "")  # keep-alive
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=15) == 0
        assert time.monotonic() - start < 3
    finally:
        gw.stop()
    assert sqlite_last_used(db, key_id) is not None


def test_a_second_signal_ends_the_drain(tmp_path: Path) -> None:
    """SIGINT drains as SIGTERM does; a second signal stops the drain at once."""
    gw = start_gateway(tmp_path, {"GATEWAY_DRAIN_SECONDS": "60"})
    db = tmp_path / "gateway.db"
    try:
        secret, key_id = _issue(gw)
        gw.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while httpx.get(gw.url + "/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with httpx.Client(base_url=gw.url, timeout=10) as client:  # still answering
            r = client.post(VERIFY, headers=gw.auth, json={"credential": secret})
            assert r.json()["is_valid"] is True
            assert r.headers["connection"] == "close"
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=15) == 0
        assert time.monotonic() - start < 3
    finally:
        gw.stop()
    assert sqlite_last_used(db, key_id) is not None


def test_the_drain_setting() -> None:
    assert load_settings({}).drain_seconds == 5.0
    assert load_settings({"GATEWAY_DRAIN_SECONDS": "1.5"}).drain_seconds == 1.5
    assert load_settings({"GATEWAY_DRAIN_SECONDS": "0"}).drain_seconds == 0.0
    with pytest.raises(ConfigError, match="GATEWAY_DRAIN_SECONDS: must not be negative"):
        load_settings({"GATEWAY_DRAIN_SECONDS": "-1"})
    with pytest.raises(ConfigError, match="GATEWAY_DRAIN_SECONDS: expected a number"):
        load_settings({"GATEWAY_DRAIN_SECONDS": "5s"})
