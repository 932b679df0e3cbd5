"""Dead letters: appointment events the billing consumer refused for good, parked on a topic of their own.

A parked record keeps the original key, value and headers byte for byte (so a redrive hands billing
exactly what it was given), plus `dlq-*` headers saying why it was refused (a RefusalReason and a
detail that names rules, ids and status codes, never patient data) and where it came from (topic,
partition, offset, timestamp). It is keyed like the original, so one appointment's dead letters keep
their order on the dead-letter topic.

Which dead letters are still waiting is kept by Kafka itself: the consumer group `billing-dlq-redrive`
commits, per partition of the dead-letter topic, past what `healthcare billing dlq redrive` handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition

from healthcare import clients
from healthcare.contracts.events import RefusalReason
from healthcare.settings import Settings

REDRIVE_GROUP = "billing-dlq-redrive"
PREFIX = "dlq-"
REASON = "dlq-reason"
DETAIL = "dlq-detail"
SOURCE_TOPIC = "dlq-source-topic"
SOURCE_PARTITION = "dlq-source-partition"
SOURCE_OFFSET = "dlq-source-offset"
SOURCE_TIMESTAMP = "dlq-source-timestamp"
PARKED_AT = "dlq-parked-at"
REDRIVES = "dlq-redrives"
DETAIL_LIMIT = 300
READ_TIMEOUT = 30.0  # seconds without progress while reading a backlog

Headers = tuple[tuple[str, bytes], ...]


class KafkaRecord(Protocol):
    """What we read of a consumed record (aiokafka's ConsumerRecord has these)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class DeadLetter:
    """One parked event: the original record and why it was refused."""

    topic: str  # the original's coordinates
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers  # the original's, without our dlq-* headers
    reason: RefusalReason
    detail: str
    parked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    redrives: int = 0  # how often it was redriven and refused again
    # Where it lies on the dead-letter topic (known once read back from it).
    dlq_partition: int | None = None
    dlq_offset: int | None = None

    @classmethod
    def of(cls, record: KafkaRecord, reason: RefusalReason, detail: str) -> DeadLetter:
        """A record as the consumer read it, refused for `reason`."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((k, v) for k, v in record.headers if not k.startswith(PREFIX)),
            reason=reason,
            detail=detail[:DETAIL_LIMIT],
        )

    def refused_again(self, reason: RefusalReason, detail: str) -> DeadLetter:
        """A redriven dead letter refused once more: same origin, the new reason, one more redrive."""
        return replace(
            self,
            reason=reason,
            detail=detail[:DETAIL_LIMIT],
            parked_at=datetime.now(UTC),
            redrives=self.redrives + 1,
            dlq_partition=None,
            dlq_offset=None,
        )

    def record_headers(self) -> list[tuple[str, bytes]]:
        ours = {
            REASON: self.reason.value,
            DETAIL: self.detail,
            SOURCE_TOPIC: self.topic,
            SOURCE_PARTITION: str(self.partition),
            SOURCE_OFFSET: str(self.offset),
            SOURCE_TIMESTAMP: "" if self.timestamp is None else str(self.timestamp),
            PARKED_AT: self.parked_at.isoformat(),
            REDRIVES: str(self.redrives),
        }
        return [*self.headers, *((k, v.encode()) for k, v in ours.items())]

    @classmethod
    def from_record(cls, record: KafkaRecord) -> DeadLetter:
        """Read back from the dead-letter topic."""
        ours = {k: v.decode(errors="replace") for k, v in record.headers if k.startswith(PREFIX)}
        try:
            reason = RefusalReason(ours.get(REASON, ""))
        except ValueError:  # written by a newer version: keep it readable and redrivable
            reason = RefusalReason.malformed
        return cls(
            topic=ours.get(SOURCE_TOPIC, ""),
            partition=int(ours.get(SOURCE_PARTITION) or -1),
            offset=int(ours.get(SOURCE_OFFSET) or -1),
            timestamp=int(ours[SOURCE_TIMESTAMP]) if ours.get(SOURCE_TIMESTAMP) else None,
            key=record.key,
            value=record.value,
            headers=tuple((k, v) for k, v in record.headers if not k.startswith(PREFIX)),
            reason=reason,
            detail=ours.get(DETAIL, ""),
            parked_at=_parse_time(ours.get(PARKED_AT))
            or datetime.fromtimestamp(record.timestamp / 1000, UTC),
            redrives=int(ours.get(REDRIVES) or 0),
            dlq_partition=record.partition,
            dlq_offset=record.offset,
        )


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


async def park(producer: AIOKafkaProducer, topic: str, letter: DeadLetter) -> None:
    """Write the dead letter and wait for the broker's acknowledgement (then the original may be
    committed)."""
    await producer.send_and_wait(topic, letter.value, key=letter.key, headers=letter.record_headers())


@dataclass
class Backlog:
    """Per partition of the dead-letter topic: where the waiting dead letters start and end."""

    start: dict[int, int] = field(default_factory=dict)  # first not yet redriven
    end: dict[int, int] = field(default_factory=dict)  # the partition's end (next offset to be written)
    first: dict[int, int] = field(default_factory=dict)  # the oldest one kept by the topic's retention

    @property
    def waiting(self) -> int:
        return sum(max(self.end[p] - self.start[p], 0) for p in self.end)


class DeadLetterTopic:
    """Reads the dead-letter topic as the redrive group sees it; commits what a redrive handled."""

    def __init__(self, settings: Settings, **consumer_options: Any) -> None:
        self.name = settings.appointment_events_dlq
        self._settings = settings
        self._consumer = clients.kafka_consumer(settings, group_id=REDRIVE_GROUP, **consumer_options)
        self._partitions: list[TopicPartition] = []

    async def __aenter__(self) -> DeadLetterTopic:
        admin = clients.kafka_admin(self._settings)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.name])
        finally:
            await admin.close()
        if described.get("error_code") or not described.get("partitions"):
            raise LookupError(f"dead-letter topic {self.name} does not exist")
        self._partitions = [TopicPartition(self.name, p["partition"]) for p in described["partitions"]]
        await self._consumer.start()
        try:
            self._consumer.assign(self._partitions)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def backlog(self) -> Backlog:
        first = await self._consumer.beginning_offsets(self._partitions)
        end = await self._consumer.end_offsets(self._partitions)
        backlog = Backlog()
        for tp in self._partitions:
            committed = await self._consumer.committed(tp)
            backlog.first[tp.partition] = first[tp]
            backlog.end[tp.partition] = end[tp]
            # Retention may have dropped what the group last saw: start at what is left.
            backlog.start[tp.partition] = max(committed if committed is not None else 0, first[tp])
        return backlog

    async def read(self, backlog: Backlog, *, waiting_only: bool = True) -> list[DeadLetter]:
        """Every dead letter up to the backlog's end (from its start, or from the oldest kept),
        in offset order per partition."""
        letters: list[DeadLetter] = []
        todo: dict[TopicPartition, int] = {}
        for tp in self._partitions:
            begin = backlog.start[tp.partition] if waiting_only else backlog.first[tp.partition]
            if begin < backlog.end[tp.partition]:
                self._consumer.seek(tp, begin)
                todo[tp] = backlog.end[tp.partition]
        deadline = asyncio.get_running_loop().time() + READ_TIMEOUT
        while todo:
            batches = await self._consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batches.items():
                letters.extend(DeadLetter.from_record(r) for r in records if r.offset < todo[tp])
            if batches:  # progress: a long backlog may take longer than one timeout
                deadline = asyncio.get_running_loop().time() + READ_TIMEOUT
            for tp in list(todo):  # positions, not offsets: offsets may have gaps
                if await self._consumer.position(tp) >= todo[tp]:
                    del todo[tp]
            if todo and asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the dead-letter topic did not answer in time")
        return sorted(letters, key=lambda d: (d.dlq_partition or 0, d.dlq_offset or 0))

    async def mark_handled(self, partition: int, up_to: int) -> None:
        """Everything below `up_to` on this partition was redriven (or refused again and re-parked)."""
        await self._consumer.commit({TopicPartition(self.name, partition): up_to})
