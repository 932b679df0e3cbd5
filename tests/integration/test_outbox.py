"""The outbox relay against the real PostgreSQL and Kafka: once, in order, no double claim, redelivery.

Each test gets an outbox of its own (a private copy of the table, with its NOTIFY trigger) and a
topic of its own, so the worker's relay, which serves the public table, never races these relays,
and no test event reaches billing or analytics (but the last, which puts a row no broker takes in
the worker's own outbox). The path to the real `appointment-events` topic is
covered end to end by test_appointments.py and test_billing.py.
"""

import asyncio
import json
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthcare import clients
from healthcare.contracts.billing import invoice_id_for
from healthcare.contracts.events import AppointmentEvent
from healthcare.db import session_factory
from healthcare.outbox import OutboxRelay, enqueue
from healthcare.settings import Settings
from ops import outbox as ops_outbox
from tests.integration.factories import Account, create_doctor, create_patient
from tests.integration.kafka_probe import TopicProbe
from tests.integration.private_schema import private_tables
from tests.waiting import eventually


@pytest.fixture
async def outbox_engine(settings: Settings, owner_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with private_tables(owner_engine, settings, "outbox") as private:
        yield private


@pytest.fixture
async def topic(settings: Settings) -> AsyncIterator[str]:
    name = f"outbox-test-{uuid.uuid4().hex[:10]}"
    admin = clients.kafka_admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    prod = clients.kafka_producer(settings)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


def _event(kind: str = "APPOINTMENT_CREATED", appointment_id: uuid.UUID | None = None) -> AppointmentEvent:
    now = datetime.now(UTC)
    return AppointmentEvent.model_validate(
        {
            "event": kind,
            "eventId": uuid.uuid4(),
            "appointmentId": appointment_id or uuid.uuid4(),
            "patientId": uuid.uuid4(),
            "doctorId": uuid.uuid4(),
            "time": now + timedelta(days=1),
            "occurredAt": now,
        }
    )


async def _queue(eng: AsyncEngine, topic: str, events: list[AppointmentEvent]) -> None:
    """As an activity does: the events commit with the writer's transaction."""
    async with session_factory(eng)() as session:
        for event in events:
            await enqueue(session, topic=topic, event=event)
        await session.commit()


async def _unpublished(eng: AsyncEngine) -> int:
    async with eng.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")) or 0)


async def _zero(eng: AsyncEngine) -> bool:
    return await _unpublished(eng) == 0


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    await eventually(check, timeout=timeout, interval=0.05, what=getattr(check, "__name__", "the condition"))


async def _listeners(eng: AsyncEngine) -> int:
    """Connections whose last statement was LISTEN on the outbox channel and that wait idle since."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND query ILIKE 'LISTEN %outbox%'"
    async with eng.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def _more_listeners(eng: AsyncEngine, *, than: int) -> bool:
    return await _listeners(eng) > than


def _ids(values: list[dict[str, Any]]) -> Counter[str]:
    return Counter(v["eventId"] for v in values)


async def test_a_queued_event_reaches_the_topic_once_woken_by_notify(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    # A poll interval far beyond the deadline below: only the NOTIFY can wake the relay in time.
    relay = OutboxRelay(engine=outbox_engine, producer=producer, poll_interval=60)
    stop = asyncio.Event()
    async with TopicProbe(settings, topic) as probe:
        before = await _listeners(outbox_engine)
        running = asyncio.create_task(relay.run(stop))
        try:
            # The relay is listening: a NOTIFY from now on reaches it.
            await eventually(
                lambda: _more_listeners(outbox_engine, than=before), timeout=30, what="the relay's LISTEN"
            )
            events = [_event() for _ in range(3)]
            await _queue(outbox_engine, topic, events)
            await _until(lambda: _zero(outbox_engine), timeout=5)
            wanted = {str(e.event_id) for e in events}
            values = await probe.collect(until=lambda vs: wanted <= set(_ids(vs)), settle=1)
        finally:
            stop.set()
            await running
    assert _ids(values) == Counter(wanted)  # each exactly once
    by_id = {v["eventId"]: v for v in values}
    for event in events:  # the contract value, as the writer queued it
        assert by_id[str(event.event_id)] == json.loads(event.value())
    assert relay.stats.published == 3 and relay.stats.send_failures == 0


async def test_without_notify_the_relay_still_publishes_by_polling(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    """A missed NOTIFY (here: no LISTEN at all) costs at most one poll interval, never the event."""
    relay = OutboxRelay(engine=outbox_engine, producer=producer, poll_interval=0.5, listen=False)
    stop = asyncio.Event()
    async with TopicProbe(settings, topic) as probe:
        running = asyncio.create_task(relay.run(stop))
        try:
            events = [_event() for _ in range(3)]
            await _queue(outbox_engine, topic, events)
            await _until(lambda: _zero(outbox_engine), timeout=15)
            wanted = {str(e.event_id) for e in events}
            values = await probe.collect(until=lambda vs: wanted <= set(_ids(vs)), settle=1)
        finally:
            stop.set()
            await running
    assert _ids(values) == Counter(wanted)
    assert relay.stats.published == 3


async def test_a_retried_writer_queues_its_event_once(outbox_engine: AsyncEngine, topic: str) -> None:
    event = _event()
    await _queue(outbox_engine, topic, [event])
    await _queue(outbox_engine, topic, [event])  # a retried activity: same event id
    assert await _unpublished(outbox_engine) == 1


async def test_two_relays_never_claim_the_same_row_and_keep_each_keys_order(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    appointments = [uuid.uuid4() for _ in range(300)]
    created = [_event("APPOINTMENT_CREATED", a) for a in appointments]
    cancelled = [_event("APPOINTMENT_CANCELLED", a) for a in appointments]
    relays = [OutboxRelay(engine=outbox_engine, producer=producer, batch_size=40) for _ in range(2)]
    stop = asyncio.Event()
    async with TopicProbe(settings, topic) as probe:
        running = [asyncio.create_task(r.run(stop)) for r in relays]
        try:
            # Interleaved commits while both relays run; every cancellation commits after its creation.
            for i in range(0, len(appointments), 50):
                await _queue(outbox_engine, topic, created[i : i + 50])
                await _queue(outbox_engine, topic, cancelled[max(0, i - 50) : i])
            await _queue(outbox_engine, topic, cancelled[len(appointments) - 50 :])
            await _until(lambda: _zero(outbox_engine))
            values = await probe.collect(until=lambda vs: len(vs) >= 600, settle=1)
        finally:
            stop.set()
            await asyncio.gather(*running)
    counts = _ids(values)
    assert len(counts) == 600 and set(counts.values()) == {1}  # every event once: no double claim
    assert sum(r.stats.published for r in relays) == 600
    assert all(r.stats.published > 0 for r in relays)  # both took part
    order: dict[str, list[str]] = {}
    for value in values:  # collect keeps each partition's order, and a key lives in one partition
        order.setdefault(value["appointmentId"], []).append(value["event"])
    assert set(map(tuple, order.values())) == {("APPOINTMENT_CREATED", "APPOINTMENT_CANCELLED")}


class _CrashAfterSend(OutboxRelay):
    """Sends, then dies before marking the rows published (the commit never happens)."""

    async def _mark(self, conn: AsyncConnection, seqs: list[int]) -> None:
        raise RuntimeError("killed between send and commit")


async def test_a_crash_between_send_and_commit_redelivers_with_the_same_event_id(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    event = _event()
    await _queue(outbox_engine, topic, [event])
    async with TopicProbe(settings, topic) as probe:
        with pytest.raises(RuntimeError):
            await _CrashAfterSend(engine=outbox_engine, producer=producer).drain_once()
        assert await _unpublished(outbox_engine) == 1  # rolled back: still queued
        assert await OutboxRelay(engine=outbox_engine, producer=producer).drain_once() == (1, 0, 0, False)
        values = await probe.collect(until=lambda vs: _ids(vs)[str(event.event_id)] >= 2, settle=1)
    # At-least-once: the event went out twice, under one id, which is what consumers drop on.
    assert _ids(values) == Counter({str(event.event_id): 2})
    assert await _unpublished(outbox_engine) == 0


class _FlakyProducer:
    """The real producer behind a send that fails the first `failures` records."""

    def __init__(self, real: AIOKafkaProducer, failures: int) -> None:
        self.real = real
        self.client = real.client  # the relay asks the broker about topics it has no metadata for
        self.failures = failures
        self.calls = 0

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker unavailable"))
            return failed
        sent: asyncio.Future[Any] = await self.real.send(topic, value, key=key, headers=headers)
        return sent


async def test_send_failures_are_retried_with_back_off_until_published(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    event = _event()
    flaky = _FlakyProducer(producer, failures=3)
    relay = OutboxRelay(engine=outbox_engine, producer=flaky, max_backoff=0.4)
    stop = asyncio.Event()
    async with TopicProbe(settings, topic) as probe:
        await _queue(outbox_engine, topic, [event])
        running = asyncio.create_task(relay.run(stop))
        try:
            await _until(lambda: _zero(outbox_engine))
            values = await probe.collect(until=lambda vs: str(event.event_id) in _ids(vs), settle=1)
        finally:
            stop.set()
            await running
    assert _ids(values) == Counter({str(event.event_id): 1})  # failed sends never reached the topic
    assert relay.stats.send_failures == 3 and relay.stats.published == 1


async def test_a_failed_event_holds_back_later_events_of_its_key(
    outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    appointment = uuid.uuid4()
    other = _event()
    await _queue(
        outbox_engine,
        topic,
        [_event("APPOINTMENT_CREATED", appointment), other, _event("APPOINTMENT_CANCELLED", appointment)],
    )
    # No back-off between a row's attempts here: the second round may send it again at once.
    relay = OutboxRelay(engine=outbox_engine, producer=_FlakyProducer(producer, failures=1), retry_base=0)
    # The creation fails; its cancellation, although sent, stays queued to go out again after it.
    assert await relay.drain_once() == (1, 2, 0, False)
    async with outbox_engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT key, attempts FROM outbox WHERE published_at IS NULL ORDER BY seq")
            )
        ).all()
    # The other row got through, so the failure was the creation's own: one attempt on it, none on
    # the cancellation that merely waited behind it.
    assert [tuple(r) for r in left] == [(str(appointment).encode(), 1), (str(appointment).encode(), 0)]
    assert await relay.drain_once() == (2, 0, 0, False)


async def test_cleanup_deletes_old_published_rows_in_bounded_batches(
    outbox_engine: AsyncEngine, topic: str
) -> None:
    await _queue(outbox_engine, topic, [_event() for _ in range(6)])
    async with outbox_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET published_at = now() - interval '8 days' "
                "WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT 3)"
            )
        )
        await conn.execute(
            text(
                "UPDATE outbox SET published_at = now() - interval '1 day' WHERE published_at IS NULL AND "
                "seq = (SELECT max(seq) FROM outbox)"
            )
        )
    relay = OutboxRelay(engine=outbox_engine, producer=None, cleanup_batch=2)
    assert await relay.cleanup_once() == 2
    assert await relay.cleanup_once() == 1
    assert await relay.cleanup_once() == 0
    async with outbox_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM outbox")) == 3  # recent and unpublished stay


async def _rows(eng: AsyncEngine) -> list[Any]:
    async with eng.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT seq, key, topic, attempts, last_error, parked_at, published_at"
                        " FROM outbox ORDER BY seq"
                    )
                )
            ).all()
        )


async def test_a_row_for_an_unknown_topic_is_parked_while_the_others_are_published(
    settings: Settings, outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    """The stall this replaces: one row whose topic does not exist failed every round, and nothing
    after it was ever published. Now it is tried on its own back-off, parked, reported, requeued."""
    missing = f"outbox-missing-{uuid.uuid4().hex[:10]}"
    stuck = uuid.uuid4()
    poison = _event("APPOINTMENT_CREATED", stuck)
    behind = _event("APPOINTMENT_CANCELLED", stuck)  # must not overtake the poison row
    others = [_event() for _ in range(5)]
    await _queue(outbox_engine, missing, [poison])
    await _queue(outbox_engine, topic, [behind, *others])
    relay = OutboxRelay(
        engine=outbox_engine, producer=producer, max_attempts=3, retry_base=0.05, poll_interval=0.1
    )
    stop = asyncio.Event()

    async def parked() -> bool:
        return any(r.parked_at is not None for r in await _rows(outbox_engine))

    async with TopicProbe(settings, topic) as probe:
        running = asyncio.create_task(relay.run(stop))
        try:
            await _until(parked)
            values = await probe.collect(until=lambda vs: len(vs) >= 5, settle=0.5)
        finally:
            stop.set()
            await running
    assert _ids(values) == Counter(str(e.event_id) for e in others)  # all others, once; not `behind`
    rows = {r.seq: r for r in await _rows(outbox_engine)}
    poison_row, behind_row = (r for r in rows.values() if r.key == str(stuck).encode())
    assert poison_row.attempts == 3 and poison_row.last_error == "UnknownTopicOrPartitionError"
    assert poison_row.parked_at is not None and poison_row.published_at is None
    assert behind_row.published_at is None and behind_row.attempts == 0 and behind_row.parked_at is None
    assert relay.stats.parked == 1 and relay.stats.rounds_failed == 0  # never an outage

    # Reported: the command's numbers and the gauge.
    totals = await ops_outbox.summary(outbox_engine)
    assert (totals.parked, totals.held, totals.pending) == (1, 1, 1)
    [listed] = await ops_outbox.parked_rows(outbox_engine)
    assert (listed.seq, listed.topic, listed.key, listed.held) == (poison_row.seq, missing, str(stuck), 1)
    await relay.refresh_gauges()
    assert REGISTRY.get_sample_value("healthcare_outbox_parked") == 1

    # Fixed (the topic now exists) and requeued: the poison row goes out, then the one behind it.
    admin = clients.kafka_admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(missing, num_partitions=1, replication_factor=1)])
        assert await ops_outbox.requeue(outbox_engine, [poison_row.seq]) == [poison_row.seq]
        relay = OutboxRelay(engine=outbox_engine, producer=producer, poll_interval=0.1)
        async with TopicProbe(settings, missing) as fixed:
            stop = asyncio.Event()
            running = asyncio.create_task(relay.run(stop))
            try:
                await _until(lambda: _zero(outbox_engine))
                sent = await fixed.collect(until=lambda vs: len(vs) >= 1, settle=0.5)
            finally:
                stop.set()
                await running
    finally:
        await admin.delete_topics([missing])
        await admin.close()
    assert _ids(sent) == Counter({str(poison.event_id): 1})
    published = {r.key + r.topic.encode(): r.published_at for r in await _rows(outbox_engine)}
    assert (
        published[str(stuck).encode() + missing.encode()] <= published[str(stuck).encode() + topic.encode()]
    )


class _DownProducer:
    """A broker that takes no send at all (every delivery fails)."""

    def __init__(self, real: AIOKafkaProducer) -> None:
        self.client = real.client

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError())
        return failed


async def test_a_broker_that_takes_nothing_blames_no_row(
    outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    await _queue(outbox_engine, topic, [_event() for _ in range(3)])
    relay = OutboxRelay(engine=outbox_engine, producer=_DownProducer(producer), max_attempts=2, retry_base=0)
    for _ in range(4):  # twice the limit: an outage must not park anything
        result = await relay.drain_once()
        assert result == (0, 3, 0, True)
    assert {(r.attempts, r.parked_at) for r in await _rows(outbox_engine)} == {(0, None)}


async def test_a_poison_row_in_the_stacks_outbox_does_not_hold_back_the_next_booking(
    api: httpx.AsyncClient, admin: Account, staff: Account, engine: AsyncEngine
) -> None:
    """The worker's own relay: before, this row failed every round and no booking was billed again."""
    poison = _event()
    await _queue(engine, f"outbox-missing-{uuid.uuid4().hex[:10]}", [poison])
    try:
        doctor = await create_doctor(api, admin)
        patient = await create_patient(api, staff)
        slot = datetime.now(UTC) + timedelta(days=80, minutes=31 * (uuid.uuid4().int % 5000))
        resp = await api.post(
            "/api/v1/appointments",
            json={
                "patientId": patient["id"],
                "doctorId": doctor["id"],
                "time": slot.replace(microsecond=0).isoformat(),
            },
            headers=staff.headers,
        )
        assert resp.status_code == 201, resp.text
        invoice_id = invoice_id_for(uuid.UUID(resp.json()["id"]))

        async def issued() -> bool:
            got = await api.get(f"/api/v1/invoices/{invoice_id}", headers=staff.headers)
            return got.status_code == 200 and got.json()["status"] == "ISSUED"

        await eventually(issued, timeout=120, interval=0.5, what="the next booking's ISSUED invoice")
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT attempts, last_error, published_at FROM outbox WHERE event_id = :id"),
                    {"id": poison.event_id},
                )
            ).one()
        assert (
            row.published_at is None
            and row.attempts >= 1
            and row.last_error == "UnknownTopicOrPartitionError"
        )
        # The operator's report names it (failing, not yet parked: its attempts have a back-off).
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "healthcare"),
            "outbox",
            "list",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode in (0, 1) and re.search(r"pending: \d+ \([1-9]\d* failing", out.decode()), out
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox WHERE event_id = :id"), {"id": poison.event_id})


# -- One round's bookkeeping (drain_once), row by row ------------------------------------------
async def _schedule(eng: AsyncEngine) -> dict[int, tuple[int, str | None, float | None, bool]]:
    """Per unpublished row: attempts, last error, seconds until its next attempt, parked."""
    sql = (
        "SELECT seq, attempts, last_error, extract(epoch FROM next_attempt_at - now()) AS due_in,"
        " parked_at IS NOT NULL AS parked FROM outbox WHERE published_at IS NULL ORDER BY seq"
    )
    async with eng.connect() as conn:
        rows = (await conn.execute(text(sql))).all()
    return {
        r.seq: (r.attempts, r.last_error, None if r.due_in is None else float(r.due_in), r.parked)
        for r in rows
    }


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_round_reports_each_rows_fate_and_schedules_a_failed_row_on_its_own_back_off(
    outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    """A row no broker can take (its topic does not exist) is the row's own fault even when it is
    the only row of the round: its attempts count, its next attempt is base * 2^attempts seconds
    away (at most the cap), and at the limit it is parked, counted and logged."""
    from structlog.testing import capture_logs

    from healthcare.outbox import RoundResult

    missing = f"outbox-missing-{uuid.uuid4().hex[:10]}"
    relay = OutboxRelay(
        engine=outbox_engine,
        producer=producer,
        listen=False,
        retry_base=100.0,
        retry_cap=1000.0,
        max_attempts=2,
    )
    assert await relay.drain_once() == RoundResult(0, 0, 0, False)  # an empty outbox

    async def due_now() -> None:  # a failed row's back-off over: due again now
        async with outbox_engine.begin() as conn:
            await conn.execute(text("UPDATE outbox SET next_attempt_at = now() WHERE published_at IS NULL"))

    published = _counter("healthcare_outbox_published_total")
    parked = _counter("healthcare_outbox_rows_parked_total")
    await _queue(outbox_engine, topic, [_event()])
    await _queue(outbox_engine, missing, [_event()])
    assert await relay.drain_once() == RoundResult(1, 1, 0, False)
    [(seq, (attempts, error, due_in, is_parked))] = (await _schedule(outbox_engine)).items()
    assert (attempts, error, is_parked) == (1, "UnknownTopicOrPartitionError", False)
    assert due_in is not None and 90.0 < due_in <= 100.0  # base * 2^0, counted from the round's now()

    await due_now()
    await _queue(outbox_engine, topic, [_event()])
    with capture_logs() as logs:
        assert await relay.drain_once() == RoundResult(1, 1, 1, False)
    [(_, (attempts, error, due_in, is_parked))] = (await _schedule(outbox_engine)).items()
    assert (attempts, is_parked) == (2, True)
    assert due_in is not None and 190.0 < due_in <= 200.0  # base * 2^1
    parked_line = {
        "event": "outbox row parked",
        "seq": seq,
        "error": error,
        "attempts": 2,
        "log_level": "error",
    }
    assert parked_line in logs

    await _queue(outbox_engine, missing, [_event()])
    assert await relay.drain_once() == RoundResult(0, 1, 0, False)  # alone in its round: still blamed
    await due_now()
    assert await relay.drain_once() == RoundResult(0, 1, 1, False)
    # Counted over the relay's life, and in the process's metrics.
    assert (relay.stats.published, relay.stats.parked) == (2, 2)
    assert _counter("healthcare_outbox_published_total") == published + 2
    assert _counter("healthcare_outbox_rows_parked_total") == parked + 2

    capped = OutboxRelay(
        engine=outbox_engine, producer=producer, listen=False, retry_base=100.0, retry_cap=50.0
    )
    await _queue(outbox_engine, missing, [_event()])
    assert await capped.drain_once() == RoundResult(0, 1, 0, False)
    due = [d for _, _, d, p in (await _schedule(outbox_engine)).values() if not p]
    assert len(due) == 1 and due[0] is not None and 40.0 < due[0] <= 50.0  # the cap, not base * 2^0


async def test_a_row_behind_an_earlier_row_another_relay_holds_waits_for_it(
    outbox_engine: AsyncEngine, topic: str, producer: AIOKafkaProducer
) -> None:
    """The earlier row of the key is claimed by another relay (locked): the later one is claimed
    here but held back, so it cannot overtake; once the other relay is done, both go in order."""
    from healthcare.outbox import RoundResult

    appointment = uuid.uuid4()
    await _queue(
        outbox_engine,
        topic,
        [_event("APPOINTMENT_CREATED", appointment), _event("APPOINTMENT_CANCELLED", appointment)],
    )
    relay = OutboxRelay(engine=outbox_engine, producer=producer, listen=False)
    async with outbox_engine.connect() as other, other.begin():
        first = await other.scalar(text("SELECT min(seq) FROM outbox"))
        await other.execute(text("SELECT seq FROM outbox WHERE seq = :seq FOR UPDATE"), {"seq": first})
        assert await relay.drain_once() == RoundResult(0, 0, 0, False)
    assert await relay.drain_once() == RoundResult(2, 0, 0, False)
