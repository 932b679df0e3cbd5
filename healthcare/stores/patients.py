"""The patient store interface and its record type; back ends implement PatientStore."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field


class PatientRecord(BaseModel):
    id: uuid.UUID
    name: str
    date_of_birth: date | None = None
    gender: str | None = None
    condition: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    user_id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime


class PatientStore(Protocol):
    async def create(self, record: PatientRecord) -> PatientRecord:
        """Insert; raises healthcare.errors.Conflict if the linked user already has a record."""
        ...

    async def get(self, patient_id: uuid.UUID) -> PatientRecord | None: ...

    async def get_by_user(self, user_id: uuid.UUID) -> PatientRecord | None: ...

    async def update(
        self, patient_id: uuid.UUID, fields: dict[str, Any], attributes: dict[str, Any] | None
    ) -> PatientRecord | None:
        """Set `fields`; merge `attributes` key by key (a None value removes the key)."""
        ...

    async def list(
        self, *, limit: int, offset: int, q: str | None, only_ids: Iterable[uuid.UUID] | None
    ) -> tuple[list[PatientRecord], int]:
        """Ordered by name then id; `q` matches names ignoring case and accents; `only_ids` restricts
        the set."""
        ...

    async def exists(self, patient_id: uuid.UUID) -> bool: ...


def merge_attributes(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
