"""Doctors: the clinic's practitioners; a doctor's fee is what billing charges for a visit."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.db import add_unique, page
from healthcare.models import Doctor, Role, User
from healthcare.schemas import DoctorCreate
from services import audit
from services.context import RequestContext


async def create_doctor(session: AsyncSession, ctx: RequestContext, data: DoctorCreate) -> Doctor:
    if data.user_id is not None:
        user = await session.get(User, data.user_id)
        if user is None or user.role != Role.doctor.value:
            raise errors.Invalid("userId must name an existing user with the doctor role")
    doctor = Doctor(**data.model_dump())
    await add_unique(session, doctor, conflict="that user is already linked to a doctor")
    await audit.record(session, ctx, action="create", resource_type="doctor", resource_id=doctor.id)
    return doctor


async def list_doctors(
    session: AsyncSession, *, limit: int, offset: int, specialty: str | None = None
) -> tuple[list[Doctor], int]:
    conditions = [Doctor.specialty == specialty] if specialty else []
    return await page(
        session, Doctor, where=conditions, order_by=[Doctor.name, Doctor.id], limit=limit, offset=offset
    )


async def get_doctor(session: AsyncSession, doctor_id: object) -> Doctor:
    doctor = await session.get(Doctor, doctor_id)
    if doctor is None:
        raise errors.NotFound("doctor not found")
    return doctor
