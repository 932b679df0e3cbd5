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
from healthcare.services.context import RequestContext

GENESIS = "0" * 64
# Every audited transaction takes this lock, so each record links to the one committed before it.
_CHAIN_LOCK = 0x6175646974  # "audit"


def record_hash(rec: AuditRecord) -> str:
    body = {
        "at": rec.at.isoformat(),
        "actor_id": str(rec.actor_id) if rec.actor_id else None,
        "actor_role": rec.actor_role,
        "action": rec.action,
        "resource_type": rec.resource_type,
        "resource_id": rec.resource_id,
        "client_ip": rec.client_ip,
        "request_id": rec.request_id,
        "outcome": rec.outcome,
        "prev_hash": rec.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
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
    """One record per resource (a list of ten patients leaves ten records), under one chain lock."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    last = await session.scalar(select(AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1))
    prev = last or GENESIS
    actor = ctx.actor
    for resource_id in resource_ids:
        rec = AuditRecord(
            at=utcnow(),
            actor_id=actor_id or (actor.user_id if actor else None),
            actor_role=actor_role or (actor.role.value if actor else None),
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id) if resource_id is not None else None,
            client_ip=ctx.client_ip,
            request_id=ctx.request_id,
            outcome=outcome,
            prev_hash=prev,
            hash="",
        )
        rec.hash = record_hash(rec)
        prev = rec.hash
        session.add(rec)
    await session.flush()


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
