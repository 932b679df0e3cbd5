"""Appointment contracts: the status vocabulary and its state machine, ids, and the models that travel
between the API, the appointment workflow and its activities."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

# Business failures carried as Temporal ApplicationError types; the API maps each to an HTTP status.
SLOT_TAKEN = "SlotTaken"
PARTY_NOT_FOUND = "PartyNotFound"
INVALID_TRANSITION = "InvalidTransition"
IDEMPOTENCY_MISMATCH = "IdempotencyMismatch"
# The patient already holds the most open future bookings a self-service booking may add to.
BOOKING_LIMIT = "BookingLimit"

# Event ids are derived from the appointment and the kind of event, so a retried publish carries
# the same id and consumers can drop the duplicate.
EVENT_NAMESPACE = uuid.UUID("7d1c8f0e-3b6a-4f3e-9a51-5f3c2e8b9d10")


class AppointmentStatus(StrEnum):
    """The status of an appointment: its row, the API's `status`, the workflow's transitions."""

    booked = "BOOKED"
    cancelled = "CANCELLED"
    completed = "COMPLETED"
    no_show = "NO_SHOW"


# The state machine: which status may follow which. Anything else is refused (409 in the API, an
# InvalidTransition in the workflow); a status with nothing after it is final.
TRANSITIONS: Mapping[AppointmentStatus, frozenset[AppointmentStatus]] = {
    AppointmentStatus.booked: frozenset(
        {AppointmentStatus.cancelled, AppointmentStatus.completed, AppointmentStatus.no_show}
    ),
    AppointmentStatus.cancelled: frozenset(),
    AppointmentStatus.completed: frozenset(),
    AppointmentStatus.no_show: frozenset(),
}

# The AppointmentStatus search attribute follows the row's status, and names the two states of a
# run that has no row: the booking is still being checked, or it was refused.
RUN_PENDING = "PENDING"
RUN_REJECTED = "REJECTED"


def can_become(current: str, target: str) -> bool:
    """Whether an appointment that is `current` may become `target`."""
    try:
        return target in TRANSITIONS[AppointmentStatus(current)]
    except ValueError:  # not a status of ours (e.g. a run that has no row yet)
        return False


def appointment_workflow_id(appointment_id: uuid.UUID) -> str:
    return f"appointment-{appointment_id}"


def event_id_for(appointment_id: uuid.UUID, event: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"{appointment_id}:{event}")


def idempotent_appointment_id(user_id: uuid.UUID, key: str) -> uuid.UUID:
    """The same caller with the same Idempotency-Key always names the same appointment."""
    return uuid.uuid5(EVENT_NAMESPACE, f"idempotency:{user_id}:{key}")


class BookingRequest(BaseModel):
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    time: datetime
    duration_minutes: int
    reason: str | None = None
    created_by: uuid.UUID | None = None
    # Self-service bookings (patients, doctors): the most open future bookings the patient may hold
    # once this one is stored (checked by `appointments.store` under a per-patient lock); None for
    # staff, who book for the clinic.
    max_open_bookings: int | None = None

    def fingerprint(self) -> tuple[object, ...]:
        return (self.patient_id, self.doctor_id, self.time, self.duration_minutes, self.reason)


class AppointmentState(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    time: datetime
    duration_minutes: int
    status: AppointmentStatus
    reason: str | None = None
    workflow_id: str
    created_at: datetime
    updated_at: datetime


class TransitionRequest(BaseModel):
    target: AppointmentStatus
    actor_id: uuid.UUID | None = None


class StatusChange(BaseModel):
    """A cancellation queues its event in the outbox, in the transaction of the status change."""

    appointment_id: uuid.UUID
    target: AppointmentStatus


class PartiesCheck(BaseModel):
    patient_id: uuid.UUID
    doctor_id: uuid.UUID


class WorkflowOutcome(BaseModel):
    appointment_id: uuid.UUID
    # An AppointmentStatus, or RUN_REJECTED when the booking was refused.
    final_status: str
