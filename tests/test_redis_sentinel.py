"""Redis with failover: two gateway replicas on PostgreSQL and a Sentinel-managed Redis
(``GATEWAY_REDIS_URL=redis+sentinel://…``) keep answering verifies right while the primary
is failed over twice: once by ``SENTINEL FAILOVER`` (the old primary stays up, and goes on
accepting writes for about 10 s, until Sentinel turns it into a replica: every write made
there meanwhile is lost), then by killing the new primary.

A primary, a replica and three Sentinels run on spare ports in 26400-26499, each in its
own directory. Replica A has no L1 (every verify asks L2), replica B the default L1.
Clients hammer verify on both for keys that stay valid and keys that are revoked before,
during and after each failover; then:

- no answer is wrong: a verify sent after a revocation's 204 never says valid (on either
  replica), a key never revoked never says anything but valid;
- every answer is a 200 (no 5xx: while Redis cannot be used the store answers);
- afterwards L2, invalidation (publish and acks), tombstones and rate-limit counters are
  on the new primary, and both replicas are subscribed there (redis-cli).

Without ``redis-sentinel`` (Debian package) or ``redis-cli`` the test skips, and fails
when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import PEPPER, Gateway, start_gateway
from proxy_helpers import find_binary, missing

from gateway.crypto.digests import Digester
from gateway.secret import Secret

SERVICE = "mymaster"
VERIFY = "/v2alpha1/admin/apiKeys:verify"
ISSUED = "/v2alpha1/admin/issuedApiKeys"
CHANNEL = "gateway:invalidate:0"
DURING = 8  # keys revoked, one after another, while each failover runs
CLIENTS = 3  # concurrent verify clients per replica


# -- the Redis servers and Sentinels ----------------------------------------------------------


def _spare_ports(n: int) -> list[int]:
    candidates = list(range(26400, 26500))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    pytest.fail("no spare ports in 26400-26499")


@dataclass
class Node:
    """One redis-server or redis-sentinel process."""

    port: int
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Cluster:
    redis_cli: str
    servers: list[Node]
    sentinels: list[Node]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def cli(self, port: int, *args: str) -> str:
        try:
            done = subprocess.run([self.redis_cli, "-p", str(port), *args],
                                  capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip()

    def named_primaries(self) -> set[int]:
        """The primary's port as each Sentinel names it."""
        ports = set()
        for s in self.sentinels:
            lines = self.cli(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE).split()
            ports.add(int(lines[1]) if len(lines) == 2 else -1)
        return ports

    def role(self, port: int) -> str:
        return self.cli(port, "ROLE").split("\n")[0]

    def info(self, port: int, section: str) -> dict[str, str]:
        pairs = (line.split(":", 1) for line in self.cli(port, "INFO", section).splitlines()
                 if ":" in line)
        return {k: v.strip() for k, v in pairs}

    def calls(self, port: int, command: str) -> int:
        stats = self.info(port, "commandstats").get(f"cmdstat_{command}", "calls=0")
        return int(stats.split(",")[0].split("=")[1])

    def ready(self, primary: int) -> bool:
        """Every Sentinel names ``primary``, knows the two others and a healthy replica
        (so that a failover can happen), and the replica is in sync."""
        for s in self.sentinels:
            master = dict(_pairs(self.cli(s.port, "SENTINEL", "master", SERVICE)))
            replicas = [dict(_pairs(r)) for r in _chunks(
                self.cli(s.port, "SENTINEL", "replicas", SERVICE))]
            if (master.get("port") != str(primary) or master.get("num-other-sentinels") != "2"
                    or not any(r.get("flags") == "slave" and r.get("master-link-status") == "ok"
                               for r in replicas)):
                return False
        replica = next(n.port for n in self.servers if n.port != primary)
        return self.info(replica, "replication").get("master_link_status") == "up"


def _pairs(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    return list(zip(lines[::2], lines[1::2], strict=False))


def _chunks(text: str) -> list[str]:
    """redis-cli prints a list of maps flat: split it on each "name" key."""
    out: list[str] = []
    for line in text.splitlines():
        if line == "name" or not out:
            out.append("")
        out[-1] += line + "\n"
    return [c for c in out if c.strip()]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    sentinel = find_binary("redis-sentinel")
    server = find_binary("redis-server")
    cli = find_binary("redis-cli")
    if sentinel is None or server is None or cli is None:
        missing("redis-sentinel, redis-server or redis-cli is not installed "
                "(apt-get install redis-sentinel)")
    assert sentinel is not None and server is not None and cli is not None
    ports = _spare_ports(5)
    servers, sentinels = [], []
    for i, port in enumerate(ports[:2]):
        home = tmp_path / f"redis-{port}"
        home.mkdir()
        args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(home)]
        if i == 1:
            args += ["--replicaof", "127.0.0.1", str(ports[0])]
        servers.append(Node(port, args, home / "log"))
    for port in ports[2:]:
        home = tmp_path / f"sentinel-{port}"
        home.mkdir()
        (home / "sentinel.conf").write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {home}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {ports[0]} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 2000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        sentinels.append(Node(port, [sentinel, str(home / "sentinel.conf")], home / "log"))
    c = Cluster(cli, servers, sentinels)
    try:
        for node in [*servers, *sentinels]:
            node.start()
        wait_for(lambda: c.ready(ports[0]), 20, "the Sentinels to see the primary, the "
                                                "replica and each other")
        yield c
    finally:
        for node in [*sentinels, *servers]:
            node.kill()


# -- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    replica: int
    key: int
    sent: float
    status: int
    valid: bool
    cache: str


class Hammer:
    """``CLIENTS`` async clients per replica, each verifying the keys in turn."""

    def __init__(self, gws: list[Gateway], secrets: list[str]) -> None:
        self.gws = gws
        self.secrets = secrets
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(i, gw, n) for i, gw in enumerate(self.gws)
                               for n in range(CLIENTS)))

    async def _client(self, replica: int, gw: Gateway, n: int) -> None:
        key = n
        async with httpx.AsyncClient(base_url=gw.url, headers=gw.auth, timeout=10) as client:
            while not self._stop.is_set():
                key = (key + 1) % len(self.secrets)
                sent = time.monotonic()
                try:
                    r = await client.post(VERIFY, json={"credential": self.secrets[key]})
                    status = r.status_code
                    valid = status == 200 and r.json().get("is_valid") is True
                    cache = r.headers.get("x-cache", "")
                except httpx.HTTPError:
                    status, valid, cache = 0, False, ""
                self.answers.append(Answer(replica, key, sent, status, valid, cache))

    def since(self, t: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.sent >= t]


# -- the test ----------------------------------------------------------------------------------


def _issue(gw: Gateway, **fields: object) -> tuple[str, str]:
    r = httpx.post(gw.url + ISSUED, headers=gw.auth, timeout=10,
                   json={"name": "failover", "actor_id": "sentinel-test", **fields})
    assert r.status_code == 201, r.text
    return r.json()["secret"], r.json()["issued_api_key"]["key_id"]


def _revoke(gw: Gateway, key_id: str) -> tuple[int, float]:
    """(status, monotonic time the answer came)."""
    r = httpx.post(f"{gw.url}{ISSUED}/{key_id}:revoke", headers=gw.auth, timeout=10,
                   json={"reason": "REVOCATION_REASON_KEY_COMPROMISE"})
    return r.status_code, time.monotonic()


def _metric(gw: Gateway, name: str) -> float:
    r = httpx.get(gw.url + "/metrics", timeout=10)
    return sum(float(line.split()[-1]) for line in r.text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_verify_and_revocation_hold_through_two_failovers(
        cluster: Cluster, fresh_pg_database: str, tmp_path: Path) -> None:
    first, second = (n.port for n in cluster.servers)
    env = {"GATEWAY_DATABASE_URL": fresh_pg_database, "GATEWAY_REDIS_URL": cluster.url,
           "GATEWAY_LOG_LEVEL": "info"}  # the failover's lines
    a = start_gateway(_own_dir(tmp_path / "a"), {**env, "GATEWAY_L1_TTL": "0"}, migrate=True)
    b: Gateway | None = None
    try:
        b = start_gateway(_own_dir(tmp_path / "b"), env)
        gws = [a, b]
        stable = [_issue(a) for _ in range(3)]
        stable.append(_issue(a, rate_limit_policy={"quota": "1000000", "window": "60s"}))
        doomed = [_issue(a) for _ in range(2 * DURING + 2)]
        keys = stable + doomed
        secrets = [secret for secret, _ in keys]
        revoked_at: dict[int, float] = {}  # key index -> when its revoke answered 204
        revoke_status: Counter[int] = Counter()
        windows: dict[str, tuple[float, float]] = {}
        next_doomed = iter(range(len(stable), len(keys)))

        def revoke_next(via: Gateway) -> None:
            index = next(next_doomed)
            status, at = _revoke(via, keys[index][1])
            revoke_status[status] += 1
            if status == 204:
                revoked_at[index] = at

        def revoke_during(spacing: float) -> None:
            for i in range(DURING):
                started = time.monotonic()
                revoke_next(gws[i % 2])
                time.sleep(max(0.0, spacing - (time.monotonic() - started)))

        with Hammer(gws, secrets) as hammer:
            wait_for(lambda: all(sum(x.valid and x.replica == i for x in hammer.answers) > 100
                                 for i in range(2)), 20, "both replicas to answer")
            # before: L2 and the subscriptions are on the first primary
            assert cluster.cli(first, "PUBSUB", "NUMSUB", CHANNEL).split() == [CHANNEL, "2"]
            assert cluster.cli(first, "--scan", "--pattern", "gw:k:*")

            # 1. SENTINEL FAILOVER: revocations while it runs, and one after
            start = time.monotonic()
            assert cluster.cli(cluster.sentinels[0].port, "SENTINEL", "FAILOVER",
                               SERVICE) == "OK"
            revoke_during(0.25)
            wait_for(lambda: cluster.named_primaries() == {second}, 10,
                     "the Sentinels to name the replica")
            wait_for(lambda: cluster.cli(second, "PUBSUB", "NUMSUB", CHANNEL).split()
                     == [CHANNEL, "2"], 10, "both replicas to subscribe on the new primary")
            revoke_next(gws[0])
            windows["SENTINEL FAILOVER"] = (start, time.monotonic())
            # the old primary goes on as a master until Sentinel converts it (about 10 s)
            wait_for(lambda: cluster.ready(second), 30,
                     "the old primary to become the new one's replica")

            # 2. the primary dies: revocations while it is down, and one after
            start = time.monotonic()
            cluster.servers[1].kill()
            revoke_during(0.4)
            wait_for(lambda: cluster.named_primaries() == {first}, 15,
                     "the Sentinels to name the old primary again")
            wait_for(lambda: cluster.cli(first, "PUBSUB", "NUMSUB", CHANNEL).split()
                     == [CHANNEL, "2"], 10, "both replicas to subscribe on the new primary")
            publishes, acks = cluster.calls(first, "publish"), cluster.calls(first, "rpush")
            revoke_next(gws[1])
            windows["primary killed"] = (start, time.monotonic())
            last = len(keys) - 1
            # recovery: invalidation (publish, both acks) and tombstones on the new primary
            assert cluster.calls(first, "publish") > publishes
            assert cluster.calls(first, "rpush") >= acks + 2
            digester = Digester(Secret(PEPPER))
            assert cluster.cli(first, "EXISTS", f"gw:t:{digester.digest(secrets[last])}") == "1"
            # L2 and rate-limit counters: filled and read on the new primary
            recovered = windows["primary killed"][1]
            wait_for(lambda: any(x.cache == "L2" and x.replica == 0 and x.key == 0
                                 for x in hammer.since(recovered)),
                     10, "replica A to answer from L2 on the new primary")
            assert cluster.cli(first, "EXISTS", f"gw:k:{digester.digest(secrets[0])}") == "1"
            assert cluster.cli(first, "--scan", "--pattern", "gw:rl:*")
            end = time.monotonic()
            wait_for(lambda: all(sum(x.replica == i for x in hammer.since(end)) > 50
                                 for i in range(2)), 20, "answers after the last revocation")

        answers = list(hammer.answers)
        for name, (t0, t1) in windows.items():
            during = [x for x in answers if t0 <= x.sent <= t1]
            print(f"\n{name}: {t1 - t0:.1f} s, {len(during)} verifies, by status "
                  f"{dict(Counter(x.status for x in during))}, by cache "
                  f"{dict(Counter(x.cache for x in during))}")
        print(f"all: {len(answers)} verifies, by status {dict(Counter(x.status for x in answers))}"
              f"; revocations by status {dict(revoke_status)}")

        wrong_yes = [x for x in answers if x.key in revoked_at and x.sent > revoked_at[x.key]
                     and x.valid]
        wrong_no = [x for x in answers if x.key < len(stable) and x.status == 200
                    and not x.valid]
        assert not wrong_yes, f"{len(wrong_yes)} verifies sent after a revocation's 204 said " \
                              f"valid: {wrong_yes[:5]}"
        assert not wrong_no, f"{len(wrong_no)} verifies of valid keys said invalid"
        assert revoke_status == Counter({204: len(doomed)}), revoke_status
        assert Counter(x.status for x in answers).keys() == {200}
        for i in range(2):  # every revoked key was refused by both replicas afterwards
            refused = {x.key for x in answers if x.replica == i and x.key in revoked_at
                       and x.sent > revoked_at[x.key] and not x.valid}
            assert refused == set(revoked_at), f"replica {i}"
        for name, gw in zip("AB", gws, strict=True):
            assert _metric(gw, "gateway_redis_primary_changes_total") >= 2
            logs = gw.logs()
            assert "Traceback" not in logs
            print(f"replica {name}:", *(line for line in logs.splitlines() if any(
                word in line for word in ("primary moved", "dropped from L2", "subscription"))),
                sep="\n  ")
    finally:
        if b is not None:
            b.stop()
        a.stop()


def _own_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path

