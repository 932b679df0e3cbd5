"""The billing consumer role: `appointment-events` in, one billing workflow per appointment out.

At-least-once: an offset is committed only after each event below it was accepted by Temporal, or
skipped, or parked on the dead-letter topic; the workflow id (`billing-<appointmentId>`) makes a
redelivered event a no-op. Each event is first checked against the stored appointment
(services/billing_events.py decides). An event refused for good (malformed, not matching a stored
appointment, refused permanently by Temporal, cancelling a failed run) is parked on the dead-letter
topic with the reason and consumption goes on; one refused for now (Temporal or the database
unavailable) is read again with back-off, and nothing from it on is committed. Logs name partitions,
offsets and ids, never an event's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from temporalio.client import Client as TemporalClient

from healthcare import clients, correlation, dead_letters, metrics
from healthcare.contracts.billing import billing_workflow_id
from healthcare.contracts.events import AppointmentEvent, RefusalReason
from healthcare.db import create_engine
from healthcare.dead_letters import DeadLetter, DeadLetterTopic
from healthcare.logging import get_logger
from healthcare.process import run_until_stopped
from healthcare.settings import Settings
from services import billing_events
from services.billing_events import Decision, StoredAppointment, Verdict

log = get_logger(__name__)

GROUP_ID = "billing-group"
MAX_BACKOFF = 30.0
DLQ_GAUGE_INTERVAL = 30.0

# The stored parties of a set of appointments (one database round trip per batch).
AppointmentLookup = Callable[[Collection[uuid.UUID]], Awaitable[dict[uuid.UUID, StoredAppointment]]]
# Park one dead letter; returns once the broker has it.
DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


class BillingConsumer:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        temporal: TemporalClient,
        settings: Settings,
        appointments: AppointmentLookup,
        dead_letters: DeadLetterSink,
        max_in_flight: int = 32,
    ) -> None:
        self._consumer = consumer
        self._temporal = temporal
        self._settings = settings  # the task queue and payment terms of the runs it starts
        self._appointments = appointments
        self._dead_letters = dead_letters
        self._backoff = 0.5
        # Starts and signals in flight at once: each is a round trip to Temporal.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._committed: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=1000, max_records=200)
            for tp, messages in batches.items():
                if stop.is_set():
                    return  # uncommitted messages are redelivered to whoever takes the partition
                await self._handle_partition(tp, messages, stop)
            self._report_lag()

    def _report_lag(self) -> None:
        """Lag per partition: the broker's high-water mark minus what this consumer committed."""
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            done = self._committed.get(tp)
            if high is None or done is None:
                continue  # not fetched from, or nothing committed here yet
            metrics.BILLING_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

    async def _handle_partition(
        self, tp: TopicPartition, messages: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> None:
        """Decide a batch, concurrently across appointments and in order within one.

        Events of one appointment share a key, hence a lane that runs in offset order and stops at
        its first event to retry. The committed offset is the end of the prefix decided in full;
        from the first event to retry on, the batch is read again (what was accepted is a no-op then).
        """
        events = {msg.offset: billing_events.parse(msg.value) for msg in messages}
        try:
            stored = await self._appointments({e.appointment_id for e in events.values() if e is not None})
        except Exception as exc:  # noqa: BLE001 - the database is down or slow: read the batch again
            await self._retry_from(
                tp, messages, messages[0].offset, f"appointments: {type(exc).__name__}", stop
            )
            return
        lanes: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
        for msg in messages:
            lanes.setdefault(msg.key, []).append(msg)
        retry: dict[int, Decision] = {}

        async def lane(batch: list[ConsumerRecord[bytes, bytes]]) -> None:
            for msg in batch:
                # The booking request's correlation id came along as a Kafka header: the billing
                # run it starts (header and memo) and this consumer's log lines carry it on.
                with correlation.bound(correlation.from_kafka_headers(msg.headers)):
                    decision = await self._decide(msg, events[msg.offset], stored)
                    if decision.verdict is Verdict.park:
                        decision = await self._park(msg, events[msg.offset], decision)
                if decision.verdict is Verdict.retry:
                    metrics.BILLING_EVENTS.labels("refused").inc()
                    retry[msg.offset] = decision
                    return

        # A TaskGroup: an unexpected error in one lane cancels the others before it propagates.
        try:
            async with asyncio.TaskGroup() as group:
                for batch in lanes.values():
                    group.create_task(lane(batch))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        if not retry:
            self._backoff = 0.5
            await self._commit(tp, messages[-1].offset)
            return
        first = min(retry)
        await self._retry_from(tp, messages, first, retry[first].detail, stop)

    async def _retry_from(
        self,
        tp: TopicPartition,
        messages: list[ConsumerRecord[bytes, bytes]],
        first: int,
        detail: str,
        stop: asyncio.Event,
    ) -> None:
        """Commit what was decided before `first`, read again from it after a back-off."""
        log.warning(
            "billing event refused for now; will retry", partition=tp.partition, offset=first, detail=detail
        )
        await self._commit(tp, max((m.offset for m in messages if m.offset < first), default=None))
        self._consumer.seek(tp, first)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    async def _decide(
        self,
        msg: ConsumerRecord[bytes, bytes],
        event: AppointmentEvent | None,
        stored: dict[uuid.UUID, StoredAppointment],
    ) -> Decision:
        if event is None:
            return Decision.park(RefusalReason.malformed, "not an appointment event")
        refusal = billing_events.check(
            event, stored.get(event.appointment_id), synthetic=billing_events.is_synthetic(msg.headers)
        )
        if refusal is not None:
            if refusal.verdict is Verdict.skipped:
                metrics.BILLING_EVENTS.labels("synthetic").inc()
                log.info("synthetic billing event skipped", partition=msg.partition, offset=msg.offset)
            return refusal
        async with self._in_flight:
            decision = await billing_events.bill(self._temporal, self._settings, event)
        if decision.verdict is Verdict.accepted:
            metrics.BILLING_EVENTS.labels("accepted").inc()
            log.info(
                "billing event handled",
                billing_event=event.event,
                workflow_id=billing_workflow_id(event.appointment_id),
                partition=msg.partition,
                offset=msg.offset,
            )
        return decision

    async def _park(
        self, msg: ConsumerRecord[bytes, bytes], event: AppointmentEvent | None, decision: Decision
    ) -> Decision:
        assert decision.reason is not None
        try:
            await self._dead_letters(DeadLetter.of(msg, decision.reason, decision.detail))
        except Exception as exc:  # noqa: BLE001 - not parked yet: keep it on the topic and retry
            return Decision(Verdict.retry, detail=f"dead-letter topic: {type(exc).__name__}")
        metrics.BILLING_EVENTS.labels("dead_lettered").inc()
        metrics.BILLING_DEAD_LETTERED.labels(decision.reason.value).inc()
        log.warning(
            "billing event parked on the dead-letter topic",
            reason=decision.reason.value,
            detail=decision.detail,
            appointment_id=str(event.appointment_id) if event else None,
            partition=msg.partition,
            offset=msg.offset,
        )
        return decision

    async def _commit(self, tp: TopicPartition, last_done: int | None) -> None:
        if last_done is not None:
            # Kafka's committed offset is the next one to read.
            await self._consumer.commit({tp: last_done + 1})
            self._committed[tp] = last_done + 1


async def report_dead_letters(
    settings: Settings, stop: asyncio.Event, interval: float = DLQ_GAUGE_INTERVAL
) -> None:
    """Keep the gauge of dead letters waiting for a redrive up to date (best effort)."""
    while not stop.is_set():
        try:
            async with DeadLetterTopic(settings) as topic:
                while not stop.is_set():
                    metrics.BILLING_DEAD_LETTERS_WAITING.set((await topic.backlog()).waiting)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), interval)
        except Exception as exc:  # noqa: BLE001 - a gauge must not stop billing
            log.warning("dead-letter gauge failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def run_consumer(
    settings: Settings, *, stop: asyncio.Event, group_id: str = GROUP_ID, **consumer_options: Any
) -> None:
    temporal = await clients.temporal_client(settings, runtime=metrics.temporal_runtime(settings))
    engine = create_engine(settings)
    producer = clients.kafka_producer(settings)
    consumer = clients.kafka_consumer(
        settings, settings.topic_appointment_events, group_id=group_id, **consumer_options
    )
    await producer.start()
    await consumer.start()
    dlq = settings.appointment_events_dlq

    async def lookup(ids: Collection[uuid.UUID]) -> dict[uuid.UUID, StoredAppointment]:
        return await billing_events.stored_appointments(engine, ids)

    async def park(letter: DeadLetter) -> None:
        await dead_letters.park(producer, dlq, letter)

    billing = BillingConsumer(
        consumer=consumer, temporal=temporal, settings=settings, appointments=lookup, dead_letters=park
    )
    gauge = asyncio.create_task(report_dead_letters(settings, stop))
    sdk_metrics = asyncio.create_task(metrics.drain_temporal_metrics_until(stop))
    log.info("billing consumer started", group=group_id, topic=settings.topic_appointment_events, dlq=dlq)
    try:
        await billing.run(stop)
    finally:
        gauge.cancel()
        sdk_metrics.cancel()
        await asyncio.gather(gauge, sdk_metrics, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
        log.info("billing consumer stopped")


def main() -> None:
    run_until_stopped(lambda settings, stop: run_consumer(settings, stop=stop))


if __name__ == "__main__":
    main()
