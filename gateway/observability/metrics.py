"""Prometheus metrics. One registry per Services, so tests can build several apps.

Labels carry outcomes, cache levels, routes and operation names only: never a credential,
digest, key id or actor.

The three series touched on every verify (results, cache lookups, route latency) are
accumulated in plain ints by ``HotCounters`` and turned into Prometheus families only at
scrape time: a labelled prometheus_client child costs about a microsecond per update,
which is a large share of a cached verify.

Only counters and histograms that PromQL rates (no since-start ratios), the process
(``process_*``) and interpreter (``python_*``) collectors, and ``gateway_build_info``.
deploy/prometheus/ holds the recording and alert rules over these series, deploy/grafana/
the dashboard; tests/test_prometheus_rules.py checks that every name they use is here.
"""

from __future__ import annotations

import bisect
import gc
import platform
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.version import VERSION

disable_created_metrics()  # type: ignore[no-untyped-call]

# the methods gateway_http_request_duration_seconds names; any other is "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Bucket counts in a list; ``observe`` is a bisect and two additions."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def merged(self, other: LatencyHistogram | None) -> LatencyHistogram:
        """A new histogram holding this one's observations and ``other``'s."""
        both = LatencyHistogram()
        both.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)] \
            if other is not None else list(self.counts)
        both.total = self.total + (other.total if other is not None else 0.0)
        return both

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class StatusLatency:
    """A hot route's answers of its general half, by status (a few: 200, 400, 401 …)."""

    def __init__(self) -> None:
        self.by_status: dict[int, LatencyHistogram] = {}

    def observe(self, status: int, seconds: float) -> None:
        hist = self.by_status.get(status)
        if hist is None:
            hist = self.by_status[status] = LatencyHistogram()
        hist.observe(seconds)


class HotCounters(Collector):
    def __init__(self) -> None:
        self.results: dict[tuple[str, str], int] = {}
        self.cache_lookups: dict[tuple[str, str], int] = {}
        # the answers of the hot routes' fast halves (gateway.http.hot): all 200, so they
        # are timed without a status and added to the 200 series at scrape time
        self.latency: dict[str, LatencyHistogram] = {}
        # the answers of their general halves, by status
        self.answered: dict[str, StatusLatency] = {}
        # Valid answers of the L1 fast paths (gateway.http.l1_answers): each is one L1 hit and one
        # (valid, L1) result, added to both series at scrape time.
        self.l1_valid = 0

    def collect(self) -> Iterator[Metric]:
        results = CounterMetricFamily("gateway_verify_results",
                                      "Verification outcomes by result and cache level.",
                                      labels=["outcome", "cache"])
        merged = dict(self.results)
        if self.l1_valid:
            merged[("valid", "L1")] = merged.get(("valid", "L1"), 0) + self.l1_valid
        for (outcome, cache), n in sorted(merged.items()):
            results.add_metric([outcome, cache], n)
        yield results
        lookups = CounterMetricFamily("gateway_cache_requests",
                                      "Cache lookups by level and result (hit/miss).",
                                      labels=["level", "result"])
        for level in ("L1", "L2"):
            hits = self.cache_lookups.get((level, "hit"), 0)
            if level == "L1":
                hits += self.l1_valid
            lookups.add_metric([level, "hit"], hits)
            lookups.add_metric([level, "miss"], self.cache_lookups.get((level, "miss"), 0))
        yield lookups
        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Latency of the hot routes (verify, batch_verify, forward_auth), by status.",
            labels=["route", "status"])
        for route in sorted(self.latency.keys() | self.answered.keys()):
            answered = self.answered.get(route)
            by_status = dict(answered.by_status) if answered is not None else {}
            fast = self.latency.get(route)
            if fast is not None:
                by_status[200] = fast.merged(by_status.get(200))
            for status, hist in sorted(by_status.items()):
                latency.add_metric([route, str(status)], hist.buckets(), hist.total)
        yield latency


class SigningSchedule(Collector):
    """When the ACTIVE signing key became active and, with AUTO rotation, when it rotates."""

    def __init__(self, read: Callable[[], tuple[float, float | None] | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        schedule = self._read()
        if schedule is None:
            return
        activated, due = schedule
        yield GaugeMetricFamily("gateway_signing_key_activated_timestamp_seconds",
                                "When the ACTIVE signing key became active (Unix time).",
                                value=activated)
        if due is not None:
            yield GaugeMetricFamily("gateway_signing_key_next_rotation_timestamp_seconds",
                                    "When AUTO rotation retires the ACTIVE signing key.",
                                    value=due)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the process's own: process_* (CPU, memory, open files), python_info, python_gc_*
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("gateway_build", "The running gateway's version and Python version.",
             registry=r).info({"version": VERSION, "python": platform.python_version()})
        self.hot = HotCounters()
        r.register(self.hot)
        self.http_latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Latency of the routes other than the hot ones, by route template, method and "
            "status.", ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.redis_errors = Counter(
            "gateway_redis_errors", "Redis failures by operation.", ["op"], registry=r)
        self.redis_latency = Histogram(
            "gateway_redis_duration_seconds", "Redis round trips by operation.", ["op"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.redis_primary_changes = Counter(
            "gateway_redis_primary_changes",
            "Times Sentinel named another Redis primary (a failover) to this replica.",
            registry=r)
        self.store_errors = Counter(
            "gateway_store_errors", "Store failures on the verify path.", ["op"], registry=r)
        self.store_latency = Histogram(
            "gateway_store_duration_seconds", "Store lookups on the verify path.", ["op"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "gateway_batch_verify_size", "Credentials per batchVerify call.",
            buckets=(1, 2, 5, 10, 20, 50, 100), registry=r)
        self.invalidation_timeouts = Counter(
            "gateway_invalidation_ack_timeouts", "Invalidations not acked by every replica.",
            registry=r)
        self.derivations = Counter(
            "gateway_token_derivations", "Derived tokens minted, by algorithm and outcome.",
            ["algorithm", "outcome"], registry=r)
        self.derived_verifications = Counter(
            "gateway_derived_token_verifications", "Derived-token verifications.",
            ["kind", "outcome"], registry=r)
        self.gc_pauses = Histogram(
            "gateway_gc_pause_seconds", "Garbage-collector runs (every request waits for "
            "them), by generation.", ["generation"], buckets=LATENCY_BUCKETS, registry=r)

    def watch_gc(self) -> Callable[[], None]:
        """Time the collector's runs into ``gc_pauses``; returns the undo."""
        started = [0.0]
        observe = [self.gc_pauses.labels(str(g)).observe for g in range(3)]

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                observe[info["generation"]](time.perf_counter() - started[0])

        gc.callbacks.append(callback)
        return lambda: gc.callbacks.remove(callback)

    def watch_signing(self, read: Callable[[], tuple[float, float | None] | None]) -> None:
        """Publish the signing-key schedule that ``read`` reports (``Keyring.schedule``)."""
        self.registry.register(SigningSchedule(read))

    def latency(self, route: str) -> Callable[[float], None]:
        """Times the answers of hot ``route``'s fast half (every one a 200)."""
        hist = self.hot.latency.setdefault(route, LatencyHistogram())
        return hist.observe

    def answered(self, route: str) -> Callable[[int, float], None]:
        """Times the answers of hot ``route``'s general half: ``(status, seconds)``."""
        return self.hot.answered.setdefault(route, StatusLatency()).observe

    def http_request(self, route: str | None, method: str, status: int,
                     seconds: float) -> None:
        """One answer of a route other than the hot ones: ``route`` its template (None: no
        route matched). Label values stay few: a method not in ``METHODS`` is ``other``."""
        self.http_latency.labels(route or "unmatched", method if method in METHODS else "other",
                                 str(status)).observe(seconds)

    def cache(self, level: str, hit: bool) -> None:
        key = (level, "hit" if hit else "miss")
        lookups = self.hot.cache_lookups
        lookups[key] = lookups.get(key, 0) + 1

    def result(self, outcome: str, cache: str, n: int = 1) -> None:
        key = (outcome, cache)
        results = self.hot.results
        results[key] = results.get(key, 0) + n
