"""The Helm chart (helm/streams): lint, render, and validate every manifest offline.

helm is built by ``make tools`` (``go install``, pinned in the Makefile) into .tools/bin;
Kubernetes kinds are validated with kubernetes-validate's bundled API schemas (strict: an
unknown field fails), the Prometheus Operator and KEDA kinds against their CRDs' schemas
(``make tools`` copies them from those projects' Go modules into .tools/crds).
"""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "streams"
HELM = REPO / ".tools" / "bin" / "helm"
CRDS = REPO / ".tools" / "crds"
KUBE_VERSION = "1.31.0"
VALUES = {
    "defaults": None,
    "production": CHART / "ci" / "production.yaml",
    "hpa": CHART / "ci" / "hpa.yaml",
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools` (make test does)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(values: Path | None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "jobs", "--kube-version", KUBE_VERSION]
    if values is not None:
        args += ["-f", str(values)]
    done = helm(*args, *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused where it lists properties (the API server
    would prune them silently: a typo must fail here instead)."""
    if isinstance(schema, dict):
        out = {key: closed(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], Any]:
    files = sorted(CRDS.glob("*.yaml"))
    if len(files) < 4:
        pytest.fail(f"CRD schemas missing in {CRDS}: run `make tools` (make test does)")
    out = {}
    for path in files:
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            out[(f"{group}/{version['name']}", kind)] = closed(schema)
    return out


def validate(doc: dict[str, Any], crds: dict[tuple[str, str], Any]) -> None:
    kind = doc["kind"]
    if kind in CRD_KINDS:
        schema = crds[(doc["apiVersion"], kind)]
        jsonschema.Draft7Validator(schema).validate(doc)  # CRD regexes use Go syntax
        return
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("name", list(VALUES))
def test_lint(name: str) -> None:
    values = VALUES[name]
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    done = helm(*args, *(["-f", str(values)] if values else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("name", list(VALUES))
def test_every_manifest_validates_against_its_schema(name: str) -> None:
    docs = render(VALUES[name])
    crds = crd_schemas()
    for doc in docs:
        try:
            validate(doc, crds)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Service", "Deployment", "Job", "PodDisruptionBudget"} <= kinds


def test_validation_catches_a_bad_field() -> None:
    # the validators are not permissive: a misspelt field fails, in core kinds and CRDs alike
    docs = render(VALUES["production"])
    crds = crd_schemas()
    sts = copy.deepcopy(by_kind(docs, "StatefulSet")[0])
    sts["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sts, crds)
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject")[0])
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, crds)


def test_wrong_type_fails_with_the_schema_message() -> None:
    done = helm(
        "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
        "-f", str(CHART / "ci" / "wrong-type.yaml"),
    )  # fmt: skip
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert "worker.groups.0.replicas: Invalid type. Expected: integer, given: string" in (
        done.stderr
    )


def test_replicas_above_partitions_fail() -> None:
    done = helm(
        "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
        "--set-json", 'worker.groups=[{"name": "all", "replicas": 7, "partitions": 6}]',
    )  # fmt: skip
    assert done.returncode != 0
    assert "worker.groups[all].replicas (7) is above its partitions (6)" in done.stderr


def test_workers_are_static_members_with_a_bounded_grace_period() -> None:
    docs = render(VALUES["production"])
    groups = {s["metadata"]["name"]: s for s in by_kind(docs, "StatefulSet")}
    assert set(groups) == {f"rel-streams-worker-{g}" for g in ("notify", "money", "rest")}
    for sts in groups.values():
        pod = sts["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        assert env["STREAMS_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert pod["terminationGracePeriodSeconds"] > float(env["STREAMS_SHUTDOWN_TIMEOUT_S"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/streams", "/tmp", "/etc/streams/kafka-tls"} <= mounts
        assert env["STREAMS_SASL_PASSWORD"]["secretKeyRef"]["name"] == "streams-kafka-user"
        assert env["STREAMS_DATABASE_URL"]["secretKeyRef"]["name"] == "streams-db"
        assert env["STREAMS_SSL_CAFILE"] == "/etc/streams/kafka-tls/ca.crt"
        probes = {k: container[k]["httpGet"]["path"] for k in container if k.endswith("Probe")}
        assert probes == {
            "startupProbe": "/health/startup",
            "livenessProbe": "/health/live",
            "readinessProbe": "/health/ready",
        }
    notify = env_of(
        groups["rel-streams-worker-notify"]["spec"]["template"]["spec"]["containers"][0]
    )
    assert notify["STREAMS_FAMILIES"] == "email,push,webhook"


def test_autoscaling_never_exceeds_partitions() -> None:
    docs = render(VALUES["production"])  # maxReplicas 12, every group has 6 partitions
    scaled = by_kind(docs, "ScaledObject")
    assert len(scaled) == 3
    for obj in scaled:
        assert obj["spec"]["maxReplicaCount"] == 6
        assert obj["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
        for trigger in obj["spec"]["triggers"]:
            assert trigger["metadata"]["allowIdleConsumers"] == "false"
            assert trigger["metadata"]["sasl"] == "scram_sha512"
    (hpa,) = by_kind(render(VALUES["hpa"]), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 6


def test_topics_hook_plans_then_applies_before_install_and_upgrade() -> None:
    (job,) = by_kind(render(None), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert script.index("streams topics plan") < script.index("streams topics apply")
    assert 'if [ "$rc" -eq 1 ]' in script  # a refused plan fails the release


def test_monitoring_objects_carry_the_same_rules_and_dashboard() -> None:
    docs = render(VALUES["production"])
    (rule,) = by_kind(docs, "PrometheusRule")
    plain = yaml.safe_load((CHART / "files" / "alerts.rules.yml").read_text())
    assert rule["spec"] == plain
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (dashboard,) = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["streams.json"] == (
        CHART / "files/dashboards/streams.json"
    ).read_text().rstrip("\n")
    defaults = render(None)
    assert not by_kind(defaults, "PrometheusRule") and not by_kind(defaults, "ServiceMonitor")


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_installs_the_tested_package_as_non_root() -> None:
    # No Docker engine here: the image cannot be built in CI, so check what it promises.
    text = (REPO / "Dockerfile").read_text()
    build, runtime = _stages(text)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the same package `make install` installs (pip install -e '.[dev]'), from the same
    # pyproject.toml and src/, without the dev extras
    assert "COPY pyproject.toml README.md ./" in build
    assert "COPY src ./src" in build
    assert any(re.search(r"pip install --no-input \.(\s|$|&)", line) for line in build)
    wanted = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    base = re.search(r"ARG PYTHON_IMAGE=python:(\d+)\.(\d+)-slim", text)
    assert wanted and base and tuple(map(int, base.groups())) >= tuple(map(int, wanted.groups()))
    # the final stage: only the venv and the data files, a numeric non-root user, no compilers
    assert "COPY --from=build /opt/streams /opt/streams" in runtime
    user = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    joined = "\n".join(runtime)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get install)\b", joined)
    for copied in ("topics.yaml", "schemas"):
        assert f"COPY {copied} " in joined and (REPO / copied).exists()
    assert project["scripts"]["streams"] and 'ENTRYPOINT ["streams"]' in runtime
    # the chart's default image is this one, and runs as the Dockerfile's user
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "streams"
    assert str(values["podSecurityContext"]["runAsUser"]) == user[-1].split(":")[0]
