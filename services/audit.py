"""The audit trail: recording every access to patient data and every login, verifying the chain, and
anchoring its head outside the database."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import audit as chain
from healthcare import errors
from healthcare.db import page
from healthcare.models import AuditRecord, utcnow
from services.context import RequestContext

T = TypeVar("T")

GENESIS = chain.GENESIS


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
    detail: Mapping[str, Any] | None = None,
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
        detail=detail,
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
    detail: Mapping[str, Any] | None = None,
) -> None:
    """One record per resource (a list of ten patients leaves ten records; an empty list one record
    without a resource), under one chain lock (healthcare/audit.py), then commit; the lock is
    released by the commit."""
    actor = ctx.actor
    now = utcnow()
    entries = [
        chain.Entry(
            at=now,
            actor_id=actor_id or (actor.user_id if actor else None),
            actor_role=actor_role or (actor.role.value if actor else None),
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id) if resource_id is not None else None,
            client_ip=ctx.client_ip,
            request_id=ctx.request_id,
            outcome=outcome,
            detail=detail,
        )
        for resource_id in resource_ids or [None]
    ]
    await chain.append(session, entries, key=ctx.audit_key)
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


# -- Anchors: the chain's head, outside the database ---------------------------------------------
@dataclass(frozen=True)
class Anchor:
    """The head of the chain at a moment, signed with the audit key and kept in object storage, so
    that deleting the newest records (which leaves an intact, shorter chain) is detected."""

    seq: int
    hash: str
    at: datetime

    def _signed_part(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at.isoformat()}, sort_keys=True)

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self._signed_part().encode(), hashlib.sha256).hexdigest()

    def to_json(self, key: bytes) -> bytes:
        body = {"seq": self.seq, "hash": self.hash, "at": self.at.isoformat(), "mac": self.signature(key)}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, key: bytes) -> Anchor | None:
        """The anchor, or None when it is unreadable or not signed with `key` (forged)."""
        try:
            data = json.loads(raw)
            anchor = cls(seq=int(data["seq"]), hash=str(data["hash"]), at=datetime.fromisoformat(data["at"]))
        except (ValueError, KeyError, TypeError):
            return None
        return anchor if hmac.compare_digest(anchor.signature(key), str(data.get("mac", ""))) else None


def anchor_key(prefix: str, seq: int) -> str:
    # Zero-padded, so the listing's order is the chain's order and the last key is the newest head.
    return f"{prefix}{seq:020d}.json"


async def chain_head(session: AsyncSession) -> tuple[int, str] | None:
    """The last committed record's (seq, hash)."""
    newest = select(AuditRecord.seq, AuditRecord.hash).order_by(col(AuditRecord.seq).desc()).limit(1)
    row = (await session.execute(newest)).first()
    return (int(row[0]), str(row[1])) if row else None


async def write_anchor(
    session: AsyncSession, s3: Any, *, bucket: str, prefix: str, key: bytes, after_seq: int | None = None
) -> Anchor | None:
    """Store the current head (committed records) under `prefix`; None when the chain is empty or
    has not grown past `after_seq` (nothing new to anchor)."""
    head = await chain_head(session)
    await session.commit()  # end the read: the upload below needs no connection
    if head is None or (after_seq is not None and head[0] <= after_seq):
        return None
    anchor = Anchor(seq=head[0], hash=head[1], at=utcnow())
    await asyncio.to_thread(
        s3.put_object,
        Bucket=bucket,
        Key=anchor_key(prefix, anchor.seq),
        Body=anchor.to_json(key),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )
    return anchor


@dataclass(frozen=True)
class StoredAnchor:
    key: str
    anchor: Anchor | None  # None: present but not signed with the audit key


async def latest_anchor(s3: Any, *, bucket: str, prefix: str, key: bytes) -> StoredAnchor | None:
    def newest() -> tuple[str, bytes] | None:
        last = None
        for page_ in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            contents = page_.get("Contents") or []
            if contents:
                last = max((obj["Key"] for obj in contents), default=last)
        if last is None:
            return None
        return last, s3.get_object(Bucket=bucket, Key=last)["Body"].read()

    found = await asyncio.to_thread(newest)
    if found is None:
        return None
    return StoredAnchor(key=found[0], anchor=Anchor.from_json(found[1], key))


# -- Verification ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyResult:
    checked: int
    first_bad_seq: int | None
    reason: str | None
    anchored_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None


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


def _fault(
    rec: AuditRecord, prev: str, newest_version: int, key: bytes, anchored: Anchor | None
) -> str | None:
    """What is wrong with one record, given the chain before it; None when nothing."""
    if rec.prev_hash != prev:
        return "link to the previous record is broken (deleted or reordered)"
    if rec.hash_version < newest_version:
        return "an unkeyed record after keyed ones (rewritten without the key)"
    if chain.record_hash(rec, key) != rec.hash:
        return "record content does not match its hash (edited)"
    if anchored is not None and rec.seq == anchored.seq and rec.hash != anchored.hash:
        return "record differs from the anchored head (rewritten)"
    return None


async def verify(session: AsyncSession, *, key: bytes, anchor: StoredAnchor | None = None) -> VerifyResult:
    """Recompute the chain: an edited record breaks its own hash, a deleted one breaks the next link,
    a record rewritten without the key fails its HMAC (or falls back to an unkeyed version, which is
    refused after the first keyed record). With `anchor`, the chain must reach the anchored head
    unchanged: a deleted tail leaves a chain that ends before it."""
    if anchor is not None and anchor.anchor is None:
        return VerifyResult(0, None, f"anchor {anchor.key} is not signed with the audit key (forged)")
    anchored = anchor.anchor if anchor else None
    prev, checked, newest_version, last_seq = GENESIS, 0, 0, 0
    async for rec in _records(session):
        fault = _fault(rec, prev, newest_version, key, anchored)
        if fault is not None:
            return VerifyResult(checked, rec.seq, fault)
        newest_version = max(newest_version, rec.hash_version)
        prev, last_seq = rec.hash, rec.seq or 0
        checked += 1
    if anchored is not None and last_seq < anchored.seq:
        return VerifyResult(
            checked,
            last_seq + 1,
            f"records after {last_seq} are missing: the anchor of {anchored.at.isoformat()} saw the "
            f"chain reach {anchored.seq} (a deleted tail)",
        )
    return VerifyResult(checked, None, None, anchored_seq=anchored.seq if anchored else None)


async def list_records(
    session: AsyncSession,
    ctx: RequestContext,
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
    rows, total = await page(
        session, AuditRecord, where=conditions, order_by=[AuditRecord.seq.desc()], limit=limit, offset=offset
    )
    # Reading the trail is itself recorded: what was asked for (ids and dates, never patient data).
    asked = {
        "actorId": str(actor_id) if actor_id else None,
        "action": action,
        "resourceType": resource_type,
        "resourceId": resource_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "offset": offset,
        "returned": len(rows),
    }
    await record(
        session,
        ctx,
        action="list",
        resource_type="audit_log",
        detail={k: v for k, v in asked.items() if v is not None},
    )
    return rows, total
