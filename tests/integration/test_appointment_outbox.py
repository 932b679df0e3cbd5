"""The appointment activities queue their events in the transaction of the row change (real PostgreSQL).

On private copies of `appointments` and `outbox` (tests/integration/private_schema.py): the worker's
relay would otherwise publish these rows, and billing would bill appointments made up here.
"""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.appointments import AppointmentActivities
from healthcare.contracts.appointments import (
    SLOT_TAKEN,
    AppointmentStatus,
    BookingRequest,
    StatusChange,
    event_id_for,
)
from healthcare.settings import Settings
from healthcare.stores.factory import patient_store_factory
from tests.integration.private_schema import private_tables


@pytest.fixture
async def private(owner_engine: AsyncEngine, settings: Settings) -> AsyncIterator[AsyncEngine]:
    async with private_tables(owner_engine, settings, "appointments", "outbox") as eng:
        yield eng


@pytest.fixture
def acts(private: AsyncEngine, settings: Settings, audit_key: bytes) -> AppointmentActivities:
    # These activities only queue events; publishing is the relay's.
    return AppointmentActivities(
        engine=private,
        topic=settings.topic_appointment_events,
        patient_store=patient_store_factory(settings),
        audit_key=audit_key,
    )


@pytest.fixture
def booking() -> BookingRequest:
    # Parties are checked by another activity; the copy of `appointments` has no foreign keys.
    return BookingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=(datetime.now(UTC) + timedelta(days=3)).replace(second=0, microsecond=0),
        duration_minutes=30,
    )


async def _queued(engine: AsyncEngine, appointment_id: uuid.UUID) -> list[dict[str, Any]]:
    """The appointment's outbox rows, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_id, topic, value FROM outbox WHERE key = :key ORDER BY seq"),
            {"key": str(appointment_id).encode()},
        )
        return [{"id": r.event_id, "topic": r.topic, **json.loads(r.value)} for r in rows]


async def test_store_queues_the_created_event_once_even_when_retried(
    acts: AppointmentActivities, booking: BookingRequest, private: AsyncEngine, settings: Settings
) -> None:
    env = ActivityEnvironment()
    stored = await env.run(acts.store, booking)
    assert await env.run(acts.store, booking) == stored  # a retry finds its own row
    (event,) = await _queued(private, booking.appointment_id)
    assert event["topic"] == settings.topic_appointment_events
    assert event["id"] == event_id_for(booking.appointment_id, "APPOINTMENT_CREATED")
    assert event["event"] == "APPOINTMENT_CREATED" and event["eventId"] == str(event["id"])
    assert (event["patientId"], event["doctorId"]) == (str(booking.patient_id), str(booking.doctor_id))
    assert datetime.fromisoformat(event["time"]) == stored.time
    assert datetime.fromisoformat(event["occurredAt"]) == stored.created_at


async def test_a_refused_booking_queues_nothing(
    acts: AppointmentActivities, booking: BookingRequest, private: AsyncEngine
) -> None:
    env = ActivityEnvironment()
    await env.run(acts.store, booking)
    clash = booking.model_copy(update={"appointment_id": uuid.uuid4()})
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.store, clash)
    assert err.value.type == SLOT_TAKEN
    assert await _queued(private, clash.appointment_id) == []  # rolled back with the row


async def test_a_cancellation_queues_its_event_with_the_status_change_once(
    acts: AppointmentActivities, booking: BookingRequest, private: AsyncEngine
) -> None:
    env = ActivityEnvironment()
    await env.run(acts.store, booking)
    change = StatusChange(appointment_id=booking.appointment_id, target="CANCELLED")
    cancelled = await env.run(acts.set_status, change)
    assert await env.run(acts.set_status, change) == cancelled  # a retry changes and queues nothing
    created, event = await _queued(private, booking.appointment_id)
    assert created["event"] == "APPOINTMENT_CREATED"
    assert event["event"] == "APPOINTMENT_CANCELLED"
    assert event["id"] == event_id_for(booking.appointment_id, "APPOINTMENT_CANCELLED")
    assert datetime.fromisoformat(event["occurredAt"]) == cancelled.updated_at


@pytest.mark.parametrize("target", [AppointmentStatus.completed, AppointmentStatus.no_show])
async def test_only_a_cancellation_queues_an_event(
    acts: AppointmentActivities,
    booking: BookingRequest,
    private: AsyncEngine,
    target: AppointmentStatus,
) -> None:
    env = ActivityEnvironment()
    await env.run(acts.store, booking)
    changed = await env.run(
        acts.set_status, StatusChange(appointment_id=booking.appointment_id, target=target)
    )
    assert changed.status == target
    assert [e["event"] for e in await _queued(private, booking.appointment_id)] == ["APPOINTMENT_CREATED"]
