"""The audit trail: append-only, hash-chained records of every access to patient data and every login."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.db import page
from healthcare.models import AuditRecord, utcnow
from services.context import RequestContext

T = TypeVar("T")

GENESIS = "0" * 64
# Every audited transaction takes one advisory lock (0x6175646974, "audit", inside audit_append)
# until it commits, so each record links to the one committed before it.


def _fields(rec: AuditRecord) -> dict[str, str | None]:
    """What a record's hash covers, besides the chain link."""
    return {
        "at": rec.at.isoformat(),
        "actor_id": str(rec.actor_id) if rec.actor_id else None,
        "actor_role": rec.actor_role,
        "action": rec.action,
        "resource_type": rec.resource_type,
        "resource_id": rec.resource_id,
        "client_ip": rec.client_ip,
        "request_id": rec.request_id,
        "outcome": rec.outcome,
    }


def _canonical(fields: dict[str, str | None]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def record_body(rec: AuditRecord) -> str:
    """The canonical JSON a version-2 hash covers (everything but the chain fields)."""
    return _canonical(_fields(rec))


def record_hash(rec: AuditRecord) -> str:
    if rec.hash_version == 1:  # records written before migration 0005: the link inside the JSON
        canonical = _canonical(_fields(rec) | {"prev_hash": rec.prev_hash})
    else:
        canonical = f"{rec.prev_hash}\n{record_body(rec)}"
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(
    session: AsyncSession,
    ctx: RequestContext,
    *,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | str | None = None,
    outcome: str = "ok",
    actor_id: uuid.UUID | None = None,
    actor_role: str | None = None,
) -> None:
    """Append one record to the caller's transaction and commit both: the record lands with the data
    it describes, or neither does. Every audited use case ends here (or in `record_many`)."""
    await record_many(
        session,
        ctx,
        action=action,
        resource_type=resource_type,
        resource_ids=[resource_id],
        outcome=outcome,
        actor_id=actor_id,
        actor_role=actor_role,
    )


async def record_many(
    session: AsyncSession,
    ctx: RequestContext,
    *,
    action: str,
    resource_type: str,
    resource_ids: Sequence[uuid.UUID | str | None],
    outcome: str = "ok",
    actor_id: uuid.UUID | None = None,
    actor_role: str | None = None,
) -> None:
    """One record per resource (a list of ten patients leaves ten records; an empty list one record
    without a resource), under one chain lock, then commit.

    One database call (`audit_append`, migration 0005) takes the lock, links and inserts the
    records; the lock is released by the commit, so it is held for that call and the commit only."""
    actor = ctx.actor
    now = utcnow()
    bodies = [
        record_body(
            AuditRecord(
                at=now,
                actor_id=actor_id or (actor.user_id if actor else None),
                actor_role=actor_role or (actor.role.value if actor else None),
                action=action,
                resource_type=resource_type,
                resource_id=str(resource_id) if resource_id is not None else None,
                client_ip=ctx.client_ip,
                request_id=ctx.request_id,
                outcome=outcome,
                prev_hash="",
                hash="",
            )
        )
        for resource_id in resource_ids or [None]
    ]
    await session.execute(text("SELECT audit_append(:bodies)"), {"bodies": bodies})
    await session.commit()


async def access_or_404(
    session: AsyncSession,
    ctx: RequestContext,
    found: T | None,
    *,
    resource_type: str,
    resource_id: uuid.UUID,
    not_found: str,
    action: str = "read",
) -> T:
    """The audited access to one record: `found` is the record if it exists and the actor may see
    it, else None. Either way the attempt is recorded (ok or denied) before the answer; someone
    else's record and a missing one both answer 404."""
    await record(
        session,
        ctx,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome="ok" if found is not None else "denied",
    )
    if found is None:
        raise errors.NotFound(not_found)
    return found


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    first_bad_seq: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


async def _records(session: AsyncSession, batch: int = 1000) -> AsyncIterator[AuditRecord]:
    last_seq = 0
    while True:
        rows = (
            await session.exec(
                select(AuditRecord).where(AuditRecord.seq > last_seq).order_by(AuditRecord.seq).limit(batch)
            )
        ).all()
        if not rows:
            return
        for rec in rows:
            yield rec
        last_seq = rows[-1].seq or last_seq


async def verify(session: AsyncSession) -> VerifyResult:
    """Recompute the chain: an edited record breaks its own hash, a deleted one breaks the next link."""
    prev = GENESIS
    checked = 0
    async for rec in _records(session):
        if rec.prev_hash != prev:
            return VerifyResult(
                checked, rec.seq, "link to the previous record is broken (deleted or reordered)"
            )
        if record_hash(rec) != rec.hash:
            return VerifyResult(checked, rec.seq, "record content does not match its hash (edited)")
        prev = rec.hash
        checked += 1
    return VerifyResult(checked, None, None)


async def list_records(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    actor_id: uuid.UUID | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[AuditRecord], int]:
    conditions = []
    if actor_id:
        conditions.append(AuditRecord.actor_id == actor_id)
    if action:
        conditions.append(AuditRecord.action == action)
    if resource_type:
        conditions.append(AuditRecord.resource_type == resource_type)
    if resource_id:
        conditions.append(AuditRecord.resource_id == resource_id)
    if since:
        conditions.append(AuditRecord.at >= since)
    if until:
        conditions.append(AuditRecord.at < until)
    return await page(
        session, AuditRecord, where=conditions, order_by=[AuditRecord.seq.desc()], limit=limit, offset=offset
    )
