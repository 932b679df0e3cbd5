"""`healthcare billing reconcile --fix` on the real stack: a repaired billing run is indistinguishable
from one the billing consumer started (search attributes, input, task queue, payment terms)."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from healthcare import codec
from healthcare.contracts.appointments import AppointmentStatus, appointment_workflow_id
from healthcare.contracts.billing import WORKFLOW_TYPE, BillingRequest, billing_workflow_id
from healthcare.contracts.search_attributes import SearchAttribute
from healthcare.db import session_factory
from healthcare.models import Appointment
from healthcare.settings import Settings, get_settings
from services.billing import start_billing_run
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually
from workflows.search_attributes import DOCTOR_ID, PATIENT_ID

V1 = "/api/v1"


def _slot(hours: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=40, hours=hours)).replace(minute=0, second=0, microsecond=0)


async def _described(
    temporal: TemporalClient, workflow_id: str, timeout: float = 60
) -> WorkflowExecutionDescription:
    """The run once it exists (the consumer starts it shortly after the booking)."""

    async def started() -> WorkflowExecutionDescription:
        try:
            return await temporal.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            raise AssertionError(f"no run {workflow_id} yet") from None

    return await eventually(started, timeout=timeout, interval=0.3, what=f"the run {workflow_id}")


async def _input(temporal: TemporalClient, workflow_id: str) -> BillingRequest:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0]
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    payloads = started.workflow_execution_started_event_attributes.input.payloads
    # Stored encrypted: decoded with the platform's keys, as the worker decodes it.
    [request] = await codec.data_converter(get_settings()).decode(payloads, [BillingRequest])
    assert isinstance(request, BillingRequest)
    return request


def _shape(desc: WorkflowExecutionDescription) -> dict[str, Any]:
    """What an operator or a dashboard sees of a run, apart from the appointment it bills."""
    return {
        "type": desc.workflow_type,
        "task_queue": desc.task_queue,
        # Ours only: the server adds its own (build ids, change versions) as the run makes progress.
        "search_attribute_keys": sorted(
            pair.key.name for pair in desc.typed_search_attributes if pair.key.name in set(SearchAttribute)
        ),
    }


async def _reconcile(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "billing", "reconcile", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_reconciled_run_is_started_exactly_as_the_consumer_starts_one(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    engine: AsyncEngine,
    temporal: TemporalClient,
    settings: Settings,
) -> None:
    patient = await create_patient(api, staff)
    doctor = await create_doctor(api, admin, fee="95.00")

    # Consumer-started: an appointment booked through the API, billed from its event.
    booked = await api.post(
        f"{V1}/appointments",
        json={"patientId": patient["id"], "doctorId": doctor["id"], "time": _slot(0).isoformat()},
        headers=staff.headers,
    )
    assert booked.status_code == 201, booked.text
    by_consumer = uuid.UUID(booked.json()["id"])

    # Reconciled: an appointment whose event never reached billing (a row with no outbox event).
    lost = uuid.uuid4()
    async with session_factory(engine)() as session:
        session.add(
            Appointment(
                id=lost,
                patient_id=uuid.UUID(patient["id"]),
                doctor_id=uuid.UUID(doctor["id"]),
                time=_slot(2),
                end_time=_slot(2) + timedelta(minutes=30),
                duration_minutes=30,
                status=AppointmentStatus.booked.value,
                workflow_id=appointment_workflow_id(lost),
            )
        )
        await session.commit()

    code, out = await _reconcile("--appointment", str(lost))
    assert code == 1 and "appointments without billing: 1;" in out, out
    code, out = await _reconcile("--fix", "--appointment", str(lost))
    assert code == 0 and f"started {billing_workflow_id(lost)}" in out, out

    consumer_run = await _described(temporal, billing_workflow_id(by_consumer))
    repaired_run = await _described(temporal, billing_workflow_id(lost))
    assert (
        _shape(repaired_run)
        == _shape(consumer_run)
        == {
            "type": WORKFLOW_TYPE,
            "task_queue": settings.temporal_task_queue,
            "search_attribute_keys": sorted([PATIENT_ID.name, DOCTOR_ID.name]),
        }
    )
    for run in (consumer_run, repaired_run):
        assert run.typed_search_attributes.get(PATIENT_ID) == patient["id"]
        assert run.typed_search_attributes.get(DOCTOR_ID) == doctor["id"]

    terms = int(timedelta(days=settings.billing_payment_terms_days).total_seconds())
    consumer_input = await _input(temporal, billing_workflow_id(by_consumer))
    repaired_input = await _input(temporal, billing_workflow_id(lost))
    assert consumer_input == BillingRequest(
        appointment_id=by_consumer,
        patient_id=uuid.UUID(patient["id"]),
        doctor_id=uuid.UUID(doctor["id"]),
        appointment_time=_slot(0),
        payment_terms_seconds=terms,
    )
    assert repaired_input == consumer_input.model_copy(
        update={"appointment_id": lost, "appointment_time": _slot(2)}
    )

    # The repaired run bills like any other, and a second look finds nothing left to do.

    async def both_issued() -> bool:
        listed = (
            await api.get(
                f"{V1}/invoices",
                params={"patientId": patient["id"], "status": "ISSUED"},
                headers=staff.headers,
            )
        ).json()
        assert {i["appointmentId"] for i in listed["items"]} == {str(by_consumer), str(lost)}, listed
        return True

    await eventually(both_issued, timeout=90, interval=0.5, what="both invoices ISSUED")
    code, out = await _reconcile("--appointment", str(lost), "--appointment", str(by_consumer))
    assert code == 0 and "appointments without billing: 0;" in out, out


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _failed_run(temporal: TemporalClient, workflow_id: str, not_run: str | None = None) -> str:
    """The id of the workflow's latest run once it has failed (and is not `not_run`)."""
    desc = await temporal.get_workflow_handle(workflow_id).describe()
    assert desc.status == WorkflowExecutionStatus.FAILED and desc.run_id != not_run, desc.status
    return desc.run_id


async def test_the_billing_cli_replays_resets_and_restarts_a_failed_run(
    temporal: TemporalClient, settings: Settings
) -> None:
    """`healthcare billing replay | reset | restart-failed` on the real stack. A run for a doctor
    that does not exist fails at its first step, and fails again after each reset: a failed run that
    stays reproducible."""
    appointment = uuid.uuid4()
    workflow_id = billing_workflow_id(appointment)
    started = await start_billing_run(
        temporal,
        settings,
        appointment_id=appointment,
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        appointment_time=_slot(5),
    )
    assert started
    first = await eventually(lambda: _failed_run(temporal, workflow_id), timeout=60, what="the run failed")

    code, out = await _cli("billing", "replay", workflow_id)
    line, summary = out.strip().splitlines()
    assert code == 0 and line.split() == [
        "[1/1]",
        "ok",
        f"{workflow_id}/{first}",
        "(failed:",
        "DoctorNotFound)",
    ]
    assert summary.startswith("replayed 1: 1 ok, 0 non-deterministic, 0 skipped ("), summary

    code, out = await _cli("billing", "reset", workflow_id, "--reason", "cli test")
    assert code == 0 and out.startswith(f"reset {workflow_id}: new run "), out
    second = out.strip().rpartition(" ")[2]
    assert second != first
    await eventually(
        lambda: _failed_run(temporal, workflow_id, not_run=first), timeout=60, what="the reset run failed"
    )

    async def restarted() -> str:
        # The list comes from Temporal's visibility store, which trails a run's end by a moment.
        code, out = await _cli("billing", "restart-failed")
        found = re.search(rf"restarted {workflow_id} \([^)]*\): new run (\S+)", out)
        assert code == 0 and found, out
        return found.group(1)

    third = await eventually(restarted, timeout=60, interval=1, what="restart-failed took the run")
    assert third not in (first, second)
    await eventually(
        lambda: _failed_run(temporal, workflow_id, not_run=second), timeout=60, what="the restarted run"
    )

    code, out = await _cli("billing", "replay", "--all-failed")
    mine = [line.split("]", 1)[1].split()[0] for line in out.splitlines() if f" {workflow_id}/" in line]
    assert code == 0 and mine and set(mine) == {"ok"}, out
