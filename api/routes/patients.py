"""Patient records. Every route checks role and ownership; every access leaves an audit record."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from api.deps import Ctx, PageDep, PatientStoreDep, SessionDep
from healthcare.schemas import NO_NUL, Page, PatientCreate, PatientPublic, PatientUpdate
from services import patients

router = APIRouter(prefix="/patients", tags=["patients"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such patient, or not yours to see"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PatientPublic)
async def create_patient(
    body: PatientCreate, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> PatientPublic:
    """Staff and admins create any record; a patient-role user creates one record, their own."""
    record = await patients.create_patient(session, store, ctx, body)
    return PatientPublic.model_validate(record.model_dump())


@router.get("", response_model=Page[PatientPublic])
async def list_patients(
    session: SessionDep,
    store: PatientStoreDep,
    ctx: Ctx,
    page: PageDep,
    q: Annotated[
        str | None,
        Query(pattern=NO_NUL, max_length=100, description="Name contains (ignoring case and accents)"),
    ] = None,
) -> Page[PatientPublic]:
    items, total = await patients.list_patients(
        session, store, ctx, limit=page.limit, offset=page.offset, q=q
    )
    return Page[PatientPublic](
        items=[PatientPublic.model_validate(p.model_dump()) for p in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{patient_id}", response_model=PatientPublic, responses=NOT_FOUND)
async def get_patient(
    patient_id: uuid.UUID, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> PatientPublic:
    record = await patients.get_patient(session, store, ctx, patient_id)
    return PatientPublic.model_validate(record.model_dump())


@router.patch("/{patient_id}", response_model=PatientPublic, responses=NOT_FOUND)
async def update_patient(
    patient_id: uuid.UUID, body: PatientUpdate, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> PatientPublic:
    """Merges the given fields; `attributes` merges key by key and a null value removes a key."""
    record = await patients.update_patient(session, store, ctx, patient_id, body)
    return PatientPublic.model_validate(record.model_dump())
