"""The chart against a real Kubernetes API server (tests/deploy/cluster.py): server-side strict
validation with warnings as errors in a Pod Security `restricted` namespace, then install, upgrade,
rollback, `helm test` and uninstall, and the FlinkDeployment against the operator's own CRD.

kwok plays the kubelet: it marks scheduled pods running and ready, and pods that never restart
(the migration Job's, the test hook's) as succeeded. So `--wait` and `helm test` prove what the API
server, the controllers and the scheduler do with the chart, not what the containers do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import k8s
from tests.deploy.cluster import ControlPlane
from tests.deploy.conftest import CHART, VALUES_FILES, Render, Tools
from tests.waiting import eventually_sync

NS = "healthcare"
MINIMAL = CHART / "ci" / "minimal-values.yaml"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
STAGES = Path(__file__).with_name("kwok-stages.yaml")
NO_CRD_HERE = {"ServiceMonitor", "ExternalSecret"}  # their operators' CRDs are not fetched here


@pytest.fixture(scope="module")
def cluster(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    tools.require("etcd", *k8s.CONTROL_PLANE, "kwok")
    plane = ControlPlane(bin=tools.bin, workdir=tmp_path_factory.mktemp("k8s"))
    try:
        plane.start(kwok_config=STAGES)
        print(f"control plane ready: {', '.join(f'{k} {v:.1f}s' for k, v in plane.started_in.items())}")
        _restricted_namespace(plane)
        _crds(plane, tools)
        yield plane
    finally:
        plane.stop()


def _restricted_namespace(plane: ControlPlane) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")} | {
        f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")
    }
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}})
    # The Secrets the chart refers to; in a cluster they come from your secret store.
    for name, url_user in (("healthcare-env", "healthcare_app"), ("healthcare-owner", "healthcare_owner")):
        plane.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "stringData": {
                    "HC_DATABASE_URL": f"postgresql+asyncpg://{url_user}:test@db.example:5432/healthcare",
                    "HC_JWT_SECRET": "x" * 48,
                },
            }
        )
    eventually_sync(  # the service account controller creates `default`
        lambda: plane.kubectl("get", "serviceaccount", "default", "-n", NS, check=False).returncode == 0,
        timeout=60,
        interval=0.5,
        what="the namespace's default service account",
    )


def _crds(plane: ControlPlane, tools: Tools) -> None:
    # Server-side apply: the FlinkDeployment CRD (520 KB) is too big for the last-applied annotation.
    for crd in sorted(tools.crds.glob("*.yml")):
        plane.kubectl("apply", "--server-side", "-f", str(crd))
    eventually_sync(
        lambda: _established(plane, "flinkdeployments.flink.apache.org"),
        timeout=60,
        interval=0.2,
        what="the FlinkDeployment CRD established",
    )


def _established(plane: ControlPlane, crd: str) -> bool:
    conditions = plane.get("crd", crd).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def dry_run(plane: ControlPlane, docs: list[dict[str, Any]]) -> Any:
    """Server-side dry run with strict field validation, warnings (Pod Security's too) as errors."""
    return plane.kubectl(
        "apply",
        "-n",
        NS,
        "--dry-run=server",
        "--validate=strict",
        "--warnings-as-errors",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump_all(docs),
    )


def without_foreign_crds(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] not in NO_CRD_HERE]


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_every_manifest_passes_server_side_validation_with_warnings_as_errors(
    cluster: ControlPlane, render: Render, values: Path
) -> None:
    # The FlinkDeployment is validated on its own below (the 1.10.0 CRD predates Flink 2.2).
    docs = [d for d in without_foreign_crds(render(values)) if d["kind"] != "FlinkDeployment"]
    proc = dry_run(cluster, docs)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs)


def test_the_namespace_really_enforces_restricted(cluster: ControlPlane, render: Render) -> None:
    (api,) = [
        d for d in render(MINIMAL) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")
    ]
    loose = copy.deepcopy(api)
    del loose["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    proc = dry_run(cluster, [loose])
    assert proc.returncode != 0
    assert (
        'violate PodSecurity "restricted:latest"' in proc.stderr and "allowPrivilegeEscalation" in proc.stderr
    )


def test_the_server_catches_what_schemas_cannot(cluster: ControlPlane, render: Render) -> None:
    (hpa,) = [
        d
        for d in render(MINIMAL)
        if d["kind"] == "HorizontalPodAutoscaler" and "api" in d["metadata"]["name"]
    ]
    bad = copy.deepcopy(hpa)
    bad["spec"]["minReplicas"], bad["spec"]["maxReplicas"] = 5, 2
    proc = dry_run(cluster, [bad])
    assert proc.returncode != 0 and "maxReplicas" in proc.stderr


def test_flink_deployment_validates_against_the_operators_crd(cluster: ControlPlane, render: Render) -> None:
    # The 1.10.0 CRD (the newest on Maven Central here) lists Flink versions up to v1_20; the rest
    # of the spec is the same v1beta1 API.
    (fd,) = [
        d for d in render(ALL_ON, sets={"analytics.flinkVersion": "v1_20"}) if d["kind"] == "FlinkDeployment"
    ]
    proc = dry_run(cluster, [fd])
    assert proc.returncode == 0, proc.stderr
    assert (
        "flinkdeployment.flink.apache.org/clinic-healthcare-analytics created (server dry run)" in proc.stdout
    )


def test_the_crd_refuses_a_broken_flink_deployment(cluster: ControlPlane, render: Render) -> None:
    (fd,) = [
        d for d in render(ALL_ON, sets={"analytics.flinkVersion": "v1_20"}) if d["kind"] == "FlinkDeployment"
    ]
    typo = copy.deepcopy(fd)
    typo["spec"]["job"]["paralelism"] = 2
    wrong_type = copy.deepcopy(fd)
    wrong_type["spec"]["job"]["upgradeMode"] = "sometimes"
    for bad, names in ((typo, "paralelism"), (wrong_type, "upgradeMode")):
        proc = dry_run(cluster, [bad])
        assert proc.returncode != 0 and names in proc.stderr, proc.stderr


def test_the_1_10_crd_does_not_know_flink_2_2(cluster: ControlPlane, render: Render) -> None:
    """Why charts/README.md asks for an operator release that knows v2_2 (the job is PyFlink 2.2)."""
    (fd,) = [d for d in render(ALL_ON) if d["kind"] == "FlinkDeployment"]
    assert fd["spec"]["flinkVersion"] == "v2_2"
    proc = dry_run(cluster, [fd])
    assert proc.returncode != 0 and "flinkVersion" in proc.stderr and "v1_20" in proc.stderr


def _release_objects(cluster: ControlPlane) -> dict[str, list[str]]:
    kinds = "deployments,services,configmaps,horizontalpodautoscalers,poddisruptionbudgets,"
    kinds += "networkpolicies,serviceaccounts,jobs,pods"
    listing = cluster.get(kinds, "-n", NS, "-l", "app.kubernetes.io/instance=clinic")
    found: dict[str, list[str]] = {}
    for item in listing["items"]:
        found.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return found


def _events(cluster: ControlPlane, name: str) -> list[str]:
    listing = cluster.get("events", "-n", NS, "--field-selector", f"involvedObject.name={name}")
    return [e["reason"] for e in listing["items"]]


def _no_warnings(proc: Any) -> None:
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_install_upgrade_test_rollback_uninstall(cluster: ControlPlane) -> None:
    helm = cluster.helm
    chart, values = str(CHART), str(MINIMAL)

    # install: the migration hook runs first (its Job completes), then every role becomes available
    proc = helm("install", "clinic", chart, "-n", NS, "-f", values, "--wait", "--timeout", "180s")
    _no_warnings(proc)
    status = yaml.safe_load(helm("status", "clinic", "-n", NS, "-o", "yaml").stdout)
    assert status["info"]["status"] == "deployed" and status["version"] == 1
    assert {"SuccessfulCreate", "Completed"} <= set(_events(cluster, "clinic-healthcare-migrate-1"))
    objs = _release_objects(cluster)
    roles = ("api", "worker", "consumer", "relay")
    assert sorted(objs["Deployment"]) == sorted(f"clinic-healthcare-{r}" for r in roles)
    for role in roles:
        dep = cluster.get("deployment", f"clinic-healthcare-{role}", "-n", NS)
        assert dep["status"]["availableReplicas"] == dep["spec"]["replicas"] >= 1, role
    assert "Job" not in objs, "a succeeded hook Job is deleted"
    endpoints = cluster.get(
        "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=clinic-healthcare-api"
    )
    assert endpoints["items"][0]["endpoints"], "the api Service has ready endpoints"

    # helm test: the hook pod (it asks /readyz) is created, runs and succeeds
    proc = helm("test", "clinic", "-n", NS, "--timeout", "120s")
    assert "clinic-healthcare-test-readyz" in proc.stdout and "Succeeded" in proc.stdout

    # upgrade with changed values: a config change rolls the pods, a fixed replica count replaces the HPA
    proc = helm(
        "upgrade", "clinic", chart, "-n", NS, "-f", values,
        "--set", "log.level=DEBUG", "--set", "api.autoscaling.enabled=false", "--set", "api.replicas=3",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    _no_warnings(proc)
    assert {"SuccessfulCreate", "Completed"} <= set(_events(cluster, "clinic-healthcare-migrate-2"))
    cm = cluster.get("configmap", "clinic-healthcare-config", "-n", NS)
    assert cm["data"]["HC_LOG_LEVEL"] == "DEBUG"
    api = cluster.get("deployment", "clinic-healthcare-api", "-n", NS)
    assert api["spec"]["replicas"] == 3 and api["status"]["availableReplicas"] == 3
    assert "clinic-healthcare-api" not in _release_objects(cluster).get("HorizontalPodAutoscaler", [])

    # rollback to the first revision: the HPA is back, the settings are the old ones
    _no_warnings(helm("rollback", "clinic", "1", "-n", NS, "--wait", "--timeout", "180s"))
    history = yaml.safe_load(helm("history", "clinic", "-n", NS, "-o", "yaml").stdout)
    assert [(h["revision"], h["status"]) for h in history][-1] == (3, "deployed")
    assert cluster.get("configmap", "clinic-healthcare-config", "-n", NS)["data"]["HC_LOG_LEVEL"] == "INFO"
    assert "clinic-healthcare-api" in _release_objects(cluster)["HorizontalPodAutoscaler"]

    # uninstall: nothing of the release is left (the Secrets it only referred to stay)
    helm("uninstall", "clinic", "-n", NS, "--wait", "--timeout", "120s")
    eventually_sync(
        lambda: not _release_objects(cluster), timeout=60, interval=0.5, what="no object of the release left"
    )
    assert cluster.kubectl("get", "secret", "healthcare-env", "-n", NS, check=False).returncode == 0
