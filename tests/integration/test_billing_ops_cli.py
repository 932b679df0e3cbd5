"""`healthcare billing replay | restart-failed | reconcile` on encrypted histories, in bulk, for scripts.

Failed runs are made the way bad events make them: billing runs for a doctor that does not exist
fail with DoctorNotFound. Each command is run as a subprocess (its lines, summary and exit code are
the interface), filtered to this test's runs by start time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from healthcare import codec
from healthcare.contracts.billing import DOCTOR_NOT_FOUND, billing_workflow_id
from healthcare.settings import Settings
from ops.replay import Replayable
from ops.runs import RunFilter
from services.billing import start_billing_run

pytestmark = pytest.mark.integration

N = 3


async def _cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "billing",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


@pytest.fixture(scope="module")
async def failed_runs(temporal: TemporalClient, settings: Settings) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = []
    for _ in range(N):
        appointment = uuid.uuid4()
        await start_billing_run(
            temporal,
            settings,
            appointment_id=appointment,
            patient_id=uuid.uuid4(),
            doctor_id=uuid.uuid4(),  # no such doctor: the run fails for good
            appointment_time=datetime.now(UTC) + timedelta(days=3),
        )
        ids.append(billing_workflow_id(appointment))
    for workflow_id in ids:
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(temporal.get_workflow_handle(workflow_id).result(), 60)
    return {"since": since.isoformat(), "ids": ids}


def _counted(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"^\[\s*\d+(/\d+)?\] ", line)]


async def test_replay_all_failed_streams_a_line_per_run_and_a_summary(failed_runs: dict[str, Any]) -> None:
    code, lines = await _cli(
        "replay", "--all-failed", "--since", failed_runs["since"], "--failure-type", DOCTOR_NOT_FOUND
    )
    assert code == 0, lines
    counted = _counted(lines)
    assert len(counted) == N and all(f"/{N}] ok " in line for line in counted), lines
    assert {wid for wid in failed_runs["ids"] if any(wid in line for line in counted)} == set(
        failed_runs["ids"]
    )
    assert all(f"(failed: {DOCTOR_NOT_FOUND})" in line for line in counted)
    assert any(line.startswith(f"replayed {N}: {N} ok, 0 non-deterministic, 0 skipped") for line in lines)


async def test_replay_without_the_key_cannot_judge_and_says_so(failed_runs: dict[str, Any]) -> None:
    other = f"other:{codec.generate_key()}"
    env = {"HC_PAYLOAD_KEYS": other, "HC_PAYLOAD_KEY_ID": "other"}
    code, lines = await _cli("replay", failed_runs["ids"][0], env=env)
    assert code == 3, lines
    assert "cannot decrypt" in "\n".join(lines) and "local-dev-1" in "\n".join(lines)
    # After a rotation the old key is still configured: the same history replays.
    settings = Settings()
    rotated = {
        "HC_PAYLOAD_KEYS": f"{other},{settings.payload_keys.get_secret_value()}",
        "HC_PAYLOAD_KEY_ID": "other",
    }
    code, lines = await _cli("replay", failed_runs["ids"][0], env=rotated)
    assert code == 0, lines


async def test_a_history_file_replays_and_a_broken_one_is_refused(
    failed_runs: dict[str, Any], temporal: TemporalClient, tmp_path: Path
) -> None:
    history = await temporal.get_workflow_handle(failed_runs["ids"][0]).fetch_history()
    good = tmp_path / "events.json"
    good.write_text(history.to_json())
    code, lines = await _cli("replay", "--file", str(good))
    assert code == 0 and any(" ok " in line for line in lines), lines
    changed = tmp_path / "changed.json"
    # A marker the current code does not record: what a non-deterministic change looks like.
    assert history.to_json().count('"core_local_activity"') == 1
    changed.write_text(history.to_json().replace('"core_local_activity"', '"core_local_activity_v2"'))
    code, lines = await _cli("replay", "--file", str(good), "--file", str(changed))
    assert code == 1, lines
    assert any("NON-DETERMINISTIC changed.json" in line for line in lines), lines
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, lines = await _cli("replay", "--file", str(broken))
    assert code == 3 and any("cannot read" in line for line in lines), lines
    code, lines = await _cli("replay")
    assert code == 2


async def test_restart_failed_dry_run_then_for_real(
    failed_runs: dict[str, Any], temporal: TemporalClient
) -> None:
    since = failed_runs["since"]
    code, lines = await _cli(
        "restart-failed", "--dry-run", "--since", since, "--failure-type", DOCTOR_NOT_FOUND
    )
    assert code == 0, lines
    would = [line for line in _counted(lines) if "would restart" in line]
    assert len(would) == N and all(f"({DOCTOR_NOT_FOUND}: bad input)" in line for line in would), lines
    for workflow_id in failed_runs["ids"]:
        assert (
            await temporal.get_workflow_handle(workflow_id).describe()
        ).status == WorkflowExecutionStatus.FAILED

    code, lines = await _cli("restart-failed", "--since", since, "--limit", "1", "--concurrency", "1")
    assert code == 0 and len([line for line in lines if "restarted billing-" in line]) == 1, lines
    restarted = next(line for line in lines if "restarted billing-" in line)
    workflow_id = re.search(r"(billing-[0-9a-f-]+)", restarted).group(1)  # type: ignore[union-attr]
    assert workflow_id in failed_runs["ids"]
    # The reset run fails again (the doctor still does not exist): the same visible failure, once more.
    handle = temporal.get_workflow_handle(workflow_id)
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 60)
    # Now that workflow has two failed runs: a line for each (the count adds up), and only the
    # latest would be restarted.
    code, lines = await _cli(
        "restart-failed", "--dry-run", "--since", since, "--failure-type", DOCTOR_NOT_FOUND
    )
    counted = _counted(lines)
    assert code == 0 and len(counted) == N + 1 and counted[-1].startswith(f"[{N + 1}/{N + 1}]"), lines
    mine = [line for line in counted if workflow_id in line]
    assert sorted(line.split("] ", 1)[1].split(" billing-")[0] for line in mine) == [
        "skipped",
        "would restart",
    ], lines


async def test_reconcile_names_each_failed_runs_failure_type(failed_runs: dict[str, Any]) -> None:
    appointment = failed_runs["ids"][1].removeprefix("billing-")
    code, lines = await _cli("reconcile", "--appointment", appointment)
    failed = [line for line in lines if "FAILED " in line]
    assert failed and all(f"{DOCTOR_NOT_FOUND} (bad input)" in line for line in failed), lines
    assert any("failed runs: 1 (bad input: 1, bug or outage: 0)" in line for line in lines), lines
    code, lines = await _cli("reconcile", "--dry-run")
    assert code == 2  # --dry-run goes with --fix


async def test_the_fetch_stage_applies_filter_and_limit(
    failed_runs: dict[str, Any], temporal: TemporalClient
) -> None:
    from ops.billing import fetched

    runs = RunFilter(
        since=datetime.fromisoformat(failed_runs["since"]),
        failure_types=frozenset({DOCTOR_NOT_FOUND}),
        limit=2,
    )
    got: list[Replayable] = [item async for item in fetched(temporal, runs, concurrency=2)]
    assert len(got) == 2 and all(item.failure_type == DOCTOR_NOT_FOUND and item.history for item in got)
    json.dumps([item.workflow_id for item in got])
