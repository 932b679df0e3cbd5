"""A real Kubernetes control plane on 127.0.0.1 for the chart tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and kwok simulating one node's kubelet.

Every process binds loopback only, on free ports, with its data in a temporary folder; `stop()` ends
them in reverse order (the apiserver before etcd). Authentication is one admin token; RBAC is on;
Pod Security admission is the apiserver's built-in one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.waiting import eventually_sync

TOKEN = "chart-tests-admin-token"
NODE = "kwok-node-0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], *, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll `check` until it holds; fail early if the process died, or after `timeout` seconds."""

    def ready() -> bool:
        if proc.poll() is not None:  # fails at once
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            return check()
        except (httpx.HTTPError, OSError) as not_yet:
            raise AssertionError(f"{type(not_yet).__name__}: {not_yet}") from None

    eventually_sync(ready, timeout=timeout, interval=0.2, what=f"{what} ready")


@dataclass
class ControlPlane:
    bin: Path
    workdir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    api_port: int = 0
    started_in: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.log(name).open("wb")
        proc = subprocess.Popen(
            [str(self.bin / argv[0]), *argv[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def _https_ok(self, port: int, path: str) -> bool:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.get(f"https://127.0.0.1:{port}{path}", headers=headers, verify=False, timeout=2)
        return r.status_code == 200

    def start(self, *, kwok_config: Path | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._credentials()
        began = time.monotonic()

        etcd_port, peer_port = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                "etcd",
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a throwaway test store: no fsync wait per write
                "--log-level=warn",
            ],
        )
        wait_for(
            "etcd",
            lambda: (
                httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=2).json().get("health") == "true"
            ),
            timeout=30,
            proc=etcd,
        )
        self.started_in["etcd"] = time.monotonic() - began

        self.api_port = free_port()
        apiserver = self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # loopback as the advertised address: the endpoint reconciler would refuse it and exit
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_for(
            "kube-apiserver", lambda: self._https_ok(self.api_port, "/readyz"), timeout=90, proc=apiserver
        )
        self.started_in["kube-apiserver"] = time.monotonic() - began
        self._write_kubeconfig()

        common = [f"--kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1", "--leader-elect=false"]
        cm_port = free_port()
        cm = self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                *common,
                f"--secure-port={cm_port}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                f"--root-ca-file={self.workdir / 'certs' / 'apiserver.crt'}",
                # No node lifecycle: kwok answers for the node once, no heartbeats are needed
                "--controllers=*,-nodeipam,-nodelifecycle,-csrsigning,-csrapproving,-bootstrapsigner,-tokencleaner",
                "--v=1",
            ],
        )
        sched_port = free_port()
        sched = self._spawn(
            "kube-scheduler",
            [
                "kube-scheduler",
                *common,
                f"--secure-port={sched_port}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--v=1",
            ],
        )
        wait_for("kube-controller-manager", lambda: self._https_ok(cm_port, "/healthz"), timeout=60, proc=cm)
        wait_for("kube-scheduler", lambda: self._https_ok(sched_port, "/healthz"), timeout=60, proc=sched)
        self.started_in["controllers"] = time.monotonic() - began

        kwok_port = free_port()
        argv = [
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--manage-single-node={NODE}",
            f"--server-address=127.0.0.1:{kwok_port}",
            "--node-ip=10.0.0.1",
            "--cidr=10.0.1.0/24",
        ]
        if kwok_config:
            argv.append(f"--config={kwok_config}")
        kwok = self._spawn("kwok", argv)
        wait_for(
            "kwok",
            lambda: httpx.get(f"http://127.0.0.1:{kwok_port}/healthz", timeout=2).status_code == 200,
            timeout=30,
            proc=kwok,
        )
        self.apply(self._node())
        wait_for("the kwok node", self._node_ready, timeout=60, proc=kwok)
        # Admission taints a new node not-ready; the node lifecycle controller (off, see above) would
        # lift the taint once the node reports Ready, so lift it here.
        self.kubectl("taint", "node", NODE, "node.kubernetes.io/not-ready:NoSchedule-", check=False)
        self.started_in["kwok node"] = time.monotonic() - began

    def stop(self) -> None:
        """Stop every process, newest first (controllers, apiserver, then etcd); bounded waits."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.procs.clear()

    # -- clients -----------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._tool("kubectl", list(args), check=check, stdin=stdin)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self._tool("helm", list(args), check=check, timeout=timeout)

    def _tool(
        self, name: str, args: list[str], *, check: bool, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.workdir),
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }
        proc = subprocess.run(
            [str(self.bin / name), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def apply(self, *docs: dict[str, Any], extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *extra, stdin=yaml.safe_dump_all(docs))

    def get(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl("get", *args, "-o", "yaml").stdout)

    # -- setup pieces ------------------------------------------------------------------------------
    def _credentials(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (self.workdir / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (self.workdir / "tokens.csv").write_text(f'{TOKEN},admin,admin-uid,"system:masters"\n')

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.server, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    @staticmethod
    def _node() -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": "zone-a",
                    "type": "kwok",
                },
            },
            "spec": {},
            "status": {
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            },
        }

    def _node_ready(self) -> bool:
        node = self.get("node", NODE)
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )
