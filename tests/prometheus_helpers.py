"""What the rule and dashboard tests share: promtool, the metric names a PromQL expression
reads, and the names a gateway's ``/metrics`` exports.

The names are read from the expression's text (strings, ranges, groupings and function
calls taken out), which is enough for the expressions we ship: selectors are plain
``name{matchers}``, never ``{__name__=…}``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import Gateway
from proxy_helpers import find_binary, missing

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "gateway.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway.json"

# labels Prometheus attaches to every scraped series (job, instance) and those a
# Kubernetes service discovery / ServiceMonitor commonly adds
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container",
                           "endpoint"})
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "bool", "offset", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")


def promtool() -> str:
    """The promtool binary (Debian package ``prometheus``): skip locally, fail on CI."""
    found = find_binary("promtool")
    if found is None:
        missing("promtool is not installed (apt-get install prometheus)")
    return found


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True,
                          timeout=300, check=False)


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric (and recorded series) names ``expr`` reads."""
    text = _without_strings(expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval]
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = _GROUPING.sub(" ", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, the label names it matches on) for each ``name{…}`` in ``expr``."""
    for name, matchers in _SELECTOR.findall(_without_strings(expr)):
        yield name, set(_MATCHER.findall(matchers))


def rules() -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of the shipped rules file."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_exprs() -> dict[str, str]:
    """Rule name (the series it records, or the alert) → its expression."""
    return {rule.get("record") or rule["alert"]: str(rule["expr"]) for rule in rules()}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows too."""
    for panel in document.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(document: dict[str, Any]) -> dict[str, str]:
    """"panel title / refId" (or "variable NAME") → the PromQL of every target and of
    every query variable."""
    exprs = {f"{panel['title']} / {target['refId']}": target["expr"]
             for panel in panels(document) for target in panel.get("targets", [])}
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found = re.fullmatch(r"label_values\((.*),\s*\w+\)", text.strip())
            assert found, f"variable {variable['name']}: not label_values(…): {text}"
            exprs[f"variable {variable['name']}"] = found[1]
    return exprs


def as_promql(expr: str) -> str:
    """A dashboard expression as Prometheus takes it: Grafana's interval variables as 5m,
    other variables (only ever inside label-matcher strings) as ``.+``."""
    expr = re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """From a ``/metrics`` exposition: every series name a selector may name (each
    declared family's, a histogram's ``_bucket``/``_count``/``_sum`` included, with or
    without samples), and the label names each sampled series carries."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            suffixes = {"histogram": ("_bucket", "_count", "_sum"),
                        "summary": ("", "_count", "_sum"),
                        "gaugehistogram": ("_bucket", "_gcount", "_gsum")}.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            found = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s", line)
            assert found, f"not a sample line: {line!r}"
            names.add(found[1])
            labels.setdefault(found[1], set()).update(
                re.findall(r'([a-zA-Z_]\w*)="', found[2] or ""))
    return names, labels


def unknown_names(exprs: dict[str, str], names: set[str], labels: dict[str, set[str]],
                  defined: set[str]) -> list[str]:
    """What ``exprs`` name that the exposition (``names``, ``labels``; see ``exported``)
    and the recorded series (``defined``) do not have: a metric, or a label matched on a
    series whose samples never carry it."""
    problems = []
    for where, expr in exprs.items():
        for name in sorted(metric_names(expr)):
            if name not in names and name not in defined:
                problems.append(f"{where}: no series {name}")
        for name, matched in selectors(expr):
            seen = labels.get(name)
            if seen is None:  # no samples (a labelled family before its first event)
                continue
            extra = matched - seen - TARGET_LABELS
            if extra:
                problems.append(f"{where}: {name} has no label {sorted(extra)}")
    return problems


def exercise(gw: Gateway) -> str:
    """Traffic that gives most labelled families a sample (hot and admin routes, a
    derived token), then the gateway's ``/metrics``."""
    with httpx.Client(base_url=gw.url, headers=gw.auth, timeout=10) as client:
        issued = client.post("/v2alpha1/admin/issuedApiKeys",
                             json={"name": "metrics", "actor_id": "user_metrics"})
        assert issued.status_code == 201, issued.text
        secret = issued.json()["secret"]
        for _ in range(2):  # the store, then L1
            assert client.post("/v2alpha1/admin/apiKeys:verify",
                               json={"credential": secret}).status_code == 200
        assert client.post("/v2alpha1/admin/apiKeys:batchVerify",
                           json={"requests": [{"credential": secret}]}).status_code == 200
        for credential, status in ((secret, 200), ("nope", 401)):  # without the admin token
            assert httpx.get(gw.url + "/v2alpha1/decisions", headers={"X-API-Key": credential},
                             timeout=10).status_code == status
        derived = client.post("/v2alpha1/admin/apiKeys:derive", json={
            "credential": secret, "algorithm": "TOKEN_ALGORITHM_JWT", "ttl": "900s"})
        assert derived.status_code == 200, derived.text
        token = derived.json()["token"]["token"]
        assert client.post("/v2alpha1/admin/apiKeys:verify",
                           json={"credential": token}).status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        return metrics.text
