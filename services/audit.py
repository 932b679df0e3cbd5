"""The audit trail: append-only, hash-chained records of every access to patient data and every login."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare.models import AuditRecord, utcnow
from services.context import RequestContext

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


async def append(
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
    """Add a record to the caller's transaction: it commits (or rolls back) with the data it describes."""
    await append_many(
        session,
        ctx,
        action=action,
        resource_type=resource_type,
        resource_ids=[resource_id],
        outcome=outcome,
        actor_id=actor_id,
        actor_role=actor_role,
    )


async def append_many(
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
    """One record per resource (a list of ten patients leaves ten records), under one chain lock.

    One database call (`audit_append`, migration 0005) takes the lock, links and inserts the
    records; the lock is released when the caller's transaction commits, so it is held for that
    call and the commit only."""
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
        for resource_id in resource_ids
    ]
    await session.execute(text("SELECT audit_append(:bodies)"), {"bodies": bodies})


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
    total = await session.scalar(select(func.count()).select_from(AuditRecord).where(*conditions))
    rows = (
        await session.exec(
            select(AuditRecord)
            .where(*conditions)
            .order_by(AuditRecord.seq.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return list(rows), int(total or 0)
