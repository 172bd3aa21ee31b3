"""Prometheus metrics. One registry per Services, so tests can build several apps.

Labels carry outcomes, cache levels, routes and operation names only: never a credential,
digest, key id or actor.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5)
CACHE_LEVELS = ("L1", "L2", "STORE", "NONE")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.verify_results = Counter(
            "gateway_verify_results", "Verification outcomes by result and cache level.",
            ["outcome", "cache"], registry=r)
        self.request_latency = Histogram(
            "gateway_request_duration_seconds", "Latency of the hot routes.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.cache_requests = Counter(
            "gateway_cache_requests", "Cache lookups by level and result (hit/miss).",
            ["level", "result"], registry=r)
        self.cache_hit_ratio = Gauge(
            "gateway_cache_hit_ratio", "Share of lookups answered by a cache level since start.",
            ["level"], registry=r)
        self.redis_errors = Counter(
            "gateway_redis_errors", "Redis failures by operation.", ["op"], registry=r)
        self.redis_latency = Histogram(
            "gateway_redis_duration_seconds", "Redis round trips by operation.", ["op"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter(
            "gateway_store_errors", "Store failures on the verify path.", ["op"], registry=r)
        self.store_latency = Histogram(
            "gateway_store_duration_seconds", "Store lookups on the verify path.", ["op"],
            buckets=_LATENCY_BUCKETS, registry=r)
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
        self._hits = {level: self.cache_requests.labels(level, "hit") for level in ("L1", "L2")}
        self._misses = {level: self.cache_requests.labels(level, "miss") for level in ("L1", "L2")}
        self._counts = {"L1": [0, 0], "L2": [0, 0]}
        for level in ("L1", "L2"):
            self.cache_hit_ratio.labels(level).set_function(self._ratio(level))
        self._results: dict[tuple[str, str], Counter] = {}

    def _ratio(self, level: str):  # type: ignore[no-untyped-def]
        def compute() -> float:
            hits, total = self._counts[level]
            return hits / total if total else 0.0

        return compute

    def cache(self, level: str, hit: bool) -> None:
        counts = self._counts[level]
        counts[1] += 1
        if hit:
            counts[0] += 1
            self._hits[level].inc()
        else:
            self._misses[level].inc()

    def result(self, outcome: str, cache: str) -> None:
        child = self._results.get((outcome, cache))
        if child is None:
            child = self._results[(outcome, cache)] = self.verify_results.labels(outcome, cache)
        child.inc()
