"""Appointments: booking starts a durable workflow; the answer comes once the slot is stored."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status

from api.deps import Ctx, PageDep, PatientStoreDep, SessionDep, SettingsDep, TemporalDep
from healthcare.contracts.appointments import AppointmentStatus
from healthcare.schemas import AppointmentCreate, AppointmentPublic, Page
from services import appointments

router = APIRouter(prefix="/appointments", tags=["appointments"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such appointment, patient or doctor (or not yours to see)"},
    409: {"description": "The slot overlaps a booked appointment, or the status cannot change so"},
    503: {"description": "Not confirmed in time (Retry-After; the body's appointmentId may still appear)"},
}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a POST with the same key to get the same appointment instead of a second one.",
    ),
]


def _public(state: object) -> AppointmentPublic:
    return AppointmentPublic.model_validate(state, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AppointmentPublic, responses=RESPONSES)
async def book(
    body: AppointmentCreate,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    ctx: Ctx,
    idempotency_key: IdempotencyKey = None,
) -> AppointmentPublic:
    state = await appointments.book(
        session,
        store,
        temporal,
        ctx,
        body,
        task_queue=settings.temporal_task_queue,
        idempotency_key=idempotency_key,
        deadline_seconds=settings.temporal_update_timeout_seconds,
    )
    return _public(state)


@router.get("", response_model=Page[AppointmentPublic])
async def list_appointments(
    session: SessionDep,
    store: PatientStoreDep,
    ctx: Ctx,
    page: PageDep,
    patient_id: Annotated[uuid.UUID | None, Query(alias="patientId")] = None,
    doctor_id: Annotated[uuid.UUID | None, Query(alias="doctorId")] = None,
    status_filter: Annotated[AppointmentStatus | None, Query(alias="status")] = None,
    time_from: Annotated[datetime | None, Query(alias="from")] = None,
    time_to: Annotated[datetime | None, Query(alias="to")] = None,
) -> Page[AppointmentPublic]:
    items, total = await appointments.list_appointments(
        session,
        store,
        ctx,
        limit=page.limit,
        offset=page.offset,
        patient_id=patient_id,
        doctor_id=doctor_id,
        status=status_filter.value if status_filter else None,
        time_from=time_from,
        time_to=time_to,
    )
    return Page[AppointmentPublic](
        items=[_public(a) for a in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{appointment_id}", response_model=AppointmentPublic, responses=RESPONSES)
async def get_appointment(
    appointment_id: uuid.UUID, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> AppointmentPublic:
    return _public(await appointments.get(session, store, ctx, appointment_id))


@router.post("/{appointment_id}/cancel", response_model=AppointmentPublic, responses=RESPONSES)
async def cancel(
    appointment_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    ctx: Ctx,
    settings: SettingsDep,
) -> AppointmentPublic:
    return _public(
        await appointments.transition(
            session,
            store,
            temporal,
            ctx,
            appointment_id,
            AppointmentStatus.cancelled,
            deadline_seconds=settings.temporal_update_timeout_seconds,
        )
    )


@router.post("/{appointment_id}/complete", response_model=AppointmentPublic, responses=RESPONSES)
async def complete(
    appointment_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    ctx: Ctx,
    settings: SettingsDep,
) -> AppointmentPublic:
    """Staff mark a visit that took place."""
    return _public(
        await appointments.transition(
            session,
            store,
            temporal,
            ctx,
            appointment_id,
            AppointmentStatus.completed,
            deadline_seconds=settings.temporal_update_timeout_seconds,
        )
    )


@router.post("/{appointment_id}/no-show", response_model=AppointmentPublic, responses=RESPONSES)
async def no_show(
    appointment_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    ctx: Ctx,
    settings: SettingsDep,
) -> AppointmentPublic:
    """Staff mark a patient who did not come."""
    return _public(
        await appointments.transition(
            session,
            store,
            temporal,
            ctx,
            appointment_id,
            AppointmentStatus.no_show,
            deadline_seconds=settings.temporal_update_timeout_seconds,
        )
    )
