"""Helpers for the hot-path tests: admin calls over HTTP, polling, metrics, fault injection.

Plain functions and classes (fixtures live in the test modules); the gateway processes
come from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PEPPER, PG_ADMIN_DSN, Gateway, free_port

from gateway.crypto.digests import Digester
from gateway.secret import Secret

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
DECISIONS = "/v2alpha1/decisions"
ISSUED = "/v2alpha1/admin/issuedApiKeys"
IMPORTED = "/v2alpha1/admin/importedApiKeys"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_local = threading.local()


def http() -> httpx.Client:
    """This thread's shared client (a new httpx.Client costs ~25 ms: its SSL context)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=10)
    return client


def issue(gw: Gateway, **fields: Any) -> tuple[str, dict[str, Any]]:
    """(secret, IssuedApiKey) of a new issued key."""
    fields.setdefault("name", "hot-path")
    fields.setdefault("actor_id", f"actor-{secrets.token_hex(4)}")
    r = http().post(gw.url + ISSUED, headers=gw.auth, json=fields)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["secret"], body["issued_api_key"]


def import_key(gw: Gateway, raw: str | None = None, **fields: Any) -> tuple[str, dict[str, Any]]:
    """(raw key, ImportedApiKey) of a new imported key."""
    raw = raw or f"sk_live_{secrets.token_hex(20)}"
    fields.setdefault("name", "imported")
    fields.setdefault("actor_id", f"actor-{secrets.token_hex(4)}")
    r = http().post(gw.url + IMPORTED, headers=gw.auth, json={"raw_key": raw, **fields})
    assert r.status_code == 201, r.text
    return raw, r.json()


def revoke(gw: Gateway, key_id: str, kind: str = "issued") -> None:
    base = ISSUED if kind == "issued" else IMPORTED
    r = http().post(f"{gw.url}{base}/{key_id}:revoke", headers=gw.auth,
                   json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
    assert r.status_code == 204, r.text


def verify(gw: Gateway, credential: str, *, headers: dict[str, str] | None = None,
           client: httpx.Client | None = None, **body: Any) -> httpx.Response:
    payload = {"credential": credential, **body}
    hdrs = {**gw.auth, **(headers or {})}
    if client is not None:
        return client.post(VERIFY, headers=hdrs, json=payload)
    return http().post(gw.url + VERIFY, headers=hdrs, json=payload)


def batch(gw: Gateway, credentials: list[str], *, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return http().post(gw.url + BATCH_VERIFY, headers={**gw.auth, **(headers or {})},
                      json={"requests": [{"credential": c} for c in credentials]})


def decide(gw: Gateway, credential: str | None = None, *, path: str = "",
           method: str = "GET", headers: dict[str, str] | None = None,
           **kwargs: Any) -> httpx.Response:
    hdrs = dict(headers or {})
    if credential is not None:
        hdrs.setdefault("Authorization", f"Bearer {credential}")
    return http().request(method, gw.url + DECISIONS + path, headers=hdrs, timeout=10,
                         **kwargs)


def forge(secret: str, position: int = -10) -> str:
    """The secret with one character changed (its checksum no longer matches)."""
    chars = list(secret)
    old = chars[position]
    chars[position] = BASE62[(BASE62.index(old) + 1) % 62] if old in BASE62 else "x"
    return "".join(chars)


def digest_hex(credential: str) -> str:
    """The hex of the gateway's peppered digest of ``credential`` (test pepper)."""
    return Digester(Secret(PEPPER)).digest(credential).split(":", 1)[1]


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total


def scrape(gw: Gateway) -> str:
    r = http().get(gw.url + "/metrics")
    assert r.status_code == 200
    return r.text


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0,
               interval: float = 0.05, message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}")
        time.sleep(interval)


def avoid_window_edge(window_s: int, margin_s: float = 5.0) -> None:
    """Fixed rate-limit windows are aligned to the epoch: start a test that counts
    requests well inside one window, not just before it rolls over."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.1)


def psql(sql: str, dsn: str = PG_ADMIN_DSN) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


# -- a private redis-server ------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a port of its own, which a test may kill and restart."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _accepts(self.port), timeout=10, message="redis-server to listen")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TcpProxy:
    """A TCP relay to ``upstream`` that can be partitioned: every open connection is cut
    and new ones are closed at once, while the server behind it keeps its data."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.partitioned = False
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        if self.partitioned:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.partitioned:
                        break
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()
                    self._writers.discard(w)

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def partition(self) -> None:
        def cut() -> None:
            self.partitioned = True
            for w in list(self._writers):
                w.close()
            self._writers.clear()

        self._call(cut)

    def heal(self) -> None:
        self._call(lambda: setattr(self, "partitioned", False))

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def close(self) -> None:
        self.partition()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def running(gateways: list[Gateway]) -> Iterator[list[Gateway]]:
    try:
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()
