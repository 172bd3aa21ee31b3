"""Bulk import beside cached verifies on another replica: importedApiKeys:batchCreate at scale.

    .venv/bin/python load/bulk_import.py [--keys 1000000 --batch 1000 --clients N
                                          --backends sqlite,postgres --window 10]

The target (issue 16, item 4): ``batchCreate`` of 1,000-key batches on SQLite and on
PostgreSQL with Redis sustains at least 5,000 keys/s up to 1,000,000 keys, and cached
verifies on another replica keep their p99 meanwhile (within 2x).

For each backend, two gateway replicas on one store: A receives the import, B answers
cached verifies (a few keys issued on B, warmed into its L1) to wrk. The machine is split
in two as if they were two hosts: B and its wrk on one CPU, A and the import driver (this
process) on the other, and so is the rest of the machine while a backend runs (PostgreSQL,
Redis and every other thread that may move, and the kernel's unbound work queues; their
previous affinity is restored afterwards), so that none of it takes B's CPU.

1. B's cached-verify latency alone: ``--baseline-windows`` wrk runs of ``--window``
   seconds; the baseline p99 is their median. Then ``--neighbor-windows`` more with a
   CPU-bound spinner (``while True: pass``) on A's CPU and no import: the two CPUs of a
   small VM are not two hosts (with only Redis and PostgreSQL pinned, on 2026-12-04, a
   busy neighbour alone raised B's p99 from 0.76-0.83 to 0.83-3.2 ms in five tries; with
   the machine pinned, not at all). The import's windows are reported against that too,
   beside the target (which stays against the baseline);
2. the import: ``--keys`` raw keys (``sk_bulk_<n>_<random>``), in request bodies of
   ``--batch`` items made before the clock starts, posted to A by ``--clients``
   concurrent clients; each answer must be 200 with ``success_count`` equal to the
   batch's size. Meanwhile wrk runs against B in consecutive windows;
3. one window after it (A idle again, the store large), and checks: B still answers its
   keys from L1, and verifies a sample of the imported keys.

Reported per backend: keys/s over the whole import and per ``--segment`` keys (a slowdown
as the table grows shows there); B's p99 (and max) per window, the worst and median
window p99 during the import against the baseline; CPU seconds per process and per CPU.
Targets: >= 5,000 keys/s overall and in every segment; worst window p99 <= 2x baseline.
With ``--profile``, py-spy samples A (and B) during the import and the hottest frames are
printed (profiling slows A down: use the figures of a run without it).

Results go to load/results/bulk-<UTC>.json. Exit status 1 if a run failed (or, with
``--strict``, a target was missed), 2 if wrk is missing. Every process is stopped and the
scratch database dropped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench
import httpx
import orjson
from bench import (
    IMPORTED,
    RESULTS,
    ROOT,
    VERIFY,
    BenchError,
    HttpRequest,
    Processes,
    Server,
)

BACKENDS = ("sqlite", "sqlite-noredis", "postgres")
TARGET_KEYS_PER_S = 5_000.0
TARGET_P99_RATIO = 2.0
# gateway.cache.redis_backend.CHANNEL; since c8ff233 followed by ":<db>" (pub/sub ignores the
# database number: before that, every gateway on the Redis server got every invalidation)
CHANNEL = "gateway:invalidate"
MIN_WINDOW_S = 2.0  # a window cut short by the import's end counts if at least this long
LOOP_HOLDS = Path(__file__).resolve().parent / "loop_holds"  # --loop-holds: its sitecustomize


# -- the import driver ------------------------------------------------------------------------


def make_bodies(keys: int, batch: int) -> list[tuple[int, bytes]]:
    """``(items, body)`` of each batchCreate request, made before the clock starts."""
    raw = [f"sk_bulk_{i}_{r}" for i, r in enumerate(bench._random_base62(keys, 24))]
    return [(len(chunk), json.dumps({"requests": [
        {"raw_key": key, "name": f"bulk-{start + i}", "actor_id": "bench-bulk"}
        for i, key in enumerate(chunk)]}, separators=(",", ":")).encode())
        for start in range(0, keys, batch) if (chunk := raw[start:start + batch])]


def batch_problem(resp: httpx.Response, items: int) -> str | None:
    """Why a batchCreate answer is not a full success (None: every item was created)."""
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return f"not JSON: {resp.text[:200]}"
    if not isinstance(body, dict) or body.get("success_count") != items:
        results = body.get("results") if isinstance(body, dict) else None
        first = next((r for r in results or [] if r.get("error_message")), None)
        return (f"success_count {body.get('success_count') if isinstance(body, dict) else '?'}"
                f" of {items}" + (f"; first error: {first['error_message']}" if first else ""))
    return None


@dataclass
class Done:
    """One batch: its items and when it was sent and answered (monotonic seconds)."""

    index: int
    items: int
    sent: float
    answered: float


class ImportDriver:
    """``clients`` threads, each posting the next unsent body until none is left; the first
    failure stops them all. Threads inherit this process's CPU affinity."""

    def __init__(self, url: str, auth: dict[str, str], bodies: list[tuple[int, bytes]],
                 clients: int, on_finish: Callable[[], object] = lambda: None) -> None:
        self.url, self.auth, self.bodies = url, auth, bodies
        self.on_finish = on_finish  # called by the last client to stop
        self._active = clients
        self.done: list[Done] = []
        self.error: str | None = None
        self.started = self.finished = 0.0
        self.started_wall = 0.0  # time.time() at the start (the --loop-holds totals' clock)
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, name=f"import-{i}", daemon=True)
                         for i in range(clients)]

    def start(self) -> None:
        self.started, self.started_wall = time.monotonic(), time.time()
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        self._stop.set()

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self.bodies):
                return None
            self._next += 1
            return self._next - 1

    def _client(self) -> None:
        try:
            self._post_bodies()
        finally:
            with self._lock:
                self._active -= 1
                last = self._active == 0
            if last:
                self.finished = max((d.answered for d in self.done), default=time.monotonic())
                self.on_finish()

    def _post_bodies(self) -> None:
        headers = {**self.auth, "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=120) as client:
            while (index := self._take()) is not None:
                items, body = self.bodies[index]
                sent = time.monotonic()
                try:
                    resp = client.post(f"{IMPORTED}:batchCreate", content=body)
                    problem = batch_problem(resp, items)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is not None:
                    with self._lock:
                        self.error = self.error or f"batch {index}: {problem}"
                    self._stop.set()
                    return
                with self._lock:
                    self.done.append(Done(index, items, sent, time.monotonic()))

    @property
    def keys(self) -> int:
        return sum(d.items for d in self.done)


@dataclass
class Segment:
    first_key: int
    last_key: int
    seconds: float
    keys_per_s: float


def segments(done: list[Done], started: float, size: int) -> list[Segment]:
    """Keys/s of each ``size`` keys, in the order they were answered: a segment ends when
    the answered keys reach its last key (the last one may be shorter)."""
    out: list[Segment] = []
    total, edge, since = 0, size, started
    answered = sorted(done, key=lambda d: d.answered)
    for n, d in enumerate(answered):
        total += d.items
        if total >= edge or n == len(answered) - 1:
            first = out[-1].last_key + 1 if out else 1
            seconds = d.answered - since
            out.append(Segment(first, total, seconds,
                               (total - first + 1) / seconds if seconds > 0 else 0.0))
            since, edge = d.answered, (total // size + 1) * size
    return out


# -- B's cached verifies in windows -----------------------------------------------------------


@dataclass
class Window:
    phase: str            # baseline | import | after
    start_s: float        # from the start of the import (negative before it)
    seconds: float        # the last import window ends with the import (wrk gets SIGINT)
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int           # non-2xx and socket errors
    # CPUs' worth of what processes other than ours and the services ran meanwhile (the
    # machine may be shared): a window with much of it is not a clean measurement
    others_cpu: float = 0.0
    others_top: dict[str, float] = field(default_factory=dict)  # the 3 largest, CPU-s
    # share of B's CPU in softirqs and stolen by the hypervisor meanwhile (/proc/stat)
    softirq: float = 0.0
    steal: float = 0.0
    # wrk's latencies, microseconds -> count (credentials.lua's BENCH_LATENCY_FILE): pooled
    # over a phase's windows for its overall p99; not written to the JSON
    latencies: dict[int, int] = field(default_factory=dict, repr=False, compare=False)


def pooled_p99_ms(windows: list[Window]) -> float | None:
    """The p99 of all the latencies of ``windows`` together (wrk's, corrected for
    coordinated omission), in ms; None when wrk wrote none."""
    pooled: dict[int, int] = {}
    for w in windows:
        for value, count in w.latencies.items():
            pooled[value] = pooled.get(value, 0) + count
    total = sum(pooled.values())
    if not total:
        return None
    seen = 0
    for value in sorted(pooled):
        seen += pooled[value]
        if seen >= 0.99 * total:
            return value / 1000
    return None


_MAX = re.compile(r"^\s*Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)\b", re.MULTILINE)


def run_window(wrk: str, server: Server, request: HttpRequest, *, connections: int,
               seconds: int, cpus: set[int], tag: str,
               until: Callable[[], bool] = lambda: False
               ) -> tuple[bench.WrkResult, float, dict[int, int]]:
    """One wrk run against ``server`` (bench's command line, pinned to ``cpus``), ended
    early by SIGINT (wrk then reports what it measured) once ``until()`` is true: its
    summary, its largest latency (ms), which shows a stall that p99 does not, and its
    latencies (microseconds -> count)."""
    cmd, env = bench.wrk_command(wrk, server.url, request, server.workdir, tag,
                                 connections=connections, threads=1, seconds=seconds)
    histogram = server.workdir / f"latency-{tag}.txt"
    env["BENCH_LATENCY_FILE"] = str(histogram)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, preexec_fn=bench.pinned(cpus))
    try:
        deadline = time.monotonic() + seconds + 60
        while proc.poll() is None:
            if until():
                proc.send_signal(signal.SIGINT)
                break
            if time.monotonic() > deadline:
                raise BenchError(f"wrk did not end in {seconds + 60}s")
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {err or out}")
    result = bench.parse_wrk(out)
    top = _MAX.search(out)
    latencies: dict[int, int] = {}
    if histogram.exists():
        for line in histogram.read_text().splitlines():
            value, count = (int(float(field)) for field in line.split())
            latencies[value] = latencies.get(value, 0) + count
        histogram.unlink()
    return result, float(top[1]) * bench._UNITS_MS[top[2]] if top else 0.0, latencies


def warm(server: Server, keys: list[str]) -> None:
    """Verify each key until it answers from L1; BenchError if one does not."""
    check = bench.expect_verdict({"L1"})
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=10) as client:
        for key in keys:
            problem = None
            for _ in range(3):
                problem = check(client.post(VERIFY, json={"credential": key}))
            if problem is not None:
                raise BenchError(f"warming {server.name}: {problem}")


def verify_sample(server: Server, bodies: list[tuple[int, bytes]], count: int = 20) -> None:
    """``count`` imported keys, picked at random, must verify on ``server``."""
    picked = [random.choice(orjson.loads(random.choice(bodies)[1])["requests"])["raw_key"]
              for _ in range(count)]
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=10) as client:
        for key in picked:
            problem = bench.expect_valid(client.post(VERIFY, json={"credential": key}))
            if problem is not None:
                raise BenchError(f"an imported key on {server.name}: {problem}")


# -- CPU accounting and profiles --------------------------------------------------------------


def process_cpu_s(pid: int) -> tuple[str, float]:
    """(comm, utime + stime in seconds) of a process, all its threads; ("", 0) if gone."""
    try:
        comm, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(" (")[2].rpartition(")")
        fields = rest.split()
    except (OSError, IndexError):
        return "", 0.0
    return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def every_process_cpu_s() -> dict[int, tuple[str, float]]:
    return {int(e.name): process_cpu_s(int(e.name)) for e in Path("/proc").iterdir()
            if e.name.isdigit()}


def cpu_seconds() -> dict[int, list[float]]:
    """Each CPU's seconds since boot by state (user, nice, system, idle, iowait, irq,
    softirq, steal, ...), from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    return {int(name[3:]): [int(v) / tick for v in values]
            for name, *values in map(str.split, Path("/proc/stat").read_text().splitlines())
            if name.startswith("cpu") and name[3:].isdigit()}


def cpu_busy_s() -> dict[int, float]:
    """Busy (non-idle, non-iowait) seconds of each CPU since boot."""
    return {cpu: sum(s[:8]) - s[3] - s[4] for cpu, s in cpu_seconds().items()}


def cpu_kernel_s(cpu: int) -> tuple[float, float]:
    """Seconds since boot that ``cpu`` spent in softirqs (loopback traffic is delivered
    there, in nobody's process time) and stolen by the hypervisor."""
    states = cpu_seconds().get(cpu)
    return (states[6], states[7]) if states else (0.0, 0.0)


SERVICES = ("postgres", "redis-server", "wrk")


class CpuMeter:
    """CPU seconds between ``start`` and ``stop``, by process: A, B, this process (the
    import driver), PostgreSQL, Redis, wrk, and every other process (the machine is not
    ours alone); and each CPU's busy share. A process that ended meanwhile is missed."""

    def __init__(self, named: dict[str, int]) -> None:
        self.named = {pid: name for name, pid in named.items()}
        self.result: dict[str, Any] = {}

    def _read(self) -> tuple[dict[int, tuple[str, float]], dict[int, float], float]:
        return every_process_cpu_s(), cpu_busy_s(), time.monotonic()

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, Any]:
        """The figures (once; later calls return the first result)."""
        if self.result:
            return self.result
        procs, cpus, now = self._read()
        before_procs, before_cpus, then = self._before
        by_name = {name: 0.0 for name in (*self.named.values(), *SERVICES, "other processes")}
        others: dict[str, float] = {}
        for pid, (comm, cpu) in procs.items():
            old_comm, old = before_procs.get(pid, ("", 0.0))
            delta = cpu - old if old_comm == comm else cpu
            name = self.named.get(pid) or (comm if comm in SERVICES else "other processes")
            by_name[name] += delta
            if name == "other processes" and delta > 0:
                others[comm] = others.get(comm, 0.0) + delta
        seconds = now - then
        self.result = {
            "wall_s": round(seconds, 2),
            "process_cpu_s": {k: round(v, 2) for k, v in by_name.items()},
            "others_top": {k: round(v, 2) for k, v in sorted(
                others.items(), key=lambda kv: -kv[1])[:3]},
            "cpu_busy_share": {str(c): round((v - before_cpus.get(c, 0.0)) / seconds, 3)
                               for c, v in cpus.items()}}
        return self.result


class Profiler:
    """py-spy record (raw collapsed stacks, --nonblocking) of some processes until
    ``stop``; ``summary`` gives each one's hottest frames."""

    def __init__(self, py_spy: str, targets: dict[str, int], workdir: Path, cpus: set[int],
                 tag: str, rate: int = 100) -> None:
        self.outputs: dict[str, Path] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        for name, pid in targets.items():
            out = workdir / f"profile-{tag}-{name}.txt"  # tag: one file per backend
            self.outputs[name] = out
            self.procs.append(subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                 "--output", str(out), "--nonblocking", "--threads"],
                stdout=subprocess.DEVNULL,
                stderr=(workdir / f"profile-{tag}-{name}.log").open("wb"),
                stdin=subprocess.DEVNULL, preexec_fn=bench.pinned(cpus)))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def summary(self, top: int = 15) -> dict[str, dict[str, Any]]:
        return {name: summarize_stacks(path.read_text() if path.exists() else "", top)
                for name, path in self.outputs.items()}


_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` → ``func (file.py)``; thread frames as they are."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m[2]
    for marker in ("/gateway/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m[1]} ({path})"


def summarize_stacks(text: str, top: int) -> dict[str, Any]:
    """From py-spy's raw output (``frame;frame;… count`` lines): samples per thread, and the
    frames with the most samples on top of the stack (self) and anywhere in it
    (inclusive), as shares of the busy samples."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].strip()
        threads[thread] = threads.get(thread, 0) + n
        names = [_frame_name(f) for f in frames[1:]] or [thread]
        total += n
        self_n[names[-1]] = self_n.get(names[-1], 0) + n
        for name in set(names):
            incl_n[name] = incl_n.get(name, 0) + n

    def share(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(v / total, 4)) for k, v in
                sorted(counts.items(), key=lambda kv: -kv[1])[:top]] if total else []
    return {"samples": total, "threads": threads, "self": share(self_n),
            "inclusive": share(incl_n)}


# -- the rest of the machine on A's CPU ------------------------------------------------------


def machine_threads() -> dict[str, list[int]]:
    """Thread ids of every process on the machine, by program (``redis-server``,
    ``postgres`` and "other": RabbitMQ, MariaDB, this script, kernel threads ...)."""
    found: dict[str, list[int]] = {"redis-server": [], "postgres": [], "other": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            tids = [int(t.name) for t in (proc / "task").iterdir() if t.name.isdigit()]
        except OSError:  # gone meanwhile
            continue
        name = ("redis-server" if comm == "redis-server" else "postgres"
                if comm == "postgres" or comm.startswith("postgres:") else "other")
        found[name] += tids
    return found


WORKQUEUE_CPUMASK = "/sys/devices/virtual/workqueue/cpumask"


@contextlib.contextmanager
def machine_pinned(cpu: int) -> Iterator[dict[str, Any]]:
    """Every thread on the machine that may move pinned to ``cpu`` (A's), every previous
    affinity restored on exit; processes forked meanwhile inherit the pin. On separate
    machines B's would run B and its wrk only; here, with A's CPU busy, the scheduler
    otherwise moves the machine's other work (Redis, PostgreSQL, RabbitMQ, MariaDB ...) onto
    B's CPU: with a spinner on the other CPU, a gap meter on B's lost 2.6 % of its time
    to them (43 ms at worst in 10 s) and 0.18 % with them moved. Per-CPU kernel threads
    cannot move, nor, unless we are root, other users' threads; the kernel's unbound work
    queues are confined to ``cpu`` as well (their ``cpumask`` in sysfs). Yields what was
    done, for the results."""
    previous: dict[int, set[int]] = {}
    done: dict[str, Any] = {"cpu": cpu, "threads": {}, "unmovable": 0, "not_permitted": 0,
                            "workqueues": False, "note": ""}
    workqueues = Path(WORKQUEUE_CPUMASK)
    workqueues_before = ""

    def restore() -> None:
        for tid, cpus in previous.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)
        previous.clear()
        if workqueues_before:
            with contextlib.suppress(OSError):
                workqueues.write_text(workqueues_before)
    try:
        with contextlib.suppress(OSError):  # unbound kernel work (writeback ...): A's CPU too
            workqueues_before = workqueues.read_text().strip()
            workqueues.write_text(f"{1 << cpu:x}")
            done["workqueues"] = True
        for name, tids in machine_threads().items():
            moved = 0
            for tid in tids:
                try:
                    before = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, {cpu})
                except PermissionError:  # another user's, and we are not root
                    done["not_permitted"] += 1
                    continue
                except OSError:  # gone, or a per-CPU kernel thread (EINVAL)
                    done["unmovable"] += 1
                    continue
                previous[tid] = before
                moved += 1
            done["threads"][name] = moved
        if done["not_permitted"]:
            done["note"] = (f"{done['not_permitted']} threads of other users not moved (no "
                            "permission: run as root to move them)")
        print(f"bulk: the machine's other threads pinned to cpu{cpu}"
              + (f"; {done['note']}" if done["note"] else ""), file=sys.stderr, flush=True)
        yield done
    finally:
        restore()


# -- one backend ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    keys: int
    batch: int
    clients: int
    segment: int
    window: int
    baseline_windows: int
    neighbor_windows: int
    after_windows: int
    connections: int
    verify_keys: int
    cpu_a: int
    cpu_b: int
    redis_url: str
    pg_admin_dsn: str
    profile: bool
    apart: bool = False
    loop_holds: bool = False


@dataclass
class Run:
    backend: str
    status: str = "ok"               # ok | failed
    note: str = ""
    keys: int = 0
    seconds: float = 0.0
    keys_per_s: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    baseline_p99_ms: float | None = None
    worst_p99_ms: float | None = None
    median_p99_ms: float | None = None
    worst_ratio: float | None = None
    median_ratio: float | None = None
    # the p99 of all of B's verifies during the import against all of them before it
    import_p99_ms: float | None = None
    pooled_baseline_p99_ms: float | None = None
    import_ratio: float | None = None
    # B's p99 with A's CPU kept busy by a spinner and no import (--neighbor-windows): what
    # sharing the machine costs B by itself, the import's windows against it (not a target)
    neighbor_p99_ms: float | None = None
    worst_vs_neighbor: float | None = None
    median_vs_neighbor: float | None = None
    rate_met: bool | None = None     # overall and every segment >= TARGET_KEYS_PER_S
    p99_met: bool | None = None      # worst window <= TARGET_P99_RATIO x baseline
    batch_latency_ms: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    redis_subscribers: int | None = None
    redis_subscribers_after: int | None = None
    # the machine's threads on A's CPU during the run: {"cpu", "threads" moved by program,
    # "unmovable", "not_permitted", "workqueues", "note"}
    machine_pinned: dict[str, Any] = field(default_factory=dict)
    # /metrics deltas over the import, per replica (see METRICS), and warnings in the logs
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    log_warnings: dict[str, list[str]] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    # --loop-holds: B's event-loop callbacks of 0.3 ms or more over the import, by name
    loop_holds: dict[str, Any] = field(default_factory=dict)


# /metrics samples whose change over the import is kept: Redis round trips by op (their
# time: "ack" is A waiting for the other replicas to apply a batch's invalidation), acks
# that timed out, store reads, the garbage collector's pauses by generation
METRICS = ("gateway_redis_duration_seconds_sum", "gateway_redis_duration_seconds_count",
           "gateway_redis_errors_total", "gateway_invalidation_ack_timeouts_total",
           "gateway_store_duration_seconds_sum", "gateway_store_duration_seconds_count",
           "gateway_store_errors_total", "gateway_gc_pause_seconds_sum",
           "gateway_gc_pause_seconds_count")


def metric_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 4) for k, v in sorted(after.items())
            if k.partition("{")[0] in METRICS and v != before.get(k, 0.0)}


def warnings_in(server: Server) -> list[str]:
    """The distinct WARNING/ERROR lines of a server's log (numbers blanked), with counts."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in server.log.read_text(errors="replace").splitlines():
            if "WARNING" in line or "ERROR" in line:
                key = re.sub(r"\d+", "N", line)[:200]
                counts[key] = counts.get(key, 0) + 1
    return [f"{n}x {line}" for line, n in counts.items()]


def redis_subscribers(redis_url: str) -> int:
    """Subscribers of the invalidation channel the replicas publish on: every one of them
    acks each batch's invalidation (``CHANNEL``, or ``CHANNEL:<db>`` since c8ff233)."""
    import redis

    channels = [CHANNEL, f"{CHANNEL}:{bench.redis_db(redis_url)}"]
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        counts = dict(client.pubsub_numsub(*channels))
    finally:
        client.close()
    return max(int(counts.get(c.encode(), 0)) for c in channels)


@contextlib.contextmanager
def replicas(backend: str, cfg: Config, workdir: Path) -> Iterator[tuple[Server, Server]]:
    """Replicas A (pinned to cpu_a) and B (cpu_b) on one fresh store; stopped afterwards,
    then the scratch database dropped."""
    extra = {"GATEWAY_DRAIN_SECONDS": "0"}
    if backend != "sqlite-noredis":
        extra["GATEWAY_REDIS_URL"] = cfg.redis_url
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            if not bench.reachable(cfg.pg_admin_dsn, 5432):
                raise BenchError(f"PostgreSQL at {cfg.pg_admin_dsn} is not reachable")
            extra["GATEWAY_DATABASE_URL"] = stack.enter_context(
                bench.scratch_database(cfg.pg_admin_dsn))
        else:
            (workdir / backend).mkdir(exist_ok=True)
            extra["GATEWAY_DATABASE_URL"] = f"sqlite:///{workdir / backend / 'gateway.db'}"
        if "GATEWAY_REDIS_URL" in extra and not bench.reachable(cfg.redis_url, 6379):
            raise BenchError(f"Redis at {cfg.redis_url} is not reachable")
        # one pepper and one admin token for both: they are replicas of one deployment
        env, token = bench.gateway_env(extra)
        if backend == "postgres":
            bench.migrate(env)
        procs_a = Processes(workdir, {cfg.cpu_a})
        procs_b = Processes(workdir, {cfg.cpu_b})
        stack.callback(procs_b.stop_all)  # before the database is dropped (LIFO)
        stack.callback(procs_a.stop_all)
        serve = [*bench.gateway_command(), "serve", "--host", "127.0.0.1", "--port"]
        servers = []
        for procs, name in ((procs_a, f"{backend}-A"), (procs_b, f"{backend}-B")):
            port = bench.free_port()  # A first: on SQLite it creates and migrates the file
            if cfg.apart and procs is procs_b:  # a store and a Redis db of its own
                (workdir / "apart").mkdir(exist_ok=True)
                env = {**env, "GATEWAY_DATABASE_URL":
                       f"sqlite:///{workdir / 'apart' / 'gateway.db'}"}
                if "GATEWAY_REDIS_URL" in env:
                    env["GATEWAY_REDIS_URL"] = bench.with_db(
                        cfg.redis_url, bench.redis_db(cfg.redis_url) + 1)
            env_of = env
            if cfg.loop_holds:  # load/loop_holds/sitecustomize.py, in each replica
                (workdir / f"holds-{name}").mkdir(exist_ok=True)
                env_of = {**env, "LOOP_HOLDS_DIR": str(workdir / f"holds-{name}"),
                          "PYTHONPATH": os.pathsep.join(
                              p for p in (str(LOOP_HOLDS), env.get("PYTHONPATH", "")) if p)}
            servers.append(procs.start(name, [*serve, str(port)], env_of, port=port,
                                       ready_path="/health/ready", token=token))
            servers[-1].redis_url = env.get("GATEWAY_REDIS_URL", "")
        yield servers[0], servers[1]


@contextlib.contextmanager
def spinning(cpu: int) -> Iterator[None]:
    """A CPU-bound process on ``cpu`` (A's), nothing to do with the gateway, meanwhile."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                               preexec_fn=bench.pinned({cpu}), stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def p99_verdict(run: Run) -> None:
    """Baseline p99 (median of the baseline windows) against the windows of the import."""
    base = [w.p99_ms for w in run.windows if w.phase == "baseline"]
    during = [w.p99_ms for w in run.windows
              if w.phase == "import" and w.seconds >= MIN_WINDOW_S]
    if not base or not during:
        return
    run.baseline_p99_ms = statistics.median(base)
    run.worst_p99_ms, run.median_p99_ms = max(during), statistics.median(during)
    # the p99 of every verify before the import, and of every one during it
    pooled_base = pooled_p99_ms([w for w in run.windows if w.phase == "baseline"])
    run.import_p99_ms = pooled_p99_ms([w for w in run.windows if w.phase == "import"])
    if pooled_base and run.import_p99_ms:
        run.pooled_baseline_p99_ms = pooled_base
        run.import_ratio = run.import_p99_ms / pooled_base
    if run.baseline_p99_ms > 0:
        run.worst_ratio = run.worst_p99_ms / run.baseline_p99_ms
        run.median_ratio = run.median_p99_ms / run.baseline_p99_ms
        run.p99_met = run.worst_ratio <= TARGET_P99_RATIO
    neighbor = [w.p99_ms for w in run.windows if w.phase == "neighbor"]
    if neighbor and statistics.median(neighbor) > 0:
        run.neighbor_p99_ms = statistics.median(neighbor)
        run.worst_vs_neighbor = run.worst_p99_ms / run.neighbor_p99_ms
        run.median_vs_neighbor = run.median_p99_ms / run.neighbor_p99_ms


def measure(backend: str, cfg: Config, wrk: str, workdir: Path, run: Run,
            py_spy: str | None) -> None:
    """One backend, filling ``run`` as it goes (so a failure keeps what was measured)."""
    started = datetime.now(UTC)
    print(f"bulk: [{backend}] making {cfg.keys:,} keys in batches of {cfg.batch:,} …",
          file=sys.stderr, flush=True)
    bodies = make_bodies(cfg.keys, cfg.batch)
    with machine_pinned(cfg.cpu_a) as run.machine_pinned, \
            replicas(backend, cfg, workdir) as (a, b):
        if a.redis_url:
            run.redis_subscribers = redis_subscribers(a.redis_url)
            if run.redis_subscribers > 2:
                print(f"bulk: [{backend}] {run.redis_subscribers} subscribers on the "
                      "invalidation channel (2 are ours): every batch also waits for the "
                      "others' acks", file=sys.stderr)
        bench.seed(b, cfg.verify_keys)
        warm(b, b.secrets)
        request = bench.credential_list(b, "cached", tuple(b.secrets),
                                        bench.expect_verdict({"L1"}))
        cpus_b = {cfg.cpu_b}

        named = {"replica A": a.proc.pid, "replica B": b.proc.pid, "driver": os.getpid()}
        t0 = time.monotonic()  # start_s is from here until the import starts, then from it

        def window(phase: str, until: Callable[[], bool] = lambda: False) -> Window:
            tag = f"{backend}-{phase}-{len(run.windows)}"
            others = CpuMeter(named)
            others.start()
            kernel = cpu_kernel_s(cfg.cpu_b)
            start = time.monotonic()
            result, max_ms, latencies = run_window(
                wrk, b, request, connections=cfg.connections, seconds=cfg.window, cpus=cpus_b,
                tag=tag, until=until)
            if not b.alive():
                raise BenchError(f"{b.name} died:\n{b.log_tail()}")
            w = Window(phase, round(start - t0, 2), round(time.monotonic() - start, 2),
                       result.requests_per_s, result.p50_ms, result.p99_ms, max_ms,
                       result.requests, result.non_2xx + result.socket_errors,
                       others_cpu=round(others.stop()["process_cpu_s"]["other processes"]
                                        / (time.monotonic() - start), 2),
                       others_top=others.result["others_top"],
                       latencies=latencies)
            softirq, steal = (after - before for after, before in zip(
                cpu_kernel_s(cfg.cpu_b), kernel, strict=True))
            w.softirq = round(softirq / max(w.seconds, 0.01), 2)
            w.steal = round(steal / max(w.seconds, 0.01), 2)
            run.windows.append(w)
            print(f"bulk: [{backend}] {phase:8} window at {w.start_s:7.1f}s: "
                  f"{w.requests_per_s:8,.0f} req/s  p50 {w.p50_ms:6.2f}  p99 {w.p99_ms:6.2f}  "
                  f"max {w.max_ms:7.2f} ms  others {w.others_cpu:.2f} CPU  B's CPU: softirq "
                  f"{w.softirq:.0%}, stolen {w.steal:.0%}" + (
                      f"  (others: {', '.join(f'{k} {v:.2f}' for k, v in w.others_top.items())})"
                      if w.others_cpu >= 0.2 else ""), file=sys.stderr, flush=True)
            if w.errors > w.requests * 0.001:
                raise BenchError(f"{w.errors} errors of {w.requests} verifies on {b.name}")
            return w

        for _ in range(cfg.baseline_windows):
            window("baseline")
        if cfg.neighbor_windows:
            with spinning(cfg.cpu_a):
                for _ in range(cfg.neighbor_windows):
                    window("neighbor")
        scraped = {"A": bench.scrape(a), "B": bench.scrape(b)}
        meter = CpuMeter(named)
        driver = ImportDriver(a.url, a.auth, bodies, cfg.clients, on_finish=meter.stop)
        profiler = (Profiler(py_spy, {"A": a.proc.pid, "B": b.proc.pid}, workdir,
                             {cfg.cpu_a}, backend) if cfg.profile and py_spy else None)
        try:
            if profiler is not None:
                time.sleep(1)  # py-spy attaches
            meter.start()
            driver.start()
            for w in run.windows:  # from the start of the import from now on
                w.start_s = round(w.start_s + t0 - driver.started, 2)
            t0 = driver.started
            print(f"bulk: [{backend}] importing with {cfg.clients} clients …",
                  file=sys.stderr, flush=True)
            while driver.running():
                window("import", until=lambda: not driver.running())
            driver.join()
        finally:
            driver.stop()
            if profiler is not None:
                profiler.stop()
        run.cpu = meter.stop()
        if cfg.loop_holds:
            time.sleep(5.5)  # the last totals written
            run.loop_holds = loop_holds(workdir / f"holds-{b.name}", driver.started_wall,
                                        driver.started_wall + (driver.finished
                                                               - driver.started))
        run.metrics = {name: metric_deltas(scraped[name], bench.scrape(server))
                       for name, server in (("A", a), ("B", b))}
        if a.redis_url:
            run.redis_subscribers_after = redis_subscribers(a.redis_url)
        if profiler is not None:
            run.profile = profiler.summary()
        end = driver.finished
        run.keys = driver.keys
        run.seconds = round(end - driver.started, 2)
        run.keys_per_s = round(run.keys / run.seconds, 1) if run.seconds > 0 else 0.0
        run.segments = segments(driver.done, driver.started, cfg.segment)
        latencies = sorted((d.answered - d.sent) * 1000 for d in driver.done)
        if latencies:
            run.batch_latency_ms = {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
                "max": round(latencies[-1], 1)}
        if driver.error is not None:
            raise BenchError(f"import on {a.name}: {driver.error}")
        if not a.alive():
            raise BenchError(f"{a.name} died:\n{a.log_tail()}")
        run.rate_met = (run.keys_per_s >= TARGET_KEYS_PER_S and all(
            s.keys_per_s >= TARGET_KEYS_PER_S for s in run.segments))
        p99_verdict(run)
        for _ in range(cfg.after_windows):
            window("after")
        bench.check_once(b, request, attempts=2)  # B still answers its keys from L1
        if not cfg.apart:
            verify_sample(b, bodies)
        run.log_warnings = {srv.name: found for srv in (a, b) if (found := warnings_in(srv))}
    print(f"bulk: [{backend}] done in {(datetime.now(UTC) - started).total_seconds():.0f}s",
          file=sys.stderr, flush=True)


# -- report -----------------------------------------------------------------------------------


def _ratio(value: float | None, ratio: float | None) -> str:
    return "-" if value is None or ratio is None else f"{value:.2f} ({ratio:.2f}x)"


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("PASS" if flag else "MISS")


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def _timings(deltas: dict[str, float], metric: str, prefix: str = "") -> str:
    """``count x mean ms`` of each label value of a histogram's ``_sum``/``_count`` deltas."""
    by_label: dict[str, dict[str, float]] = {}
    for key, value in deltas.items():
        if m := re.match(rf'{metric}_(sum|count)\{{\w+="(\w+)"\}}', key):
            by_label.setdefault(m[2], {})[m[1]] = value
    return ", ".join(f"{prefix}{label} {v['count']:,.0f} x "
                     f"{1000 * v.get('sum', 0) / v['count']:.1f} ms"
                     for label, v in by_label.items() if v.get("count")) or "none"


def render(runs: list[Run], cfg: Config) -> str:
    lines = _table(
        ["backend", "keys", "seconds", "keys/s", "slowest segment", "base p99 ms",
         "worst p99 ms", "median p99 ms", f">={TARGET_KEYS_PER_S:,.0f}/s",
         f"p99 <={TARGET_P99_RATIO:g}x", "status"],
        [[r.backend, f"{r.keys:,}", f"{r.seconds:.1f}", f"{r.keys_per_s:,.0f}",
          f"{min(s.keys_per_s for s in r.segments):,.0f}" if r.segments else "-",
          f"{r.baseline_p99_ms:.2f}" if r.baseline_p99_ms is not None else "-",
          _ratio(r.worst_p99_ms, r.worst_ratio), _ratio(r.median_p99_ms, r.median_ratio),
          _met(r.rate_met), _met(r.p99_met),
          r.status if r.status == "ok" else f"{r.status.upper()}: {r.note}"] for r in runs])
    for r in runs:
        if r.segments:
            lines += ["", f"{r.backend}: keys/s per {cfg.segment:,} keys"
                      + (f"; batch latency ms p50 {r.batch_latency_ms['p50']}, p99 "
                         f"{r.batch_latency_ms['p99']}, max {r.batch_latency_ms['max']}"
                         if r.batch_latency_ms else "")]
            lines += _table(["keys", "seconds", "keys/s"],
                            [[f"{s.first_key:,}-{s.last_key:,}", f"{s.seconds:.1f}",
                              f"{s.keys_per_s:,.0f}"] for s in r.segments])
        if r.windows:
            lines += ["", f"{r.backend}: replica B, cached verify, {cfg.connections} connections"]
            if r.neighbor_p99_ms is not None:
                lines += [f"{r.backend}: B's p99 with A's CPU spinning and no import (neighbor) "
                          f"{r.neighbor_p99_ms:.2f} ms; the import's windows against it: worst "
                          f"{_ratio(r.worst_p99_ms, r.worst_vs_neighbor)}, median "
                          f"{_ratio(r.median_p99_ms, r.median_vs_neighbor)}"]
            if r.import_ratio is not None:
                lines += [f"{r.backend}: B's p99 over the whole import (every verify of its "
                          f"windows pooled) {_ratio(r.import_p99_ms, r.import_ratio)} against "
                          f"{r.pooled_baseline_p99_ms:.2f} ms over the baseline windows "
                          "(not the verdict: that is the worst window)"]
            lines += _table(["phase", "at s", "seconds", "req/s", "p50 ms", "p99 ms", "max ms",
                             "others CPU", "B's CPU softirq", "stolen"],
                            [[w.phase, f"{w.start_s:.1f}", f"{w.seconds:.1f}",
                              f"{w.requests_per_s:,.0f}", f"{w.p50_ms:.2f}", f"{w.p99_ms:.2f}",
                              f"{w.max_ms:.2f}", f"{w.others_cpu:.2f}", f"{w.softirq:.0%}",
                              f"{w.steal:.0%}"] for w in r.windows])
        if r.cpu:
            procs = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu["process_cpu_s"].items())
            busy = ", ".join(f"cpu{k} {v:.0%}" for k, v in r.cpu["cpu_busy_share"].items())
            lines += ["", f"{r.backend}: CPU seconds over the import's {r.cpu['wall_s']:.1f} s: "
                      f"{procs}; busy: {busy}"]
        if pin := r.machine_pinned:
            lines.append(
                f"{r.backend}: the machine's threads pinned to cpu{pin['cpu']} ("
                + ", ".join(f"{k} {v}" for k, v in pin["threads"].items())
                + f"; {pin['unmovable']} per-CPU kernel threads stay; unbound work queues "
                + ("too" if pin.get("workqueues") else "not moved") + ")"
                + (f"; {pin['note']}" if pin.get("note") else ""))
        for name, deltas in r.metrics.items():
            other = ", ".join(f"{k} {v:,.0f}" for k, v in deltas.items()
                              if not k.startswith(("gateway_redis_duration", "gateway_gc_")))
            lines.append(f"{r.backend}: replica {name} during the import: Redis round trips "
                         f"{_timings(deltas, 'gateway_redis_duration_seconds')}; GC pauses "
                         f"{_timings(deltas, 'gateway_gc_pause_seconds', 'gen')}"
                         + (f"; {other}" if other else ""))
        for name, found in r.log_warnings.items():
            lines += [f"{r.backend}: {name} log: {w}" for w in found[:5]]
        if r.loop_holds:
            lines += ["", f"{r.backend}: replica B's event-loop holds over the import "
                      f"(asyncio loop; {r.loop_holds['seconds']:.0f} s; count, total ms, "
                      "max ms over the run, count <0.5 / <1 / <2 / <5 / <20 / >=20 ms):"]
            lines += [f"  {n:6,} {total:8.1f} {top:7.2f}  {buckets}  {name}"
                      for name, (n, total, top, buckets) in r.loop_holds["top"]]
        for name, prof in r.profile.items():
            lines += ["", f"{r.backend}: py-spy of replica {name} ({prof['samples']:,} "
                      "samples; share of samples, self / inclusive)"]
            lines += [f"  self {share:6.1%}  {frame}" for frame, share in prof["self"]]
            lines += [f"  incl {share:6.1%}  {frame}" for frame, share in prof["inclusive"]]
    return "\n".join(lines)


def loop_holds(folder: Path, since: float, until: float, top: int = 15) -> dict[str, Any]:
    """The holds (``load/loop_holds``) between the totals written nearest ``since`` and
    ``until`` (wall clock), the longest in all first."""
    snaps = [json.loads(line) for path in folder.glob("holds-*.jsonl")
             for line in path.read_text().splitlines()]
    if len(snaps) < 2:
        return {}
    first = min(snaps, key=lambda snap: abs(snap["t"] - since))
    last = min(snaps, key=lambda snap: abs(snap["t"] - until))
    rows = []
    for name, (n, total, top_s, buckets) in last["holds"].items():
        n0, total0, _, buckets0 = first["holds"].get(name, [0, 0.0, 0.0, [0] * len(buckets)])
        if n > n0:
            rows.append((name, (n - n0, round((total - total0) * 1000, 1),
                                round(top_s * 1000, 2),
                                [b - b0 for b, b0 in zip(buckets, buckets0, strict=True)])))
    rows.sort(key=lambda row: -row[1][1])
    return {"seconds": round(last["t"] - first["t"], 1), "top": rows[:top]}


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()
    spec = importlib.util.find_spec("gateway")
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": git("status", "--short", "--", "gateway"),
            # the package the servers run (PYTHONPATH may point at another copy)
            "gateway_package": str(Path(spec.origin).parent) if spec and spec.origin else "?"}


def _without_latencies(run: dict[str, Any]) -> dict[str, Any]:
    for window in run["windows"]:
        window.pop("latencies", None)
    return run


def write_results(runs: list[Run], args: argparse.Namespace, cfg: Config, wrk: str,
                  started: datetime) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bulk-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({
        "started": started.isoformat(),
        "config": asdict(cfg) | {"redis_url": cfg.redis_url, "pg_admin_dsn": "(not kept)"},
        "targets": {"keys_per_s": TARGET_KEYS_PER_S, "p99_ratio": TARGET_P99_RATIO},
        "argv": sys.argv[1:],
        "git": git_state(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "wrk": bench.wrk_version(wrk),
                    "loadavg_at_end": os.getloadavg()},
        "runs": [_without_latencies(asdict(r)) for r in runs],
    }, indent=2) + "\n")
    return path


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to import")
    parser.add_argument("--batch", type=int, default=1_000, help="items per batchCreate")
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent batchCreate clients")
    parser.add_argument("--segment", type=int,
                        help="keys per reported segment (default 100,000, or a tenth of "
                             "--keys when smaller)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help=f"comma-separated, of {', '.join(BACKENDS)} (sqlite and "
                             "postgres use Redis; sqlite-noredis: replicas learn new keys "
                             "from the store only)")
    parser.add_argument("--window", type=int, default=10, help="seconds per wrk window on B")
    parser.add_argument("--baseline-windows", type=int, default=3,
                        help="windows before the import (the baseline p99 is their median)")
    parser.add_argument("--neighbor-windows", type=int, default=1,
                        help="windows after the baseline with a CPU-bound spinner on A's CPU "
                             "and no import: what sharing the machine costs B by itself "
                             "(reported beside the target, not part of it)")
    parser.add_argument("--after-windows", type=int, default=1, help="windows after it")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c against B")
    parser.add_argument("--verify-keys", type=int, default=8,
                        help="keys issued on B and verified (cached) in turn")
    parser.add_argument("--cpus", default="0,1", metavar="B,A",
                        help="CPU of replica B and its wrk, CPU of replica A and the driver")
    parser.add_argument("--redis-url", default=os.environ.get(
        "GATEWAY_TEST_REDIS_BULK", "redis://127.0.0.1:6379/12"),
        help="Redis of both replicas (a spare db: the import leaves tombstones there)")
    parser.add_argument("--pg-admin-dsn", default=os.environ.get(
        "GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy both replicas during the import (slows A down)")
    parser.add_argument("--apart", action="store_true",
                        help="a control: B on a store and a Redis db of its own, so it has "
                             "no part in the import (A's load on the machine is the same)")
    parser.add_argument("--loop-holds", action="store_true",
                        help="time every event-loop callback of the replicas (on asyncio's "
                             "loop, not uvloop: slower) and print B's holds of 0.3 ms or "
                             "more over the import, by coroutine (load/loop_holds)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, DBs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if min(args.keys, args.batch, args.clients, args.window, args.connections,
           args.verify_keys) < 1 or args.baseline_windows < 1 or min(
               args.after_windows, args.neighbor_windows) < 0:
        parser.error("counts and durations must be positive (--after-windows and "
                     "--neighbor-windows may be 0)")
    if args.batch > 1_000:
        parser.error("--batch: the gateway takes at most 1,000 items a batch")
    cpu_b, cpu_a = cpu_pair(parser, args.cpus)
    args.backend_list, args.cpu_a, args.cpu_b = backends, cpu_a, cpu_b
    return args


def cpu_pair(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """``--cpus B,A``: two different CPUs this process may use (a usage error otherwise)."""
    try:
        cpu_b, cpu_a = (int(c) for c in text.split(","))
    except ValueError:
        parser.error("--cpus: two CPU numbers, B's then A's (e.g. 0,1)")
    if cpu_a == cpu_b or not {cpu_a, cpu_b} <= os.sched_getaffinity(0):
        parser.error(f"--cpus: two different CPUs of {sorted(os.sched_getaffinity(0))}")
    return cpu_b, cpu_a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("bulk: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(
        Path(sys.executable).parent))
    if args.profile and py_spy is None:
        print("bulk: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    segment = args.segment or min(100_000, max(args.batch, args.keys // 10))
    cfg = Config(args.keys, args.batch, args.clients, segment, args.window,
                 args.baseline_windows, args.neighbor_windows, args.after_windows,
                 args.connections,
                 args.verify_keys, args.cpu_a, args.cpu_b, args.redis_url,
                 args.pg_admin_dsn, args.profile, args.apart, args.loop_holds)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bulk-"))
    signal.signal(signal.SIGTERM, bench._raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with &
    # This process is the import driver: on A's CPU (its threads inherit it). Servers and
    # wrk get their CPUs explicitly.
    os.sched_setaffinity(0, {cfg.cpu_a})
    print(f"bulk: {cfg.keys:,} keys, batches of {cfg.batch:,}, {cfg.clients} clients; B and "
          f"wrk on cpu{cfg.cpu_b}, A, the driver and the rest of the machine on cpu{cfg.cpu_a}; "
          f"work dir {workdir}",
          file=sys.stderr)
    runs: list[Run] = []
    failed = False
    try:
        for backend in args.backend_list:
            run = Run(backend)
            runs.append(run)
            try:
                measure(backend, cfg, wrk, workdir, run, py_spy)
            except (BenchError, httpx.HTTPError, subprocess.TimeoutExpired, OSError) as exc:
                run.status, run.note = "failed", str(exc).strip().splitlines()[0][:300]
                print(f"bulk: [{backend}] failed: {exc}", file=sys.stderr)
    except BaseException:
        failed = True
        raise
    finally:
        if runs:
            print()
            print(render(runs, cfg))
            path = write_results(runs, args, cfg, wrk, started)
            print(f"\nresults: {path.relative_to(ROOT)}")
        failed = failed or any(r.status != "ok" for r in runs)
        if args.keep or failed:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        return 1
    if args.strict and any(r.rate_met is False or r.p99_met is False for r in runs):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bulk: interrupted; every process stopped", file=sys.stderr)
        sys.exit(130)
