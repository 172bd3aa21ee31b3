"""Write k8s/overlays/production/prometheusrule.yaml: the rules of gateway.rules.yml beside
this file, as a Prometheus Operator PrometheusRule (its ``groups:`` unchanged).

    .venv/bin/python deploy/prometheus/prometheusrule.py

Run it after editing the rules; tests/test_k8s_manifests.py fails while the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "gateway.rules.yml"
TARGET = HERE.parents[1] / "k8s" / "overlays" / "production" / "prometheusrule.yaml"
HEADER = """\
# Prometheus Operator: deploy/prometheus/gateway.rules.yml as a PrometheusRule, written by
# deploy/prometheus/prometheusrule.py (do not edit: edit the rules and run it). If your
# Prometheus selects rules by label (kube-prometheus-stack: `release: <its release name>`),
# add that label in the script.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, as in the rules file."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "gateway", "labels": {"app.kubernetes.io/name": "gateway"}},
           "spec": {"groups": rules["groups"]}}
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
