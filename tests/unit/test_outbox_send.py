"""The outbox relay's send step (`OutboxRelay._send`) without a broker: which rows are acknowledged,
which failed and whose fault that was, and what is held back behind a failed row of its key.

The producer is a fake of this module's one dependency, so each broker answer (a refused send, a
failed acknowledgement, an unknown topic, no answer at all) can be given to one chosen row. The same
rules on the real PostgreSQL and Kafka: tests/integration/test_outbox.py.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from healthcare import metrics, tracing
from healthcare.outbox import OutboxRelay, _RowFailure

TOPIC = "appointment-events"


def row(seq: int, key: bytes | None = b"a", *, topic: str = TOPIC, attempts: int = 0, **extra: Any) -> Any:
    """An outbox row as `_CLAIM` returns it."""
    fields = {"correlation_id": None, "trace_context": None, **extra}
    return SimpleNamespace(
        seq=seq,
        event_id=uuid.uuid4(),
        topic=topic,
        key=key,
        value=f"event {seq}".encode(),
        attempts=attempts,
        **fields,
    )


class FakeProducer:
    """Answers each send as told by the row's value: acknowledged unless `refuse` (send raises) or
    `fail_ack` (the acknowledgement fails) names it; `hold` leaves an acknowledgement unanswered."""

    def __init__(
        self,
        *,
        refuse: dict[int, Exception] | None = None,
        fail_ack: dict[int, Exception] | None = None,
        hold: frozenset[int] = frozenset(),
    ) -> None:
        self.refuse = refuse or {}
        self.fail_ack = fail_ack or {}
        self.hold = hold
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        seq = int(value.split()[-1])
        if seq in self.refuse:
            raise self.refuse[seq]
        self.sent.append((topic, value, key, headers))
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if seq in self.fail_ack:
            acked.set_exception(self.fail_ack[seq])
        elif seq not in self.hold:
            acked.set_result(SimpleNamespace(offset=seq))
        return acked


class FakeCluster:
    def __init__(self, topics: set[str]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic in self.topics else None


class FakeClient:
    """The producer's metadata: `known` is cached already, `fetched` only after a fetch."""

    def __init__(self, known: set[str], fetched: set[str]) -> None:
        self.cluster = FakeCluster(known)
        self.fetched = FakeCluster(known | fetched)
        self.fetches = 0

    async def fetch_all_metadata(self) -> FakeCluster:
        self.fetches += 1
        return self.fetched


def relay(producer: FakeProducer, **options: Any) -> OutboxRelay:
    return OutboxRelay(engine=cast(Any, None), producer=cast(Any, producer), listen=False, **options)


def _counted() -> float:
    return metrics.OUTBOX_SEND_FAILURES._value.get()  # type: ignore[no-any-return]


def _sent_seqs(producer: FakeProducer) -> list[int]:
    return [int(value.split()[-1]) for _, value, _, _ in producer.sent]


async def test_every_acknowledged_row_is_returned_in_order_and_nothing_is_counted_or_logged() -> None:
    producer = FakeProducer()
    outbox = relay(producer)
    before = _counted()
    with capture_logs() as logs:
        acked, failures = await outbox._send([row(1), row(2, b"b"), row(3), row(4, None)])
    assert (acked, failures) == ([1, 2, 3, 4], [])
    assert [(topic, key) for topic, _, key, _ in producer.sent] == [
        (TOPIC, b"a"),
        (TOPIC, b"b"),
        (TOPIC, b"a"),
        (TOPIC, None),
    ]
    assert outbox.stats.send_failures == 0 and _counted() == before
    assert logs == []


async def test_a_row_whose_send_is_refused_holds_back_the_later_rows_of_its_key_only() -> None:
    producer = FakeProducer(refuse={2: KafkaTimeoutError()})
    outbox = relay(producer)
    before = _counted()
    rows = [row(1), row(2, attempts=3), row(3, b"b"), row(4), row(5), row(6, b"c")]
    with capture_logs() as logs:
        acked, failures = await outbox._send(rows)
    assert acked == [1, 3, 6]
    assert failures == [_RowFailure(2, 3, "KafkaTimeoutError", False)]  # not the row's fault
    assert _sent_seqs(producer) == [1, 3, 6]  # 4 and 5 are behind 2: never sent; 6 is not
    assert outbox.stats.send_failures == 3 and _counted() == before + 3
    assert logs == [
        {
            "event": "outbox sends failed; rows stay queued",
            "failed": 3,
            "errors": ["KafkaTimeoutError"],
            "log_level": "warning",
        }
    ]
    # The count is over the relay's life: the next round's failures add to it.
    await outbox._send([row(7, b"d"), row(2, attempts=4)])
    assert outbox.stats.send_failures == 4 and _counted() == before + 4


async def test_a_failed_acknowledgement_keeps_every_later_row_of_its_key_unacknowledged() -> None:
    """Rows 2 and 3 were sent before row 2's acknowledgement failed: 3 goes again after 2, so the
    key's order holds; row 4 of another key is acknowledged."""
    producer = FakeProducer(fail_ack={2: NotLeaderForPartitionError()})
    acked, failures = await relay(producer)._send([row(1), row(2), row(3), row(4, b"b")])
    assert acked == [1, 4]
    assert failures == [_RowFailure(2, 0, "NotLeaderForPartitionError", False)]
    assert _sent_seqs(producer) == [1, 2, 3, 4]


async def test_an_earlier_failed_acknowledgement_holds_back_rows_sent_before_a_later_refusal() -> None:
    """Row 3's acknowledgement fails and row 5's send is refused: row 4, sent between them and
    acknowledged, is behind the earliest failure of its key (3), so it is not acknowledged either."""
    producer = FakeProducer(fail_ack={3: KafkaTimeoutError()}, refuse={5: KafkaTimeoutError()})
    acked, failures = await relay(producer)._send([row(3), row(4), row(5), row(6)])
    assert acked == []
    assert sorted(failures) == [
        _RowFailure(3, 0, "KafkaTimeoutError", False),
        _RowFailure(5, 0, "KafkaTimeoutError", False),
    ]
    assert _sent_seqs(producer) == [3, 4]


async def test_a_row_the_broker_can_never_take_is_the_rows_own_fault() -> None:
    producer = FakeProducer(refuse={1: MessageSizeTooLargeError()}, fail_ack={3: MessageSizeTooLargeError()})
    acked, failures = await relay(producer)._send([row(1), row(2, b"b"), row(3, b"c")])
    assert acked == [2]
    assert failures == [
        _RowFailure(1, 0, "MessageSizeTooLargeError", True),
        _RowFailure(3, 0, "MessageSizeTooLargeError", True),
    ]


async def test_a_row_for_a_topic_the_broker_does_not_have_is_never_sent() -> None:
    producer = FakeProducer()
    client = FakeClient(known={TOPIC}, fetched={"created-meanwhile"})
    producer.client = client  # type: ignore[attr-defined]
    rows = [row(1, b"x", topic="no-such-topic"), row(2), row(3, b"b", topic="created-meanwhile")]
    rows.append(row(4, b"x"))
    acked, failures = await relay(producer)._send(rows)
    assert acked == [2, 3]
    assert failures == [_RowFailure(1, 0, "UnknownTopicOrPartitionError", True)]
    assert _sent_seqs(producer) == [2, 3]  # row 4 shares its key with row 1: behind it
    assert client.fetches == 1  # asked once, for the topics not cached


async def test_topics_the_producer_knows_are_not_asked_about_again() -> None:
    producer = FakeProducer()
    client = FakeClient(known={TOPIC}, fetched=set())
    producer.client = client  # type: ignore[attr-defined]
    assert await relay(producer)._send([row(1), row(2)]) == ([1, 2], [])
    assert client.fetches == 0


async def test_the_correlation_id_and_trace_of_a_row_go_out_as_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each traced row is sent in a PRODUCER span of the trace it was queued in, naming its topic
    and event id; its traceparent goes out as a header, with the correlation id."""
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider("unit", exporter, batch=False)
    monkeypatch.setattr(tracing, "_provider", provider)
    producer = FakeProducer()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = row(1, correlation_id="booking-7", trace_context=traceparent)
    try:
        await relay(producer)._send([traced, row(2)])
    finally:
        provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.name == f"publish {TOPIC}"
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TOPIC,
        "event_id": str(traced.event_id),
    }
    (_, _, _, first), (_, _, _, second) = producer.sent
    (correlation, correlation_id), (trace, sent_traceparent) = first
    assert (correlation, correlation_id, trace) == ("correlation-id", b"booking-7", "traceparent")
    assert sent_traceparent.split(b"-")[1] == b"4bf92f3577b34da6a3ce929d0e0e4736"  # the queued trace
    assert second == []  # a row queued outside a request and a trace


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_a_broker_that_never_answers_fails_the_round_after_the_send_timeout() -> None:
    producer = FakeProducer(hold=frozenset({2}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await relay(producer, send_timeout=30.0)._send([row(1), row(2)])
    assert 30.0 <= loop.time() - started < 31.0  # fake time: the timeout, not longer
