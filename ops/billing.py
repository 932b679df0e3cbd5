"""Operator tasks for billing runs: replay, reset, restart failed runs, reconcile invoices with
appointments, and find the runs that wait for an operator.

The CLI (`healthcare billing ...`) calls these; each takes its clients so it can be tested alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecution as ListedRun
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from healthcare.contracts.appointments import AppointmentStatus
from healthcare.contracts.billing import (
    OPEN_STATUSES,
    CancelSignal,
    InvoiceState,
    PdfAttention,
    billing_workflow_id,
)
from healthcare.db import session_factory
from healthcare.models import Appointment, Invoice
from healthcare.settings import Settings
from ops.replay import Replayable, ReplayOutcome, replay, replay_stream
from ops.runs import RunFilter, failure_type, listed
from services.billing import NEEDS_ATTENTION_QUERY, start_billing_run
from workflows.billing import BillingWorkflow


async def replay_one(
    client: TemporalClient, workflow_id: str, run_id: str | None = None
) -> tuple[bool, str | None]:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    return await replay(history)


async def fetched(
    client: TemporalClient, runs: RunFilter, *, concurrency: int = 8
) -> AsyncIterator[Replayable]:
    """The histories of the runs `runs` selects, fetched `concurrency` at a time, in the order they
    arrive; the failure-type filter and the limit apply to what was fetched."""
    queue: asyncio.Queue[Replayable | None] = asyncio.Queue(maxsize=concurrency * 2)
    slots = asyncio.Semaphore(concurrency)

    async def fetch(execution: ListedRun) -> None:
        try:
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            history = await handle.fetch_history()
        except RPCError as exc:
            await queue.put(Replayable(execution.id, execution.run_id, None, error=f"fetch failed: {exc}"))
        else:
            kind = failure_type(history.events)
            if not runs.failure_types or kind in runs.failure_types:
                await queue.put(Replayable(execution.id, execution.run_id, history, failure_type=kind))
        finally:
            slots.release()

    async def produce() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                async for execution in listed(client, runs):
                    await slots.acquire()
                    group.create_task(fetch(execution))
        finally:
            await queue.put(None)

    producer = asyncio.create_task(produce())
    taken = 0
    try:
        while (item := await queue.get()) is not None:
            yield item
            taken += 1
            if runs.limit is not None and taken >= runs.limit:
                break
        if producer.done():
            await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


async def latest_failed(
    client: TemporalClient, runs: RunFilter, *, concurrency: int = 8
) -> AsyncIterator[Replayable]:
    """Of the selected failed runs, those that are still their workflow's latest run (a run that
    was reset, or restarted and failed again, is not listed twice)."""
    async for item in fetched(client, runs, concurrency=concurrency):
        try:
            latest = await client.get_workflow_handle(item.workflow_id).describe()
        except RPCError:
            yield item
            continue
        if latest.run_id == item.run_id:
            yield item


async def replay_runs(
    client: TemporalClient, runs: RunFilter, *, concurrency: int = 8
) -> AsyncIterator[ReplayOutcome]:
    """Replay every selected run's history on one replayer while the next ones are being fetched."""
    async for outcome in replay_stream(fetched(client, runs, concurrency=concurrency)):
        yield outcome


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


@dataclass(frozen=True)
class Restart:
    """One failed run's outcome: restarted, would restart (a dry run), or skipped and why; a run
    that is no longer its workflow's latest is skipped as ALREADY_RESTARTED, which is no error."""

    workflow_id: str
    failure_type: str | None
    new_run_id: str | None = None  # None: a dry run, or not restarted (see `skipped`)
    skipped: str | None = None


ALREADY_RESTARTED = "already restarted"


async def restart_runs(
    client: TemporalClient,
    runs: RunFilter,
    *,
    dry_run: bool = False,
    concurrency: int = 4,
    reason: str = "restart-failed",
) -> AsyncIterator[Restart]:
    """Reset every selected workflow whose latest run failed, `concurrency` at a time; one result
    per listed run as it is done (so the lines add up to the count), and only the latest run of a
    workflow is reset. A dry run resets nothing and says what it would reset."""
    results: asyncio.Queue[Restart | None] = asyncio.Queue()
    slots = asyncio.Semaphore(concurrency)

    async def one(item: Replayable) -> None:
        try:
            latest = await client.get_workflow_handle(item.workflow_id).describe()
            if latest.run_id != item.run_id or latest.status != WorkflowExecutionStatus.FAILED:
                await results.put(Restart(item.workflow_id, item.failure_type, skipped=ALREADY_RESTARTED))
            elif dry_run:
                await results.put(Restart(item.workflow_id, item.failure_type))
            else:
                new_run = await reset(client, item.workflow_id, reason=reason, run_id=item.run_id)
                await results.put(Restart(item.workflow_id, item.failure_type, new_run_id=new_run))
        except (RPCError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            await results.put(Restart(item.workflow_id, item.failure_type, skipped=why))
        finally:
            slots.release()

    async def produce() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                async for item in fetched(client, runs, concurrency=concurrency):
                    if item.history is None:
                        await results.put(Restart(item.workflow_id, None, skipped=item.error))
                        continue
                    await slots.acquire()
                    group.create_task(one(item))
        finally:
            await results.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (result := await results.get()) is not None:
            yield result
        await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


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


def needs_attention_line(run: NeedsAttention) -> str:
    """One run waiting for an operator: its invoice, since when, its failure, and the command to run."""
    why = f"{run.failure_type}: {run.message}" if run.failure_type else "(no worker answered the query)"
    since = run.since.isoformat(timespec="seconds") if run.since else "?"
    return (
        f"needs attention: {run.workflow_id} (invoice {run.invoice_id}, {run.invoice_status}) since "
        f"{since}, {run.retries} retries: {why}; once fixed: healthcare billing retry-pdf {run.workflow_id}"
    )


@dataclass
class Reconciliation:
    missing: list[uuid.UUID] = field(default_factory=list)  # booked appointments with no billing at all
    not_voided: list[uuid.UUID] = field(default_factory=list)  # open invoices of cancelled appointments
    stuck: list[uuid.UUID] = field(default_factory=list)  # open invoices whose workflow is not running
    needs_attention: list[NeedsAttention] = field(default_factory=list)  # runs waiting for an operator
    fixed: list[str] = field(default_factory=list)  # what --fix did (or, dry run, would do)


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
    dry_run: bool = False,
    appointment_ids: Collection[uuid.UUID] | None = None,
    on_finding: Callable[[str], None] = lambda _line: None,
) -> Reconciliation:
    """Compare invoices with appointments and billing runs; with `fix`, start or signal what is
    missing, exactly as the billing consumer would have (`start_billing_run`); with `dry_run` too,
    only say what it would do. `appointment_ids` limits the check to those appointments;
    `on_finding` hears each finding as it is made."""
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
            continue  # a run exists (maybe still pricing, or it failed: see the failed runs)
        report.missing.append(appt.id)
        on_finding(f"appointment {appt.id} has no billing run")
        if fix:
            await _repair(client, settings, appt, report, on_finding, dry_run=dry_run)
    report.needs_attention = await runs_needing_attention(
        client,
        workflow_ids=None if appointment_ids is None else {billing_workflow_id(a) for a in appointment_ids},
    )
    for run in report.needs_attention:
        on_finding(needs_attention_line(run))
    for invoice, appt in open_rows:
        running = await _status(client, invoice.workflow_id) == WorkflowExecutionStatus.RUNNING
        if not running:
            report.stuck.append(invoice.id)
            on_finding(f"invoice {invoice.id} is {invoice.status} but {invoice.workflow_id} is not running")
        if appt.status == AppointmentStatus.cancelled:
            report.not_voided.append(invoice.id)
            on_finding(f"invoice {invoice.id} is {invoice.status} for a cancelled appointment")
            if fix and running:
                cancel = CancelSignal()
                await _repair(client, settings, appt, report, on_finding, dry_run=dry_run, cancel=cancel)
    return report


async def _repair(
    client: TemporalClient,
    settings: Settings,
    appt: Appointment,
    report: Reconciliation,
    on_finding: Callable[[str], None],
    *,
    dry_run: bool,
    cancel: CancelSignal | None = None,
) -> None:
    what = f"{'cancel signalled to' if cancel else 'started'} {billing_workflow_id(appt.id)}"
    if dry_run:
        what = f"would have {what}"
    elif not await _start(client, settings, appt, cancel=cancel):
        return
    report.fixed.append(what)
    on_finding(what)


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
