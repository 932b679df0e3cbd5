"""Replay a workflow history against the current workflow code, to catch non-determinism before deploying."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from healthcare import codec
from healthcare.settings import get_settings
from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow

REPLAYED_WORKFLOWS = [BillingWorkflow, AppointmentWorkflow]


def _replayer(converter: DataConverter) -> Replayer:
    # Decrypts with the configured payload keys; plain (pre-encryption) payloads pass through.
    return Replayer(workflows=REPLAYED_WORKFLOWS, data_converter=converter)


async def replay_history(
    history_json: str | dict[str, Any],
    workflow_id: str = "replayed",
    *,
    converter: DataConverter | None = None,
) -> tuple[bool, str | None]:
    """(True, None) when the current code reproduces the history; else (False, what went wrong)."""
    history = WorkflowHistory.from_json(workflow_id, history_json)
    return await replay(history, converter=converter)


async def replay(
    history: WorkflowHistory, *, converter: DataConverter | None = None
) -> tuple[bool, str | None]:
    """Raises CodecError when a payload does not decrypt with the configured keys: that history
    cannot be judged, which is not the same as non-deterministic."""
    converter = converter or codec.data_converter(get_settings())
    if isinstance(converter.payload_codec, codec.EncryptionCodec):
        codec.check_decodable(converter.payload_codec, history.events)
    result = await _replayer(converter).replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return True, None
    return False, f"{type(result.replay_failure).__name__}: {result.replay_failure}"
