"""The stack's own checks leave nothing in it that a developer would see in the Temporal UI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.client import Client as TemporalClient

from devstack import components
from devstack.paths import Paths
from healthcare.settings import Settings
from tests.waiting import eventually

PROBES = "WorkflowId STARTS_WITH 'diagnostics-devstack-'"


async def test_the_worker_readiness_probe_leaves_no_run(
    settings: Settings, paths: Paths, temporal: TemporalClient
) -> None:
    since = f"{PROBES} AND StartTime >= '{datetime.now(UTC) - timedelta(seconds=1):%Y-%m-%dT%H:%M:%S.%fZ}'"
    await components.worker(settings, paths).ready()

    async def none_left() -> bool:
        seen = [w.id async for w in temporal.list_workflows(since)]
        assert not seen, f"readiness probes left runs behind: {seen}"
        return True

    # The server deletes asynchronously: about 20 s after the call on the shared 2-core machine.
    await eventually(none_left, timeout=120, interval=1, what="the probe runs deleted")
