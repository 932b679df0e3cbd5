"""Doctors: anyone signed in can list them (to book); only admins add them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import AdminActor, Ctx, CurrentActor, PageDep, SessionDep
from healthcare.schemas import NO_NUL, DoctorCreate, DoctorPublic, Page
from services import doctors

router = APIRouter(prefix="/doctors", tags=["doctors"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DoctorPublic)
async def create_doctor(body: DoctorCreate, _: AdminActor, session: SessionDep, ctx: Ctx) -> DoctorPublic:
    return DoctorPublic.model_validate(await doctors.create_doctor(session, ctx, body))


@router.get("", response_model=Page[DoctorPublic])
async def list_doctors(
    _: CurrentActor,
    session: SessionDep,
    page: PageDep,
    specialty: Annotated[str | None, Query(pattern=NO_NUL, max_length=100)] = None,
) -> Page[DoctorPublic]:
    items, total = await doctors.list_doctors(
        session, limit=page.limit, offset=page.offset, specialty=specialty
    )
    return Page[DoctorPublic](
        items=[DoctorPublic.model_validate(d) for d in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{doctor_id}", response_model=DoctorPublic)
async def get_doctor(doctor_id: uuid.UUID, _: CurrentActor, session: SessionDep) -> DoctorPublic:
    return DoctorPublic.model_validate(await doctors.get_doctor(session, doctor_id))
