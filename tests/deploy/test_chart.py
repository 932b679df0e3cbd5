"""The chart offline: lint, strict Kubernetes schemas, values the schema refuses, and policy assertions."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import (
    CHART,
    KUBE_VERSION,
    VALUES_FILES,
    Render,
    Tools,
    run,
    template_error,
    values_file,
)

MINIMAL = CHART / "ci" / "minimal-values.yaml"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
CRD_KINDS = {"FlinkDeployment", "ServiceMonitor", "ExternalSecret"}  # validated against the API server
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL|DATABASE_URL")
CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) a manifest runs, whatever its kind."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "Job"):
        return [spec["template"]["spec"]]
    if kind == "Pod":
        return [spec]
    if kind == "FlinkDeployment":
        return [spec["podTemplate"]["spec"]]
    return []


def test_the_values_files_cover_minimal_production_and_everything_on() -> None:
    assert {p.name for p in VALUES_FILES} == {
        "minimal-values.yaml",
        "production-values.yaml",
        "all-on-values.yaml",
    }


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_helm_lint_strict(tools: Tools, values: Path) -> None:
    proc = run([tools.path("helm"), "lint", "--strict", str(CHART), "-f", str(values)])
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_every_manifest_passes_the_strict_kubernetes_schema(render: Render, values: Path) -> None:
    docs = render(values)
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        # strict: an unknown field (a typo'd key) is an error, not ignored
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked += 1
    assert checked >= 15


def test_the_validator_is_strict() -> None:
    """The check above would catch a misspelt field: the schemas refuse one."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {"a": "b"}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


REFUSALS = [
    # (what, --set pairs, the error must name)
    ("missing Temporal address", {"temporal.address": '""'}, "/temporal/address"),
    ("Temporal address without a port", {"temporal.address": "temporal.example.com"}, "/temporal/address"),
    ("plaintext JWT secret in values", {"secrets.jwtSecret": "hunter2hunter2"}, "jwtSecret"),
    ("plaintext Kafka password", {"kafka.saslPassword": "p4ss"}, "saslPassword"),
    ("a secret among the ConfigMap settings", {"config.HC_JWT_SECRET": "hunter2"}, "HC_JWT_SECRET"),
    (
        "a database URL among the settings",
        {"config.HC_DATABASE_URL": "postgresql://u:p@db/x"},
        "HC_DATABASE_URL",
    ),
    (
        "a secret in the Flink configuration",
        {"analytics.extraFlinkConfiguration.s3\\.secret-key": "x"},
        "s3.secret-key",
    ),
    ("replicas as a word", {"api.replicas": "two"}, "/api/replicas"),
    ("port as a string", {"api.port": '"8000"'}, "/api/port"),
    ("boolean as a string", {"temporal.tls": '"yes"'}, "/temporal/tls"),
    ("tag latest", {"image.tag": "latest"}, "/image/tag"),
    ("no image repository", {"image.repository": '""'}, "/image/repository"),
    ("limits missing", {"worker.resources.limits": "null"}, "limits"),
    ("both secret sources", {"secrets.externalSecret.enabled": "true"}, "/secrets"),
    ("plaintext Kafka in production", {"kafka.securityProtocol": "PLAINTEXT"}, "/kafka/securityProtocol"),
    ("plain-http S3 in production", {"s3.endpointUrl": "http://minio:9000"}, "/s3/endpointUrl"),
    ("analytics without checkpoints", {"analytics.enabled": "true"}, "/analytics"),
    (
        "migrations without the owner secret",
        {"migrations.existingSecret": '""'},
        "/migrations/existingSecret",
    ),
    ("ingress without a host", {"ingress.enabled": "true"}, "/ingress/host"),
    ("unknown top-level key", {"replicaCount": "3"}, "replicaCount"),
]


@pytest.mark.parametrize(("what", "sets", "names"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_schema_refuses(tools: Tools, what: str, sets: dict[str, str], names: str) -> None:
    error = template_error(tools, MINIMAL, sets=sets)
    assert error, f"{what}: rendered without complaint"
    assert "values don't meet the specifications of the schema" in error, error
    assert names in error, error


def test_the_bare_chart_renders_nothing_that_would_work_by_accident(tools: Tools) -> None:
    error = template_error(tools)
    for pointer in ("/temporal/address", "/kafka/bootstrapServers", "/s3/bucket", "/secrets", "/aws/region"):
        assert pointer in error


def test_the_minimal_values_render(tools: Tools) -> None:
    assert template_error(tools, MINIMAL) == ""


# -- policy assertions over every values file -------------------------------------------------------
@pytest.fixture(scope="module", params=VALUES_FILES, ids=lambda p: p.stem)
def docs(request: pytest.FixtureRequest, render: Render) -> list[dict[str, Any]]:
    return render(request.param)


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in docs:
        for spec in pod_specs(doc):
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                found.append((f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c))
    return found


def test_no_latest_and_every_image_pinned(docs: list[dict[str, Any]]) -> None:
    images = {where: c.get("image") for where, c in containers(docs)}
    images.update(
        {
            f"FlinkDeployment/{d['metadata']['name']}": d["spec"]["image"]
            for d in docs
            if d["kind"] == "FlinkDeployment"
        }
    )
    for where, image in images.items():
        if where.startswith("FlinkDeployment/") and "/" in where[16:]:
            continue  # the pod template's container takes spec.image
        assert image, where
        assert not image.endswith(":latest"), where
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), where


def test_requests_and_limits_on_every_container(docs: list[dict[str, Any]]) -> None:
    for where, c in containers(docs):
        if where.startswith("FlinkDeployment/"):
            continue  # sized by spec.jobManager/taskManager.resource, below
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"].get(part, {})), f"{where}: {part}"
    for d in docs:
        if d["kind"] == "FlinkDeployment":
            for manager in ("jobManager", "taskManager"):
                assert {"cpu", "memory"} <= set(d["spec"][manager]["resource"])


def test_probes_on_every_long_running_container(docs: list[dict[str, Any]]) -> None:
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in c["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"]["port"] in ports, f"{d['metadata']['name']}: {probe}"


def test_probes_use_the_endpoints_each_role_serves(render: Render) -> None:
    docs = render(ALL_ON)
    probes = {}
    for d in docs:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            probes[c["args"][1]] = (
                c["readinessProbe"]["httpGet"]["path"],
                c["livenessProbe"]["httpGet"]["path"],
            )
    assert probes == {
        "api": ("/readyz", "/healthz"),
        "worker": ("/metrics", "/metrics"),
        "consumer": ("/metrics", "/metrics"),
        "relay": ("/healthz", "/healthz"),
        "codec": ("/healthz", "/healthz"),
    }


def test_restricted_security_context_everywhere(docs: list[dict[str, Any]]) -> None:
    specs = [(d["kind"], s) for d in docs for s in pod_specs(d)]
    assert specs
    for kind, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", kind
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), kind
        assert not any("hostPath" in v for v in spec.get("volumes", [])), kind
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], kind
            assert not sc.get("privileged"), kind
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{kind}: a writable /tmp"


def test_no_secret_value_in_any_configmap_and_no_secret_rendered(docs: list[dict[str, Any]]) -> None:
    assert not [d for d in docs if d["kind"] == "Secret"], (
        "secrets come only from existing or external Secrets"
    )
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_maps
    for cm in config_maps:
        for key, value in cm["data"].items():
            assert not SECRET_NAME.search(key), key
            assert not CREDENTIAL_IN_URL.search(value), key
    for where, c in containers(docs):
        for env in c.get("env", []):
            assert "value" not in env or not SECRET_NAME.search(env["name"]), (
                f"{where}: {env['name']} in plain text"
            )


def test_selectors_services_pdbs_and_hpas_fit_the_deployments(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        assert d["spec"]["selector"]["matchLabels"].items() <= labels[name].items()
        assert len(name) <= 63
    for kind in ("Service", "PodDisruptionBudget"):
        objs = [d for d in docs if d["kind"] == kind]
        assert len(objs) == len(deployments), kind  # one per role
        for obj in objs:
            sel = obj["spec"]["selector"] if kind == "Service" else obj["spec"]["selector"]["matchLabels"]
            assert [n for n, lab in labels.items() if sel.items() <= lab.items()], (
                f"{kind} {obj['metadata']['name']}"
            )
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas <= set(deployments)
    assert {n.rsplit("-", 1)[1] for n in hpas} == {"api", "worker"}


def test_every_workload_is_covered_by_a_network_policy(docs: list[dict[str, Any]]) -> None:
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies
    for p in policies:
        assert set(p["policyTypes"]) == {"Ingress", "Egress"}
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "Pod":
            pod_labels = doc["metadata"]["labels"]
        else:
            continue
        assert any(p["podSelector"]["matchLabels"].items() <= pod_labels.items() for p in policies), doc[
            "metadata"
        ]["name"]


def test_network_policies_allow_only_the_flows_each_role_uses(render: Render) -> None:
    docs = render(ALL_ON)
    egress_ports = {}
    for d in docs:
        if d["kind"] == "NetworkPolicy":
            role = d["metadata"]["name"].rsplit("-", 1)[1]
            egress_ports[role] = {p["port"] for rule in d["spec"]["egress"] for p in rule.get("ports", [])}
    dns = {53}
    assert egress_ports["relay"] == dns | {9092, 9093, 9094}  # Kafka only
    assert egress_ports["consumer"] == dns | {7233, 9092, 9093, 9094}  # Temporal and Kafka
    assert egress_ports["migrate"] == dns | {5432}  # PostgreSQL only
    assert egress_ports["codec"] == dns
    assert egress_ports["api"] == egress_ports["worker"] == dns | {5432, 7233, 9092, 9093, 9094, 443}
    assert egress_ports["test"] == dns | {8000}


def test_ingress_routes_the_api_portal_and_websocket(render: Render) -> None:
    (ingress,) = [d for d in render(ALL_ON) if d["kind"] == "Ingress"]
    routes = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"])
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert routes == {
        "/ws/analytics": ("Exact", "clinic-healthcare-relay"),
        "/api/": ("Prefix", "clinic-healthcare-api"),
        "/": ("Prefix", "clinic-healthcare-api"),
    }
    assert ingress["spec"]["tls"][0]["secretName"] == "clinic-example-com-tls"


def test_migration_job_is_a_hook_with_the_owner_role(render: Render) -> None:
    docs = render(MINIMAL)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["healthcare-owner"]
    # The owner migrates; the app role it grants privileges to is named apart.
    assert {"name": "HC_DATABASE_APP_ROLE", "value": "healthcare_app"} in container["env"]
    app_secrets = {
        s["secretRef"]["name"]
        for d in docs
        if d["kind"] == "Deployment"
        for s in d["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        if "secretRef" in s
    }
    assert app_secrets == {"healthcare-env"}


def test_helm_test_hook_calls_readyz(render: Render) -> None:
    (pod,) = [d for d in render(MINIMAL) if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "http://clinic-healthcare-api:8000/readyz" in pod["spec"]["containers"][0]["args"][0]


def test_configmap_carries_the_external_endpoints(render: Render) -> None:
    (cm,) = [d for d in render(CHART / "ci" / "production-values.yaml") if d["kind"] == "ConfigMap"]
    data = cm["data"]
    assert data["HC_TEMPORAL_ADDRESS"] == "clinic.a1b2c.tmprl.cloud:7233"
    assert data["HC_TEMPORAL_TLS"] == "true"
    assert data["HC_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["HC_S3_ENDPOINT_URL"] == "" and data["HC_LAMBDA_ENDPOINT_URL"] == ""  # AWS itself
    assert data["HC_ENV"] == "production"


def test_a_config_change_rolls_the_pods(render: Render) -> None:
    def checksums(docs: list[dict[str, Any]]) -> set[str]:
        return {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in docs
            if d["kind"] == "Deployment"
        }

    before = checksums(render(MINIMAL))
    after = checksums(render(MINIMAL, sets={"log.level": "DEBUG"}))
    assert len(before) == len(after) == 1 and before != after


def test_roles_can_be_switched_off_and_codec_on(render: Render) -> None:
    docs = render(MINIMAL, sets={"relay.enabled": "false", "codec.enabled": "true"})
    roles = {d["metadata"]["name"].rsplit("-", 1)[1] for d in docs if d["kind"] == "Deployment"}
    assert roles == {"api", "worker", "consumer", "codec"}


def test_flink_deployment_checkpoints_to_s3_without_credentials_in_its_spec(render: Render) -> None:
    (fd,) = [d for d in render(ALL_ON) if d["kind"] == "FlinkDeployment"]
    conf = fd["spec"]["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"].startswith("s3://")
    assert conf["high-availability.storageDir"].startswith("s3://")
    text = str(fd)
    assert "sasl.jaas" not in text and "password" not in text.lower()
    container = fd["spec"]["podTemplate"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "clinic-healthcare-env"}}]


def test_values_written_by_hand_are_checked_too(tools: Tools, tmp_path: Path) -> None:
    """A values file (not only --set) with a plaintext secret under a plausible key is refused."""
    bad = values_file(tmp_path, "bad.yaml", {"postgresql": {"poolSize": 5, "password": "hunter2"}})
    assert "password" in template_error(tools, MINIMAL, bad)


def crd_model_errors(tools: Tools, docs: list[dict[str, Any]]) -> dict[str, str | None]:
    """ServiceMonitor / ExternalSecret checked by the schemas generated from their operators' CRDs."""
    script = Path(__file__).with_name("validate_crd_models.mjs")
    models = tools.bin.parent / "kube-crd-models"
    if not (models / "node_modules").exists():
        pytest.fail(f"no CRD models in {models}: run `make setup`")
    proc = subprocess.run(
        # an ES module resolves imports from the working directory when given with -e
        ["node", "--input-type=module", "-e", script.read_text()],
        input="\n".join(json.dumps(d) for d in docs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=models,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return {f"{r['kind']}/{r['name']}": r["error"] for r in results}


def test_service_monitors_and_external_secret_match_their_crds(tools: Tools, render: Render) -> None:
    docs = [d for d in render(ALL_ON) if d["kind"] in ("ServiceMonitor", "ExternalSecret")]
    errors = crd_model_errors(tools, docs)
    assert len(errors) == 4 and not any(errors.values()), errors
    broken = copy.deepcopy(docs)
    for d in broken:
        if d["kind"] == "ServiceMonitor":
            d["spec"]["endpoints"][0]["port"] = 8000  # a port name is a string
        else:
            d["spec"]["data"][0]["remoteRef"] = {"property": "x"}  # remoteRef.key is required
    assert all(crd_model_errors(tools, broken).values())
