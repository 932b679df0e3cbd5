"""The analytics pieces of the local stack: the Kafka connector jar, the Flink job and the websocket relay."""

from __future__ import annotations

import shutil

import httpx

from devstack.install import connector_dir
from devstack.paths import REPO, VENV_BIN, Paths
from devstack.supervisor import Component, StackError
from healthcare.settings import Settings


def flink(settings: Settings, paths: Paths) -> Component:
    """The PyFlink job on a local mini-cluster; restores the newest retained checkpoint on every start."""
    rest_port = settings.analytics_rest_port
    rest = f"http://127.0.0.1:{rest_port}"

    async def prepare() -> None:
        if shutil.which("java") is None:
            raise StackError("flink: java not found (run `make setup`)")
        if not any(connector_dir(paths).glob("*.jar")):
            raise StackError(f"flink: no Kafka connector jar in {connector_dir(paths)} (run `make setup`)")

    async def ready() -> None:
        await job_running(rest)

    return Component(
        name="flink",
        argv=lambda: [str(VENV_BIN / "python"), "-m", "analytics_flink", "run"],
        ready=ready,
        prepare=prepare,
        env=lambda: {
            "HC_ANALYTICS_REST_PORT": str(rest_port),
            "HC_ANALYTICS_CONNECTOR_DIR": str(connector_dir(paths)),
            "HC_ANALYTICS_CHECKPOINT_DIR": str(paths.data / "flink-checkpoints"),
        },
        cwd=REPO,
        depends_on=["kafka"],
        ports=[rest_port],
        ready_timeout=240,  # a JVM and an embedded Python: minutes when the machine's cores are busy
        stop_timeout=20,
        describe=f"job appointment-analytics, REST {rest}",
    )


async def job_running(rest: str) -> None:
    """Ready = one job RUNNING with every task RUNNING (the source is reading, the sink can write)."""
    async with httpx.AsyncClient(timeout=2) as http:
        jobs = (await http.get(f"{rest}/jobs/overview")).raise_for_status().json()["jobs"]
        running = [j for j in jobs if j["state"] == "RUNNING"]
        if not running:
            raise StackError(f"no running job yet ({[j['state'] for j in jobs]})")
        detail = (await http.get(f"{rest}/jobs/{running[0]['jid']}")).raise_for_status().json()
        states = {v["status"] for v in detail["vertices"]}
        if states != {"RUNNING"}:
            raise StackError(f"tasks not all running yet ({sorted(states)})")


def relay(settings: Settings, paths: Paths) -> Component:
    base = f"http://{settings.ws_host}:{settings.ws_port}"

    async def ready() -> None:
        await relay_following(base)

    return Component(
        name="relay",
        argv=lambda: [str(VENV_BIN / "python"), "-m", "workers.ws_relay"],
        ready=ready,
        depends_on=["kafka"],
        ports=[settings.ws_port],
        ready_timeout=30,
        describe=f"ws://{settings.ws_host}:{settings.ws_port}/ws/analytics",
    )


async def relay_following(base: str) -> None:
    """Ready = the relay answers and follows analytics-results (a result published now reaches it)."""
    async with httpx.AsyncClient(timeout=2) as http:
        body = (await http.get(f"{base}/healthz")).raise_for_status().json()
    if not body.get("following"):
        raise StackError("relay not following analytics-results yet")
