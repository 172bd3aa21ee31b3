"""deploy/grafana/gateway.json: a dashboard Grafana imports (recent schema, the data source
a variable), over series a running gateway exports, in PromQL that Prometheus parses
(``promtool check rules`` on the expressions as recording rules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prometheus_helpers import (
    DASHBOARD,
    as_promql,
    dashboard,
    dashboard_exprs,
    exported,
    metric_names,
    panels,
    recorded,
    run_promtool,
    unknown_names,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}



def test_the_dashboard_is_json_grafana_imports() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["schemaVersion"] >= 36
    assert document["uid"] and document["title"]
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(document)]
    assert len(ids) == len(set(ids))
    for panel in panels(document):
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        # the data source is the variable, never a uid of someone's Grafana
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


def test_the_dashboard_shows_what_operators_watch() -> None:
    read = set().union(*map(metric_names, dashboard_exprs(dashboard()).values()))
    assert read >= {
        "gateway_request_duration_seconds_count",       # request rate, error ratio by route
        "gateway_http_request_duration_seconds_count",
        "gateway_request_duration_seconds_bucket",      # verify latency p50/p99
        "gateway_cache_requests_total",                 # cache hit rate by level
        "gateway_redis_errors_total", "gateway_store_errors_total",
        "gateway_invalidation_ack_timeouts_total",
        "gateway_signing_key_activated_timestamp_seconds",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
    }


def test_every_series_the_dashboard_reads_is_exported(scraped: str) -> None:
    names, labels = exported(scraped)
    exprs = dashboard_exprs(dashboard())
    # the dashboard reads the gateway's series, not the rules' (it works without them)
    assert not [name for expr in exprs.values() for name in metric_names(expr) if ":" in name]
    assert unknown_names(exprs, names, labels, recorded()) == []


def _check_as_rules(exprs: dict[str, str], tmp: Path) -> Any:
    rules = tmp / "dashboard.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(exprs.values())]}]}))
    return run_promtool("check", "rules", str(rules))


def test_every_expression_parses_as_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs(dashboard())
    result = _check_as_rules(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    # and the check can fail
    broken = _check_as_rules({"broken": "sum(rate(gateway_cache_requests_total[5m])"},
                             tmp_path)
    assert broken.returncode != 0
