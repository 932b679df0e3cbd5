"""Appointments: booking starts a durable workflow; the answer comes once the slot is stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, status
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient

from api.deps import Ctx, PageDep, PatientStoreDep, SessionDep, SettingsDep, TemporalDep
from healthcare.contracts.appointments import AppointmentStatus
from healthcare.schemas import AppointmentCreate, AppointmentPublic, Page
from healthcare.settings import Settings
from healthcare.stores.patients import PatientStore
from services import appointments
from services.context import RequestContext

router = APIRouter(prefix="/appointments", tags=["appointments"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not allowed for your role, or past the cancellation cutoff (call the clinic)"},
    404: {"description": "No such appointment, patient or doctor (or not yours to see)"},
    409: {
        "description": "The slot overlaps a booked appointment, the patient holds the most open "
        "bookings allowed, or the status cannot change so"
    },
    429: {"description": "Too many bookings from this account; see Retry-After"},
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
        settings=settings,
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


@dataclass(frozen=True)
class StatusChange:
    """What a status change needs; one dependency for the three routes below."""

    session: AsyncSession
    store: PatientStore
    temporal: TemporalClient
    settings: Settings
    ctx: RequestContext

    async def to(self, appointment_id: uuid.UUID, target: AppointmentStatus) -> AppointmentPublic:
        state = await appointments.transition(
            self.session,
            self.store,
            self.temporal,
            self.ctx,
            appointment_id,
            target,
            cancel_cutoff=timedelta(hours=self.settings.cancel_cutoff_hours),
            deadline_seconds=self.settings.temporal_update_timeout_seconds,
        )
        return _public(state)


async def status_change(
    session: SessionDep, store: PatientStoreDep, temporal: TemporalDep, settings: SettingsDep, ctx: Ctx
) -> StatusChange:
    return StatusChange(session, store, temporal, settings, ctx)


StatusChangeDep = Annotated[StatusChange, Depends(status_change)]


@router.post("/{appointment_id}/cancel", response_model=AppointmentPublic, responses=RESPONSES)
async def cancel(appointment_id: uuid.UUID, change: StatusChangeDep) -> AppointmentPublic:
    """Patients and doctors cancel until HC_CANCEL_CUTOFF_HOURS before the visit; staff at any time."""
    return await change.to(appointment_id, AppointmentStatus.cancelled)


@router.post("/{appointment_id}/complete", response_model=AppointmentPublic, responses=RESPONSES)
async def complete(appointment_id: uuid.UUID, change: StatusChangeDep) -> AppointmentPublic:
    """Staff mark a visit that took place."""
    return await change.to(appointment_id, AppointmentStatus.completed)


@router.post("/{appointment_id}/no-show", response_model=AppointmentPublic, responses=RESPONSES)
async def no_show(appointment_id: uuid.UUID, change: StatusChangeDep) -> AppointmentPublic:
    """Staff mark a patient who did not come."""
    return await change.to(appointment_id, AppointmentStatus.no_show)
