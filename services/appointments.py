"""Booking and managing appointments: checks and authorization here, the work in the workflow."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.client import (
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import errors
from healthcare.contracts.appointments import (
    IDEMPOTENCY_MISMATCH,
    INVALID_TRANSITION,
    PARTY_NOT_FOUND,
    RUN_PENDING,
    SLOT_TAKEN,
    AppointmentState,
    AppointmentStatus,
    BookingRequest,
    TransitionRequest,
    appointment_workflow_id,
    can_become,
    idempotent_appointment_id,
)
from healthcare.db import release_connection
from healthcare.models import Appointment, Doctor
from healthcare.schemas import AppointmentCreate
from healthcare.stores.patients import PatientStore
from services import audit
from services.access import care_scope, list_care_records, read_care_record, visible_record
from services.context import RequestContext, require_actor
from workflows import search_attributes
from workflows.appointments import AppointmentWorkflow

NOT_FOUND = "appointment not found"
NOT_CONFIRMED_RETRY_SECONDS = 5
_ERROR_TYPES: dict[str, type[errors.DomainError]] = {
    SLOT_TAKEN: errors.Conflict,
    INVALID_TRANSITION: errors.Conflict,
    PARTY_NOT_FOUND: errors.NotFound,
    IDEMPOTENCY_MISMATCH: errors.Unprocessable,
}


def _domain_error(exc: WorkflowUpdateFailedError) -> errors.DomainError:
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in _ERROR_TYPES:
        return _ERROR_TYPES[cause.type](str(cause.message))
    return errors.DependencyUnavailable("the booking could not be completed; try again")


def _not_confirmed(appointment_id: uuid.UUID, what: str) -> errors.DependencyUnavailable:
    # With the worker down, Temporal keeps the run (and the update) until a worker comes back.
    return errors.DependencyUnavailable(
        f"{what} was not confirmed in time and may still complete: check GET /appointments/{appointment_id}",
        retry_after_seconds=NOT_CONFIRMED_RETRY_SECONDS,
        details={"appointmentId": str(appointment_id)},
    )


async def book(
    session: AsyncSession,
    store: PatientStore,
    temporal: TemporalClient,
    ctx: RequestContext,
    data: AppointmentCreate,
    *,
    task_queue: str,
    idempotency_key: str | None,
    deadline_seconds: float,
) -> AppointmentState:
    """Books through the appointment workflow; errors.DependencyUnavailable (503, with the
    appointment id) if Temporal has not answered within `deadline_seconds`: the run may still
    store it, so the caller looks at GET /appointments/{id} (or repeats its Idempotency-Key)."""
    actor = require_actor(ctx)
    own_patient, own_doctor = await care_scope(session, store, actor)
    if own_patient is not None and data.patient_id != own_patient:
        raise errors.NotFound("patient not found")
    if own_doctor is not None and data.doctor_id != own_doctor:
        raise errors.Forbidden("doctors book only their own appointments")
    # Cheap checks before any workflow exists; the workflow checks again (the source of truth).
    if await session.get(Doctor, data.doctor_id) is None:
        raise errors.NotFound("doctor not found")
    if not await store.exists(data.patient_id):
        raise errors.NotFound("patient not found")

    appointment_id = (
        idempotent_appointment_id(actor.user_id, idempotency_key) if idempotency_key else uuid.uuid4()
    )
    request = BookingRequest(
        appointment_id=appointment_id,
        patient_id=data.patient_id,
        doctor_id=data.doctor_id,
        time=data.time,
        duration_minutes=data.duration_minutes,
        reason=data.reason,
        created_by=actor.user_id,
    )
    await release_connection(session)
    start = WithStartWorkflowOperation(
        AppointmentWorkflow.run,
        request,
        id=appointment_workflow_id(appointment_id),
        task_queue=task_queue,
        # A repeated Idempotency-Key reaches the running workflow instead of booking again.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes.parties(
            data.patient_id,
            data.doctor_id,
            SearchAttributePair(search_attributes.APPOINTMENT_STATUS, RUN_PENDING),
        ),
    )
    try:
        async with asyncio.timeout(deadline_seconds):
            state: AppointmentState = await temporal.execute_update_with_start_workflow(
                AppointmentWorkflow.book, request, start_workflow_operation=start
            )
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:  # the SDK turns our deadline into its own
        await audit.record(
            session,
            ctx,
            action="create",
            resource_type="appointment",
            resource_id=appointment_id,
            outcome="pending",
        )
        raise _not_confirmed(appointment_id, "the booking") from exc
    except WorkflowUpdateFailedError as exc:
        raise _domain_error(exc) from exc
    except WorkflowAlreadyStartedError as exc:
        # The workflow for this key already finished: answer with what it stored, if anything.
        row = await session.get(Appointment, appointment_id)
        if row is None:
            raise errors.Conflict("a booking with this Idempotency-Key was refused earlier") from exc
        state = AppointmentState.model_validate(row, from_attributes=True)
    except RPCError as exc:
        raise errors.DependencyUnavailable("the scheduler is unavailable; try again") from exc
    await audit.record(session, ctx, action="create", resource_type="appointment", resource_id=state.id)
    return state


async def get(
    session: AsyncSession, store: PatientStore, ctx: RequestContext, appointment_id: uuid.UUID
) -> AppointmentState:
    row = await read_care_record(
        session, store, ctx, Appointment, appointment_id, resource_type="appointment", not_found=NOT_FOUND
    )
    return AppointmentState.model_validate(row, from_attributes=True)


async def list_appointments(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    *,
    limit: int,
    offset: int,
    patient_id: uuid.UUID | None = None,
    doctor_id: uuid.UUID | None = None,
    status: str | None = None,
    time_from: datetime | None = None,
    time_to: datetime | None = None,
) -> tuple[list[AppointmentState], int]:
    conditions = []
    if patient_id is not None:
        conditions.append(Appointment.patient_id == patient_id)
    if doctor_id is not None:
        conditions.append(Appointment.doctor_id == doctor_id)
    if status:
        conditions.append(Appointment.status == status)
    if time_from:
        conditions.append(Appointment.time >= time_from)
    if time_to:
        conditions.append(Appointment.time < time_to)
    rows, total = await list_care_records(
        session,
        store,
        ctx,
        Appointment,
        where=conditions,
        order_by=[Appointment.time, Appointment.id],
        limit=limit,
        offset=offset,
        resource_type="appointment",
    )
    return [AppointmentState.model_validate(r, from_attributes=True) for r in rows], total


async def transition(
    session: AsyncSession,
    store: PatientStore,
    temporal: TemporalClient,
    ctx: RequestContext,
    appointment_id: uuid.UUID,
    target: AppointmentStatus,
    *,
    deadline_seconds: float,
) -> AppointmentState:
    """Changes the status through the workflow; 503 (with the id) after `deadline_seconds`."""
    actor = require_actor(ctx)
    if target != AppointmentStatus.cancelled and not actor.is_clinic_wide:
        raise errors.Forbidden("only staff mark appointments completed or missed")
    row = await visible_record(session, store, actor, Appointment, appointment_id)
    if row is None:
        raise errors.NotFound(NOT_FOUND)
    if not can_become(row.status, target):
        raise errors.Conflict(f"an appointment that is {row.status} cannot become {target}")
    await release_connection(session)
    handle = temporal.get_workflow_handle(row.workflow_id)
    try:
        async with asyncio.timeout(deadline_seconds):
            state: AppointmentState = await handle.execute_update(
                AppointmentWorkflow.transition, TransitionRequest(target=target, actor_id=actor.user_id)
            )
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:  # the SDK turns our deadline into its own
        await audit.record(
            session,
            ctx,
            action=f"set_{target.lower()}",
            resource_type="appointment",
            resource_id=appointment_id,
            outcome="pending",
        )
        raise _not_confirmed(appointment_id, "the change") from exc
    except WorkflowUpdateFailedError as exc:
        raise _domain_error(exc) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the workflow already reached a final state
            raise errors.Conflict(f"an appointment that is {row.status} cannot become {target}") from exc
        raise errors.DependencyUnavailable("the scheduler is unavailable; try again") from exc
    await audit.record(
        session, ctx, action=f"set_{target.lower()}", resource_type="appointment", resource_id=appointment_id
    )
    return state
