"""Transactional outbox: queue an event with the change it announces; a relay publishes it to Kafka.

A writer calls `enqueue` inside its own transaction, so the row and its event commit or vanish
together (no dual write). `OutboxRelay` claims unpublished rows in seq order with
`FOR UPDATE SKIP LOCKED` (several worker replicas can run it side by side), sends them with the
idempotent producer, and marks them published in the same transaction. Delivery is at-least-once:
a crash between the send and the commit sends those rows again, under the same event id, which is
what consumers deduplicate on.

The relay wakes on `NOTIFY outbox` (a trigger on the table, fired when the inserting transaction
commits) and polls every `poll_interval` in case a notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from sqlalchemy import Row, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import correlation, metrics
from healthcare.contracts.events import AppointmentEvent
from healthcare.logging import get_logger
from healthcare.models import OutboxRecord

log = get_logger(__name__)

CHANNEL = "outbox"

_CLAIM = text(
    "SELECT seq, event_id, topic, key, value, correlation_id FROM outbox WHERE published_at IS NULL "
    "ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED"
)
# Claimed rows whose key has an earlier event still unpublished and not claimed by us (another
# relay holds it, or it failed): sending them now could overtake it, so they wait for a later round.
_BLOCKED = text(
    "SELECT o.seq FROM outbox o WHERE o.seq = ANY(:seqs) AND o.key IS NOT NULL AND EXISTS ("
    " SELECT 1 FROM outbox p WHERE p.key = o.key AND p.published_at IS NULL AND p.seq < o.seq"
    " AND NOT (p.seq = ANY(:seqs)))"
)
_MARK = text("UPDATE outbox SET published_at = now() WHERE seq = ANY(:seqs)")
_CLEANUP = text(
    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
    " WHERE published_at < now() - CAST(:age AS interval) ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED)"
)


async def enqueue(session: AsyncSession, *, topic: str, event: AppointmentEvent) -> None:
    """Add the event to the session's transaction; an event id already queued is left as it is.

    The request's correlation id (when one is bound) goes with it, and out as a Kafka header."""
    stmt = (
        insert(OutboxRecord)
        .values(
            event_id=event.event_id,
            topic=topic,
            key=event.key(),
            value=event.value(),
            correlation_id=correlation.current(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    await session.exec(stmt)


@dataclass
class OutboxStats:
    """Counters for logs and metrics; monotonic over the relay's life."""

    published: int = 0
    send_failures: int = 0
    rounds_failed: int = 0
    deleted: int = 0


class OutboxRelay:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        send_timeout: float = 30.0,
        max_backoff: float = 30.0,
        retention: timedelta = timedelta(days=7),
        cleanup_interval: float = 300.0,
        cleanup_batch: int = 1000,
        listen: bool = True,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._send_timeout = send_timeout
        self._max_backoff = max_backoff
        self._retention = retention
        self._cleanup_interval = cleanup_interval
        self._cleanup_batch = cleanup_batch
        self._listen = listen
        self._wake = asyncio.Event()
        self.stats = OutboxStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; a broker or database outage is retried with back-off."""
        helpers = [
            asyncio.create_task(self._cleanup_loop(stop), name="outbox-cleanup"),
            asyncio.create_task(self._wake_on(stop), name="outbox-stop"),
        ]
        if self._listen:
            helpers.append(asyncio.create_task(self._listen_loop(stop), name="outbox-listen"))
        backoff = 0.5
        log.info("outbox relay started", batch_size=self._batch_size)
        try:
            while not stop.is_set():
                self._wake.clear()  # a commit from now on wakes the next round
                try:
                    published, failed = await self.drain_once()
                except Exception as exc:  # noqa: BLE001 - the relay outlives broker and database outages
                    self.stats.rounds_failed += 1
                    metrics.OUTBOX_ROUNDS_FAILED.inc()
                    # The type only: messages of driver errors can quote row values.
                    log.warning(
                        "outbox round failed; rows stay queued", error=type(exc).__name__, retry_in=backoff
                    )
                    failed = 1
                if failed:
                    # New rows must not shorten the back-off: only `stop` ends it early.
                    await _sleep(stop, backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                backoff = 0.5
                if published < self._batch_size:
                    await self._idle()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info("outbox relay stopped", **vars(self.stats))

    async def drain_once(self) -> tuple[int, int]:
        """One round: claim up to `batch_size` rows, send them, mark the sent ones, commit.

        Returns (rows published, rows whose send failed). A failed row, and later rows of its key,
        stay queued for a later round; so do rows held back behind another relay's earlier row.
        """
        async with self._engine.connect() as conn, conn.begin():
            rows = (await conn.execute(_CLAIM, {"n": self._batch_size})).all()
            if not rows:
                return 0, 0
            seqs = [row.seq for row in rows]
            blocked = set((await conn.execute(_BLOCKED, {"seqs": seqs})).scalars())
            ready = [row for row in rows if row.seq not in blocked]
            sent = await self._send(ready)
            if sent:
                await self._mark(conn, sent)
        self.stats.published += len(sent)
        metrics.OUTBOX_PUBLISHED.inc(len(sent))
        return len(sent), len(ready) - len(sent)

    async def _send(self, rows: Sequence[Row[Any]]) -> list[int]:
        """Send every row (batched by the producer), then wait for all: the seqs that were acked."""
        async with asyncio.timeout(self._send_timeout):
            futures = [
                await self._producer.send(
                    row.topic, row.value, key=row.key, headers=correlation.kafka_headers(row.correlation_id)
                )
                for row in rows
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
        failed_keys: set[bytes | None] = set()
        acked: list[int] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException) or row.key in failed_keys:
                # A later event of a key whose earlier event failed is sent again after it.
                failed_keys.add(row.key)
                continue
            acked.append(row.seq)
        failures = len(rows) - len(acked)
        if failures:
            self.stats.send_failures += failures
            metrics.OUTBOX_SEND_FAILURES.inc(failures)
            errors = sorted({type(r).__name__ for r in results if isinstance(r, BaseException)})
            log.warning("outbox sends failed; rows stay queued", failed=failures, errors=errors)
        return acked

    async def _mark(self, conn: AsyncConnection, seqs: list[int]) -> None:
        await conn.execute(_MARK, {"seqs": seqs})

    async def cleanup_once(self) -> int:
        """Delete one bounded batch of rows published longer than `retention` ago."""
        async with self._engine.begin() as conn:
            result = await conn.execute(_CLEANUP, {"age": self._retention, "n": self._cleanup_batch})
        deleted = max(result.rowcount, 0)
        self.stats.deleted += deleted
        return deleted

    async def _cleanup_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # Bounded per round: a large backlog is worked off over several rounds.
                for _ in range(10):
                    if await self.cleanup_once() < self._cleanup_batch:
                        break
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort; the next round retries
                log.warning("outbox cleanup failed", error=type(exc).__name__)
            await _sleep(stop, self._cleanup_interval)

    async def _listen_loop(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection of its own (not a pool slot), reconnecting after a failure."""
        dsn = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while not stop.is_set():
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(CHANNEL, lambda *_args: self._wake.set())
                self._wake.set()  # whatever was committed while we were not listening
                backoff = 0.5
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers the gap until LISTEN is back
                log.warning("outbox listen failed; polling", error=type(exc).__name__, retry_in=backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _idle(self) -> None:
        """Wait for a notification (or `stop`), at most `poll_interval`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_interval)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
