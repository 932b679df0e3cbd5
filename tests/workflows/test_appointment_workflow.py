"""The appointment workflow in a Temporal test server, with activities stood in by name.

Events go through the outbox (queued by `store` and `set_status`, published by the relay; see
tests/integration/test_outbox.py): a run schedules no activity task at all, every step is local.
"""

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from healthcare.codec import data_converter
from healthcare.contracts.appointments import (
    IDEMPOTENCY_MISMATCH,
    SLOT_TAKEN,
    AppointmentState,
    BookingRequest,
    PartiesCheck,
    StatusChange,
    TransitionRequest,
)
from healthcare.settings import get_settings
from tests.workflows import capture
from workflows import search_attributes
from workflows.appointments import AppointmentWorkflow

TEMPORAL = Path(sys.executable).parent / "temporal"


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=data_converter(get_settings()),
        search_attributes=list(search_attributes.ALL),
        dev_server_extra_args=["--ip", "127.0.0.1"],
    )
    yield env
    await env.shutdown()


class StandIns:
    """Records what the workflow asked for; failures are scripted per test."""

    def __init__(self, *, store_error: str | None = None) -> None:
        self.statuses: list[StatusChange] = []
        self.store_error = store_error
        self.state: AppointmentState | None = None

    @activity.defn(name="appointments.check_parties")
    async def check_parties(self, data: PartiesCheck) -> None:
        return None

    @activity.defn(name="appointments.store")
    async def store(self, data: BookingRequest) -> AppointmentState:
        if self.store_error:
            raise ApplicationError("taken", type=self.store_error, non_retryable=True)
        now = datetime.now(UTC)
        self.state = AppointmentState(
            id=data.appointment_id,
            patient_id=data.patient_id,
            doctor_id=data.doctor_id,
            time=data.time,
            duration_minutes=data.duration_minutes,
            status="BOOKED",
            workflow_id=f"appointment-{data.appointment_id}",
            created_at=now,
            updated_at=now,
        )
        return self.state

    @activity.defn(name="appointments.set_status")
    async def set_status(self, data: StatusChange) -> AppointmentState:
        assert self.state is not None
        self.statuses.append(data)
        self.state = self.state.model_copy(update={"status": data.target})
        return self.state

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_parties, self.store, self.set_status]


def _request() -> BookingRequest:
    return BookingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=datetime.now(UTC) + timedelta(days=1),
        duration_minutes=30,
    )


async def _book(
    client: Client, request: BookingRequest, task_queue: str, *, update_with: BookingRequest | None = None
) -> AppointmentState:
    start = WithStartWorkflowOperation(
        AppointmentWorkflow.run,
        request,
        id=f"appointment-{request.appointment_id}",
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await client.execute_update_with_start_workflow(
        AppointmentWorkflow.book, update_with or request, start_workflow_operation=start
    )


async def _event_types(handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    return [EventType.Name(e.event_type) for e in history.events]


async def _keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """`make histories` stores the run's history for the replay test (tests/workflows/capture.py)."""
    capture.keep_history(await handle.fetch_history(), name)


async def test_book_then_cancel_queues_events_without_a_publish_activity(
    temporal_env: WorkflowEnvironment,
) -> None:
    acts = StandIns()
    queue = f"q-{uuid.uuid4().hex}"
    request = _request()
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()
    ):
        booked = await _book(temporal_env.client, request, queue)
        assert booked.status == "BOOKED" and booked.id == request.appointment_id
        handle = temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        )
        cancelled = await handle.execute_update(
            AppointmentWorkflow.transition, TransitionRequest(target="CANCELLED")
        )
        assert cancelled.status == "CANCELLED"
        outcome = await handle.result()
        types = await _event_types(handle)
        await _keep_history(handle, "appointment_outbox_cancelled")
    assert outcome.final_status == "CANCELLED"
    assert [s.target for s in acts.statuses] == ["CANCELLED"]
    # Every step ran as a local activity inside a workflow task: no activity task on the server.
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in types
    # The (deprecated) patch marker, then check, store and set_status.
    assert types.count("EVENT_TYPE_MARKER_RECORDED") == 4
    assert types.count("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED") == 2


async def test_completion_is_a_local_status_change(temporal_env: WorkflowEnvironment) -> None:
    acts = StandIns()
    queue = f"q-{uuid.uuid4().hex}"
    request = _request()
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()
    ):
        await _book(temporal_env.client, request, queue)
        handle = temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        )
        done = await handle.execute_update(
            AppointmentWorkflow.transition, TransitionRequest(target="COMPLETED")
        )
        assert done.status == "COMPLETED"
        assert (await handle.result()).final_status == "COMPLETED"
        await _keep_history(handle, "appointment_outbox_completed")
    assert [s.target for s in acts.statuses] == ["COMPLETED"]


async def test_a_taken_slot_refuses_the_booking_and_ends_the_workflow(
    temporal_env: WorkflowEnvironment,
) -> None:
    acts = StandIns(store_error=SLOT_TAKEN)
    queue = f"q-{uuid.uuid4().hex}"
    request = _request()
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()
    ):
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await _book(temporal_env.client, request, queue)
        assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == SLOT_TAKEN
        rejected = temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        )
        outcome = await rejected.result()
        await _keep_history(rejected, "appointment_rejected")
    assert outcome.final_status == "REJECTED"
    assert acts.statuses == []


async def test_same_key_same_answer_other_body_refused(temporal_env: WorkflowEnvironment) -> None:
    acts = StandIns()
    queue = f"q-{uuid.uuid4().hex}"
    request = _request()
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()
    ):
        first = await _book(temporal_env.client, request, queue)
        again = await _book(temporal_env.client, request, queue)
        assert again == first
        other = request.model_copy(update={"duration_minutes": 60})
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await _book(temporal_env.client, request, queue, update_with=other)
        assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == IDEMPOTENCY_MISMATCH
        handle = temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        )
        await handle.execute_update(AppointmentWorkflow.transition, TransitionRequest(target="NO_SHOW"))
        assert (await handle.result()).final_status == "NO_SHOW"
        await _keep_history(handle, "appointment_no_show")
    assert len(acts.statuses) == 1
