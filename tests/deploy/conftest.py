"""Fixtures of the deployment tests: the tools `make setup` installs, and rendering the chart."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import k8s
from devstack.paths import REPO, Paths
from healthcare.settings import Settings

CHART = REPO / "charts" / "healthcare"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = k8s.KUBERNETES_VERSION.lstrip("v")


@dataclass(frozen=True)
class Tools:
    bin: Path
    crds: Path

    def path(self, name: str) -> str:
        return str(self.bin / name)

    def require(self, *names: str) -> None:
        missing = [name for name in names if not (self.bin / name).exists()]
        if missing:
            pytest.fail(f"deployment tools missing from {self.bin}: {missing}; run `make setup`")


@pytest.fixture(scope="session")
def tools(settings: Settings) -> Tools:
    paths = Paths.from_settings(settings)
    found = Tools(bin=paths.bin, crds=k8s.crd_dir(paths))
    wanted = ["helm", "kubectl"]
    missing = [name for name in wanted if not (found.bin / name).exists()]
    if not (found.crds / "flinkdeployments.flink.apache.org-v1.yml").exists():
        missing.append("Flink operator CRDs")
    if missing:
        pytest.fail(f"deployment tools missing from {paths.tools}: {missing}; run `make setup`")
    return found


def run(
    argv: list[str], *, check: bool = True, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(tools: Tools) -> Render:
    """`helm template` with values files and --set pairs; returns the manifests as dicts."""

    def _render(
        *values: Path, sets: dict[str, str] | None = None, release: str = "clinic"
    ) -> list[dict[str, Any]]:
        argv = [tools.path("helm"), "template", release, str(CHART), "--namespace", "healthcare"]
        argv += ["--kube-version", KUBE_VERSION]
        for path in values:
            argv += ["-f", str(path)]
        for key, value in (sets or {}).items():
            argv += ["--set", f"{key}={value}"]
        out = run(argv).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return _render


def template_error(tools: Tools, *values: Path, sets: dict[str, str] | None = None) -> str:
    """The error `helm template` gives for values that must be refused ('' if it rendered)."""
    argv = [tools.path("helm"), "template", "clinic", str(CHART)]
    for path in values:
        argv += ["-f", str(path)]
    for key, value in (sets or {}).items():
        argv += ["--set-json" if value.startswith(("{", "[", '"')) else "--set", f"{key}={value}"]
    proc = run(argv, check=False)
    return proc.stderr if proc.returncode != 0 else ""


def values_file(tmp_path: Path, name: str, content: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path
