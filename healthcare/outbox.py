"""Transactional outbox: queue an event with the change it announces; a relay publishes it to Kafka.

A writer calls `enqueue` inside its own transaction, so the row and its event commit or vanish
together (no dual write). `OutboxRelay` claims unpublished rows in seq order with
`FOR UPDATE SKIP LOCKED` (several worker replicas can run it side by side), sends them with the
idempotent producer, and marks them published in the same transaction. Delivery is at-least-once:
a crash between the send and the commit sends those rows again, under the same event id, which is
what consumers deduplicate on.

Failures are handled per row. A broker that cannot be reached fails the round as a whole and the
relay backs off; nothing is blamed on a row. A failure that belongs to one row (the broker answers
but does not know its topic, refuses its size, or takes the other rows of the round) counts an
attempt on that row, which then waits with its own back-off while the other rows go on. After
`max_attempts` the row is parked: kept in the table, never sent, reported (`healthcare outbox list`,
the `healthcare_outbox_parked` gauge) until an operator requeues it. The later rows of its key wait
behind it, so no appointment's events overtake each other.

The relay wakes on `NOTIFY outbox` (a trigger on the table, fired when the inserting transaction
commits) and polls every `poll_interval` in case a notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
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

# Rows due for a send: not parked, not waiting out their back-off, and not behind a parked row of
# their key (those wait for it; leaving them out keeps a pile of them from filling every batch).
_CLAIM = text(
    "SELECT o.seq, o.event_id, o.topic, o.key, o.value, o.attempts, o.correlation_id FROM outbox o"
    " WHERE o.published_at IS NULL AND o.parked_at IS NULL"
    " AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())"
    " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.parked_at IS NOT NULL AND p.published_at IS NULL"
    " AND p.key = o.key AND p.seq < o.seq)"
    " ORDER BY o.seq LIMIT :n FOR UPDATE OF o SKIP LOCKED"
)
# Claimed rows whose key has an earlier event still unpublished and not claimed by us (another
# relay holds it, or it failed and waits): sending them now could overtake it, so they wait.
_BLOCKED = text(
    "SELECT o.seq FROM outbox o WHERE o.seq = ANY(:seqs) AND o.key IS NOT NULL AND EXISTS ("
    " SELECT 1 FROM outbox p WHERE p.key = o.key AND p.published_at IS NULL AND p.seq < o.seq"
    " AND NOT (p.seq = ANY(:seqs)))"
)
_MARK = text("UPDATE outbox SET published_at = now() WHERE seq = ANY(:seqs)")
# One failed attempt of a row: its own exponential back-off (from the attempts before this one),
# parked once it reaches the limit.
_FAILED = text(
    "UPDATE outbox SET attempts = attempts + 1, last_error = :error,"
    " next_attempt_at = now() + make_interval(secs => LEAST(:base * power(2, attempts), :cap)),"
    " parked_at = CASE WHEN attempts + 1 >= :max THEN now() END"
    " WHERE seq = :seq"
)
_GAUGES = text(
    "SELECT count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,"
    " count(*) FILTER (WHERE parked_at IS NULL) AS pending,"
    " extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) AS oldest"
    " FROM outbox WHERE published_at IS NULL"
)
# Errors that say something about the row itself, whatever else the broker is doing.
_ROW_ERRORS = (
    UnknownTopicOrPartitionError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
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
    parked: int = 0


class RoundResult(NamedTuple):
    """One relay round: rows published; rows not published (failed, or held behind a failed row of
    their key); rows parked by this round; whether the broker failed as a whole (nothing sent)."""

    published: int
    failed: int
    parked: int = 0
    outage: bool = False


class _RowFailure(NamedTuple):
    seq: int
    attempts: int  # before this one
    error: str
    attributed: bool  # certainly the row's fault (else only when other rows of the round got through)


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
        max_attempts: int = 10,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        metadata_timeout: float = 10.0,
        gauge_interval: float = 15.0,
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
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._metadata_timeout = metadata_timeout
        self._gauge_interval = gauge_interval
        self._wake = asyncio.Event()
        self.stats = OutboxStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; a broker or database outage is retried with back-off."""
        helpers = [
            asyncio.create_task(self._cleanup_loop(stop), name="outbox-cleanup"),
            asyncio.create_task(self._gauge_loop(stop), name="outbox-gauges"),
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
                    result = await self.drain_once()
                    outage = result.outage
                except Exception as exc:  # noqa: BLE001 - the relay outlives broker and database outages
                    self.stats.rounds_failed += 1
                    metrics.OUTBOX_ROUNDS_FAILED.inc()
                    # The type only: messages of driver errors can quote row values.
                    log.warning(
                        "outbox round failed; rows stay queued", error=type(exc).__name__, retry_in=backoff
                    )
                    outage = True
                if outage:
                    # New rows must not shorten the back-off: only `stop` ends it early.
                    await _sleep(stop, backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                backoff = 0.5
                # A failed row waits out its own back-off; a round that filled its batch goes on at once.
                if result.published + result.failed < self._batch_size:
                    await self._idle()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info("outbox relay stopped", **vars(self.stats))

    async def drain_once(self) -> RoundResult:
        """One round: claim up to `batch_size` due rows, send them, mark the sent ones, count the
        failed ones' attempts (parking those at the limit), commit.

        A failed row, and later rows of its key, stay queued for a later round; so do rows held back
        behind another relay's earlier row.
        """
        async with self._engine.connect() as conn, conn.begin():
            rows = (await conn.execute(_CLAIM, {"n": self._batch_size})).all()
            if not rows:
                return RoundResult(0, 0)
            seqs = [row.seq for row in rows]
            blocked = set((await conn.execute(_BLOCKED, {"seqs": seqs})).scalars())
            ready = [row for row in rows if row.seq not in blocked]
            sent, failures = await self._send(ready)
            if sent:
                await self._mark(conn, sent)
            # Without a single ack the broker itself may be down: nothing is blamed on a row then.
            blamed = [f for f in failures if f.attributed or sent]
            if blamed:
                await conn.execute(
                    _FAILED,
                    [
                        {
                            "seq": f.seq,
                            "error": f.error,
                            "base": self._retry_base,
                            "cap": self._retry_cap,
                            "max": self._max_attempts,
                        }
                        for f in blamed
                    ],
                )
        parked = [f for f in blamed if f.attempts + 1 >= self._max_attempts]
        self.stats.published += len(sent)
        metrics.OUTBOX_PUBLISHED.inc(len(sent))
        if parked:
            self.stats.parked += len(parked)
            metrics.OUTBOX_PARKED_TOTAL.inc(len(parked))
            for f in parked:
                log.error("outbox row parked", seq=f.seq, error=f.error, attempts=f.attempts + 1)
        return RoundResult(
            published=len(sent),
            failed=len(ready) - len(sent),
            parked=len(parked),
            outage=bool(failures) and not sent and not blamed,
        )

    async def _send(self, rows: Sequence[Row[Any]]) -> tuple[list[int], list[_RowFailure]]:
        """Send the rows (batched by the producer), then wait for all: (the seqs that were acked,
        the rows whose send failed). A row whose key failed earlier in the round is not acked either:
        it goes again after that one."""
        unknown = await self._unknown_topics({row.topic for row in rows})
        first_failed: dict[bytes | None, int] = {}  # per key, the seq of its first failure this round
        failures: list[_RowFailure] = []
        pending: list[tuple[Row[Any], asyncio.Future[Any]]] = []
        async with asyncio.timeout(self._send_timeout):
            for row in rows:  # in seq order
                if row.key in first_failed:
                    continue  # behind a failed row of its key: not sent at all
                error: BaseException | None = UnknownTopicOrPartitionError() if row.topic in unknown else None
                if error is None:
                    try:
                        headers = correlation.kafka_headers(row.correlation_id)
                        acking = await self._producer.send(row.topic, row.value, key=row.key, headers=headers)
                        pending.append((row, acking))
                        continue
                    except KafkaError as exc:
                        error = exc
                first_failed[row.key] = row.seq
                failures.append(_RowFailure(row.seq, row.attempts, type(error).__name__, _row_fault(error)))
            results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        acked: list[int] = []
        for (row, _), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(_RowFailure(row.seq, row.attempts, type(result).__name__, _row_fault(result)))
                first_failed[row.key] = min(first_failed.get(row.key, row.seq), row.seq)
            elif first_failed.get(row.key, row.seq) >= row.seq:
                acked.append(row.seq)
            # else: sent after an earlier event of its key failed; it goes again after that one
        not_sent = len(rows) - len(acked)
        if not_sent:
            self.stats.send_failures += not_sent
            metrics.OUTBOX_SEND_FAILURES.inc(not_sent)
            errors = sorted({f.error for f in failures})
            log.warning("outbox sends failed; rows stay queued", failed=not_sent, errors=errors)
        return acked, failures

    async def _unknown_topics(self, topics: set[str]) -> set[str]:
        """Topics the broker says it does not have. Asked only about topics the producer has no
        metadata for yet (a send to such a topic would otherwise wait out its whole timeout); an
        unreachable broker raises, which fails the round as a whole."""
        client = getattr(self._producer, "client", None)
        if client is None:
            return set()
        missing = {t for t in topics if client.cluster.partitions_for_topic(t) is None}
        if not missing:
            return set()
        async with asyncio.timeout(self._metadata_timeout):
            cluster = await client.fetch_all_metadata()
        return {t for t in missing if cluster.partitions_for_topic(t) is None}

    async def _mark(self, conn: AsyncConnection, seqs: list[int]) -> None:
        await conn.execute(_MARK, {"seqs": seqs})

    async def cleanup_once(self) -> int:
        """Delete one bounded batch of rows published longer than `retention` ago."""
        async with self._engine.begin() as conn:
            result = await conn.execute(_CLEANUP, {"age": self._retention, "n": self._cleanup_batch})
        deleted = max(result.rowcount, 0)
        self.stats.deleted += deleted
        return deleted

    async def refresh_gauges(self) -> None:
        """Rows parked, rows waiting to be sent and the age of the oldest one, for Prometheus."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_GAUGES)).one()
        metrics.OUTBOX_PARKED.set(row.parked)
        metrics.OUTBOX_PENDING.set(row.pending)
        metrics.OUTBOX_OLDEST_PENDING_SECONDS.set(float(row.oldest or 0))

    async def _gauge_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_gauges()
            except Exception as exc:  # noqa: BLE001 - gauges are best effort; the next round retries
                log.warning("outbox gauges failed", error=type(exc).__name__)
            await _sleep(stop, self._gauge_interval)

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


def _row_fault(error: BaseException) -> bool:
    return isinstance(error, _ROW_ERRORS)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
