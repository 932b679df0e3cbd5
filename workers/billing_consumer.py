"""The billing consumer role: `appointment-events` in, one billing workflow per appointment out.

At-least-once: an offset is committed only after Temporal accepted the start or the signal, and the
workflow id (`billing-<appointmentId>`) makes a redelivered event a no-op. A malformed event is
logged by partition and offset (never its content: it names a patient) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from temporalio.client import Client as TemporalClient
from temporalio.service import RPCError

from healthcare import clients, correlation, metrics
from healthcare.contracts.billing import CancelSignal, billing_workflow_id
from healthcare.contracts.events import AppointmentEvent, EventType
from healthcare.logging import get_logger
from healthcare.process import run_until_stopped
from healthcare.settings import Settings
from services.billing import start_billing_run

log = get_logger(__name__)

GROUP_ID = "billing-group"
MAX_BACKOFF = timedelta(seconds=30)


class BillingConsumer:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        temporal: TemporalClient,
        settings: Settings,
        max_in_flight: int = 32,
    ) -> None:
        self._consumer = consumer
        self._temporal = temporal
        self._settings = settings  # the task queue and payment terms of the runs it starts
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
        """Hand a batch to Temporal, concurrently across appointments and in order within one.

        Events of one appointment share a key, hence a lane that runs in offset order and stops at
        its first refusal. The committed offset is the end of the prefix Temporal accepted in full;
        from the first refused event on, the batch is read again (what was accepted is a no-op then).
        """
        lanes: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
        for msg in messages:
            lanes.setdefault(msg.key, []).append(msg)
        refused: dict[int, RPCError] = {}

        async def lane(batch: list[ConsumerRecord[bytes, bytes]]) -> None:
            for msg in batch:
                try:
                    async with self._in_flight:
                        await self.handle(msg)
                except RPCError as exc:
                    metrics.BILLING_EVENTS.labels("refused").inc()
                    refused[msg.offset] = exc
                    return

        # A TaskGroup: an unexpected error in one lane cancels the others before it propagates.
        try:
            async with asyncio.TaskGroup() as group:
                for batch in lanes.values():
                    group.create_task(lane(batch))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        if not refused:
            self._backoff = 0.5
            await self._commit(tp, messages[-1].offset)
            return
        first = min(refused)
        status = refused[first].status
        # Temporal did not accept it: commit what it did accept before it, then read it again.
        log.warning(
            "temporal refused billing event; will retry",
            partition=tp.partition,
            offset=first,
            status=status.name if status else None,
        )
        await self._commit(tp, max((m.offset for m in messages if m.offset < first), default=None))
        self._consumer.seek(tp, first)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF.total_seconds())

    async def _commit(self, tp: TopicPartition, last_done: int | None) -> None:
        if last_done is not None:
            # Kafka's committed offset is the next one to read.
            await self._consumer.commit({tp: last_done + 1})
            self._committed[tp] = last_done + 1

    async def handle(self, msg: ConsumerRecord[bytes, bytes]) -> None:
        # The booking request's correlation id came along as a Kafka header: the billing run it
        # starts (header and memo) and this consumer's log lines carry it on.
        with correlation.bound(correlation.from_kafka_headers(msg.headers)):
            await self._handle(msg)

    async def _handle(self, msg: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = AppointmentEvent.model_validate_json(msg.value or b"")
        except ValidationError:
            log.warning("skipping malformed appointment event", partition=msg.partition, offset=msg.offset)
            metrics.BILLING_EVENTS.labels("malformed").inc()
            return
        cancelled = event.event == EventType.cancelled
        # False: the run for this appointment already finished, nothing left to do.
        await start_billing_run(
            self._temporal,
            self._settings,
            appointment_id=event.appointment_id,
            patient_id=event.patient_id,
            doctor_id=event.doctor_id,
            appointment_time=event.time,
            cancel=CancelSignal(event_id=event.event_id) if cancelled else None,
        )
        metrics.BILLING_EVENTS.labels("accepted").inc()
        log.info(
            "billing event handled",
            billing_event=event.event,
            workflow_id=billing_workflow_id(event.appointment_id),
            partition=msg.partition,
            offset=msg.offset,
        )


async def run_consumer(
    settings: Settings, *, stop: asyncio.Event, group_id: str = GROUP_ID, **consumer_options: Any
) -> None:
    temporal = await clients.temporal_client(settings, runtime=metrics.temporal_runtime(settings))
    consumer = clients.kafka_consumer(
        settings, settings.topic_appointment_events, group_id=group_id, **consumer_options
    )
    await consumer.start()
    billing = BillingConsumer(consumer=consumer, temporal=temporal, settings=settings)
    log.info("billing consumer started", group=group_id, topic=settings.topic_appointment_events)
    sdk_metrics = asyncio.create_task(metrics.drain_temporal_metrics_until(stop))
    try:
        await billing.run(stop)
    finally:
        sdk_metrics.cancel()
        await consumer.stop()
        log.info("billing consumer stopped")


def main() -> None:
    run_until_stopped(lambda settings, stop: run_consumer(settings, stop=stop))


if __name__ == "__main__":
    main()
