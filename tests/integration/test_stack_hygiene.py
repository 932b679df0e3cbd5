"""The stack's own checks leave nothing in it that a developer would see in the Temporal UI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.client import Client as TemporalClient

from devstack import components
from devstack.paths import Paths
from healthcare.settings import Settings

PROBES = "WorkflowId STARTS_WITH 'diagnostics-devstack-'"


async def test_the_worker_readiness_probe_leaves_no_run(
    settings: Settings, paths: Paths, temporal: TemporalClient
) -> None:
    seen: list[str] = []
    since = f"{PROBES} AND StartTime >= '{datetime.now(UTC) - timedelta(seconds=1):%Y-%m-%dT%H:%M:%S.%fZ}'"
    await components.worker(settings, paths).ready()
    loop = asyncio.get_running_loop()
    # The server deletes asynchronously: about 20 s after the call on the shared 2-core machine.
    deadline = loop.time() + 120
    while loop.time() < deadline:
        seen = [w.id async for w in temporal.list_workflows(since)]
        if not seen:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"readiness probes left runs behind: {seen}")
