"""deploy/prometheus/: the recording and alert rules pass ``promtool check rules``, their
unit tests (deploy/prometheus/tests/*.yml) pass ``promtool test rules``, every alert has a
unit test where it fires and one where it stays silent, and every series the rules read is
one a running gateway exports (or one the rules record). Also ``promtool check metrics``
on that gateway's ``/metrics``.

promtool comes from the Debian package ``prometheus``: skipped locally without it, a failure
on CI (``CI=true``).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_helpers import (
    RULE_TESTS,
    RULES,
    exported,
    metric_names,
    recorded,
    rule_exprs,
    rules,
    run_promtool,
    selectors,
    unknown_names,
)


def test_the_names_of_an_expression_are_read() -> None:
    expr = ('sum by (job, le) (rate(a_bucket{status=~"5..", x="by (y)"}[5m] offset 1h))'
            ' / on (job) group_left b:rec unless histogram_quantile(0.99, c) > 1e3'
            ' and time() - d{job="x"}')
    assert metric_names(expr) == {"a_bucket", "b:rec", "c", "d"}
    assert dict(selectors(expr)) == {"a_bucket": {"status", "x"}, "d": {"job"}}


def test_the_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files
    result = run_promtool("test", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_unit_test_fails(tmp_path: Path) -> None:
    """The unit tests can fail: an alert expected where there is no series."""
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({
        "rule_files": [str(RULES)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [], "alert_rule_test": [{
            "eval_time": "10m", "alertname": "GatewayStoreErrors",
            "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "gateway"}}]}]}]}))
    result = run_promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "GatewayStoreErrors" in result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        document = yaml.safe_load(path.read_text())
        assert [str(Path(f)) for f in document["rule_files"]] == ["../gateway.rules.yml"]
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts >= {"GatewayHighErrorRatio", "GatewayVerifyLatencyHigh", "GatewayRedisErrors",
                      "GatewayStoreErrors", "GatewayInvalidationAckTimeouts",
                      "GatewaySigningKeyRotationOverdue", "GatewaySigningKeyOld"}
    assert alerts - fires == set(), "alerts no unit test sees firing"
    assert alerts - silent == set(), "alerts no unit test sees silent"
    assert (fires | silent) - alerts == set(), "unit tests of alerts that do not exist"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_series_the_rules_read_is_exported(scraped: str) -> None:
    names, labels = exported(scraped)
    exprs = rule_exprs()
    assert unknown_names(exprs, names, labels, recorded()) == []
    # and the check can fail: a name the gateway does not export, a label it never sets
    wrong = {"typo": "rate(gateway_cache_request_total[5m])",
             "label": 'rate(gateway_cache_requests_total{outcome="hit"}[5m])'}
    assert len(unknown_names(wrong, names, labels, recorded())) == 2


def test_the_rules_read_series_of_every_kind_they_alert_on(scraped: str) -> None:
    """The rules read the series the alerts are about (not only recorded ones)."""
    read = set().union(*map(metric_names, rule_exprs().values()))
    assert read >= {"gateway_request_duration_seconds_count",
                    "gateway_http_request_duration_seconds_count",
                    "gateway_request_duration_seconds_bucket", "gateway_cache_requests_total",
                    "gateway_redis_errors_total", "gateway_store_errors_total",
                    "gateway_invalidation_ack_timeouts_total",
                    "gateway_signing_key_activated_timestamp_seconds",
                    "gateway_signing_key_next_rotation_timestamp_seconds"}


def test_the_metrics_pass_promtool_check_metrics(scraped: str, tmp_path: Path) -> None:
    names, _ = exported(scraped)
    assert {"gateway_build_info", "process_cpu_seconds_total", "python_info",
            "gateway_signing_key_next_rotation_timestamp_seconds"} <= names
    result = run_promtool("check", "metrics", stdin=scraped)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
