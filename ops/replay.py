"""Replay a workflow history against the current workflow code, to catch non-determinism before deploying."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow

REPLAYED_WORKFLOWS = [BillingWorkflow, AppointmentWorkflow]


def _replayer() -> Replayer:
    return Replayer(workflows=REPLAYED_WORKFLOWS, data_converter=pydantic_data_converter)


async def replay_history(
    history_json: str | dict[str, Any], workflow_id: str = "replayed"
) -> tuple[bool, str | None]:
    """(True, None) when the current code reproduces the history; else (False, what went wrong)."""
    history = WorkflowHistory.from_json(workflow_id, history_json)
    return await replay(history)


async def replay(history: WorkflowHistory) -> tuple[bool, str | None]:
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return True, None
    return False, f"{type(result.replay_failure).__name__}: {result.replay_failure}"
