"""One appointment event to billing: check it, start or signal the run, and say what became of it.

The billing consumer and `healthcare billing dlq redrive` both decide here, so a redriven event is
judged exactly as a fresh one. Every event gets one verdict:

- ACCEPTED: Temporal took the start or the signal (or the run already had it);
- SKIPPED: a benchmark's synthetic event whose appointment is not stored (SYNTHETIC_HEADER);
- PARK: refused for good, with a RefusalReason: the event is malformed, does not match a stored
  appointment, Temporal refused it permanently, or it cancels a run that failed;
- RETRY: refused for now (Temporal or the database unavailable, overloaded, timed out): read it again
  later, with back-off, and commit nothing from it on.

An event is checked against the stored appointment before any run starts: it must exist with the
event's patient and doctor. Temporal's answers are classified by gRPC status (`is_permanent`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from healthcare.contracts.billing import CancelSignal, billing_workflow_id
from healthcare.contracts.events import SYNTHETIC_HEADER, AppointmentEvent, EventType, RefusalReason
from healthcare.db import session_factory
from healthcare.models import Appointment
from healthcare.settings import Settings
from services.billing import start_billing_run

# Statuses with which Temporal says the request itself is wrong or not allowed: sending it again
# unchanged cannot succeed (an unregistered search attribute is INVALID_ARGUMENT, a missing
# namespace NOT_FOUND, a refused credential's scope PERMISSION_DENIED).
PERMANENT = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.OUT_OF_RANGE,
        RPCStatusCode.UNIMPLEMENTED,
    }
)
# Everything else is retried: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED,
# INTERNAL, UNKNOWN, DATA_LOSS, and UNAUTHENTICATED (an expired or rotating credential is fixed by
# the credential, not by the event: parking every event until then would empty the topic into the DLQ).
# Run states in which a cancellation can no longer reach the invoice: someone must look at the run.
CLOSED_BADLY = frozenset(
    {
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
        WorkflowExecutionStatus.CANCELED,
    }
)


class Verdict(StrEnum):
    accepted = "accepted"
    skipped = "skipped"
    park = "park"
    retry = "retry"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: RefusalReason | None = None
    # Rules, ids and status codes only: it travels in a dead letter's headers and in logs.
    detail: str = ""

    @classmethod
    def park(cls, reason: RefusalReason, detail: str) -> Decision:
        return cls(Verdict.park, reason, detail)


ACCEPTED = Decision(Verdict.accepted)
SKIPPED = Decision(Verdict.skipped, detail="synthetic event of an appointment that is not stored")


@dataclass(frozen=True)
class StoredAppointment:
    patient_id: uuid.UUID
    doctor_id: uuid.UUID


def is_permanent(exc: BaseException) -> bool:
    """Whether Temporal refused the request for good (see PERMANENT); anything not an RPCError is
    left to the caller."""
    return isinstance(exc, RPCError) and exc.status in PERMANENT


def rpc_detail(exc: RPCError) -> str:
    # Temporal's messages name ids, attributes and namespaces; our payloads never reach them.
    status = exc.status.name if exc.status is not None else "UNKNOWN"
    return f"{status}: {exc.message}"[:300]


def parse(value: bytes | None) -> AppointmentEvent | None:
    """The event, or None when the value is not an appointment event (never its content in errors)."""
    try:
        return AppointmentEvent.model_validate_json(value or b"")
    except ValidationError:
        return None


def is_synthetic(headers: Sequence[tuple[str, bytes]]) -> bool:
    return any(key == SYNTHETIC_HEADER for key, _ in headers)


def check(
    event: AppointmentEvent, stored: StoredAppointment | None, *, synthetic: bool = False
) -> Decision | None:
    """Refuse an event that does not describe a stored appointment; None when it does."""
    if stored is None:
        if synthetic:
            return SKIPPED
        return Decision.park(RefusalReason.appointment_not_found, f"no appointment {event.appointment_id}")
    if stored.patient_id != event.patient_id:
        return Decision.park(
            RefusalReason.patient_mismatch, f"appointment {event.appointment_id} is another patient's"
        )
    if stored.doctor_id != event.doctor_id:
        return Decision.park(
            RefusalReason.doctor_mismatch, f"appointment {event.appointment_id} is with another doctor"
        )
    return None


async def stored_appointments(
    engine: AsyncEngine, appointment_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, StoredAppointment]:
    """The stored parties of these appointments, in one query (a batch of events, one round trip)."""
    if not appointment_ids:
        return {}
    async with session_factory(engine)() as session:
        rows = (
            await session.exec(
                select(Appointment.id, Appointment.patient_id, Appointment.doctor_id).where(
                    col(Appointment.id).in_(list(appointment_ids))
                )
            )
        ).all()
    return {row[0]: StoredAppointment(patient_id=row[1], doctor_id=row[2]) for row in rows}


async def bill(temporal: TemporalClient, settings: Settings, event: AppointmentEvent) -> Decision:
    """Start the appointment's billing run, or signal its cancellation; classify Temporal's refusals.

    An error that is neither an RPCError nor a timeout is a bug of ours and propagates."""
    cancel = event.event == EventType.cancelled
    try:
        started = await start_billing_run(
            temporal,
            settings,
            appointment_id=event.appointment_id,
            patient_id=event.patient_id,
            doctor_id=event.doctor_id,
            appointment_time=event.time,
            cancel=CancelSignal(event_id=event.event_id) if cancel else None,
        )
        if started or not cancel:
            return ACCEPTED  # a finished run given its created event again: a redelivery, nothing to do
        # The run is closed: fine if it completed (PAID, VOID, UNBILLED); a failed or terminated
        # run's invoice may still be open, and this cancellation must not vanish without a trace.
        workflow_id = billing_workflow_id(event.appointment_id)
        status = (await temporal.get_workflow_handle(workflow_id).describe()).status
    except RPCError as exc:
        if is_permanent(exc):
            return Decision.park(RefusalReason.temporal_refused, rpc_detail(exc))
        return Decision(Verdict.retry, detail=rpc_detail(exc))
    except TimeoutError:
        return Decision(Verdict.retry, detail="timed out")
    if status is not None and status in CLOSED_BADLY:
        return Decision.park(
            RefusalReason.run_closed,
            f"{workflow_id} is {status.name}: the cancellation was not applied (see `billing reconcile`)",
        )
    return ACCEPTED
