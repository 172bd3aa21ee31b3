"""Shared fixtures: real gateway processes on SQLite and PostgreSQL, and the real servers.

When ``CI=true`` a test that needs PostgreSQL or Redis and cannot reach them fails
instead of skipping.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.crypto.digests import Digester
from gateway.crypto.secrets_format import SecretFormat
from gateway.secret import Secret

PG_ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN_TOKEN = "test-admin-token-" + "x" * 16
PEPPER = "test-pepper-0123456789abcdef"


def secret_format(pepper: str = PEPPER, prefixes: tuple[str, ...] = ("ory_ak", "ory_pk")
                  ) -> SecretFormat:
    """The issued-secret format of a gateway on ``pepper`` (its keyed checksums)."""
    return SecretFormat(prefixes, (Digester(Secret(pepper)),))


def checksum_ok(secret: str, pepper: str = PEPPER) -> bool:
    """True when ``secret`` carries a v2 checksum made under ``pepper``."""
    return secret_format(pepper).generation(secret) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally, fail on CI, when a real backing service is down."""
    if _reachable(host, port):
        return
    message = f"{name} at {host}:{port} is not reachable"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _psql(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session; dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"gw_test_{uuid.uuid4().hex[:10]}"
    _psql(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@dataclass
class Gateway:
    """A running ``gateway serve`` process."""

    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    token: str = ADMIN_TOKEN
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def built(native: Any, name: str, without: str) -> Any:
    """An optional C extension (``native``; None: not built, see setup.py): without it the
    test fails on CI (``without``: what runs in its place) and is skipped elsewhere."""
    if native is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} was not built (setup.py): {without}")
        pytest.skip(f"{name} not built")
    return native


def record_unkeyed_reads(store: Any) -> list[int]:
    """From now on, the seq of every row ``store.unkeyed_digests`` returns (the imported-
    digest follower's reads), in order."""
    read: list[int] = []
    real = store.unkeyed_digests

    async def recorded(after_seq: int = 0, limit: int = 100_000, skip: Sequence[int] = (),
                       upto_seq: int | None = None) -> list[tuple[int, str]]:
        rows: list[tuple[int, str]] = await real(after_seq, limit, skip, upto_seq)
        read.extend(seq for seq, _ in rows)
        return rows

    store.unkeyed_digests = recorded
    return read


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ``/metrics`` of a real gateway (SQLite, AUTO signing-key rotation, so the
    rotation schedule is exported too) after some traffic (``prometheus_helpers``)."""
    from prometheus_helpers import exercise  # it imports this module

    gw = start_gateway(tmp_path_factory.mktemp("gw-metrics"),
                       {"GATEWAY_SIGNING_ROTATION": "AUTO"})
    try:
        yield exercise(gw)
    finally:
        gw.stop()


def sqlite_last_used(db: Path, key_id: str) -> int | None:
    """A key's last_used_time, read from a gateway's SQLite file."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT last_used_time FROM api_keys WHERE key_id = ?",
                           (key_id,)).fetchone()
    assert row is not None
    value: int | None = row[0]
    return value


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_gateway(tmp: Path, env_overrides: dict[str, str], *, migrate: bool = False
                  ) -> Gateway:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gateway.db",
        "GATEWAY_ADMIN_TOKENS": ADMIN_TOKEN,
        "GATEWAY_PEPPER": PEPPER,
        "GATEWAY_PORT": str(port),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_LOG_LEVEL": "warning",
        # refused admin authentications are answered late (up to 5 s by default): the
        # suite sends many on purpose; tests of the delay itself set their own
        "GATEWAY_ADMIN_REFUSAL_DELAY": "0.001",
        # a stopping gateway drains for 5 s by default; tests of the drain set their own
        "GATEWAY_DRAIN_SECONDS": "0",
    })
    env.update(env_overrides)
    if migrate:
        subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], env=env, check=True,
                       capture_output=True)
    log = tmp / f"gateway-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    gw = Gateway(url=f"http://127.0.0.1:{port}", env=env, proc=proc, log=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{gw.logs()}")
        try:
            if httpx.get(f"{gw.url}/health/ready", timeout=1).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    gw.stop()
    raise RuntimeError(f"gateway did not become ready:\n{gw.logs()}")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Gateway]:
    """One running gateway per store backend, shared by the session."""
    tmp = tmp_path_factory.mktemp(f"gw-{request.param}")
    overrides: dict[str, str] = {}
    if request.param == "postgres":
        overrides["GATEWAY_DATABASE_URL"] = request.getfixturevalue("pg_database")
    gw = start_gateway(tmp, overrides, migrate=request.param == "postgres")
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def unique() -> str:
    """A per-test unique string (actor ids, request ids)."""
    return secrets.token_hex(6)


@pytest.fixture
def ory_keys(gateway: Gateway) -> Iterator[object]:
    """The official ``ory-client`` ApiKeysApi pointed at the running gateway."""
    import ory_client

    config = ory_client.Configuration(host=gateway.url, access_token=gateway.token)
    with ory_client.ApiClient(config) as client:
        yield ory_client.ApiKeysApi(client)


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """A brand-new, never-migrated PostgreSQL database for one test; dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"gw_fresh_{uuid.uuid4().hex[:10]}"
    _psql(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that configures logging in-process (``gateway.cli.main``) leaves the root
    logger as it found it: its handler would write later tests' lines (httpx's requests)
    into their captured stderr."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
