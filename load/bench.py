"""One-run benchmark of the gateway's hot paths against the HTTP floor, driven by wrk.

    .venv/bin/python load/bench.py [--duration 10 --connections 64 --threads N --only ID,...]

Starts, in one run: the floor (load/floor.py, a bare ASGI app on the gateway's uvicorn
settings); a gateway on SQLite + Redis; a second one with L1 off (GATEWAY_L1_TTL=0, so
cached answers come from Redis); a third on a fresh PostgreSQL database that the script
creates, migrates and drops. Seeds keys through the admin API, checks every scenario's
answer once by hand (valid, and served from the cache level the row claims), then runs
wrk (short warm-up, then the measured run with --latency) and prints a table. Results
also go to load/results/<UTC timestamp>.json.

Rows live in SCENARIOS: a name, the server it runs against, and a function building the
one request wrk repeats. A row whose build raises Unsupported is reported as skipped, so
rows for features that have not landed yet (derived JWT / macaroon verify) can stay in
the table. A row may also run a second wrk beside the measured one (an attack or a flood,
``Scenario.beside``) and count the store reads and Redis commands of its run
(``Scenario.probe``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx

LOAD = Path(__file__).resolve().parent
ROOT = LOAD.parent
LUA = LOAD / "request.lua"
ATTACK_LUA = LOAD / "admin_attack.lua"     # a new random wrong admin token per request
CREDENTIALS_LUA = LOAD / "credentials.lua"  # the next credential of a file per request
GRPC_LOAD = LOAD / "grpc_load.py"  # the gRPC rows' load, run in wrk's place (HttpRequest.driver)
RESULTS = LOAD / "results"

VERIFY = "/v2alpha1/admin/apiKeys:verify"
BATCH_VERIFY = "/v2alpha1/admin/apiKeys:batchVerify"
DERIVE = "/v2alpha1/admin/apiKeys:derive"
DECISIONS = "/v2alpha1/decisions"
ISSUE = "/v2alpha1/admin/issuedApiKeys"
BATCH_SIZE = 100
ATTACKERS = 16           # connections (and client addresses) of the admin-token attack
FLOOD_KEYS = 200_000     # distinct forged (and malformed) credentials of the flood rows
FLOOD_REDIS_DB = 13      # Redis db of the flood rows' gateway (its commands are counted)
WORKERS = 2              # processes of the workers rows (gateway serve --workers, the floor's)
STALL_KEYS = 200_000     # imported keys of the usage-stall row's working set
STALL_BATCH = 1_000      # items per importedApiKeys:batchCreate
STALL_CONNECTIONS = 32   # wrk -c of the usage-stall rows
STALL_MIN_S = 12         # their shortest measured run: two usage flushes (every 5 s) and more
STALL_SPREAD = 10.0      # their target: p99 ≤ this x p50
STALL_L1_TTL = 3_600     # L1 TTL of the stall gateway: the cached row's working set stays in
                         # L1 for the whole bench (at 10 s, a pass over 200,000 keys would
                         # outlast it and every verify would find its entry expired)
STALL_SAMPLE = 100       # keys of the working set checked by hand to answer from L1
IMPORTED = "/v2alpha1/admin/importedApiKeys"
BESIDE_LEAD_S = 1        # a second wrk starts this long before the measured one
PROBE_SETTLE_S = 0.5     # quiet time before a probe starts (a refresh-ahead of the row
                         # before it, triggered by its last hits, is not this row's work)


class Unsupported(Exception):
    """The gateway under test cannot run this row (a route or feature is missing)."""


class BenchError(Exception):
    """The harness itself failed (a server did not start, a check did not hold)."""


# -- child processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    token: str = ""
    secrets: list[str] = field(default_factory=list)
    redis_url: str = ""
    grpc_port: int = 0  # GATEWAY_GRPC_PORT (the gRPC rows' servers)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def workdir(self) -> Path:
        return self.log.parent

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn restricting a child to ``cpus`` (the harness runs no threads)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class Processes:
    """Owns every child process; ``stop_all`` ends them all (also on error or signal)."""

    def __init__(self, workdir: Path, server_cpus: set[int] | None = None) -> None:
        self.workdir = workdir
        self.server_cpus = server_cpus
        self.servers: list[Server] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], *, port: int,
              ready_path: str, token: str = "", timeout: float = 30) -> Server:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=pinned(self.server_cpus))
        server = Server(name, f"http://127.0.0.1:{port}", proc, log, token)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not server.alive():
                raise BenchError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                    return server
            time.sleep(0.1)
        raise BenchError(f"{name} did not become ready in {timeout:.0f}s:\n{server.log_tail()}")

    def stop_all(self) -> None:
        for server in self.servers:
            if server.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGTERM)
        for server in self.servers:
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
        self.servers.clear()


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# -- PostgreSQL scratch database --------------------------------------------------------------


def _pg(admin_dsn: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped afterwards (even on error)."""
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    _pg(admin_dsn, f"CREATE DATABASE {name}")
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _pg(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    # HTTP status -> responses, from the "bench-status <code> <count>" lines a script's
    # done() prints (admin_attack.lua); empty for scripts that do not count
    statuses: dict[int, int] = field(default_factory=dict)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str) -> WrkResult:
    """Read requests/s, the --latency distribution's 50% and 99%, and the error lines."""
    latency = {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in re.finditer(
        r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if rps is None or total is None or set(latency) != {"50", "99"}:
        raise BenchError(f"cannot read wrk output (was --latency given?):\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    statuses: dict[int, int] = {}
    for m in re.finditer(r"^bench-status (\d+) (\d+)$", text, re.MULTILINE):
        statuses[int(m[1])] = statuses.get(int(m[1]), 0) + int(m[2])
    return WrkResult(
        requests_per_s=float(rps[1]), p50_ms=latency["50"], p99_ms=latency["99"],
        requests=int(total[1]), non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        statuses=statuses)


@dataclass(frozen=True)
class Load:
    duration: int
    connections: int
    threads: int
    warmup: int
    rounds: int = 1
    wrk_cpus: tuple[int, ...] = ()


def wrk_command(wrk: str, url: str, request: HttpRequest, workdir: Path, tag: str, *,
                connections: int, threads: int, seconds: int) -> tuple[list[str], dict[str, str]]:
    """wrk's command line and environment for ``request``: the method, body and headers go
    to the Lua script through files (secrets never appear on a command line)."""
    env = {**os.environ, "BENCH_METHOD": request.method, "BENCH_BODY_FILE": "",
           "BENCH_HEADERS_FILE": "", "BENCH_THREADS": str(threads), **request.script_env}
    if request.body is not None:
        body = workdir / f"{tag}.body"
        body.write_bytes(request.body)
        env["BENCH_BODY_FILE"] = str(body)
    if request.headers:
        headers = workdir / f"{tag}.headers"
        headers.write_text("".join(f"{k}: {v}\n" for k, v in request.headers.items()))
        env["BENCH_HEADERS_FILE"] = str(headers)
    cmd = [*([sys.executable, str(request.driver)] if request.driver else [wrk]),
           "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
           "--timeout", "5s", "--latency", "-s", str(request.script), url + request.path]
    return cmd, env


def run_wrk(wrk: str, url: str, request: HttpRequest, load: Load, workdir: Path, tag: str,
            *, duration: int | None = None) -> WrkResult:
    seconds = duration or load.duration
    cmd, env = wrk_command(wrk, url, request, workdir, tag, connections=load.connections,
                           threads=load.threads, seconds=seconds)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=pinned(set(load.wrk_cpus)))
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


class BesideWrk:
    """A second wrk running beside the measured one (an attack or a flood): started
    ``BESIDE_LEAD_S`` before it, for the measured run's duration plus twice the lead, so it
    covers the whole measured run; ``result`` waits for it and reads its summary."""

    def __init__(self, wrk: str, url: str, request: HttpRequest, load: Load, workdir: Path,
                 tag: str, connections: int) -> None:
        self.seconds = load.duration + 2 * BESIDE_LEAD_S
        cmd, env = wrk_command(wrk, url, request, workdir, tag, connections=connections,
                               threads=1, seconds=self.seconds)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, preexec_fn=pinned(set(load.wrk_cpus)))
        time.sleep(BESIDE_LEAD_S)

    def result(self) -> WrkResult:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        if self.proc.returncode != 0:
            raise BenchError(f"wrk (beside) failed ({self.proc.returncode}): {err or out}")
        return parse_wrk(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# -- requests and scenarios -------------------------------------------------------------------

Check = Callable[[httpx.Response], str | None]


@dataclass(frozen=True)
class HttpRequest:
    """The one request wrk repeats, and what its answer must look like (None = fine)."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Check = lambda resp: None
    # the wrk script, and what it reads besides BENCH_METHOD/BODY_FILE/HEADERS_FILE;
    # ``body`` and ``headers`` are then also the one request ``check_once`` sends by hand
    script: Path = LUA
    script_env: dict[str, str] = field(default_factory=dict)
    # a Python script run in wrk's place, with wrk's arguments, printing wrk's summary
    # (load/grpc_load.py); ``check_once`` still sends the request above over HTTP
    driver: Path | None = None


@dataclass(frozen=True)
class Target:
    ratio: float
    baseline: str                 # a scenario id
    per_credential: bool = False  # compare credentials/s instead of requests/s

    def describe(self) -> str:
        unit = " creds/s" if self.per_credential else ""
        return f"≥{self.ratio:g}x{unit} {self.baseline}"


@dataclass(frozen=True)
class Beside:
    """A second wrk on the row's server, running through the whole measured run (an attack,
    a flood): its rate and status mix are reported; its non-2xx answers are expected."""

    title: str
    build: Callable[[Server], HttpRequest]
    connections: int | None = None  # None: --connections


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    server: str                   # key of SERVERS
    build: Callable[[Server], HttpRequest]
    credentials: int = 1          # credentials verified per request
    target: Target | None = None
    default: bool = True          # run without --only
    beside: Beside | None = None  # a second wrk beside the measured one
    # count store reads and Redis commands over the row's runs; True = the target is 0
    probe: bool = False
    probe_zero: bool = False
    requires: tuple[str, ...] = ()  # other rows that run whenever this one does
    # measured only next to the rows it is the baseline of, never in a slot of its own
    baseline_only: bool = False
    connections: int | None = None  # wrk -c of the row (None: --connections)
    min_duration: int = 0           # shortest measured run, whatever --duration says
    # a latency target instead of a ratio to a baseline: p99 ≤ this x p50 (usage-stall)
    max_p99_over_p50: float | None = None


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def expect_valid(resp: httpx.Response) -> str | None:
    body = _json(resp)
    if resp.status_code != 200 or not isinstance(body, dict):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    if body.get("is_valid") is not True:
        return f"not valid: {body.get('error_code')} {body.get('error_message')}"
    return None


def expect_verdict(cache: set[str]) -> Check:
    def check(resp: httpx.Response) -> str | None:
        problem = expect_valid(resp)
        if problem is not None:
            return problem
        if resp.headers.get("x-cache") not in cache:
            return f"X-Cache {resp.headers.get('x-cache')!r}, expected one of {sorted(cache)}"
        return None
    return check


def _verify(server: Server, credential: str, cache: set[str],
            extra: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest("POST", VERIFY, json.dumps({"credential": credential}).encode(),
                       {**server.auth, **(extra or {})}, expect_verdict(cache))


def floor_request(server: Server) -> HttpRequest:
    body = json.dumps({"credential": "ory_ak_v1_" + "x" * 49}).encode()

    def check(resp: httpx.Response) -> str | None:
        return None if resp.status_code == 200 else f"HTTP {resp.status_code}"
    return HttpRequest("POST", VERIFY, body, {"Authorization": "Bearer floor"}, check)


def floor_get_request(server: Server) -> HttpRequest:
    """The floor for forward-auth: a GET with a credential header and no body."""
    def check(resp: httpx.Response) -> str | None:
        return None if resp.status_code == 200 else f"HTTP {resp.status_code}"
    return HttpRequest("GET", DECISIONS, None, {"X-API-Key": "ory_ak_v1_" + "x" * 49}, check)


def verify_cached(server: Server) -> HttpRequest:
    return _verify(server, server.secrets[0], {"L1"})


def verify_cached_any_worker(server: Server) -> HttpRequest:
    """Cached verify on a gateway of several workers: each has its own L1, so the answer
    checked by hand may be a worker's first (from L2), then L1 once warmed."""
    return _verify(server, server.secrets[0], {"L1", "L2", "STORE"})


def verify_from_redis(server: Server) -> HttpRequest:
    return _verify(server, server.secrets[0], {"L2"})


def verify_no_cache(server: Server) -> HttpRequest:
    return _verify(server, server.secrets[0], {"BYPASS", "STORE", "MISS"},
                   {"Cache-Control": "no-cache"})


def batch_cached(server: Server) -> HttpRequest:
    creds = server.secrets[:BATCH_SIZE]
    if len(creds) < BATCH_SIZE:
        raise BenchError(f"{server.name} has {len(creds)} seeded keys, need {BATCH_SIZE}")
    body = json.dumps({"requests": [{"credential": c} for c in creds]}).encode()

    def check(resp: httpx.Response) -> str | None:
        data = _json(resp)
        if resp.status_code != 200 or not isinstance(data, dict):
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        results = data.get("results") or []
        valid = sum(1 for r in results if r.get("is_valid") is True)
        if valid != BATCH_SIZE:
            return f"{valid}/{BATCH_SIZE} valid"
        if resp.headers.get("x-cache") != f"L1={BATCH_SIZE}":
            return f"X-Cache {resp.headers.get('x-cache')!r}, expected 'L1={BATCH_SIZE}'"
        return None
    return HttpRequest("POST", BATCH_VERIFY, body, dict(server.auth), check)


def forward_auth(server: Server) -> HttpRequest:
    def check(resp: httpx.Response) -> str | None:
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        if not resp.headers.get("x-actor-id"):
            return "no X-Actor-Id in the answer"
        if resp.headers.get("x-cache") != "L1":
            return f"X-Cache {resp.headers.get('x-cache')!r}, expected 'L1'"
        return None
    return HttpRequest("GET", DECISIONS, None, {"X-API-Key": server.secrets[0]}, check)


def grpc_once(server: Server, headers: dict[str, str]) -> None:
    """One gRPC Check by hand (load/grpc_load.py): it must pass with X-Actor-Id."""
    if str(LOAD) not in sys.path:
        sys.path.insert(0, str(LOAD))
    try:
        from grpc_load import check_once as grpc_check_once
    except ImportError as exc:
        raise Unsupported(f"gRPC rows need the grpc extra: {exc}") from exc
    allowed, status, answer = grpc_check_once(f"127.0.0.1:{server.grpc_port}", headers)
    if not allowed or not answer.get("x-actor-id"):
        raise BenchError(f"gRPC Check on {server.name}: allowed={allowed}, status {status}, "
                         f"headers {sorted(answer)}")


def grpc_floor_request(server: Server) -> HttpRequest:
    """The floor for grpc-check: the same load generator against a bare grpc.aio Check."""
    grpc_once(server, {"X-API-Key": "ory_ak_v1_" + "x" * 49})
    return dataclasses.replace(floor_get_request(server), driver=GRPC_LOAD, script_env={
        "BENCH_GRPC_TARGET": f"127.0.0.1:{server.grpc_port}"})


def grpc_check(server: Server) -> HttpRequest:
    """Envoy's ext_authz Check over gRPC of a cached key. Checked once by hand over gRPC
    here, and before and after every run as forward auth over HTTP: the same key, answered
    from the same L1."""
    grpc_once(server, {"X-API-Key": server.secrets[0]})
    return dataclasses.replace(forward_auth(server), driver=GRPC_LOAD, script_env={
        "BENCH_GRPC_TARGET": f"127.0.0.1:{server.grpc_port}"})


def admin_list(server: Server) -> HttpRequest:
    """Harness smoke row (not run by default): a plain Starlette admin route."""
    def check(resp: httpx.Response) -> str | None:
        return None if resp.status_code == 200 else f"HTTP {resp.status_code}"
    return HttpRequest("GET", f"{ISSUE}?page_size=1", None, dict(server.auth), check)


def derived_token_verify(algorithm: str) -> Callable[[Server], HttpRequest]:
    """Hook for derived-token rows: derive one token from a seeded key, then verify it."""
    def build(server: Server) -> HttpRequest:
        resp = httpx.post(server.url + DERIVE, headers=server.auth, timeout=10, json={
            "credential": server.secrets[0], "algorithm": algorithm, "ttl": "1h"})
        if resp.status_code != 200:
            raise Unsupported(f":derive answered {resp.status_code}")
        token = (_json(resp) or {}).get("token", {}).get("token")
        if not isinstance(token, str):
            raise Unsupported(":derive returned no token.token")
        # The signature is checked in memory; the parent key comes from L1.
        return _verify(server, token, {"L1", "NONE"})
    return build


# -- the attack and flood rows (issue 12) ----------------------------------------------


def admin_attack(server: Server) -> HttpRequest:
    """A verify with a wrong admin token; admin_attack.lua sends a new random one (43
    urlsafe characters, not gwa_-shaped: every one is an argon2 guess) per request."""
    def check(resp: httpx.Response) -> str | None:
        return (None if resp.status_code in (401, 429)
                else f"a wrong admin token got HTTP {resp.status_code}, expected 401 or 429")
    body = json.dumps({"credential": server.secrets[0]}).encode()
    return HttpRequest("POST", VERIFY, body,
                       {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}, check,
                       script=ATTACK_LUA, script_env={"BENCH_ATTACKERS": str(ATTACKERS)})


@functools.cache
def forged_keys(count: int, prefix: str = "ory_ak") -> tuple[str, ...]:
    """``count`` distinct well-formed v2 secrets with our prefix whose checksum the gateway
    did not make: made by a SecretFormat under another (random) pepper."""
    from gateway.crypto.digests import Digester
    from gateway.crypto.secrets_format import SecretFormat
    from gateway.secret import Secret

    fmt = SecretFormat((prefix,), (Digester(Secret(secrets.token_hex(32))),))
    keys: set[str] = set()
    while len(keys) < count:
        keys.add(fmt.new_secret(prefix))
    return tuple(sorted(keys))


_BASE62 = bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123))
_TO_BASE62 = bytes(_BASE62[b % 62] for b in range(256))


def _random_base62(count: int, length: int) -> list[str]:
    """``count`` distinct random base62 strings of ``length`` characters."""
    out: set[str] = set()
    while len(out) < count:
        raw = secrets.token_bytes((count - len(out)) * length).translate(_TO_BASE62)
        out.update(raw[i:i + length].decode() for i in range(0, len(raw), length))
    return sorted(out)[:count]


@functools.cache
def malformed_keys(count: int, prefix: str = "ory_ak") -> tuple[str, ...]:
    """``count`` distinct strings with our v2 prefix and length, but a ``-`` amid the 51
    base62 characters: the shape check refuses them, before the checksum and any lookup."""
    return tuple(f"{prefix}_v2_{r[:25]}-{r[25:]}" for r in _random_base62(count, 50))


@functools.cache
def junk_strings(count: int) -> tuple[str, ...]:
    """``count`` distinct "x" + 60 base62: as long as a forged key, in no format of ours.
    The gateway looks such a credential up (an imported key may be any string)."""
    return tuple("x" + r for r in _random_base62(count, 60))


def expect_refused(error_code: str) -> Check:
    def check(resp: httpx.Response) -> str | None:
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body, dict):
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        if body.get("is_valid") is not False or body.get("error_code") != error_code:
            return f"expected {error_code}, got {body}"
        return None
    return check


def credential_list(server: Server, name: str, credentials: tuple[str, ...],
                    check: Check) -> HttpRequest:
    """Verify requests that go through ``credentials`` (credentials.lua), one a request."""
    path = server.workdir / f"{server.name}-{name}.credentials"
    if not path.exists():
        path.write_text("".join(c + "\n" for c in credentials))
    return HttpRequest("POST", VERIFY, json.dumps({"credential": credentials[0]}).encode(),
                       dict(server.auth), check, script=CREDENTIALS_LUA,
                       script_env={"BENCH_CREDENTIALS_FILE": str(path)})


def forged_flood(server: Server) -> HttpRequest:
    return credential_list(server, "forged", forged_keys(FLOOD_KEYS),
                           expect_refused("VERIFICATION_ERROR_NOT_FOUND"))


def malformed_flood(server: Server) -> HttpRequest:
    return credential_list(server, "malformed", malformed_keys(FLOOD_KEYS),
                           expect_refused("VERIFICATION_ERROR_NOT_FOUND"))


def junk_flood(server: Server) -> HttpRequest:
    return credential_list(server, "junk", junk_strings(FLOOD_KEYS),
                           expect_refused("VERIFICATION_ERROR_NOT_FOUND"))


def cached_key_list(server: Server) -> HttpRequest:
    """Cached verify sent by the flood's own client (credentials.lua, a one-line list), so
    the flood and its baseline pay the same client-side cost per request."""
    return credential_list(server, "cached", (server.secrets[0],), expect_verdict({"L1"}))


def import_keys(server: Server, count: int, batch: int = STALL_BATCH) -> tuple[str, ...]:
    """``count`` imported keys (``sk_bench_<n>_<random>``), created through
    importedApiKeys:batchCreate ``batch`` at a time; returns their raw keys."""
    keys = tuple(f"sk_bench_{i}_{r}" for i, r in enumerate(_random_base62(count, 24)))
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=120) as client:
        for start in range(0, count, batch):
            chunk = keys[start:start + batch]
            resp = client.post(f"{IMPORTED}:batchCreate", json={"requests": [
                {"raw_key": key, "name": f"stall-{start + i}", "actor_id": "bench-stall"}
                for i, key in enumerate(chunk)]})
            body = _json(resp)
            if (resp.status_code != 200 or not isinstance(body, dict)
                    or body.get("success_count") != len(chunk)):
                raise BenchError(f"batchCreate on {server.name} (items {start}-"
                                 f"{start + len(chunk) - 1}): HTTP {resp.status_code} "
                                 f"{resp.text[:200]}")
    return keys


def stall_keys(server: Server) -> tuple[str, ...]:
    """The stall gateway's working set: ``STALL_KEYS`` imported keys, imported on first use
    and kept in ``server.secrets`` (the stall gateway is not seeded otherwise)."""
    if not server.secrets:
        started = time.monotonic()
        server.secrets.extend(import_keys(server, STALL_KEYS))
        print(f"bench:   {len(server.secrets):,} keys imported in "
              f"{time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return tuple(server.secrets)


def batch_verify(client: httpx.Client, keys: tuple[str, ...] | list[str]) -> str | None:
    """One batchVerify of ``keys``: None when every one is valid, else what is wrong; the
    answer's X-Cache (``L1=100``, ``STORE=100``…) is returned as ``cache:<value>``."""
    resp = client.post(BATCH_VERIFY, json={"requests": [{"credential": k} for k in keys]})
    data = _json(resp)
    if resp.status_code != 200 or not isinstance(data, dict):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    valid = sum(1 for r in data.get("results") or [] if r.get("is_valid") is True)
    if valid != len(keys):
        return f"{valid}/{len(keys)} valid"
    return f"cache:{resp.headers.get('x-cache')}"


def usage_stall_cached(server: Server) -> HttpRequest:
    """Verify over the working set with every key in L1: a pass over all of it first
    (batchVerify, ``BATCH_SIZE`` keys a request), then wrk goes through it, one key a
    request; meanwhile the gateway flushes last_used_time of every key used in the last
    5 s (tens of thousands at this rate). The check holds a sample of the working set to
    answering from L1, before and after every run."""
    keys = stall_keys(server)
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
        for start in range(0, len(keys), BATCH_SIZE):
            outcome = batch_verify(client, keys[start:start + BATCH_SIZE])
            if outcome is None or not outcome.startswith("cache:"):
                raise BenchError(f"warming the stall working set: {outcome}")
    print(f"bench:   {len(keys):,} keys put in L1 in {time.monotonic() - started:.1f}s",
          file=sys.stderr, flush=True)
    sample = keys[::max(1, len(keys) // STALL_SAMPLE)][:STALL_SAMPLE]
    one_key = expect_verdict({"L1"})

    def check(resp: httpx.Response) -> str | None:
        problem = one_key(resp)
        if problem is not None:
            return problem
        with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
            outcome = batch_verify(client, sample)
        if outcome != f"cache:L1={len(sample)}":
            return f"the working set is not in L1: a sample of {len(sample)} got {outcome}"
        return None
    return credential_list(server, "stall", keys, check)


def usage_stall(server: Server) -> HttpRequest:
    """Verify over the same working set with ``Cache-Control: no-cache``: every verify is
    a store read (and refills L1), however fast the run goes and whatever ran before it;
    meanwhile the usage flushes run as in ``usage_stall_cached``."""
    request = credential_list(server, "stall", stall_keys(server), expect_verdict({"BYPASS"}))
    return dataclasses.replace(request, headers={**request.headers,
                                                 "Cache-Control": "no-cache"})


def spread_verdict(p50_ms: float, p99_ms: float, limit: float) -> tuple[float, bool]:
    """p99 ÷ p50, and whether it is at most ``limit`` (a p50 of 0 cannot be judged)."""
    value = p99_ms / p50_ms if p50_ms > 0 else float("inf")
    return value, value <= limit


FLOOR_ID = "floor"
SCENARIOS: list[Scenario] = [
    Scenario(FLOOR_ID, "HTTP floor, POST + body (bare ASGI)", "floor", floor_request),
    Scenario("floor-get", "HTTP floor, GET (bare ASGI)", "floor", floor_get_request),
    Scenario("verify-cached", "verify, cached key (L1)", "sqlite", verify_cached,
             target=Target(0.8, FLOOR_ID)),
    Scenario("verify-l2", "verify, L1 off (from Redis)", "l1off", verify_from_redis,
             target=Target(0.5, FLOOR_ID)),
    Scenario("batch-cached", f"batchVerify x{BATCH_SIZE}, cached", "sqlite", batch_cached,
             credentials=BATCH_SIZE, target=Target(20, "verify-cached", per_credential=True)),
    Scenario("forward-auth", "forward-auth GET, cached (X-API-Key)", "sqlite", forward_auth,
             target=Target(0.8, "floor-get")),
    # Issue 15: Envoy ext_authz over gRPC (GATEWAY_GRPC_PORT), load/grpc_load.py in wrk's
    # place against both: the ratio is the gateway's own work per Check
    Scenario("grpc-floor", "gRPC floor, Check (bare grpc.aio)", "grpc-floor",
             grpc_floor_request, baseline_only=True),
    Scenario("grpc-check", "gRPC ext_authz Check, cached (X-API-Key)", "grpc", grpc_check,
             target=Target(0.8, "grpc-floor")),
    Scenario("verify-nocache-sqlite", "verify no-cache, SQLite", "sqlite", verify_no_cache),
    Scenario("verify-nocache-pg", "verify no-cache, PostgreSQL", "postgres", verify_no_cache),
    # Derived tokens: skipped (with the reason) until :derive answers.
    Scenario("verify-jwt", "verify derived JWT", "sqlite",
             derived_token_verify("TOKEN_ALGORITHM_JWT")),
    Scenario("verify-macaroon", "verify derived macaroon", "sqlite",
             derived_token_verify("TOKEN_ALGORITHM_MACAROON")),
    # Issue 12: a wrong-admin-token attack beside cached verify (argon2 budget, backoff)
    Scenario("admin-attack-base", "verify cached, prod admin tokens, no attack", "argon2",
             verify_cached, baseline_only=True),
    Scenario("admin-attack", f"verify cached beside {ATTACKERS} admin-token attackers",
             "argon2", verify_cached, beside=Beside("attackers", admin_attack, ATTACKERS),
             target=Target(0.8, "admin-attack-base")),
    # Issue 12: forged keys (our prefix and format, a checksum we did not make)
    Scenario("forged-flood-base", "verify cached, via credentials.lua", "flood",
             cached_key_list, baseline_only=True),
    Scenario("forged-flood", f"verify {FLOOD_KEYS:,} forged keys (flood)", "flood",
             forged_flood, target=Target(0.8, "forged-flood-base"), probe=True,
             probe_zero=True, requires=("forged-flood-legit", "forged-flood-junk")),
    Scenario("forged-flood-legit-base", "verify cached beside a malformed-key flood", "flood",
             verify_cached, beside=Beside("malformed-key flood", malformed_flood),
             baseline_only=True, probe=True),
    Scenario("forged-flood-legit", "verify cached beside the forged flood", "flood",
             verify_cached, beside=Beside("forged flood", forged_flood),
             target=Target(0.8, "forged-flood-legit-base"), probe=True),
    # No target: shows what a flood of strings in no format of ours costs (lookups)
    Scenario("forged-flood-junk", 'verify cached beside an "x"+random flood', "flood",
             verify_cached, beside=Beside('"x"+random flood', junk_flood), probe=True),
    # Issue 16: no periodic stall (usage flushes) over a 200,000-key working set on SQLite,
    # with every verify answered from L1, and with every verify a store read
    Scenario("usage-stall-cached", f"verify {STALL_KEYS:,} imported keys, all in L1, SQLite, "
             f"{STALL_CONNECTIONS} clients", "stall", usage_stall_cached,
             connections=STALL_CONNECTIONS, min_duration=STALL_MIN_S,
             max_p99_over_p50=STALL_SPREAD),
    Scenario("usage-stall", f"verify {STALL_KEYS:,} imported keys, no-cache (store reads), "
             f"SQLite, {STALL_CONNECTIONS} clients", "stall", usage_stall,
             connections=STALL_CONNECTIONS, min_duration=STALL_MIN_S,
             max_p99_over_p50=STALL_SPREAD),
    # Issue 13: every core. N workers against a floor of N workers (uvicorn's supervisor)
    Scenario("floor-workers", f"HTTP floor, {WORKERS} workers", "floor-workers",
             floor_request, baseline_only=True),
    Scenario("verify-cached-workers", f"verify, cached key, {WORKERS} workers (with Redis)",
             "workers", verify_cached_any_worker, target=Target(0.8, "floor-workers")),
    # Harness smoke test only: --only admin-list
    Scenario("admin-list", "admin list (Starlette route)", "sqlite", admin_list, default=False),
]


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    redis_url: str
    pg_admin_dsn: str
    seed: int
    flood_redis_db: int = FLOOD_REDIS_DB


def gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("gateway")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def production_admin_tokens() -> tuple[str, str]:
    """``(token, GATEWAY_ADMIN_TOKENS)`` as documented for production: the verifier of a
    generated gwa_ token (the token is what the bench sends) and an argon2id hash with the
    production parameters, so a wrong token that is not gwa_-shaped is an argon2 guess."""
    from gateway.crypto.admin_tokens import hash_token, new_token

    token, verifier = new_token()
    return token, f"{verifier},{hash_token(secrets.token_urlsafe(16), 'default')}"


def gateway_env(extra: dict[str, str], *, production_admin: bool = False
                ) -> tuple[dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if production_admin:
        token, admin_tokens = production_admin_tokens()
    else:
        token = admin_tokens = "bench-" + secrets.token_urlsafe(24)
    env.update({"GATEWAY_ADMIN_TOKENS": admin_tokens, "GATEWAY_PEPPER": secrets.token_hex(32),
                "GATEWAY_LOG_LEVEL": "warning", **extra})
    return env, token


def migrate(env: dict[str, str]) -> None:
    """``gateway migrate`` with ``env`` (a PostgreSQL store is not migrated on open)."""
    out = subprocess.run([*gateway_command(), "migrate"], env=env, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise BenchError(f"gateway migrate failed: {out.stderr or out.stdout}")


def with_db(redis_url: str, db: int) -> str:
    """``redis_url`` with its database number replaced by ``db``."""
    parts = urlsplit(redis_url)
    return parts._replace(path=f"/{db}").geturl()


def redis_db(redis_url: str) -> int:
    path = urlsplit(redis_url).path.strip("/")
    return int(path) if path else 0


def seed(server: Server, count: int) -> None:
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=10) as client:
        for i in range(count):
            resp = client.post(ISSUE, json={"name": f"bench-{i}", "actor_id": "bench-actor",
                                            "scopes": ["read"]})
            if resp.status_code != 201:
                raise BenchError(f"issuing a key on {server.name}: {resp.status_code} "
                                 f"{resp.text[:200]}")
            server.secrets.append(resp.json()["secret"])


class Bench:
    def __init__(self, procs: Processes, stack: contextlib.ExitStack, options: Options) -> None:
        self.procs = procs
        self.stack = stack
        self.options = options
        self.servers: dict[str, Server] = {}
        self.unavailable: dict[str, str] = {}

    def server(self, name: str) -> Server:
        """Start ``name`` on first use; a server that cannot start skips its rows."""
        if name in self.unavailable:
            raise Unsupported(self.unavailable[name])
        if name not in self.servers:
            try:
                self.servers[name] = self._start(name)
            except (BenchError, Unsupported, OSError) as exc:
                self.unavailable[name] = f"{name} unavailable: {exc}"
                raise Unsupported(self.unavailable[name]) from exc
        return self.servers[name]

    def _start(self, name: str) -> Server:
        port = free_port()
        workdir = self.procs.workdir
        if name in ("floor", "floor-workers"):
            workers = WORKERS if name == "floor-workers" else 1
            return self.procs.start(name, [sys.executable, str(LOAD / "floor.py"),
                                           "--port", str(port), "--workers", str(workers)],
                                    dict(os.environ), port=port, ready_path="/")
        if name == "grpc-floor":
            grpc_port = free_port()
            server = self.procs.start(name, [sys.executable, str(LOAD / "grpc_floor.py"),
                                             "--port", str(port), "--grpc-port", str(grpc_port)],
                                      dict(os.environ), port=port, ready_path="/")
            server.grpc_port = grpc_port
            return server
        if name == "stall":  # SQLite only, no Redis; L1 holds the whole working set
            (workdir / name).mkdir(exist_ok=True)
            env, token = gateway_env({
                "GATEWAY_DATABASE_URL": f"sqlite:///{workdir / name / 'gateway.db'}",
                "GATEWAY_L1_SIZE": str(STALL_KEYS + STALL_KEYS // 4),
                "GATEWAY_L1_TTL": str(STALL_L1_TTL)})
            return self.procs.start(name, [*gateway_command(), "serve", "--host", "127.0.0.1",
                                           "--port", str(port)],
                                    env, port=port, ready_path="/health/ready", token=token)
        if not reachable(self.options.redis_url, 6379):
            raise Unsupported(f"Redis at {self.options.redis_url} is not reachable")
        extra = {"GATEWAY_REDIS_URL": self.options.redis_url}
        if name in ("sqlite", "l1off", "argon2", "flood", "workers", "grpc"):
            (workdir / name).mkdir(exist_ok=True)
            extra["GATEWAY_DATABASE_URL"] = f"sqlite:///{workdir / name / 'gateway.db'}"
            if name == "grpc":  # the "sqlite" server and Envoy ext_authz over gRPC
                extra["GATEWAY_GRPC_PORT"] = str(free_port())
            if name == "workers":
                extra["GATEWAY_WORKERS"] = str(WORKERS)
            if name == "l1off":
                extra["GATEWAY_L1_TTL"] = "0"
            if name == "flood":  # a db of its own: the Redis commands of its rows are counted
                extra["GATEWAY_REDIS_URL"] = with_db(self.options.redis_url,
                                                     self.options.flood_redis_db)
        elif name == "postgres":
            if not reachable(self.options.pg_admin_dsn, 5432):
                raise Unsupported(f"PostgreSQL at {self.options.pg_admin_dsn} is not reachable")
            extra["GATEWAY_DATABASE_URL"] = self.stack.enter_context(
                scratch_database(self.options.pg_admin_dsn))
            # The stack unwinds last-in first-out: stop the servers before the drop.
            self.stack.callback(self.procs.stop_all)
        else:
            raise BenchError(f"unknown server {name!r}")
        # argon2, flood: GATEWAY_ADMIN_TOKENS as documented for production
        env, token = gateway_env(extra, production_admin=name in ("argon2", "flood"))
        if name == "postgres":
            migrate(env)
        server = self.procs.start(name, [*gateway_command(), "serve", "--host", "127.0.0.1",
                                         "--port", str(port)],
                                  env, port=port, ready_path="/health/ready", token=token)
        server.redis_url = extra["GATEWAY_REDIS_URL"]
        server.grpc_port = int(extra.get("GATEWAY_GRPC_PORT", 0))
        seed(server, BATCH_SIZE if name == "sqlite" else self.options.seed)
        return server


# -- one row ----------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    title: str
    server: str
    status: str = "ok"            # ok | failed | skipped
    note: str = ""
    requests_per_s: float | None = None   # median over rounds
    p50_ms: float | None = None           # median over rounds
    p99_ms: float | None = None           # median over rounds
    requests: int | None = None           # total over rounds
    rounds_requests_per_s: list[float] = field(default_factory=list)
    credentials_per_request: int = 1
    credentials_per_s: float | None = None
    vs_floor: float | None = None
    target: str | None = None
    target_goal: float | None = None      # the ratio the target asks for
    target_value: float | None = None     # median of target_rounds when there are rounds
    target_met: bool | None = None
    target_rounds: list[float] = field(default_factory=list)  # the ratio of each round
    # req/s of the target's baseline measured next to this row, one per round
    paired_baseline_rps: list[float] = field(default_factory=list)
    # the second wrk (Scenario.beside): what it is, its req/s per round, its answers by
    # HTTP status (summed over rounds; only scripts that count them report them)
    beside: str = ""
    beside_requests_per_s: list[float] = field(default_factory=list)
    beside_requests: int = 0
    beside_statuses: dict[str, int] = field(default_factory=dict)
    # Scenario.probe: counts over the row's runs (summed over rounds), see PROBES
    probe: dict[str, int] = field(default_factory=dict)
    # the non-zero parts of the probe's counts: /metrics samples by label set, and Redis
    # commands by name ("redis EVALSHA")
    probe_detail: dict[str, int] = field(default_factory=dict)
    probe_met: bool | None = None         # Scenario.probe_zero: every ZERO_PROBES count is 0
    # Scenario.max_p99_over_p50: p99 ÷ p50 of each round (the target is at most, not at least)
    rounds_p99_over_p50: list[float] = field(default_factory=list)
    target_at_most: bool = False


def check_once(server: Server, request: HttpRequest, *, attempts: int = 3) -> None:
    """Send the request by hand; the last of ``attempts`` must pass the check (the first
    ones warm the caches)."""
    problem: str | None = None
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(attempts):
            resp = client.request(request.method, request.path, content=request.body,
                                  headers={**request.headers, **(
                                      {"Content-Type": "application/json"}
                                      if request.body is not None else {})})
            problem = request.check(resp)
    if problem:
        raise BenchError(problem)


# -- store reads and Redis commands of a run (Scenario.probe) ----------------------------

# probe count -> the /metrics samples (any labels) whose sum it is
PROBES: dict[str, tuple[str, ...]] = {
    # KeyCache._from_store: every store read of the verify path (also failed ones)
    "store_reads": ("gateway_store_duration_seconds_count",),
    # every Redis round trip the gateway made (a pipeline or script is one), or failed
    "gateway_redis_calls": ("gateway_redis_duration_seconds_count",
                            "gateway_redis_errors_total"),
    # L1 and L2 lookups that the cache counts (hits and misses)
    "cache_lookups": ("gateway_cache_requests_total",),
    # verify answers of any outcome: the counts move (the positive control)
    "verify_answers": ("gateway_verify_results_total",),
}
# ...and "redis_commands": commands Redis executed on the server's db (MONITOR)
ZERO_PROBES = ("store_reads", "redis_commands", "gateway_redis_calls")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → every sample, keyed ``name{labels}`` (``name`` without labels)."""
    samples: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        with contextlib.suppress(ValueError):
            samples[name + labels] = float(value)
    return samples


def _sample_name(key: str) -> str:
    return key.partition("{")[0]


def metric_deltas(before: dict[str, float], after: dict[str, float]
                  ) -> tuple[dict[str, int], dict[str, int]]:
    """The PROBES counts between two scrapes, and the non-zero deltas of the samples they
    sum, by label set (``gateway_redis_duration_seconds_count{op="mget"}``: which ones)."""
    changed = {key: round(after.get(key, 0.0) - before.get(key, 0.0))
               for key in after.keys() | before.keys()}
    totals = {probe: sum(n for key, n in changed.items() if _sample_name(key) in names)
              for probe, names in PROBES.items()}
    watched = {n for names in PROBES.values() for n in names} - set(PROBES["verify_answers"])
    detail = {key: n for key, n in sorted(changed.items())
              if n and _sample_name(key) in watched}
    return totals, detail


def scrape(server: Server) -> dict[str, float]:
    resp = httpx.get(server.url + "/metrics", timeout=10)
    if resp.status_code != 200:
        raise BenchError(f"GET /metrics on {server.name}: HTTP {resp.status_code}")
    return parse_metrics(resp.text)


class RedisMonitor:
    """Counts the commands Redis executes on one database (MONITOR, filtered by the db it
    reports for each command): ``INFO commandstats`` is per server, and the server is
    shared. ``count`` sends a marker (ECHO on that db) and reads up to it, so every command
    executed before the marker is in, whenever its line arrives."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.db = redis_db(redis_url)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        try:
            # the marker's connection shakes hands (SELECT …) before MONITOR starts
            self._marker = redis.Redis.from_url(redis_url, socket_timeout=10)
            self._marker.ping()
            self._client = redis.Redis.from_url(redis_url, socket_timeout=10)
            self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]
            self._monitor.__enter__()
        except self._errors as exc:
            raise BenchError(f"Redis MONITOR on {redis_url}: {exc}") from exc

    def count(self) -> dict[str, int]:
        """The commands executed on the db since the start, by name (``EVALSHA``…)."""
        marker = f"bench-probe-{uuid.uuid4().hex}"
        commands: dict[str, int] = {}
        try:
            self._marker.echo(marker)
            while True:
                command = self._monitor.next_command()
                if command["command"] == f"ECHO {marker}":
                    return commands
                if command["db"] == self.db:
                    name = command["command"].partition(" ")[0].upper()
                    commands[name] = commands.get(name, 0) + 1
        except self._errors as exc:
            raise BenchError(f"Redis MONITOR: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._monitor.__exit__(None, None, None)
        with contextlib.suppress(*self._errors):
            self._marker.close()
            self._client.close()


class Probe:
    """The store reads and Redis commands (and the other PROBES) between start and
    ``finish``: /metrics deltas of the server, and MONITOR on its Redis db."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.monitor = RedisMonitor(server.redis_url) if server.redis_url else None
        try:
            self.before = scrape(server)
        except BaseException:
            self.close()
            raise

    def finish(self) -> tuple[dict[str, int], dict[str, int]]:
        """The counts (PROBES and redis_commands), and what they are made of."""
        commands = self.monitor.count() if self.monitor is not None else {}
        totals, detail = metric_deltas(self.before, scrape(self.server))
        totals["redis_commands"] = sum(commands.values())
        detail.update({f"redis {name}": n for name, n in sorted(commands.items())})
        return totals, detail

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


class Runner:
    """Runs rows; the request of each row is built (and its server started) once."""

    def __init__(self, bench: Bench, wrk: str, load: Load) -> None:
        self.bench = bench
        self.wrk = wrk
        self.load = load
        self.requests: dict[str, tuple[Server, HttpRequest, HttpRequest | None]] = {}

    def measure(self, scenario: Scenario) -> Row:
        row = Row(scenario.id, scenario.title, scenario.server,
                  credentials_per_request=scenario.credentials,
                  beside=scenario.beside.title if scenario.beside is not None else "")
        load, workdir = self.load_for(scenario), self.bench.procs.workdir
        try:
            if scenario.id not in self.requests:
                server = self.bench.server(scenario.server)
                self.requests[scenario.id] = (
                    server, scenario.build(server),
                    scenario.beside.build(server) if scenario.beside is not None else None)
            server, request, beside = self.requests[scenario.id]
            check_once(server, request)
            if beside is not None:
                check_once(server, beside, attempts=1)
            probe = None
            if scenario.probe:
                time.sleep(PROBE_SETTLE_S)
                probe = Probe(server)
            try:
                if load.warmup:
                    run_wrk(self.wrk, server.url, request, load, workdir, scenario.id,
                            duration=load.warmup)
                result, side = self._run(server, request, beside, scenario, load)
                if not server.alive():
                    raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")
                # two: the first may land just after an L1 expiry (10 s TTL) the run crossed
                check_once(server, request, attempts=2)
                if probe is not None:
                    row.probe, row.probe_detail = probe.finish()
            finally:
                if probe is not None:
                    probe.close()
        except Unsupported as exc:
            row.status, row.note = "skipped", str(exc)
            return row
        except (BenchError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
            row.status, row.note = "failed", str(exc).strip().splitlines()[0][:200]
            return row
        row.requests_per_s, row.p50_ms, row.p99_ms = (result.requests_per_s, result.p50_ms,
                                                      result.p99_ms)
        row.requests = result.requests
        row.rounds_requests_per_s = [result.requests_per_s]
        if scenario.max_p99_over_p50 is not None:
            row.rounds_p99_over_p50 = [spread_verdict(result.p50_ms, result.p99_ms, 0)[0]]
        notes = []
        bad = result.non_2xx + result.socket_errors
        if bad:
            notes.append(f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors")
            if bad > result.requests * 0.001:
                row.status = "failed"
        if side is not None:
            row.beside_requests_per_s = [side.requests_per_s]
            row.beside_requests = side.requests
            row.beside_statuses = {str(code): n for code, n in sorted(side.statuses.items())}
            if side.socket_errors:
                notes.append(f"{row.beside}: {side.socket_errors} socket errors")
        row.note = "; ".join(notes)
        return row

    def load_for(self, scenario: Scenario) -> Load:
        """--connections and --duration, unless the row fixes its own."""
        load = self.load
        connections = scenario.connections or load.connections
        return dataclasses.replace(load, connections=connections,
                                   threads=min(load.threads, connections),
                                   duration=max(load.duration, scenario.min_duration))

    def _run(self, server: Server, request: HttpRequest, beside: HttpRequest | None,
             scenario: Scenario, load: Load) -> tuple[WrkResult, WrkResult | None]:
        """The measured wrk run, and the beside one around it (if the row has one)."""
        workdir = self.bench.procs.workdir
        if beside is None or scenario.beside is None:
            return run_wrk(self.wrk, server.url, request, load, workdir, scenario.id), None
        side = BesideWrk(self.wrk, server.url, beside, load, workdir, f"{scenario.id}.beside",
                         scenario.beside.connections or load.connections)
        try:
            result = run_wrk(self.wrk, server.url, request, load, workdir, scenario.id)
            return result, side.result()
        finally:
            side.stop()


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + n
    return total


def combine(rounds: list[Row]) -> Row:
    """One row from the rounds of a scenario: medians, or the first failure/skip."""
    bad = next((r for r in rounds if r.status != "ok"), None)
    if bad is not None:
        return bad
    return dataclasses.replace(
        rounds[0],
        requests_per_s=statistics.median(r.requests_per_s or 0.0 for r in rounds),
        p50_ms=statistics.median(r.p50_ms or 0.0 for r in rounds),
        p99_ms=statistics.median(r.p99_ms or 0.0 for r in rounds),
        requests=sum(r.requests or 0 for r in rounds),
        rounds_requests_per_s=[r.requests_per_s or 0.0 for r in rounds],
        paired_baseline_rps=[p for r in rounds for p in r.paired_baseline_rps],
        beside_requests_per_s=[p for r in rounds for p in r.beside_requests_per_s],
        beside_requests=sum(r.beside_requests for r in rounds),
        beside_statuses=_sum_counts([r.beside_statuses for r in rounds]),
        probe=_sum_counts([r.probe for r in rounds]),
        probe_detail=_sum_counts([r.probe_detail for r in rounds]),
        rounds_p99_over_p50=[v for r in rounds for v in r.rounds_p99_over_p50],
        note="; ".join(dict.fromkeys(r.note for r in rounds if r.note)))


def ratio(row: Row, base: Row, scale: float = 1.0) -> float:
    """``row`` ÷ ``base`` in requests/s. With several rounds, the median of the per-round
    ratios: each row is compared with the baseline measured in the same round, which
    cancels slow drifts in the machine's load."""
    mine, theirs = row.rounds_requests_per_s, base.rounds_requests_per_s
    if len(mine) == len(theirs) > 1 and all(theirs):
        return statistics.median(m * scale / t for m, t in zip(mine, theirs, strict=True))
    assert row.requests_per_s is not None and base.requests_per_s
    return row.requests_per_s * scale / base.requests_per_s


def score(rows: list[Row], scenarios: dict[str, Scenario]) -> None:
    """Fill credentials/s, ratios to the floor and each row's target verdict."""
    by_id = {r.id: r for r in rows if r.status == "ok" and r.requests_per_s}
    floor = by_id.get(FLOOR_ID)
    for row in by_id.values():
        assert row.requests_per_s is not None
        row.credentials_per_s = row.requests_per_s * row.credentials_per_request
        if floor is not None:
            row.vs_floor = ratio(row, floor)
        if scenarios[row.id].probe_zero and row.probe:
            row.probe_met = all(row.probe.get(k, 0) == 0 for k in ZERO_PROBES)
        limit = scenarios[row.id].max_p99_over_p50
        if limit is not None:
            assert row.p50_ms is not None and row.p99_ms is not None
            row.target, row.target_goal, row.target_at_most = f"p99 ≤{limit:g}x p50", limit, True
            row.target_rounds = list(row.rounds_p99_over_p50)
            # the median of the per-round ratios; one round: the row's own p99 ÷ p50
            row.target_value = (statistics.median(row.target_rounds) if row.target_rounds
                                else spread_verdict(row.p50_ms, row.p99_ms, limit)[0])
            row.target_met = row.target_value <= limit
            continue
        target = scenarios[row.id].target
        if target is None:
            continue
        row.target, row.target_goal = target.describe(), target.ratio
        base = by_id.get(target.baseline)
        if base is None:
            continue
        scale = row.credentials_per_request if target.per_credential else 1
        paired = row.paired_baseline_rps
        if len(paired) == len(row.rounds_requests_per_s) and all(paired):
            # each round's ratio to the baseline run measured next to the row
            row.target_rounds = [m * scale / b for m, b
                                 in zip(row.rounds_requests_per_s, paired, strict=True)]
            row.target_value = statistics.median(row.target_rounds)
        else:
            row.target_value = ratio(row, base, scale)
        row.target_met = row.target_value >= target.ratio


# -- report -----------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    head = ["scenario", "req/s", "p50 ms", "p99 ms", "x floor", "creds/s", "target", "result"]
    lines: list[list[str]] = []
    for r in rows:
        if r.status != "ok":
            lines.append([r.title, "-", "-", "-", "-", "-", r.target or "-",
                          f"{r.status.upper()}: {r.note}"])
            continue
        assert r.requests_per_s is not None and r.p50_ms is not None and r.p99_ms is not None
        creds = (f"{r.credentials_per_s:,.0f}" if r.credentials_per_request > 1 else "")
        verdict = ""
        if r.target_value is not None:
            verdict = f"{r.target_value:.2f}x {'PASS' if r.target_met else 'MISS'}"
        if len(r.target_rounds) > 1 and r.target_goal is not None:
            # on a noisy machine the spread says as much as the median
            met = sum((v <= r.target_goal) if r.target_at_most else (v >= r.target_goal)
                      for v in r.target_rounds)
            verdict += (f" (rounds {min(r.target_rounds):.2f}-{max(r.target_rounds):.2f}, "
                        f"met in {met} of {len(r.target_rounds)})")
        if r.note:
            verdict = f"{verdict} ({r.note})".strip()
        lines.append([r.title, f"{r.requests_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                      f"{r.vs_floor:.2f}" if r.vs_floor is not None else "-", creds,
                      r.target or "", verdict])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    numeric = {1, 2, 3, 4, 5}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    table = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)]
    extra = [line for r in rows if r.status == "ok" and (line := details(r))]
    return "\n".join([*table, "", *extra] if extra else table)


_PROBE_NAMES = {"store_reads": "store reads", "redis_commands": "Redis commands on its db",
                "gateway_redis_calls": "gateway Redis round trips",
                "cache_lookups": "cache lookups", "verify_answers": "verify answers"}


def details(row: Row) -> str:
    """What the table has no column for: the beside wrk's rate and answers, the probe."""
    parts = []
    if row.beside_requests_per_s:
        rps = statistics.median(row.beside_requests_per_s)
        text = f"{row.beside} {rps:,.0f} req/s"
        if len(row.beside_requests_per_s) > 1:
            text += (f" (median; rounds {min(row.beside_requests_per_s):,.0f}-"
                     f"{max(row.beside_requests_per_s):,.0f})")
        if row.beside_statuses:
            text += ", " + ", ".join(f"{code}: {n:,}" for code, n
                                     in sorted(row.beside_statuses.items()))
            text += f" of {row.beside_requests:,}"
        parts.append(text)
    if row.probe:
        parts.append(", ".join(f"{_PROBE_NAMES.get(k, k)} {n:,}" for k, n in row.probe.items()))
        if row.probe_met is not None:
            parts.append(f"store reads and Redis commands 0: {'PASS' if row.probe_met else 'MISS'}")
        if row.probe_detail:
            parts.append("of which " + ", ".join(f"{k} {n:,}"
                                                 for k, n in row.probe_detail.items()))
    return f"{row.id}: " + "; ".join(parts) if parts else ""


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def write_results(rows: list[Row], args: argparse.Namespace, load: Load, wrk: str,
                  started: datetime) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({
        "started": started.isoformat(),
        "load": asdict(load),
        "only": args.only,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "wrk": wrk_version(wrk),
                    "loadavg_at_end": os.getloadavg()},
        "rows": [asdict(r) for r in rows],
    }, indent=2) + "\n")
    return path


# -- main -------------------------------------------------------------------------------------


def parse_cpus(text: str) -> set[int]:
    """``0`` or ``0,2`` or ``1-3`` → a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ids = [s.id for s in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of discarded warm-up")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int,
                        default=max(1, min(4, (os.cpu_count() or 2) - 1)),
                        help="wrk threads (default: CPUs - 1, leaving one for the server)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, interleaved; report medians")
    parser.add_argument("--pin", metavar="SERVER_CPUS",
                        help="pin the servers to these CPUs (e.g. 0) and wrk to the others")
    parser.add_argument("--only", help=f"comma-separated scenario ids: {', '.join(ids)}")
    parser.add_argument("--redis-url",
                        default=os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--pg-admin-dsn", default=os.environ.get(
        "GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE")
    parser.add_argument("--flood-redis-db", type=int, default=FLOOD_REDIS_DB,
                        help="Redis db of the flood rows' gateway, whose commands are counted "
                             "(a spare one: the Redis server may be shared)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, DBs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(ids)
        if unknown:
            parser.error(f"unknown scenario ids: {', '.join(sorted(unknown))}")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


def run_rounds(scenarios: list[Scenario], rounds: int, measure: Callable[[Scenario], Row],
               measured: dict[str, list[Row]]) -> None:
    """Measure every row ``rounds`` times into ``measured`` (by id), each row with a target
    next to a fresh run of its baseline."""
    by_id = {s.id: s for s in scenarios}
    for round_no in range(1, rounds + 1):
        for scenario in scenarios:
            if scenario.baseline_only:
                continue  # measured next to the rows it is the baseline of, only
            if measured[scenario.id] and measured[scenario.id][-1].status != "ok":
                continue  # skipped or failed once: do not retry every round
            print(f"bench: [{round_no}/{rounds}] {scenario.id} …", file=sys.stderr, flush=True)
            paired = None
            baseline = (by_id.get(scenario.target.baseline)
                        if scenario.target is not None else None)
            # The baseline again, next to the row: machine drift between the two runs of a
            # ratio is seconds, not a whole round. Before the row in odd rounds, after it in
            # even ones, so whatever a run's place in its pair does to it cancels out in the
            # median instead of favouring one side.
            baseline_first = round_no % 2 == 1
            if baseline is not None and baseline_first:
                paired = measure(baseline)
            row = measure(scenario)
            if baseline is not None and not baseline_first:
                paired = measure(baseline)
            if paired is not None and paired.status == "ok" and paired.requests_per_s:
                row.paired_baseline_rps = [paired.requests_per_s]
            if paired is not None and baseline is not None and baseline.baseline_only:
                measured[baseline.id].append(paired)  # its only measurements
            measured[scenario.id].append(row)
            if row.status != "ok" or row.note:
                print(f"bench:   {row.status}: {row.note}", file=sys.stderr)


def select(only: str | None) -> list[Scenario]:
    """The rows to run, in table order: --only's (or the default ones), the floor, the rows
    they require, and the baselines of their targets."""
    by_id = {s.id: s for s in SCENARIOS}
    chosen = set(only.split(",")) if only else {s.id for s in SCENARIOS if s.default}
    chosen.add(FLOOR_ID)  # every ratio needs it
    pending = list(chosen)
    while pending:
        scenario = by_id[pending.pop()]
        for other in (*scenario.requires,
                      *((scenario.target.baseline,) if scenario.target else ())):
            if other not in chosen:
                chosen.add(other)
                pending.append(other)
    return [s for s in SCENARIOS if s.id in chosen]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("bench: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    server_cpus: set[int] | None = None
    wrk_cpus: tuple[int, ...] = ()
    if args.pin:
        server_cpus = parse_cpus(args.pin)
        wrk_cpus = tuple(sorted(os.sched_getaffinity(0) - server_cpus))
        if not wrk_cpus:
            print("bench: --pin leaves no CPU for wrk", file=sys.stderr)
            return 2
    scenarios = select(args.only)
    load = Load(args.duration, args.connections, args.threads, args.warmup, args.rounds,
                wrk_cpus)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with &
    procs = Processes(workdir, server_cpus)
    measured: dict[str, list[Row]] = {s.id: [] for s in scenarios}
    failed = False
    print(f"bench: {load.threads} wrk threads, {load.connections} connections, "
          f"{load.warmup}s warm-up + {load.duration}s per row, {load.rounds} round(s); "
          f"work dir {workdir}", file=sys.stderr)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(procs.stop_all)
            bench = Bench(procs, stack, Options(args.redis_url, args.pg_admin_dsn, seed=1,
                                                flood_redis_db=args.flood_redis_db))
            run_rounds(scenarios, load.rounds, Runner(bench, wrk, load).measure, measured)
    except BaseException:
        failed = True
        raise
    finally:
        rows = [combine(r) for r in measured.values() if r]
        if rows:
            score(rows, {s.id: s for s in SCENARIOS})
            print()
            print(render(rows))
            path = write_results(rows, args, load, wrk, started)
            print(f"\nresults: {path.relative_to(ROOT)}")
        failed = failed or any(r.status == "failed" for r in rows)
        if args.keep or failed:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        return 1
    if args.strict and any(r.target_met is False or r.probe_met is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process stopped", file=sys.stderr)
        sys.exit(130)
