"""PostgreSQL patient store: one row per patient, free-form attributes in a JSONB column."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare.db import add_unique, page
from healthcare.models import Patient, utcnow
from healthcare.stores.patients import PatientRecord, merge_attributes


def _record(row: Patient) -> PatientRecord:
    return PatientRecord.model_validate(row, from_attributes=True)


class PostgresPatientStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, record: PatientRecord) -> PatientRecord:
        row = await add_unique(
            self._session,
            Patient(**record.model_dump()),
            conflict="this account already has a patient record",
        )
        return _record(row)

    async def get(self, patient_id: uuid.UUID) -> PatientRecord | None:
        row = await self._session.get(Patient, patient_id)
        return _record(row) if row else None

    async def get_by_user(self, user_id: uuid.UUID) -> PatientRecord | None:
        row = await self._session.scalar(select(Patient).where(Patient.user_id == user_id))
        return _record(row) if row else None

    async def exists(self, patient_id: uuid.UUID) -> bool:
        return await self._session.scalar(select(Patient.id).where(Patient.id == patient_id)) is not None

    async def update(
        self, patient_id: uuid.UUID, fields: dict[str, Any], attributes: dict[str, Any] | None
    ) -> PatientRecord | None:
        row = await self._session.get(Patient, patient_id, with_for_update=True)
        if row is None:
            return None
        for key, value in fields.items():
            setattr(row, key, value)
        if attributes is not None:
            row.attributes = merge_attributes(row.attributes, attributes)
        row.updated_at = utcnow()
        self._session.add(row)
        await self._session.flush()
        return _record(row)

    async def list(
        self, *, limit: int, offset: int, q: str | None, only_ids: Iterable[uuid.UUID] | None
    ) -> tuple[list[PatientRecord], int]:
        conditions = []
        if q:
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # unaccent on both sides (migration 0006), ILIKE for case: "zoe" finds "Zoë".
            conditions.append(func.unaccent(Patient.name).ilike(func.unaccent(f"%{escaped}%"), escape="\\"))
        if only_ids is not None:
            conditions.append(Patient.id.in_(list(only_ids)))
        rows, total = await page(
            self._session,
            Patient,
            where=conditions,
            order_by=[Patient.name, Patient.id],
            limit=limit,
            offset=offset,
        )
        return [_record(r) for r in rows], total
