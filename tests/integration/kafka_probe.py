"""Reads what really reached a Kafka topic after a point in time (test helper, not a test module)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import TopicPartition

from healthcare import clients
from healthcare.settings import Settings


class TopicProbe:
    """Remembers the end of every partition at creation; `collect` reads everything after it."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._start: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> TopicProbe:
        admin = clients.kafka_admin(self._settings)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self._topic])
        finally:
            await admin.close()
        parts = [TopicPartition(self._topic, p["partition"]) for p in described["partitions"]]
        consumer = clients.kafka_consumer(self._settings)
        await consumer.start()
        try:
            self._start = await consumer.end_offsets(parts)
        finally:
            await consumer.stop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def collect(
        self, *, until: Any, timeout: float = 30.0, settle: float = 1.0
    ) -> list[dict[str, Any]]:
        """Read until `until(values)` is true, then `settle` seconds more (to catch duplicates)."""
        records = await self.collect_records(
            until=lambda got: until([value for value, _ in got]), timeout=timeout, settle=settle
        )
        return [value for value, _ in records]

    async def collect_records(
        self, *, until: Any, timeout: float = 30.0, settle: float = 1.0
    ) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
        """As `collect`, with each message's headers."""
        consumer = clients.kafka_consumer(self._settings)
        await consumer.start()
        values: list[tuple[dict[str, Any], dict[str, bytes]]] = []
        try:
            consumer.assign(list(self._start))
            for tp, offset in self._start.items():
                consumer.seek(tp, offset)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            settled_at: float | None = None
            while loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    values.extend((json.loads(r.value), dict(r.headers)) for r in records if r.value)
                if settled_at is None and until(values):
                    settled_at = loop.time() + settle
                if settled_at is not None and loop.time() >= settled_at:
                    break
        finally:
            await consumer.stop()
        return values
