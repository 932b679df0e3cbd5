"""Object-level authorization: which patients an actor may see. One place, used by every route."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare.contracts.appointments import AppointmentStatus
from healthcare.db import page
from healthcare.models import Appointment, Doctor, Invoice, Role
from healthcare.stores.patients import PatientStore
from services import audit
from services.context import Actor, RequestContext, require_actor


async def doctor_id_of(session: AsyncSession, actor: Actor) -> uuid.UUID | None:
    if actor.role != Role.doctor:
        return None
    return await session.scalar(select(Doctor.id).where(Doctor.user_id == actor.user_id))


async def visible_patient_ids(
    session: AsyncSession, store: PatientStore, actor: Actor
) -> set[uuid.UUID] | None:
    """None means every patient (admin, staff); otherwise the exact set the actor may see."""
    if actor.is_clinic_wide:
        return None
    if actor.role == Role.patient:
        own = await store.get_by_user(actor.user_id)
        return {own.id} if own else set()
    if actor.role == Role.doctor:
        doctor_id = await doctor_id_of(session, actor)
        if doctor_id is None:
            return set()
        return await patients_in_care(session, doctor_id)
    return set()


# A doctor's current care: patients with a booked or completed appointment with them. A cancelled
# or missed appointment alone gives no access to the record (README, "Security").
IN_CARE = (AppointmentStatus.booked.value, AppointmentStatus.completed.value)


async def patients_in_care(session: AsyncSession, doctor_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await session.scalars(
        select(Appointment.patient_id)
        .where(Appointment.doctor_id == doctor_id, col(Appointment.status).in_(IN_CARE))
        .distinct()
    )
    return set(rows)


async def can_see_patient(
    session: AsyncSession, store: PatientStore, actor: Actor, patient_id: uuid.UUID
) -> bool:
    visible = await visible_patient_ids(session, store, actor)
    return visible is None or patient_id in visible


async def care_scope(
    session: AsyncSession, store: PatientStore, actor: Actor
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """(patient_id, doctor_id) an actor's appointments and invoices are confined to; (None, None)
    for clinic-wide roles. A role with no linked record gets an id that matches nothing."""
    nothing = uuid.UUID(int=0)
    if actor.role == Role.patient:
        own = await store.get_by_user(actor.user_id)
        return (own.id if own else nothing), None
    if actor.role == Role.doctor:
        return None, (await doctor_id_of(session, actor)) or nothing
    return None, None


CareRecord = TypeVar("CareRecord", Appointment, Invoice)


async def visible_record(
    session: AsyncSession, store: PatientStore, actor: Actor, model: type[CareRecord], record_id: uuid.UUID
) -> CareRecord | None:
    """The appointment or invoice if it exists and is the actor's to see; None otherwise (a 404)."""
    row = await session.get(model, record_id)
    if row is None or not await within_care_scope(
        session, store, actor, patient_id=row.patient_id, doctor_id=row.doctor_id
    ):
        return None
    return row


async def read_care_record(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    model: type[CareRecord],
    record_id: uuid.UUID,
    *,
    resource_type: str,
    not_found: str,
    action: str = "read",
) -> CareRecord:
    """An appointment or invoice the actor may see, its access audited; someone else's is a 404."""
    row = await visible_record(session, store, require_actor(ctx), model, record_id)
    return await audit.access_or_404(
        session,
        ctx,
        row,
        action=action,
        resource_type=resource_type,
        resource_id=record_id,
        not_found=not_found,
    )


async def list_care_records(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    model: type[CareRecord],
    *,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    limit: int,
    offset: int,
    resource_type: str,
) -> tuple[list[CareRecord], int]:
    """A page of appointments or invoices matching `where`, confined to the actor's care scope; each
    listed record is audited."""
    own_patient, own_doctor = await care_scope(session, store, require_actor(ctx))
    scoped = list(where)
    if own_patient is not None:
        scoped.append(model.patient_id == own_patient)
    if own_doctor is not None:
        scoped.append(model.doctor_id == own_doctor)
    rows, total = await page(session, model, where=scoped, order_by=order_by, limit=limit, offset=offset)
    await audit.record_many(
        session, ctx, action="list", resource_type=resource_type, resource_ids=[row.id for row in rows]
    )
    return rows, total


async def within_care_scope(
    session: AsyncSession, store: PatientStore, actor: Actor, *, patient_id: uuid.UUID, doctor_id: uuid.UUID
) -> bool:
    """Whether a record of this patient with this doctor (an appointment, an invoice) is the actor's."""
    own_patient, own_doctor = await care_scope(session, store, actor)
    return (own_patient is None or patient_id == own_patient) and (
        own_doctor is None or doctor_id == own_doctor
    )
