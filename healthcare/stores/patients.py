"""The patient store interface and its record type; back ends implement PatientStore."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from healthcare import errors
from healthcare.schemas import MAX_ATTRIBUTES_BYTES, attributes_size


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
    """The merged attributes; errors.Unprocessable if they would outgrow MAX_ATTRIBUTES_BYTES (each
    PATCH is checked alone, so without this, merges would grow a record without bound)."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if attributes_size(merged) > MAX_ATTRIBUTES_BYTES and attributes_size(merged) > attributes_size(current):
        raise errors.Unprocessable(
            f"attributes would exceed {MAX_ATTRIBUTES_BYTES} bytes after this change; remove some first"
        )
    return merged
