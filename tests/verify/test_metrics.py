"""What ``/metrics`` counts for the hot routes: every answer once, whichever path gave it.

The L1 fast path (a bare request for a plain key in L1) keeps its own plain counter; at
scrape time it must show up as a (valid, L1) result and an L1 hit, beside the answers of
the general path, and the route latency histograms must count every request.
"""

from __future__ import annotations

from typing import Any

from conftest import secret_format
from verify_helpers import batch, decide, issue, metric, scrape, verify


def _counts(gw: Any) -> dict[str, float]:
    text = scrape(gw)
    return {
        "valid_l1": metric(text, "gateway_verify_results_total", outcome="valid", cache="L1"),
        "not_found": metric(text, "gateway_verify_results_total", outcome="not_found"),
        "l1_hits": metric(text, "gateway_cache_requests_total", level="L1", result="hit"),
        "verify": metric(text, "gateway_request_duration_seconds_count", route="verify"),
        "batch": metric(text, "gateway_request_duration_seconds_count", route="batch_verify"),
        "forward": metric(text, "gateway_request_duration_seconds_count",
                          route="forward_auth"),
    }


def test_answers_from_l1_are_counted_as_valid_l1_results_and_hits(gateway: Any) -> None:
    secret, _ = issue(gateway)
    assert verify(gateway, secret).headers["x-cache"] == "STORE"  # fills L1
    before = _counts(gateway)
    assert verify(gateway, secret).headers["x-cache"] == "L1"
    assert verify(gateway, secret).headers["x-cache"] == "L1"
    r = batch(gateway, [secret, secret, secret_format().new_secret("ory_ak")])
    assert r.headers["x-cache"] == "L1=2,STORE=1"
    assert decide(gateway, secret).status_code == 200
    after = _counts(gateway)
    delta = {k: after[k] - before[k] for k in after}
    assert delta["valid_l1"] == 5
    assert delta["l1_hits"] >= 5
    assert delta["not_found"] == 1
    assert (delta["verify"], delta["batch"], delta["forward"]) == (2, 1, 1)


def test_the_hit_ratio_includes_fast_path_hits(gateway: Any) -> None:
    secret, _ = issue(gateway)
    verify(gateway, secret)
    for _ in range(5):
        assert verify(gateway, secret).headers["x-cache"] == "L1"
    text = scrape(gateway)
    hits = metric(text, "gateway_cache_requests_total", level="L1", result="hit")
    misses = metric(text, "gateway_cache_requests_total", level="L1", result="miss")
    ratio = metric(text, "gateway_cache_hit_ratio", level="L1")
    assert hits >= 5
    assert abs(ratio - hits / (hits + misses)) < 1e-9


def test_collector_pauses_are_timed_by_generation() -> None:
    """Every request waits for a garbage collection: gateway_gc_pause_seconds shows them."""
    import gc

    from gateway.observability.metrics import Metrics

    metrics = Metrics()
    unwatch = metrics.watch_gc()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        unwatch()
    gc.collect(2)  # no longer timed
    counts = {s.labels["generation"]: s.value
              for m in metrics.registry.collect() if m.name == "gateway_gc_pause_seconds"
              for s in m.samples if s.name.endswith("_count")}
    assert counts["0"] >= 1 and counts["2"] == 1
