"""The audit chain: what a record's hash covers, the keyed hash, and appending under the chain lock.

Every audited change appends here, inside the transaction of the change it describes: the API's use
cases (services/audit.py, which adds who and from where) and the worker's activities (state changes
that workflows make). The caller commits; the chain lock, taken by the first call below, is held
until then, so each record links to the one committed before it.

Hash versions (all still verify):
1. sha256 of the canonical JSON with `prev_hash` inside (records before migration 0005);
2. sha256(prev_hash "\\n" body), computed by the database (migrations 0005 to 0006);
3. HMAC-SHA256(key, prev_hash "\\n" body), computed here with a key the database never sees
   (HC_AUDIT_HMAC_KEY), so whoever can write the database, its owner included, cannot rewrite a
   record or relink the chain without the verifier noticing. The body of version 3 also covers
   `detail`. Once a chain has a version-3 record, no later record may have an older version.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from healthcare.models import AuditRecord, utcnow

GENESIS = "0" * 64
KEYED = 3
# What the string columns hold at most (migrations 0002 and 0006); longer values are cut before
# hashing, so the row and what its hash covers never differ.
LIMITS = {"actor_role": 16, "action": 32, "resource_type": 32, "resource_id": 64, "client_ip": 64}
LIMITS |= {"request_id": 64, "outcome": 16, "detail": 2000}


@dataclass(frozen=True)
class Entry:
    """One audit record before it is linked: who did what to which resource, with what outcome.
    `detail` holds facts that are not patient data (a new role, a status change, an amount)."""

    action: str
    resource_type: str
    resource_id: str | None = None
    outcome: str = "ok"
    actor_id: uuid.UUID | None = None
    actor_role: str | None = None
    client_ip: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] | None = None
    at: datetime = field(default_factory=utcnow)


def _canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _cut(name: str, value: str | None) -> str | None:
    return value if value is None or len(value) <= LIMITS[name] else value[: LIMITS[name]]


def _fields(rec: AuditRecord) -> dict[str, str | None]:
    """What every version's hash covers, besides the chain link."""
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


def record_body(rec: AuditRecord) -> str:
    """The canonical JSON a version-2 or version-3 hash covers (everything but the chain fields)."""
    fields = _fields(rec)
    if rec.hash_version >= KEYED:
        return _canonical({**fields, "detail": rec.detail})
    return _canonical(fields)


def entry_body(entry: Entry) -> str:
    """The version-3 body of an entry, as the database will store it (audit_insert reads each
    column from it)."""
    detail = _canonical(entry.detail) if entry.detail is not None else None
    rec = AuditRecord(
        at=entry.at,
        actor_id=entry.actor_id,
        actor_role=_cut("actor_role", entry.actor_role),
        action=_cut("action", entry.action) or "",
        resource_type=_cut("resource_type", entry.resource_type) or "",
        resource_id=_cut("resource_id", entry.resource_id),
        client_ip=_cut("client_ip", entry.client_ip),
        request_id=_cut("request_id", entry.request_id),
        outcome=_cut("outcome", entry.outcome) or "",
        detail=_cut("detail", detail),
        prev_hash="",
        hash="",
        hash_version=KEYED,
    )
    return record_body(rec)


def keyed_hash(key: bytes, prev_hash: str, body: str) -> str:
    return hmac.new(key, f"{prev_hash}\n{body}".encode(), hashlib.sha256).hexdigest()


def record_hash(rec: AuditRecord, key: bytes) -> str:
    """The hash a stored record should carry, by its version."""
    if rec.hash_version == 1:  # records written before migration 0005: the link inside the JSON
        canonical = _canonical(_fields(rec) | {"prev_hash": rec.prev_hash})
        return hashlib.sha256(canonical.encode()).hexdigest()
    if rec.hash_version == 2:
        return hashlib.sha256(f"{rec.prev_hash}\n{record_body(rec)}".encode()).hexdigest()
    return keyed_hash(key, rec.prev_hash, record_body(rec))


async def append(session: AsyncSession, entries: Sequence[Entry], *, key: bytes) -> None:
    """Link and insert `entries` in the session's transaction; the caller commits.

    Two calls: `audit_head()` takes the chain lock and returns the last hash, then `audit_insert`
    stores the records with the hashes computed here (it checks that they link to that head). The
    key never reaches the database."""
    if not entries:
        return
    # Through the session's connection: the session's own execute() is deprecated for text in SQLModel.
    conn = await session.connection()
    head = (await conn.execute(text("SELECT audit_head()"))).scalar_one() or GENESIS
    prev = head
    bodies, hashes = [], []
    for entry in entries:
        body = entry_body(entry)
        prev = keyed_hash(key, prev, body)
        bodies.append(body)
        hashes.append(prev)
    await conn.execute(
        text("SELECT audit_insert(:head, :bodies, :hashes)"),
        {"head": head, "bodies": bodies, "hashes": hashes},
    )
