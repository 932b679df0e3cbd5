"""Appointment activities: check the parties, store the row, change its status. Idempotent.

`store` and `set_status` queue their event in the outbox in the same transaction as the row change
(healthcare.outbox); the worker's relay publishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from healthcare import audit, outbox
from healthcare.contracts.appointments import (
    BOOKING_LIMIT,
    PARTY_NOT_FOUND,
    SLOT_TAKEN,
    AppointmentState,
    AppointmentStatus,
    BookingRequest,
    PartiesCheck,
    StatusChange,
    appointment_workflow_id,
    can_become,
    event_id_for,
)
from healthcare.contracts.events import AppointmentEvent, EventType
from healthcare.db import session_factory
from healthcare.models import Appointment, Doctor, open_bookings, utcnow
from healthcare.stores.patients import PatientStore

UNIQUE_VIOLATION = "23505"
EXCLUSION_VIOLATION = "23P01"


def _state(row: Appointment) -> AppointmentState:
    return AppointmentState.model_validate(row, from_attributes=True)


def appointment_event(kind: EventType, appt: AppointmentState) -> AppointmentEvent:
    """The contract event; its id depends only on the appointment and the kind, so retries share it."""
    return AppointmentEvent.model_validate(
        {
            "event": kind,
            "eventId": event_id_for(appt.id, kind),
            "appointmentId": appt.id,
            "patientId": appt.patient_id,
            "doctorId": appt.doctor_id,
            "time": appt.time,
            "occurredAt": appt.updated_at if kind == EventType.cancelled else appt.created_at,
        }
    )


class AppointmentActivities:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        topic: str,
        patient_store: Callable[[AsyncSession], PatientStore],
        audit_key: bytes,
    ) -> None:
        self._sessions = session_factory(engine)
        self._topic = topic
        self._patient_store = patient_store
        self._audit_key = audit_key

    @activity.defn(name="appointments.check_parties")
    async def check_parties(self, data: PartiesCheck) -> None:
        async with self._sessions() as session:
            if not await self._patient_store(session).exists(data.patient_id):
                raise ApplicationError("patient not found", type=PARTY_NOT_FOUND, non_retryable=True)
            if await session.get(Doctor, data.doctor_id) is None:
                raise ApplicationError("doctor not found", type=PARTY_NOT_FOUND, non_retryable=True)

    @activity.defn(name="appointments.store")
    async def store(self, data: BookingRequest) -> AppointmentState:
        """Insert the row and queue APPOINTMENT_CREATED in one transaction.

        A retry after a crash finds its own row, whose event committed with it, and returns it.
        """
        async with self._sessions() as session:
            existing = await session.get(Appointment, data.appointment_id)
            if existing is not None:
                return _state(existing)
            if data.max_open_bookings is not None:
                await _check_open_bookings(session, data)
            row = Appointment(
                id=data.appointment_id,
                patient_id=data.patient_id,
                doctor_id=data.doctor_id,
                time=data.time,
                end_time=data.time + timedelta(minutes=data.duration_minutes),
                duration_minutes=data.duration_minutes,
                status=AppointmentStatus.booked.value,
                reason=data.reason,
                workflow_id=appointment_workflow_id(data.appointment_id),
                created_by=data.created_by,
            )
            session.add(row)
            try:
                await session.flush()
                # Read back what the database stored, so the answer and the event match a later GET.
                await session.refresh(row)
                state = _state(row)
                await outbox.enqueue(
                    session, topic=self._topic, event=appointment_event(EventType.created, state)
                )
                await session.commit()
            except IntegrityError as exc:
                await session.rollback()
                if _sqlstate(exc) == UNIQUE_VIOLATION:  # a concurrent retry of this activity won
                    again = await session.get(Appointment, data.appointment_id)
                    if again is not None:
                        return _state(again)
                # The exclusion constraints are what make two concurrent bookings of a slot lose one.
                if _sqlstate(exc) == EXCLUSION_VIOLATION:
                    raise ApplicationError(
                        "the doctor or the patient already has an appointment at that time",
                        type=SLOT_TAKEN,
                        non_retryable=True,
                    ) from None
                raise
            return state

    @activity.defn(name="appointments.set_status")
    async def set_status(self, data: StatusChange) -> AppointmentState:
        """One allowed transition (TRANSITIONS), once; a cancellation queues its event with it.

        A retry finds the status already set (and the event already queued) and returns the row.
        """
        async with self._sessions() as session:
            row = await session.scalar(
                select(Appointment).where(Appointment.id == data.appointment_id).with_for_update()
            )
            if row is None:
                raise ApplicationError("appointment not found", type=PARTY_NOT_FOUND, non_retryable=True)
            if not can_become(row.status, data.target):  # a retry: the change is already made
                return _state(row)
            before = row.status
            row.status = data.target.value
            row.updated_at = utcnow()
            session.add(row)
            await session.flush()
            await session.refresh(row)
            state = _state(row)
            if data.target == AppointmentStatus.cancelled:
                await outbox.enqueue(
                    session, topic=self._topic, event=appointment_event(EventType.cancelled, state)
                )
            change = audit.Entry(
                action="set_status",
                resource_type="appointment",
                resource_id=str(row.id),
                actor_role="worker",
                detail={"from": before, "to": row.status, "workflowId": row.workflow_id},
            )
            await audit.append(session, [change], key=self._audit_key)
            await session.commit()
            return state


async def _check_open_bookings(session: AsyncSession, data: BookingRequest) -> None:
    """The per-patient cap on open future bookings, under a lock per patient held until the insert
    commits: concurrent self-service bookings cannot all pass the count."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('booking:' || :patient, 0))"),
        {"patient": str(data.patient_id)},
    )
    held = await session.scalar(open_bookings(data.patient_id))
    if (held or 0) >= (data.max_open_bookings or 0):
        raise ApplicationError(
            f"this patient already has {data.max_open_bookings} upcoming appointments",
            type=BOOKING_LIMIT,
            non_retryable=True,
        )


def _sqlstate(exc: IntegrityError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
