"""Appointment workflow contracts: the models that travel between the API, the workflow and activities."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

# Business failures carried as Temporal ApplicationError types; the API maps each to an HTTP status.
SLOT_TAKEN = "SlotTaken"
PARTY_NOT_FOUND = "PartyNotFound"
INVALID_TRANSITION = "InvalidTransition"
IDEMPOTENCY_MISMATCH = "IdempotencyMismatch"

# Event ids are derived from the appointment and the kind of event, so a retried publish carries
# the same id and consumers can drop the duplicate.
EVENT_NAMESPACE = uuid.UUID("7d1c8f0e-3b6a-4f3e-9a51-5f3c2e8b9d10")

FINAL = ("CANCELLED", "COMPLETED", "NO_SHOW")
Transition = Literal["CANCELLED", "COMPLETED", "NO_SHOW"]


def workflow_id_for(appointment_id: uuid.UUID) -> str:
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

    def fingerprint(self) -> tuple[object, ...]:
        return (self.patient_id, self.doctor_id, self.time, self.duration_minutes, self.reason)


class AppointmentState(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    time: datetime
    duration_minutes: int
    status: str
    reason: str | None = None
    workflow_id: str
    created_at: datetime
    updated_at: datetime


class TransitionRequest(BaseModel):
    target: Transition
    actor_id: uuid.UUID | None = None


class StatusChange(BaseModel):
    appointment_id: uuid.UUID
    target: Transition
    # True: a cancellation queues its event in the outbox, in the transaction of the status change.
    # False (runs started before the outbox): the workflow publishes it with `appointments.publish`.
    outbox: bool = False


class PartiesCheck(BaseModel):
    patient_id: uuid.UUID
    doctor_id: uuid.UUID


class PublishRequest(BaseModel):
    event: Literal["APPOINTMENT_CREATED", "APPOINTMENT_CANCELLED"]
    appointment: AppointmentState


class WorkflowOutcome(BaseModel):
    appointment_id: uuid.UUID
    final_status: str
