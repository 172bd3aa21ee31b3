"""The Kubernetes manifests in k8s/ (and the reference proxy configs in deploy/) hold together.

Static checks only: every file parses, the kustomization lists every manifest, long-running
containers have probes on the health routes, every container has resource limits and runs
non-root on a read-only root filesystem, the Deployment takes its secrets from the Secret,
selectors match, the migration Job runs ``gateway migrate``, and the termination grace
period (k8s) and stop timeout (systemd) cover the configured drain. When kubectl is
installed its built-in kustomize must render the directory too.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SECRET_ENV = ("GATEWAY_PEPPER", "GATEWAY_ADMIN_TOKENS", "GATEWAY_DATABASE_URL",
              "GATEWAY_REDIS_URL")

Doc = dict[str, Any]


def _docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


@pytest.fixture(scope="module")
def kustomization() -> Doc:
    (doc,) = _docs(K8S / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def manifests(kustomization: Doc) -> list[Doc]:
    return [d for name in kustomization["resources"] for d in _docs(K8S / name)]


def _one(manifests: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = [d for d in manifests if d["kind"] == kind and (
        component is None
        or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def _pod_specs(manifests: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in manifests:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses_and_names_itself(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], path.name


def test_kustomization_lists_every_manifest(kustomization: Doc) -> None:
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
            "Secret", "ConfigMap"} <= {d["kind"] for name in listed for d in _docs(K8S / name)}


def test_kubectl_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
    assert {"Deployment", "Job", "HorizontalPodAutoscaler"} <= kinds


# -- containers ------------------------------------------------------------------------------


def test_server_containers_probe_the_health_routes(manifests: list[Doc]) -> None:
    """Every long-running container (Deployment) has readiness and liveness probes."""
    deployment = _one(manifests, "Deployment")
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        ports = {p["name"] for p in c.get("ports", [])} | {p["containerPort"]
                                                           for p in c.get("ports", [])}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", c["name"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/alive", c["name"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports, f"{c['name']} {probe} port"


def test_every_container_has_requests_and_limits(manifests: list[Doc]) -> None:
    for where, spec in _pod_specs(manifests):
        for c in _containers(spec):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), \
                    f"{where} {c['name']} {kind}"


def test_every_container_runs_non_root_on_a_read_only_root(manifests: list[Doc]) -> None:
    for where, spec in _pod_specs(manifests):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{where} {c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{where} {c['name']}"


def test_deployment_takes_its_secrets_from_the_secret(manifests: list[Doc]) -> None:
    secret = _one(manifests, "Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    (container,) = _one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    for name in SECRET_ENV:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], name
        assert ref["key"] in secret_keys, name
    config = _one(manifests, "ConfigMap")
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert config["data"]["GATEWAY_HOST"] == "0.0.0.0"
    assert not set(SECRET_ENV) & set(config["data"]), "secrets belong in the Secret"


def test_the_configmap_is_a_valid_configuration(manifests: list[Doc]) -> None:
    from gateway.settings import KEYS, load_settings

    data = _one(manifests, "ConfigMap")["data"]
    assert {name.removeprefix("GATEWAY_") for name in data} <= set(KEYS), "unknown setting"
    settings = load_settings(data)  # raises ConfigError naming a bad value
    assert settings.host == "0.0.0.0" and settings.signing_rotation == "AUTO"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def test_the_memory_limit_holds_a_full_l1_with_margin(manifests: list[Doc]) -> None:
    """Every worker with its L1 full (GATEWAY_L1_SIZE keys at the budget load/memory.py
    holds a key to) and its idle footprint fits in three quarters of the pod's limit."""
    from gateway.cache.l1 import ENTRY_BUDGET_BYTES, IDLE_BUDGET_BYTES
    from gateway.settings import load_settings

    settings = load_settings(_one(manifests, "ConfigMap")["data"])
    (container,) = _one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    limit = _bytes(container["resources"]["limits"]["memory"])
    need = settings.workers * (IDLE_BUDGET_BYTES + settings.l1_size * ENTRY_BUDGET_BYTES)
    assert need <= 0.75 * limit, f"{need >> 20} MiB needed, {limit >> 20} MiB limit"


def test_migration_job_runs_gateway_migrate(manifests: list[Doc]) -> None:
    job = _one(manifests, "Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    (container,) = spec["containers"]
    assert [*container.get("command", []), *container.get("args", [])] == ["gateway", "migrate"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert "secretKeyRef" in env["GATEWAY_DATABASE_URL"]["valueFrom"]


# -- wiring ----------------------------------------------------------------------------------


def test_selectors_match_the_server_pods(manifests: list[Doc]) -> None:
    deployment = _one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = _one(manifests, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = _one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    job_labels = _one(manifests, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items(), \
        "the Service must not select the migration pod"
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_hpa_scales_the_deployment_on_cpu(manifests: list[Doc]) -> None:
    hpa = _one(manifests, "HorizontalPodAutoscaler")
    deployment = _one(manifests, "Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# -- stopping --------------------------------------------------------------------------------

# the usage flush and the store's close, after the in-flight requests
FLUSH_MARGIN_S = 10
# the least time a stopping replica should go on answering: endpoints and proxies take
# seconds to drop it
MIN_DRAIN_S = 5


def _pre_stop_seconds(container: Doc) -> float:
    """How long the container's preStop hook delays SIGTERM (a sleep, or none)."""
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:  # the native sleep action (Kubernetes 1.30+)
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    assert len(command) == 2 and command[0] == "sleep", f"unexpected preStop hook {pre_stop}"
    return float(command[1])


def test_the_termination_grace_period_covers_the_drain(manifests: list[Doc]) -> None:
    """A stopping pod answers for its preStop and its drain (GATEWAY_DRAIN_SECONDS), at
    least as long as a failed readiness takes to be seen, and is not killed before the
    in-flight requests (SHUTDOWN_TIMEOUT_S) and the usage flush are through."""
    from gateway.http.server import SHUTDOWN_TIMEOUT_S
    from gateway.settings import load_settings

    drain = load_settings(_one(manifests, "ConfigMap")["data"]).drain_seconds
    spec = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = _pre_stop_seconds(container)
    probe = container["readinessProbe"]
    answering = pre_stop + drain
    assert answering >= MIN_DRAIN_S
    assert answering >= probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3), \
        "the drain ends before a failed readiness probe is seen"
    grace = spec["terminationGracePeriodSeconds"]
    assert answering + SHUTDOWN_TIMEOUT_S + FLUSH_MARGIN_S <= grace, \
        f"preStop {pre_stop} s + drain {drain} s + shutdown does not fit in {grace} s"


def test_the_systemd_stop_timeout_covers_the_default_drain() -> None:
    from gateway.http.server import SHUTDOWN_TIMEOUT_S
    from gateway.settings import Settings

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy/systemd/gateway.service", encoding="utf-8")
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    timeout = float(service["TimeoutStopSec"].removesuffix("s"))
    drain = Settings().drain_seconds
    assert drain >= MIN_DRAIN_S
    assert drain + SHUTDOWN_TIMEOUT_S + FLUSH_MARGIN_S <= timeout


# -- reference proxy configs -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["deploy/traefik/dynamic.yml", "deploy/envoy/envoy.yaml"])
def test_reference_proxy_configs_parse_and_ask_the_decisions_route(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert _docs(ROOT / path)
    assert "/v2alpha1/decisions" in text
    for header in ("x-actor-id", "x-key-id", "x-scopes"):
        assert header in text.lower(), f"{path} does not pass {header} on"
