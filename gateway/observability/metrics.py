"""Prometheus metrics. One registry per Services, so tests can build several apps.

Labels carry outcomes, cache levels, routes and operation names only: never a credential,
digest, key id or actor.

The three series touched on every verify (results, cache lookups, route latency) are
accumulated in plain ints by ``HotCounters`` and turned into Prometheus families only at
scrape time: a labelled prometheus_client child costs about a microsecond per update,
which is a large share of a cached verify.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]

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

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class HotCounters(Collector):
    def __init__(self) -> None:
        self.results: dict[tuple[str, str], int] = {}
        self.cache_lookups: dict[tuple[str, str], int] = {}
        self.latency: dict[str, LatencyHistogram] = {}
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
        ratio = GaugeMetricFamily("gateway_cache_hit_ratio",
                                  "Share of lookups a cache level answered, since start.",
                                  labels=["level"])
        for level in ("L1", "L2"):
            hits = self.cache_lookups.get((level, "hit"), 0)
            if level == "L1":
                hits += self.l1_valid
            misses = self.cache_lookups.get((level, "miss"), 0)
            lookups.add_metric([level, "hit"], hits)
            lookups.add_metric([level, "miss"], misses)
            ratio.add_metric([level], hits / (hits + misses) if hits + misses else 0.0)
        yield lookups
        yield ratio
        latency = HistogramMetricFamily("gateway_request_duration_seconds",
                                        "Latency of the hot routes.", labels=["route"])
        for route, hist in sorted(self.latency.items()):
            latency.add_metric([route], hist.buckets(), hist.total)
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
        self.hot = HotCounters()
        r.register(self.hot)
        self.redis_errors = Counter(
            "gateway_redis_errors", "Redis failures by operation.", ["op"], registry=r)
        self.redis_latency = Histogram(
            "gateway_redis_duration_seconds", "Redis round trips by operation.", ["op"],
            buckets=LATENCY_BUCKETS, registry=r)
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
        hist = self.hot.latency.setdefault(route, LatencyHistogram())
        return hist.observe

    def cache(self, level: str, hit: bool) -> None:
        key = (level, "hit" if hit else "miss")
        lookups = self.hot.cache_lookups
        lookups[key] = lookups.get(key, 0) + 1

    def result(self, outcome: str, cache: str, n: int = 1) -> None:
        key = (outcome, cache)
        results = self.hot.results
        results[key] = results.get(key, 0) + n
