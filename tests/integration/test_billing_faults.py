"""Billing under faults on the real stack: each case ends with one invoice, one PDF object and one
billing run per appointment.

Faults are made deterministic by freezing the Lambda front door (SIGSTOP) until the PDF activity is
in flight, then killing the process the case is about. The stack's supervisor restarts what dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client as TemporalClient
from temporalio.service import RPCError

from devstack.paths import Paths
from healthcare import clients
from healthcare.contracts.appointments import event_id_for
from healthcare.contracts.billing import BillingOutcome, CancelSignal, billing_workflow_id, invoice_id_for
from healthcare.contracts.events import AppointmentEvent
from healthcare.settings import Settings
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually
from workers.billing_consumer import GROUP_ID
from workflows.billing import BillingWorkflow

V1 = "/api/v1"


def _pid(paths: Paths, name: str) -> int:
    return int((paths.run / f"{name}.pid").read_text())


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def _book(api: httpx.AsyncClient, who: Account, patient: str, doctor: str) -> str:
    slot = datetime.now(UTC) + timedelta(days=40, minutes=31 * (uuid.uuid4().int % 5000))
    body = {
        "patientId": patient,
        "doctorId": doctor,
        "time": slot.replace(second=0, microsecond=0).isoformat(),
    }
    resp = await api.post(f"{V1}/appointments", json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """Where the events topic ends now, per partition."""
    consumer = clients.kafka_consumer(settings)
    await consumer.start()
    try:
        await consumer.topics()  # metadata for every topic
        topic = settings.topic_appointment_events
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def _committed(settings: Settings) -> dict[TopicPartition, int]:
    """What the billing consumer's group has committed, per partition."""
    admin = clients.kafka_admin(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(GROUP_ID)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic_appointment_events}


async def _consumer_committed_everything(settings: Settings, timeout: float = 120) -> None:
    """Wait until the billing consumer has committed every event written so far: it has read, and
    handed to Temporal, each one (a redelivered copy included)."""
    ends = await _end_offsets(settings)

    async def caught_up() -> bool:
        committed = await _committed(settings)
        assert all(committed.get(tp, -1) >= end for tp, end in ends.items()), (committed, ends)
        return True

    await eventually(caught_up, timeout=timeout, interval=0.5, what="the billing consumer's commit")


async def _pdf_call_in_flight(temporal: TemporalClient, appointment_id: str, timeout: float = 60) -> None:
    handle = temporal.get_workflow_handle(billing_workflow_id(uuid.UUID(appointment_id)))

    async def started() -> bool:
        desc = await handle.describe()  # RPCError until the consumer has started the run
        states = {act.activity_type.name: act.state for act in desc.raw_description.pending_activities}
        assert states.get("billing.render_pdf") == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, states
        return True

    async def probe() -> bool:
        try:
            return await started()
        except RPCError as not_yet:
            raise AssertionError(f"no billing run yet: {not_yet}") from None

    await eventually(probe, timeout=timeout, interval=0.2, what="the PDF activity's start")


async def _issued(
    api: httpx.AsyncClient, who: Account, appointment_id: str, timeout: float = 120
) -> dict[str, Any]:
    invoice_id = invoice_id_for(uuid.UUID(appointment_id))

    async def issued() -> dict[str, Any]:
        resp = await api.get(f"{V1}/invoices/{invoice_id}", headers=who.headers)
        assert resp.status_code == 200 and resp.json()["status"] == "ISSUED", (resp.status_code, resp.text)
        return dict(resp.json())

    return await eventually(
        issued, timeout=timeout, interval=0.5, what=f"the ISSUED invoice of appointment {appointment_id}"
    )


async def _exactly_once(
    api: httpx.AsyncClient,
    who: Account,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
    patient_id: str,
    appointment_ids: list[str],
) -> None:
    invoices = (
        await api.get(f"{V1}/invoices", params={"patientId": patient_id, "limit": 100}, headers=who.headers)
    ).json()
    assert sorted(i["appointmentId"] for i in invoices["items"]) == sorted(appointment_ids)
    for appointment_id in appointment_ids:
        invoice_id = invoice_id_for(uuid.UUID(appointment_id))
        listed = await asyncio.to_thread(
            s3.list_objects_v2, Bucket=settings.s3_bucket, Prefix=f"invoices/{invoice_id}"
        )
        assert listed["KeyCount"] == 1, listed.get("Contents")
        runs = await temporal.count_workflows(
            f"WorkflowId = '{billing_workflow_id(uuid.UUID(appointment_id))}'"
        )
        assert runs.count == 1


@pytest.fixture
async def clinic(api: httpx.AsyncClient, admin: Account, staff: Account) -> tuple[str, str]:
    doctor = await create_doctor(api, admin, fee="95.00")
    patient = await create_patient(api, staff)
    return patient["id"], doctor["id"]


async def test_worker_killed_while_the_lambda_call_is_in_flight(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    patient_id, doctor_id = clinic
    worker_before = _pid(paths, "worker")
    with frozen(_pid(paths, "lambda")):
        appointment_id = await _book(api, staff, patient_id, doctor_id)
        await _pdf_call_in_flight(temporal, appointment_id)
        os.kill(worker_before, signal.SIGKILL)
    invoice = await _issued(api, staff, appointment_id)
    assert invoice["pdfAvailable"] and invoice["amount"] == "95.00"
    assert _pid(paths, "worker") != worker_before
    await _exactly_once(api, staff, temporal, s3, settings, patient_id, [appointment_id])


async def test_lambda_failing_its_first_attempts_is_retried(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    patient_id, doctor_id = clinic
    gateway = _pid(paths, "lambda")
    with frozen(gateway):
        appointment_id = await _book(api, staff, patient_id, doctor_id)
        await _pdf_call_in_flight(temporal, appointment_id)
        os.kill(gateway, signal.SIGKILL)  # the call in flight fails; the next attempts are refused
    await _issued(api, staff, appointment_id)
    history = await temporal.get_workflow_handle(
        billing_workflow_id(uuid.UUID(appointment_id))
    ).fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2, "the Lambda fault did not happen: no attempt was retried"
    await _exactly_once(api, staff, temporal, s3, settings, patient_id, [appointment_id])


async def test_consumer_killed_before_committing_bills_each_visit_once(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    patient_id, doctor_id = clinic
    consumer = _pid(paths, "consumer")
    with frozen(consumer):
        appointment_ids = [await _book(api, staff, patient_id, doctor_id) for _ in range(5)]
    # It wakes up to five events, starts workflows, and dies as soon as the first run exists: before
    # (or while) committing, so the new consumer reads some of them again.
    first = billing_workflow_id(uuid.UUID(appointment_ids[0]))
    await eventually(
        lambda: _run_exists(temporal, first), timeout=60, interval=0.02, what="the first billing run"
    )
    os.kill(consumer, signal.SIGKILL)
    for appointment_id in appointment_ids:
        await _issued(api, staff, appointment_id)
    # The stack restarts the consumer; the redelivered events must stay no-ops.
    await eventually(lambda: _pid(paths, "consumer") != consumer, timeout=60, what="the consumer restarted")
    await _consumer_committed_everything(settings)
    await _exactly_once(api, staff, temporal, s3, settings, patient_id, appointment_ids)


async def test_the_same_event_produced_twice_bills_once(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
    clinic: tuple[str, str],
) -> None:
    patient_id, doctor_id = clinic
    appointment_id = await _book(api, staff, patient_id, doctor_id)
    await _issued(api, staff, appointment_id)
    appt = (await api.get(f"{V1}/appointments/{appointment_id}", headers=staff.headers)).json()
    event = AppointmentEvent.model_validate(
        {
            "event": "APPOINTMENT_CREATED",
            "eventId": event_id_for(uuid.UUID(appointment_id), "APPOINTMENT_CREATED"),
            "appointmentId": appointment_id,
            "patientId": patient_id,
            "doctorId": doctor_id,
            "time": appt["time"],
            "occurredAt": appt["createdAt"],
        }
    )
    producer = clients.kafka_producer(settings)
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(settings.topic_appointment_events, event.value(), key=event.key())
    finally:
        await producer.stop()
    # Both copies read and handed over: the second one found the run already there.
    await _consumer_committed_everything(settings)
    await _exactly_once(api, staff, temporal, s3, settings, patient_id, [appointment_id])


async def _published(engine: AsyncEngine, event_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        sql = text("SELECT published_at IS NOT NULL FROM outbox WHERE event_id = :id")
        return bool(await conn.scalar(sql, {"id": event_id}))


async def _run_exists(temporal: TemporalClient, workflow_id: str) -> bool:
    try:
        await temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        raise AssertionError(f"no run yet: {exc.status.name}") from exc
    return True


async def _signalled(temporal: TemporalClient, workflow_id: str) -> bool:
    try:
        history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as exc:
        raise AssertionError(f"no run yet: {exc.status.name}") from exc
    return any(e.HasField("workflow_execution_signaled_event_attributes") for e in history.events)


async def _cancelled_while_billing_is_held(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    engine: AsyncEngine,
    paths: Paths,
    clinic: tuple[str, str],
    before_billing: Callable[[str], Awaitable[None]] | None = None,
) -> tuple[str, BillingOutcome]:
    """The booking and its cancellation both reach Kafka while billing is held back (the consumer
    frozen); then the worker is frozen while the consumer starts the run and signals it. The frozen
    worker's first workflow task times out; the retried one sees the cancellation first."""
    patient_id, doctor_id = clinic
    worker = _pid(paths, "worker")
    with frozen(_pid(paths, "consumer")):
        appointment_id = await _book(api, staff, patient_id, doctor_id)
        cancelled = await api.post(f"{V1}/appointments/{appointment_id}/cancel", headers=staff.headers)
        assert cancelled.status_code == 200, cancelled.text
        cancel_event = event_id_for(uuid.UUID(appointment_id), "APPOINTMENT_CANCELLED")
        await eventually(
            lambda: _published(engine, cancel_event), timeout=60, what="the cancellation on Kafka"
        )
        if before_billing is not None:
            await before_billing(appointment_id)
        os.kill(worker, signal.SIGSTOP)
    workflow_id = billing_workflow_id(uuid.UUID(appointment_id))
    try:
        await eventually(
            lambda: _signalled(temporal, workflow_id), timeout=60, what="the billing run, cancelled"
        )
    finally:
        os.kill(worker, signal.SIGCONT)
    run = temporal.get_workflow_handle_for(BillingWorkflow.run, workflow_id)
    return appointment_id, await asyncio.wait_for(run.result(), 120)


async def test_a_visit_cancelled_before_billing_starts_is_never_invoiced(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    engine: AsyncEngine,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    """End to end, the run's first step already knows of the cancellation. When the frozen worker
    resumes, the stale task's local activities (price_visit, record_invoice) may still run and
    insert the row. Either no invoice exists (UNBILLED) or the run voided that row (VOID, never
    issued, no PDF): never a PENDING invoice no run owns (bug 1, billing-cancel-before-issue-v1)."""
    appointment_id, outcome = await _cancelled_while_billing_is_held(
        api, staff, temporal, engine, paths, clinic
    )
    invoice_id = invoice_id_for(uuid.UUID(appointment_id))
    if outcome.final_status == "UNBILLED":
        invoice = await api.get(f"{V1}/invoices/{invoice_id}", headers=staff.headers)
        assert outcome.invoice_id is None and invoice.status_code == 404, invoice.text
    else:
        await _voided_unissued(api, staff, appointment_id, outcome)


async def _voided_unissued(
    api: httpx.AsyncClient, staff: Account, appointment_id: str, outcome: BillingOutcome
) -> None:
    """The run ended VOID with the appointment's invoice, which was never issued: no PDF."""
    invoice_id = invoice_id_for(uuid.UUID(appointment_id))
    assert (outcome.final_status, outcome.invoice_id) == ("VOID", invoice_id)
    body = (await api.get(f"{V1}/invoices/{invoice_id}", headers=staff.headers)).json()
    assert (body["status"], body["pdfAvailable"]) == ("VOID", False), body


async def test_a_row_a_lost_workflow_task_left_is_voided_by_the_cancelled_run(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    engine: AsyncEngine,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    """Bug 1, made deterministic: the row a lost workflow task's record_invoice inserted (its local
    activity ran, its completion never landed) is written before billing runs, exactly as that
    activity writes it. The run, which sees the cancellation before recording anything, voids it:
    before billing-cancel-before-issue-v1 it ended UNBILLED and left the row PENDING, owned by no run."""
    patient_id, doctor_id = clinic

    async def lost_task_inserts(appointment_id: str) -> None:
        appointment = uuid.UUID(appointment_id)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO invoices (id, appointment_id, patient_id, doctor_id, amount, currency,"
                    " status, workflow_id, due_at, created_at, updated_at) VALUES (:id, :appointment,"
                    " :patient, :doctor, 95.00, 'USD', 'PENDING', :workflow, now() + interval '30 days',"
                    " now(), now())"
                ),
                {
                    "id": invoice_id_for(appointment),
                    "appointment": appointment,
                    "patient": uuid.UUID(patient_id),
                    "doctor": uuid.UUID(doctor_id),
                    "workflow": billing_workflow_id(appointment),
                },
            )

    appointment_id, outcome = await _cancelled_while_billing_is_held(
        api, staff, temporal, engine, paths, clinic, before_billing=lost_task_inserts
    )
    await _voided_unissued(api, staff, appointment_id, outcome)


async def _history_events(temporal: TemporalClient, workflow_id: str) -> list[str]:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]


async def test_a_payment_a_stalled_worker_recorded_and_a_cancellation_meanwhile_stay_consistent(
    api: httpx.AsyncClient,
    staff: Account,
    temporal: TemporalClient,
    paths: Paths,
    clinic: tuple[str, str],
) -> None:
    """Bug 2 on the real stack. The worker is frozen when a desk payment's `pay` update reaches the
    issued run: the frozen worker holds the workflow task, a cancellation is signalled meanwhile and
    the task times out. Resumed, the stale task still validates the payment and records PAID (a local
    activity); the retried task sees the signal first and voids, which the database refuses: the run
    failed (InvalidInvoiceTransition) before billing-lost-task-payment-v1. Whichever path the timing
    takes, invoice and payment must agree once the desk retries a payment that was not confirmed in
    time: PAID with the payment CONFIRMED, or VOID with the money REFUND_DUE; the run never fails."""
    patient_id, doctor_id = clinic
    appointment_id = await _book(api, staff, patient_id, doctor_id)
    invoice = await _issued(api, staff, appointment_id)
    workflow_id = billing_workflow_id(uuid.UUID(appointment_id))
    run = temporal.get_workflow_handle_for(BillingWorkflow.run, workflow_id)
    done = len(await _history_events(temporal, workflow_id))
    worker = _pid(paths, "worker")
    os.kill(worker, signal.SIGSTOP)
    try:
        url = f"{V1}/invoices/{invoice['id']}/pay"
        body = {"method": "card", "reference": f"RCPT-{uuid.uuid4().hex[:8]}"}
        paying = asyncio.ensure_future(api.post(url, json=body, headers=staff.headers, timeout=60))

        async def delivered() -> bool:  # the update's workflow task went to the frozen worker
            assert "WORKFLOW_TASK_STARTED" in (await _history_events(temporal, workflow_id))[done:]
            return True

        await eventually(delivered, timeout=30, interval=0.2, what="the pay update's task started")
        await run.signal(BillingWorkflow.cancel, CancelSignal())

        async def timed_out() -> bool:
            assert "WORKFLOW_TASK_TIMED_OUT" in (await _history_events(temporal, workflow_id))[done:]
            return True

        await eventually(timed_out, timeout=60, interval=0.5, what="the frozen worker's task timed out")
    finally:
        os.kill(worker, signal.SIGCONT)
    answer = await paying
    outcome = await asyncio.wait_for(run.result(), 120)
    if answer.status_code == 503:  # not confirmed in time: the desk tries the same payment again
        answer = await api.post(url, json=body, headers=staff.headers)
        assert answer.status_code in (200, 409), answer.text
    final = (await api.get(f"{V1}/invoices/{invoice['id']}", headers=staff.headers)).json()
    (payment,) = (await api.get(f"{V1}/invoices/{invoice['id']}/payments", headers=staff.headers)).json()
    assert outcome.final_status == final["status"], (outcome, final, answer.text)
    if final["status"] == "PAID":
        assert (final["paymentId"], payment["status"]) == (payment["id"], "CONFIRMED"), (final, payment)
    else:
        assert (final["status"], final["paymentId"]) == ("VOID", None), final
        assert payment["status"] == "REFUND_DUE", (payment, answer.text)
