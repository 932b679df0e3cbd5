"""Database steps give up: a step that keeps failing fails its run (visible as FAILED) after a bounded
number of attempts, instead of retrying unseen for ever.

On the dev server in real time (about 45 s): the time-skipping server cannot skip the in-worker
back-off of local activities, and times the run out instead.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from healthcare.contracts.appointments import BookingRequest, PartiesCheck
from healthcare.contracts.billing import BillingRequest, PriceRequest
from workflows import appointments as appointment_workflow
from workflows import billing as billing_workflow
from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow

TEMPORAL = Path(sys.executable).parent / "temporal"


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[Client]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--ip", "127.0.0.1"],
    )
    yield env.client
    await env.shutdown()


# With the old, unbounded policy these runs never end; this bounds the wait for the failure.
GIVE_UP_WITHIN_SECONDS = 180


class DatabaseDown:
    """Every database step fails as an unreachable database would (a retryable error)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    def _fail(self, name: str) -> None:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        raise ApplicationError("connection refused", type="OSError")

    @activity.defn(name="appointments.check_parties")
    async def check_parties(self, _: PartiesCheck) -> None:
        self._fail("appointments.check_parties")

    @activity.defn(name="billing.price_visit")
    async def price_visit(self, _: PriceRequest) -> None:
        self._fail("billing.price_visit")


async def _fails(
    client: Client, workflow: str, arg: object, workflow_id: str, task_queue: str
) -> WorkflowFailureError:
    handle = await client.start_workflow(workflow, arg, id=workflow_id, task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), GIVE_UP_WITHIN_SECONDS)
    return failed.value


def _chain(error: BaseException | None) -> list[str]:
    types = []
    while error is not None:
        types.append(error.type if isinstance(error, ApplicationError) else type(error).__name__)
        error = (
            error.cause
            if isinstance(error, WorkflowFailureError | ActivityError | ApplicationError)
            else None
        )
    return [t or "" for t in types]


async def test_database_steps_give_up_and_fail_the_run(dev_server: Client, task_queue: str) -> None:
    client = dev_server
    down = DatabaseDown()
    booking = BookingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=datetime.now(UTC) + timedelta(days=3),
        duration_minutes=30,
    )
    bill = BillingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        appointment_time=datetime(2030, 5, 1, 9, 30, tzinfo=UTC),
        payment_terms_seconds=86400,
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[AppointmentWorkflow, BillingWorkflow],
        activities=[down.check_parties, down.price_visit],
    ):
        booked, billed = await asyncio.gather(
            _fails(client, "Appointment", booking, f"appointment-{booking.appointment_id}", task_queue),
            _fails(client, "Billing", bill, f"billing-{bill.appointment_id}", task_queue),
        )
    for failure in (booked, billed):
        assert "OSError" in _chain(failure), repr(failure.cause)  # the run fails with the step's own error
    assert down.attempts == {
        "appointments.check_parties": appointment_workflow.DB_RETRY.maximum_attempts,
        "billing.price_visit": billing_workflow.DB_RETRY.maximum_attempts,
    }
    assert 0 < appointment_workflow.DB_RETRY.maximum_attempts <= 10
    assert 0 < billing_workflow.DB_RETRY.maximum_attempts <= 10
