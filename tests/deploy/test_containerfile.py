"""The image definitions (deploy/Containerfile, deploy/flink/Containerfile): linted, non-root, pinned,
and the app image's dependency set is enough for every role it runs.

No image is built here: this machine has no container registry to pull a base image from (only
package registries are reachable), see charts/README.md "Images"."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.paths import REPO, VENV_BIN
from tests.deploy.conftest import run

APP = REPO / "deploy" / "Containerfile"
FLINK = REPO / "deploy" / "flink" / "Containerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("path", [APP, FLINK], ids=["app", "flink"])
def test_hadolint_finds_nothing(path: Path) -> None:
    proc = run([str(VENV_BIN / "hadolint"), "--failure-threshold", "info", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install -y curl\n")
    proc = run([str(VENV_BIN / "hadolint"), str(bad)], check=False)
    assert proc.returncode != 0 and "DL3007" in proc.stdout  # latest tag


@pytest.mark.parametrize("path", [APP, FLINK], ids=["app", "flink"])
def test_bases_are_pinned_and_the_image_runs_as_a_numeric_non_root_user(path: Path) -> None:
    steps = instructions(path)
    args = dict(
        a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a and a.split("=")[0].endswith("IMAGE")
    )
    assert args, "base images come in as build arguments (a mirror can stand in)"
    for name, image in args.items():
        assert re.search(r":[0-9][\w.-]*$", image), f"{name}={image} is not pinned to a version"
    users = [a for w, a in final_stage(path) if w == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", users[-1]), users


def test_app_image_takes_the_role_as_its_argument_and_carries_no_build_tools() -> None:
    final = final_stage(APP)
    assert ("ENTRYPOINT", '["healthcare"]') in final
    assert ("CMD", '["serve", "api"]') in final
    runs = " ".join(a for w, a in final if w == "RUN")
    assert "apt-get" not in runs and "pip install" not in runs and "uv " not in runs
    copies = [a for w, a in final if w == "COPY"]
    assert all(c.startswith("--from=") for c in copies), "the runtime stage only takes built results"
    assert any("/app/portal/dist" in c for c in copies), "the portal's files are in the image"
    assert any("uv.lock" in a for w, a in instructions(APP) if w == "COPY"), "dependencies come from uv.lock"
    assert "--frozen" in APP.read_text()


def test_flink_image_has_the_connector_the_plugin_and_the_job() -> None:
    text = FLINK.read_text()
    assert "devstack/flink/pom.xml" in text  # the same pinned Kafka connector as the local stack
    assert "/opt/flink/lib/" in text and "plugins/s3-fs-presto" in text
    assert "analytics_flink/ /opt/flink/usrlib/analytics_flink/" in text
    assert "uv.lock" in text and "--frozen" in text


def test_the_app_images_dependencies_are_enough_for_every_role(tmp_path: Path) -> None:
    """The environment the Containerfile builds (locked, no dev group, without PyFlink and the
    Temporal dev server) imports the code of every role and the migrations."""
    (skip,) = [a.removeprefix("SKIP=").strip('"') for w, a in instructions(APP) if a.startswith("SKIP=")]
    uv = sorted(REPO.glob(".state/tools/uv-*/bin/uv"))[-1]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_LINK_MODE": "hardlink"}
    env.pop("VIRTUAL_ENV", None)
    argv = [
        str(uv),
        "sync",
        "--frozen",
        "--offline",
        "--no-dev",
        "--no-install-project",
        "--python",
        sys.executable,
    ]
    proc = subprocess.run(
        [*argv, *shlex.split(skip)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    python = tmp_path / "venv" / "bin" / "python"
    imports = (
        "import api.main, workers.temporal_worker, workers.billing_consumer, workers.ws_relay, "
        "ops.cli, healthcare.migrate; import importlib.util as u; "
        "assert u.find_spec('pyflink') is None and u.find_spec('pyarrow') is None"
    )
    check = subprocess.run(
        [str(python), "-c", imports],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HC_ENV": "test"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert check.returncode == 0, check.stderr
