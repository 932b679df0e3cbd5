"""Replay workflow histories against the current workflow code, to catch non-determinism before deploying.

One replayer (one sandboxed worker) replays a whole stream of histories, so a bulk replay pays the
replayer's start-up once, not per history. Payloads are decrypted with the configured keys (plain,
pre-encryption payloads pass through); a history these keys cannot decrypt is reported as such,
which is not the same as non-deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from healthcare import codec
from healthcare.settings import get_settings
from workers.temporal_worker import PASSTHROUGH_MODULES
from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow

REPLAYED_WORKFLOWS = [BillingWorkflow, AppointmentWorkflow]
Verdict = Literal["ok", "non-deterministic", "skipped"]


@dataclass(frozen=True)
class Replayable:
    """One history to replay, or why there is none (fetching it failed)."""

    workflow_id: str
    run_id: str
    history: WorkflowHistory | None
    failure_type: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ReplayOutcome:
    workflow_id: str
    run_id: str
    verdict: Verdict
    detail: str | None = None
    failure_type: str | None = None


def _replayer(converter: DataConverter) -> Replayer:
    # Always sandboxed (a replay is where non-determinism is caught), with the worker's passthrough
    # modules: re-importing pydantic into the sandbox for every history cost more than replaying it.
    return Replayer(
        workflows=REPLAYED_WORKFLOWS,
        data_converter=converter,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
        ),
    )


def _converter(converter: DataConverter | None) -> DataConverter:
    return converter or codec.data_converter(get_settings())


def _check(converter: DataConverter, history: WorkflowHistory) -> None:
    if isinstance(converter.payload_codec, codec.EncryptionCodec):
        codec.check_decodable(converter.payload_codec, history.events)


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
    """Raises CodecError when a payload does not decrypt with the configured keys."""
    converter = _converter(converter)
    _check(converter, history)
    result = await _replayer(converter).replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return True, None
    return False, f"{type(result.replay_failure).__name__}: {result.replay_failure}"


async def replay_stream(
    items: AsyncIterator[Replayable], *, converter: DataConverter | None = None
) -> AsyncIterator[ReplayOutcome]:
    """Replay each history as it arrives, on one replayer; yield one outcome per item as soon as it
    is settled (a skipped one at once, a replayed one when the replayer finishes it)."""
    converter = _converter(converter)
    outcomes: asyncio.Queue[ReplayOutcome | None] = asyncio.Queue()
    pending: dict[int, Replayable] = {}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for item in items:
            if item.history is None:
                outcomes.put_nowait(_skipped(item, item.error or "no history"))
                continue
            try:
                _check(converter, item.history)
            except codec.CodecError as exc:
                outcomes.put_nowait(_skipped(item, f"cannot decrypt: {exc}"))
                continue
            pending[id(item.history)] = item
            yield item.history

    async def run() -> None:
        try:
            async with _replayer(converter).workflow_replay_iterator(histories()) as results:
                async for result in results:
                    item = pending.pop(id(result.history))
                    failure = result.replay_failure
                    outcomes.put_nowait(
                        ReplayOutcome(
                            item.workflow_id,
                            item.run_id,
                            "ok" if failure is None else "non-deterministic",
                            None if failure is None else f"{type(failure).__name__}: {failure}",
                            item.failure_type,
                        )
                    )
        finally:
            outcomes.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (outcome := await outcomes.get()) is not None:
            yield outcome
        await task  # an error of the replayer itself surfaces here
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _skipped(item: Replayable, why: str) -> ReplayOutcome:
    return ReplayOutcome(item.workflow_id, item.run_id, "skipped", why, item.failure_type)
