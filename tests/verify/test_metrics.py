"""What ``/metrics`` counts for the hot routes: every answer once, whichever path gave it.

The L1 fast path (a bare request for a plain key in L1) keeps its own plain counter; at
scrape time it must show up as a (valid, L1) result and an L1 hit, beside the answers of
the general path, and the route latency histograms must count every request.
"""

from __future__ import annotations

from typing import Any

from conftest import secret_format
from verify_helpers import (
    BATCH_VERIFY,
    ISSUED,
    VERIFY,
    batch,
    decide,
    http,
    issue,
    metric,
    scrape,
    verify,
)


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


def test_fast_path_hits_are_counted_and_no_ratio_is_exported(gateway: Any) -> None:
    """Hit rates are PromQL's (rate of hits over rate of lookups): the counters count the
    fast path's hits, and no since-start ratio gauge is exported beside them."""
    secret, _ = issue(gateway)
    verify(gateway, secret)
    before = metric(scrape(gateway), "gateway_cache_requests_total", level="L1", result="hit")
    for _ in range(5):
        assert verify(gateway, secret).headers["x-cache"] == "L1"
    text = scrape(gateway)
    assert metric(text, "gateway_cache_requests_total", level="L1", result="hit") \
        == before + 5
    names = {line.split("{")[0].split()[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert "gateway_cache_requests_total" in names
    assert not [name for name in names if "_ratio" in name]


def test_hot_route_latency_has_the_answers_status(gateway: Any) -> None:
    """The fast half's answers count as 200s; the general half's by the status sent."""
    secret, _ = issue(gateway)
    verify(gateway, secret)

    def count(route: str, status: str) -> float:
        return metric(scrape(gateway), "gateway_request_duration_seconds_count", route=route,
                      status=status)

    before = {(r, s): count(r, s) for r in ("verify", "forward_auth", "batch_verify")
              for s in ("200", "400", "401", "405")}
    assert verify(gateway, secret).headers["x-cache"] == "L1"  # fast half: 200
    assert decide(gateway, secret).status_code == 200  # fast half: 200
    assert decide(gateway, "not-a-key").status_code == 401  # general half
    assert verify(gateway, secret, headers={"Authorization": "Bearer wrong"}
                  ).status_code == 401  # general half: the admin token is refused
    r = http().post(gateway.url + BATCH_VERIFY, headers=gateway.auth, content=b"{")
    assert r.status_code == 400
    assert http().get(gateway.url + VERIFY, headers=gateway.auth).status_code == 405
    delta = {key: count(*key) - n for key, n in before.items()}
    assert {key: n for key, n in delta.items() if n} == {
        ("verify", "200"): 1, ("verify", "401"): 1, ("verify", "405"): 1,
        ("forward_auth", "200"): 1, ("forward_auth", "401"): 1, ("batch_verify", "400"): 1}


def test_admin_routes_are_timed_by_template_method_and_status(gateway: Any) -> None:
    _, key = issue(gateway)
    key_id = key["key_id"]
    name = "gateway_http_request_duration_seconds_count"
    route = "/v2alpha1/admin/issuedApiKeys/{key_id}"
    before = metric(scrape(gateway), name, route=route, method="GET", status="200")
    missing = metric(scrape(gateway), name, route=route, method="GET", status="404")
    assert http().get(f"{gateway.url}{ISSUED}/{key_id}", headers=gateway.auth
                      ).status_code == 200
    assert http().get(f"{gateway.url}{ISSUED}/nope-{key_id}", headers=gateway.auth
                      ).status_code == 404
    assert http().request("PROPFIND", f"{gateway.url}/health/alive").status_code == 405
    assert http().get(f"{gateway.url}/no/such/{key_id}").status_code == 404
    text = scrape(gateway)
    assert metric(text, name, route=route, method="GET", status="200") == before + 1
    assert metric(text, name, route=route, method="GET", status="404") == missing + 1
    assert metric(text, name, route="/health/alive", method="other", status="405") >= 1
    assert metric(text, name, route="unmatched", method="GET", status="404") >= 1
    assert key_id not in text  # a template, never the path
    assert "PROPFIND" not in text


def test_process_platform_and_build_series_are_exported(gateway: Any) -> None:
    from gateway.version import VERSION

    text = scrape(gateway)
    assert metric(text, "process_resident_memory_bytes") > 0
    assert metric(text, "process_cpu_seconds_total") > 0
    assert metric(text, "python_info") == 1
    assert metric(text, "python_gc_collections_total") >= 0
    assert metric(text, "gateway_build_info", version=VERSION) == 1


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
