"""Operator tasks for the transactional outbox: what is waiting, what is parked, and requeueing it.

A parked row (healthcare/outbox.py) failed `HC_OUTBOX_MAX_ATTEMPTS` sends, each the row's own fault
(say, its topic does not exist); it stays in the table, unsent, with the later rows of its key held
behind it. Once the cause is fixed (the topic created), `requeue` gives it a fresh set of attempts.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class OutboxSummary:
    pending: int  # waiting to be sent (parked rows apart)
    failing: int  # of those, rows that failed at least once and wait for their next attempt
    parked: int
    held: int  # waiting behind a parked row of their key
    oldest_pending_seconds: float


@dataclass(frozen=True)
class ParkedRow:
    seq: int
    event_id: str
    topic: str
    key: str | None  # the appointment id the row is keyed by
    attempts: int
    last_error: str | None
    created_at: datetime
    parked_at: datetime
    held: int  # later rows of its key waiting behind it


_SUMMARY = text(
    "SELECT count(*) FILTER (WHERE o.parked_at IS NULL) AS pending,"
    " count(*) FILTER (WHERE o.parked_at IS NULL AND o.attempts > 0) AS failing,"
    " count(*) FILTER (WHERE o.parked_at IS NOT NULL) AS parked,"
    " count(*) FILTER (WHERE o.parked_at IS NULL AND EXISTS (SELECT 1 FROM outbox p"
    "   WHERE p.parked_at IS NOT NULL AND p.published_at IS NULL"
    "   AND p.key = o.key AND p.seq < o.seq)) AS held,"
    " coalesce(extract(epoch FROM now() - min(o.created_at) FILTER (WHERE o.parked_at IS NULL)), 0) AS oldest"
    " FROM outbox o WHERE o.published_at IS NULL"
)
_PARKED = text(
    "SELECT o.seq, o.event_id, o.topic, o.key, o.attempts, o.last_error, o.created_at, o.parked_at,"
    " (SELECT count(*) FROM outbox f"
    "  WHERE f.published_at IS NULL AND f.key = o.key AND f.seq > o.seq) AS held"
    " FROM outbox o WHERE o.parked_at IS NOT NULL AND o.published_at IS NULL ORDER BY o.seq LIMIT :n"
)
_REQUEUE = text(
    "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = NULL, last_error = NULL"
    " WHERE parked_at IS NOT NULL AND published_at IS NULL AND (:all OR seq IN :seqs) RETURNING seq"
).bindparams(bindparam("seqs", expanding=True))


async def summary(engine: AsyncEngine) -> OutboxSummary:
    async with engine.connect() as conn:
        row = (await conn.execute(_SUMMARY)).one()
    return OutboxSummary(
        pending=row.pending,
        failing=row.failing,
        parked=row.parked,
        held=row.held,
        oldest_pending_seconds=float(row.oldest),
    )


async def parked_rows(engine: AsyncEngine, *, limit: int = 100) -> list[ParkedRow]:
    async with engine.connect() as conn:
        rows = (await conn.execute(_PARKED, {"n": limit})).all()
    return [
        ParkedRow(
            seq=r.seq,
            event_id=str(r.event_id),
            topic=r.topic,
            key=r.key.decode(errors="replace") if r.key is not None else None,
            attempts=r.attempts,
            last_error=r.last_error,
            created_at=r.created_at,
            parked_at=r.parked_at,
            held=r.held,
        )
        for r in rows
    ]


async def requeue(engine: AsyncEngine, seqs: Collection[int] | None = None) -> list[int]:
    """Give parked rows (these, or all with None) a fresh set of attempts; the relay sends them on
    its next round (woken at once by NOTIFY). Returns the seqs requeued."""
    async with engine.begin() as conn:
        result = await conn.execute(_REQUEUE, {"all": seqs is None, "seqs": list(seqs or [-1])})
        requeued = sorted(result.scalars())
        if requeued:
            await conn.execute(text("SELECT pg_notify('outbox', '')"))
    return requeued
