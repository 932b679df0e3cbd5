"""The audit trail, for admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminActor, Ctx, PageDep, SessionDep
from healthcare.schemas import NO_NUL, AuditPublic, Page
from services import audit

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=Page[AuditPublic])
async def list_audit(
    _: AdminActor,
    session: SessionDep,
    ctx: Ctx,
    page: PageDep,
    actor_id: Annotated[uuid.UUID | None, Query(alias="actorId")] = None,
    action: Annotated[str | None, Query(pattern=NO_NUL, max_length=32)] = None,
    resource_type: Annotated[str | None, Query(alias="resourceType", pattern=NO_NUL, max_length=32)] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", pattern=NO_NUL, max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditPublic]:
    items, total = await audit.list_records(
        session,
        ctx,
        limit=page.limit,
        offset=page.offset,
        actor_id=actor_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
    )
    return Page[AuditPublic](
        items=[AuditPublic.model_validate(r) for r in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
