"""Patient records: create, read, merge-update, list; every access is authorized and audited."""

from __future__ import annotations

import uuid

from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.models import Role, utcnow
from healthcare.schemas import PatientCreate, PatientUpdate
from healthcare.stores.patients import PatientRecord, PatientStore
from services import audit
from services.access import can_see_patient, visible_patient_ids
from services.context import RequestContext, require_actor

NOT_FOUND = "patient not found"


async def create_patient(
    session: AsyncSession, store: PatientStore, ctx: RequestContext, data: PatientCreate
) -> PatientRecord:
    actor = require_actor(ctx)
    if actor.role == Role.doctor:
        raise errors.Forbidden("doctors cannot create patient records")
    owner = None
    if actor.role == Role.patient:
        if await store.get_by_user(actor.user_id):
            raise errors.Conflict("this account already has a patient record")
        owner = actor.user_id
    now = utcnow()
    record = PatientRecord(
        id=uuid.uuid4(),
        user_id=owner,
        created_by=actor.user_id,
        created_at=now,
        updated_at=now,
        **data.model_dump(),
    )
    created = await store.create(record)
    await audit.record(session, ctx, action="create", resource_type="patient", resource_id=created.id)
    return created


async def get_patient(
    session: AsyncSession, store: PatientStore, ctx: RequestContext, patient_id: uuid.UUID
) -> PatientRecord:
    record = await store.get(patient_id)
    if record is not None and not await can_see_patient(session, store, require_actor(ctx), patient_id):
        record = None
    return await audit.access_or_404(
        session, ctx, record, resource_type="patient", resource_id=patient_id, not_found=NOT_FOUND
    )


async def update_patient(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    patient_id: uuid.UUID,
    data: PatientUpdate,
) -> PatientRecord:
    if not await can_see_patient(session, store, require_actor(ctx), patient_id):
        await audit.record(
            session, ctx, action="update", resource_type="patient", resource_id=patient_id, outcome="denied"
        )
        raise errors.NotFound(NOT_FOUND)
    given = data.model_dump(exclude_unset=True)
    attributes = given.pop("attributes", None)
    updated = await store.update(patient_id, given, attributes)
    if updated is None:
        await session.rollback()
        raise errors.NotFound(NOT_FOUND)
    await audit.record(session, ctx, action="update", resource_type="patient", resource_id=patient_id)
    return updated


async def list_patients(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    *,
    limit: int,
    offset: int,
    q: str | None,
) -> tuple[list[PatientRecord], int]:
    actor = require_actor(ctx)
    only = await visible_patient_ids(session, store, actor)
    items, total = await store.list(limit=limit, offset=offset, q=q, only_ids=only)
    await audit.record_many(
        session, ctx, action="list", resource_type="patient", resource_ids=[p.id for p in items]
    )
    return items, total
