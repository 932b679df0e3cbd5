"""The appointment workflow in a Temporal test server, with activities stood in by name."""

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from healthcare.appointments import (
    IDEMPOTENCY_MISMATCH,
    SLOT_TAKEN,
    AppointmentState,
    BookingRequest,
    PartiesCheck,
    PublishRequest,
    StatusChange,
    TransitionRequest,
)
from workflows.appointments import AppointmentWorkflow

TEMPORAL = Path(sys.executable).parent / "temporal"


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=pydantic_data_converter,
        search_attributes=[
            SearchAttributeKey.for_keyword("PatientId"),
            SearchAttributeKey.for_keyword("DoctorId"),
            SearchAttributeKey.for_keyword("AppointmentStatus"),
        ],
        dev_server_extra_args=["--ip", "127.0.0.1"],
    )
    yield env
    await env.shutdown()


class StandIns:
    """Records what the workflow asked for; failures are scripted per test."""

    def __init__(self, *, publish_failures: int = 0, store_error: str | None = None) -> None:
        self.published: list[tuple[str, int]] = []
        self.statuses: list[str] = []
        self.publish_failures = publish_failures
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
        self.statuses.append(data.target)
        self.state = self.state.model_copy(update={"status": data.target})
        return self.state

    @activity.defn(name="appointments.publish")
    async def publish(self, data: PublishRequest) -> None:
        attempt = activity.info().attempt
        if attempt <= self.publish_failures:
            raise RuntimeError("broker unavailable")
        self.published.append((data.event, attempt))

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_parties, self.store, self.set_status, self.publish]


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


async def test_book_publish_cancel_publish(temporal_env: WorkflowEnvironment) -> None:
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
    assert outcome.final_status == "CANCELLED"
    assert [e for e, _ in acts.published] == ["APPOINTMENT_CREATED", "APPOINTMENT_CANCELLED"]
    assert acts.statuses == ["CANCELLED"]


async def test_publish_failures_are_retried_until_the_event_is_out(temporal_env: WorkflowEnvironment) -> None:
    acts = StandIns(publish_failures=2)
    queue = f"q-{uuid.uuid4().hex}"
    request = _request()
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()
    ):
        booked = await _book(temporal_env.client, request, queue)
        assert booked.status == "BOOKED"  # the caller is answered before publishing succeeds
        handle = temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        )
        await handle.execute_update(AppointmentWorkflow.transition, TransitionRequest(target="COMPLETED"))
        await handle.result()
    assert acts.published == [("APPOINTMENT_CREATED", 3)]  # two failures, then exactly one success


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
        outcome = await temporal_env.client.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{request.appointment_id}"
        ).result()
    assert outcome.final_status == "REJECTED"
    assert acts.published == []


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
        await handle.result()
    assert [e for e, _ in acts.published] == ["APPOINTMENT_CREATED"]  # booked once
