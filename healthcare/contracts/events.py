"""Kafka event schemas: the fixed wire contracts of `appointment-events` and `analytics-results`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    """The `event` field of an `appointment-events` value."""

    created = "APPOINTMENT_CREATED"
    cancelled = "APPOINTMENT_CANCELLED"


# A header on events that benchmarks make up (bench/analytics_freshness.py): the analytics job counts
# them like any other, the billing consumer skips one whose appointment is not stored (a marked event
# of a stored appointment is billed as usual, so the mark can never keep a real visit from its bill).
SYNTHETIC_HEADER = "hc-synthetic"


class RefusalReason(StrEnum):
    """Why the billing consumer parked an event on the dead-letter topic (its `dlq-reason` header)."""

    malformed = "MALFORMED"  # not an appointment event at all
    appointment_not_found = "APPOINTMENT_NOT_FOUND"  # no stored appointment has its id
    patient_mismatch = "PATIENT_MISMATCH"  # the stored appointment is another patient's
    doctor_mismatch = "DOCTOR_MISMATCH"  # the stored appointment is with another doctor
    temporal_refused = "TEMPORAL_REFUSED"  # Temporal refused the start for good (status in the detail)
    run_closed = "RUN_CLOSED"  # a cancellation for a billing run that failed or was terminated


class AppointmentEvent(BaseModel):
    """One value on `appointment-events`, keyed by appointmentId."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    event: EventType
    event_id: UUID = Field(alias="eventId")
    appointment_id: UUID = Field(alias="appointmentId")
    patient_id: UUID = Field(alias="patientId")
    doctor_id: UUID = Field(alias="doctorId")
    time: datetime
    occurred_at: datetime = Field(alias="occurredAt")

    def key(self) -> bytes:
        return str(self.appointment_id).encode()

    def value(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class AnalyticsResult(BaseModel):
    """One value on `analytics-results`; times are epoch milliseconds."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    metric_type: Literal["AppointmentAnalytics"] = Field(default="AppointmentAnalytics", alias="metricType")
    total_events_created: int = Field(alias="totalEventsCreated")
    avg_appointments_per_hour: float = Field(alias="avgAppointmentsPerHour")
    window_start_time: int = Field(alias="windowStartTime")
    window_end_time: int = Field(alias="windowEndTime")
    timestamp: int
