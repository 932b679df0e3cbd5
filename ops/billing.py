"""Operator tasks for billing runs: replay, reset, restart failed runs, reconcile invoices with
appointments, and find the runs that wait for an operator.

The CLI (`healthcare billing ...`) calls these; each takes its clients so it can be tested alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from healthcare.contracts.appointments import AppointmentStatus
from healthcare.contracts.billing import (
    OPEN_STATUSES,
    WORKFLOW_TYPE,
    CancelSignal,
    InvoiceState,
    PdfAttention,
    billing_workflow_id,
)
from healthcare.db import session_factory
from healthcare.models import Appointment, Invoice
from healthcare.settings import Settings
from ops.replay import replay
from services.billing import NEEDS_ATTENTION_QUERY, start_billing_run
from workflows.billing import BillingWorkflow

FAILED_QUERY = f'WorkflowType="{WORKFLOW_TYPE}" AND ExecutionStatus="Failed"'


async def replay_one(
    client: TemporalClient, workflow_id: str, run_id: str | None = None
) -> tuple[bool, str | None]:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    return await replay(history)


async def replay_failed(client: TemporalClient) -> dict[str, tuple[bool, str | None]]:
    results: dict[str, tuple[bool, str | None]] = {}
    async for wf in client.list_workflows(FAILED_QUERY):
        results[f"{wf.id}/{wf.run_id}"] = await replay_one(client, wf.id, wf.run_id)
    return results


async def _reset_point(client: TemporalClient, workflow_id: str, run_id: str | None) -> int:
    """The workflow task that scheduled the activity that failed last (so the reset runs it again);
    else the last completed workflow task."""
    events = (await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events
    by_id = {e.event_id: e for e in events}
    for event in reversed(events):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            scheduled = by_id[event.activity_task_failed_event_attributes.scheduled_event_id]
            return scheduled.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
    for event in reversed(events):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return event.event_id
    raise ValueError(f"{workflow_id} has no completed workflow task to reset to")


async def reset(client: TemporalClient, workflow_id: str, *, reason: str, run_id: str | None = None) -> str:
    """Reset a run to just before its last failed activity; returns the new run id."""
    if run_id is None:
        run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    point = await _reset_point(client, workflow_id, run_id)
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            reason=reason,
            workflow_task_finish_event_id=point,
            request_id=str(uuid.uuid4()),
        )
    )
    return str(response.run_id)


async def restart_failed(client: TemporalClient, *, reason: str = "restart-failed") -> list[tuple[str, str]]:
    """Reset every billing workflow whose latest run failed; returns (workflow id, new run id)."""
    restarted: list[tuple[str, str]] = []
    seen: set[str] = set()
    async for wf in client.list_workflows(FAILED_QUERY):
        if wf.id in seen:
            continue
        seen.add(wf.id)
        latest = await client.get_workflow_handle(wf.id).describe()
        if latest.status != WorkflowExecutionStatus.FAILED:
            continue  # already reset or restarted
        restarted.append((wf.id, await reset(client, wf.id, reason=reason, run_id=latest.run_id)))
    return restarted


@dataclass(frozen=True)
class NeedsAttention:
    """A running billing run whose PDF failed for good: it waits for `retry-pdf`."""

    workflow_id: str
    invoice_id: uuid.UUID | None
    invoice_status: str | None
    failure_type: str | None  # None when the run could not be asked (no worker answering)
    message: str | None
    since: datetime | None
    retries: int


@dataclass
class Reconciliation:
    missing: list[uuid.UUID] = field(default_factory=list)  # booked appointments with no billing at all
    not_voided: list[uuid.UUID] = field(default_factory=list)  # open invoices of cancelled appointments
    stuck: list[uuid.UUID] = field(default_factory=list)  # open invoices whose workflow is not running
    needs_attention: list[NeedsAttention] = field(default_factory=list)  # runs waiting for an operator
    fixed: list[str] = field(default_factory=list)


async def runs_needing_attention(
    client: TemporalClient, *, workflow_ids: Collection[str] | None = None
) -> list[NeedsAttention]:
    """Every billing run waiting for an operator (BillingStatus), with the failure it waits on."""
    found: list[NeedsAttention] = []
    async for wf in client.list_workflows(NEEDS_ATTENTION_QUERY):
        if workflow_ids is not None and wf.id not in workflow_ids:
            continue
        handle = client.get_workflow_handle_for(BillingWorkflow.run, wf.id, run_id=wf.run_id)
        attention: PdfAttention | None
        invoice: InvoiceState | None
        try:
            attention = await handle.query(BillingWorkflow.attention)
            invoice = await handle.query(BillingWorkflow.invoice)
        except RPCError:  # no worker answering: still worth listing
            attention, invoice = None, None
        found.append(
            NeedsAttention(
                workflow_id=wf.id,
                invoice_id=invoice.id if invoice else None,
                invoice_status=invoice.status.value if invoice else None,
                failure_type=attention.failure_type if attention else None,
                message=attention.message if attention else None,
                since=attention.since if attention else None,
                retries=attention.retries if attention else 0,
            )
        )
    return found


async def _status(client: TemporalClient, workflow_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def reconcile(
    client: TemporalClient,
    engine: AsyncEngine,
    settings: Settings,
    *,
    fix: bool = False,
    appointment_ids: Collection[uuid.UUID] | None = None,
) -> Reconciliation:
    """Compare invoices with appointments and billing runs; with `fix`, start or signal what is
    missing, exactly as the billing consumer would have (`start_billing_run`). `appointment_ids`
    limits the check to those appointments."""
    report = Reconciliation()
    only = [col(Appointment.id).in_(list(appointment_ids))] if appointment_ids is not None else []
    async with session_factory(engine)() as session:
        unbilled = (
            await session.exec(
                select(Appointment)
                .outerjoin(Invoice, col(Invoice.appointment_id) == col(Appointment.id))
                .where(
                    col(Invoice.id).is_(None), col(Appointment.status) != AppointmentStatus.cancelled, *only
                )
            )
        ).all()
        open_rows = (
            await session.exec(
                select(Invoice, Appointment)
                .join(Appointment, col(Appointment.id) == col(Invoice.appointment_id))
                .where(col(Invoice.status).in_(list(OPEN_STATUSES)), *only)
            )
        ).all()
    for appt in unbilled:
        if await _status(client, billing_workflow_id(appt.id)) is not None:
            continue  # a run exists (maybe still pricing, or it failed: see restart-failed)
        report.missing.append(appt.id)
        if fix and await _start(client, settings, appt):
            report.fixed.append(f"started {billing_workflow_id(appt.id)}")
    report.needs_attention = await runs_needing_attention(
        client,
        workflow_ids=None if appointment_ids is None else {billing_workflow_id(a) for a in appointment_ids},
    )
    for invoice, appt in open_rows:
        running = await _status(client, invoice.workflow_id) == WorkflowExecutionStatus.RUNNING
        if not running:
            report.stuck.append(invoice.id)
        if appt.status == AppointmentStatus.cancelled:
            report.not_voided.append(invoice.id)
            if fix and running and await _start(client, settings, appt, cancel=CancelSignal()):
                report.fixed.append(f"cancel signalled to {invoice.workflow_id}")
    return report


async def _start(
    client: TemporalClient, settings: Settings, appt: Appointment, *, cancel: CancelSignal | None = None
) -> bool:
    return await start_billing_run(
        client,
        settings,
        appointment_id=appt.id,
        patient_id=appt.patient_id,
        doctor_id=appt.doctor_id,
        appointment_time=appt.time,
        cancel=cancel,
    )
