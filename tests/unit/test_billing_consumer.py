"""The billing consumer without Kafka, Temporal or PostgreSQL: what it asks Temporal, what it parks on
the dead-letter topic, and which offsets it commits."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import metrics
from healthcare.contracts.billing import BillingRequest, CancelSignal, billing_workflow_id
from healthcare.contracts.events import SYNTHETIC_HEADER, AppointmentEvent, RefusalReason
from healthcare.dead_letters import DeadLetter
from healthcare.settings import Settings
from services.billing_events import StoredAppointment
from workers.billing_consumer import BillingConsumer
from workflows.billing import BillingWorkflow
from workflows.search_attributes import DOCTOR_ID, PATIENT_ID

TP = TopicPartition("appointment-events", 0)
TASK_QUEUE = "billing-unit"
TERMS = timedelta(days=7)
# Enough for any test here; a consumer that never stops re-reading fails instead of hanging.
MAX_READS = 20

# Fake event-loop time (looptime): a back-off passes at once and is measured exactly, while a
# consumer that hangs still fails its bounded wait. Each test on a loop of its own: looptime finds
# the loop through the policy, which an earlier `asyncio.run` on the session loop's thread resets,
# and the test then ran in real time (a ten-minute expiry hit the 300 s timeout).
pytestmark = [pytest.mark.looptime, pytest.mark.asyncio(loop_scope="function")]

Message = tuple[bytes | None, bytes | None]  # (key, value) as the producer wrote them
Headers = tuple[tuple[str, bytes], ...]
Timeline = list[tuple[Any, ...]]


def event(kind: str = "APPOINTMENT_CREATED", appointment_id: uuid.UUID | None = None) -> AppointmentEvent:
    """An event; one appointment's events name the same patient and doctor, as the API's do."""
    appointment_id = appointment_id or uuid.uuid4()
    return AppointmentEvent(
        event=kind,
        event_id=uuid.uuid4(),
        appointment_id=appointment_id,
        patient_id=uuid.uuid5(appointment_id, "patient"),
        doctor_id=uuid.uuid5(appointment_id, "doctor"),
        time=datetime(2030, 5, 1, 9, 30, tzinfo=UTC),
        occurred_at=datetime(2030, 4, 1, 8, 0, tzinfo=UTC),
    )


def message(e: AppointmentEvent) -> Message:
    """Keyed by appointment, as the API publishes it: one appointment's events share a partition."""
    return (e.key(), e.value())


def record(
    offset: int, key: bytes | None, value: bytes | None, headers: Headers = ()
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def refused(status: RPCStatusCode = RPCStatusCode.UNAVAILABLE) -> RPCError:
    return RPCError(f"temporal says {status.name}", status, b"")


def already_started(appointment_id: uuid.UUID) -> WorkflowAlreadyStartedError:
    return WorkflowAlreadyStartedError(billing_workflow_id(appointment_id), "Billing")


class FakeKafka:
    """One partition read the way aiokafka reads it: from a position that `seek` moves.

    A message that is read is not read again unless the consumer seeks back, so a consumer that
    forgets to seek after a refusal loses the event here as it would against a broker. Once the
    log is read to its end, `stop` is set and the consumer's loop ends.
    """

    def __init__(
        self,
        messages: list[Message],
        stop: asyncio.Event,
        timeline: Timeline,
        headers: dict[int, Headers] | None = None,
        per_read: int | None = None,
    ) -> None:
        self.log = [
            record(offset, key, value, (headers or {}).get(offset, ()))
            for offset, (key, value) in enumerate(messages)
        ]
        self.position = 0
        self.stop = stop
        self.timeline = timeline
        self.per_read = per_read  # records per read: None, as many as the consumer asks for
        self.read_at: list[float] = []  # loop time of each read (fake time under looptime)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch = self.log[self.position : self.position + (self.per_read or max_records or len(self.log))]
        if not batch or len(self.read_at) >= MAX_READS:
            self.stop.set()
            return {}
        self.read_at.append(asyncio.get_running_loop().time())
        self.position = batch[-1].offset + 1
        self.timeline.append(("read", [m.offset for m in batch]))
        return {TP: batch}

    def waits(self) -> list[float]:
        """The pauses between successive reads."""
        return [b - a for a, b in zip(self.read_at, self.read_at[1:], strict=False)]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp == TP
        self.position = offset
        self.timeline.append(("seek", offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert list(offsets) == [TP]
        self.timeline.append(("commit", offsets[TP]))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log)  # the broker's next offset: the log is all written


class FakeTemporal:
    """`start_workflow` as one round trip, answering from a script per appointment.

    `script[appointment_id]` lists what its successive calls raise (None: accepted); once it is
    used up, calls are accepted.
    """

    def __init__(
        self,
        timeline: Timeline,
        script: dict[uuid.UUID, list[BaseException | None]],
        on_refusal: Callable[[], None] = lambda: None,
    ) -> None:
        self.timeline = timeline
        self.script = script
        self.on_refusal = on_refusal
        self.calls: list[dict[str, Any]] = []
        self.closed: dict[str, WorkflowExecutionStatus] = {}  # finished runs, for describe()

    async def start_workflow(self, workflow: Any, arg: BillingRequest, **options: Any) -> object:
        self.calls.append({"workflow": workflow, "arg": arg, **options})
        await asyncio.sleep(0)  # a real call gives the loop away while it waits for the server
        pending = self.script.get(arg.appointment_id, [])
        outcome = pending.pop(0) if pending else None
        kind = "cancel" if options.get("start_signal") else "create"
        self.timeline.append(("start", arg.appointment_id, kind, type(outcome).__name__ if outcome else "ok"))
        if outcome is not None:
            self.on_refusal()
            raise outcome
        return object()

    def get_workflow_handle(self, workflow_id: str) -> FakeHandle:
        return FakeHandle(self, workflow_id)


class FakeHandle:
    def __init__(self, temporal: FakeTemporal, workflow_id: str) -> None:
        self.temporal = temporal
        self.workflow_id = workflow_id

    async def describe(self) -> Any:
        status = self.temporal.closed[self.workflow_id]
        self.temporal.timeline.append(("describe", self.workflow_id, status.name))
        return type("Description", (), {"status": status})()


class FakeAppointments:
    """The stored appointments the consumer checks events against; `failures` scripts the lookups
    that fail (a database outage) before the next one succeeds."""

    def __init__(self, stored: dict[uuid.UUID, StoredAppointment], timeline: Timeline) -> None:
        self.stored = stored
        self.timeline = timeline
        self.failures: list[BaseException] = []

    async def __call__(self, ids: Any) -> dict[uuid.UUID, StoredAppointment]:
        if self.failures:
            error = self.failures.pop(0)
            self.timeline.append(("lookup", type(error).__name__))
            raise error
        return {i: self.stored[i] for i in ids if i in self.stored}


class FakeDeadLetters:
    """The dead-letter topic: what was parked; `failures` scripts sends that fail first."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.letters: list[DeadLetter] = []
        self.failures: list[BaseException] = []

    async def __call__(self, letter: DeadLetter) -> None:
        if self.failures:
            error = self.failures.pop(0)
            self.timeline.append(("park", letter.offset, type(error).__name__))
            raise error
        self.letters.append(letter)
        self.timeline.append(("park", letter.offset, letter.reason.value))


class Harness:
    """Every well-formed event's appointment is stored with the event's parties, unless listed in
    `not_stored` or overridden by `stored`."""

    def __init__(
        self,
        messages: list[Message],
        script: dict[uuid.UUID, list[BaseException | None]] | None = None,
        *,
        stop_on_refusal: bool = False,
        not_stored: Sequence[uuid.UUID] = (),
        stored: dict[uuid.UUID, StoredAppointment] | None = None,
        headers: dict[int, Headers] | None = None,
        closed: dict[str, WorkflowExecutionStatus] | None = None,
        per_read: int | None = None,
    ) -> None:
        self.stop = asyncio.Event()
        self.timeline: Timeline = []
        self.kafka = FakeKafka(messages, self.stop, self.timeline, headers, per_read)
        self.temporal = FakeTemporal(
            self.timeline, script or {}, on_refusal=self.stop.set if stop_on_refusal else lambda: None
        )
        self.temporal.closed = closed or {}
        known: dict[uuid.UUID, StoredAppointment] = {}
        for _, value in messages:
            try:
                e = AppointmentEvent.model_validate_json(value or b"")
            except ValueError:
                continue
            known[e.appointment_id] = StoredAppointment(patient_id=e.patient_id, doctor_id=e.doctor_id)
        known.update(stored or {})
        for appointment_id in not_stored:
            known.pop(appointment_id, None)
        self.appointments = FakeAppointments(known, self.timeline)
        self.dead_letters = FakeDeadLetters(self.timeline)
        self.consumer = BillingConsumer(
            consumer=cast(AIOKafkaConsumer, self.kafka),
            temporal=cast(TemporalClient, self.temporal),
            settings=Settings(temporal_task_queue=TASK_QUEUE, billing_payment_terms_days=TERMS.days),
            appointments=self.appointments,
            dead_letters=self.dead_letters,
        )

    async def run(self) -> None:
        # Loop time: under looptime the back-offs pass at once, while a consumer that hangs still fails.
        await asyncio.wait_for(self.consumer.run(self.stop), timeout=600)

    def commits(self) -> list[int]:
        return [entry[1] for entry in self.timeline if entry[0] == "commit"]

    def starts(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.timeline if entry[0] == "start"]

    def parks(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.timeline if entry[0] == "park"]

    def assert_commits_follow_acceptance(self, events: Sequence[AppointmentEvent | None]) -> None:
        """At-least-once: committing offset c needs every event below c accepted by Temporal or
        parked on the dead-letter topic.

        `events[offset]` is the event at that offset, None for one that must be parked.
        Accepted: the start succeeded, or found the run already there.
        """
        accepted: set[tuple[uuid.UUID, str]] = set()
        parked: set[int] = set()
        for entry in self.timeline:
            if entry[0] == "start" and entry[3] in ("ok", "WorkflowAlreadyStartedError"):
                accepted.add((entry[1], entry[2]))
            elif entry[0] == "park" and entry[2] in set(RefusalReason):
                parked.add(entry[1])
            elif entry[0] == "commit":
                for offset, e in enumerate(events[: entry[1]]):
                    done = offset in parked if e is None else (e.appointment_id, kind(e)) in accepted
                    assert done, (
                        f"offset {offset} committed before it was accepted or parked: {self.timeline}"
                    )


def kind(e: AppointmentEvent) -> str:
    return "cancel" if e.event == "APPOINTMENT_CANCELLED" else "create"


def ok(e: AppointmentEvent) -> tuple[str, uuid.UUID, str, str]:
    return ("start", e.appointment_id, kind(e), "ok")


def refusal(e: AppointmentEvent) -> tuple[str, uuid.UUID, str, str]:
    return ("start", e.appointment_id, kind(e), "RPCError")


def found_running(e: AppointmentEvent) -> tuple[str, uuid.UUID, str, str]:
    return ("start", e.appointment_id, kind(e), "WorkflowAlreadyStartedError")


async def test_created_event_starts_the_billing_run_under_its_business_key() -> None:
    created = event()
    h = Harness([message(created)])
    await h.run()

    assert h.timeline == [("read", [0]), ok(created), ("commit", 1)]
    [call] = h.temporal.calls
    assert call.pop("workflow") == BillingWorkflow.run
    search: TypedSearchAttributes = call.pop("search_attributes")
    assert search.get(PATIENT_ID) == str(created.patient_id)
    assert search.get(DOCTOR_ID) == str(created.doctor_id)
    assert call == {
        "arg": BillingRequest(
            appointment_id=created.appointment_id,
            patient_id=created.patient_id,
            doctor_id=created.doctor_id,
            appointment_time=created.time,
            payment_terms_seconds=int(TERMS.total_seconds()),
        ),
        "id": f"billing-{created.appointment_id}",
        "task_queue": TASK_QUEUE,
        # A running run is reused, a finished one is never started again: redelivery cannot bill twice.
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        "start_signal": None,
        "start_signal_args": [],
    }


async def test_consumer_lag_is_what_the_topic_holds_beyond_the_committed_offset() -> None:
    events = [event() for _ in range(3)]
    h = Harness(
        [message(e) for e in events], script={events[2].appointment_id: [refused()]}, stop_on_refusal=True
    )
    await h.run()
    lag = metrics.BILLING_CONSUMER_LAG.labels(TP.topic, str(TP.partition))._value.get()
    assert h.commits() == [2] and lag == 1  # the refused third event is still to be billed


async def test_a_batch_is_committed_once_after_temporal_accepted_every_event() -> None:
    events = [event() for _ in range(3)]
    h = Harness([message(e) for e in events])
    await h.run()

    # Appointments may be handed over in any order; the one commit comes after all of them.
    assert h.timeline[0] == ("read", [0, 1, 2])
    assert sorted(map(str, h.starts())) == sorted(str(ok(e)) for e in events)
    assert h.timeline[-1] == ("commit", 3)
    assert h.commits() == [3]


async def test_a_refused_event_is_read_again_and_only_what_temporal_accepted_before_it_is_committed() -> None:
    first, second, third = events = [event() for _ in range(3)]
    h = Harness([message(e) for e in events], script={second.appointment_id: [refused()]})
    await h.run()

    # Offset 1 is the next to read: the refused event is not committed, even if the event after it
    # (another appointment) was accepted meanwhile...
    assert h.commits() == [1, 3]
    h.assert_commits_follow_acceptance(events)
    # ...and it is read again, with everything after it, once the consumer has sought back to it.
    refused_at = h.timeline.index(refusal(second))
    seek_at = h.timeline.index(("seek", 1))
    assert refused_at < seek_at
    assert h.timeline[seek_at + 1] == ("read", [1, 2])
    assert ok(second) in h.timeline[seek_at:]
    assert ok(third) in h.timeline[seek_at:]
    assert h.timeline[-1] == ("commit", 3)
    assert h.starts().count(ok(first)) == 1


async def test_with_several_refusals_in_a_batch_nothing_from_the_earliest_on_is_committed() -> None:
    events = [event() for _ in range(3)]
    h = Harness(
        [message(e) for e in events],
        script={events[0].appointment_id: [refused()], events[2].appointment_id: [refused()]},
    )
    await h.run()

    h.assert_commits_follow_acceptance(events)
    assert ("seek", 0) in h.timeline
    assert h.timeline[-1] == ("commit", 3)
    for e in events:
        assert ok(e) in h.starts()


async def test_repeated_refusals_back_off_and_commit_nothing_until_temporal_accepts() -> None:
    only = event()
    h = Harness([message(only)], script={only.appointment_id: [refused(), refused()]})
    await h.run()

    assert h.timeline == [
        ("read", [0]),
        refusal(only),
        ("seek", 0),
        ("read", [0]),
        refusal(only),
        ("seek", 0),
        ("read", [0]),
        ok(only),
        ("commit", 1),
    ]
    # Fake loop time (looptime), so exact: 0.5 s, then twice that.
    assert h.kafka.waits() == pytest.approx([0.5, 1.0])


async def test_the_back_off_doubles_up_to_30_seconds_and_stays_there() -> None:
    only = event()
    h = Harness([message(only)], script={only.appointment_id: [refused()] * 9})
    await h.run()

    assert h.kafka.waits() == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
    assert h.commits() == [1]


async def test_an_accepted_batch_resets_the_back_off() -> None:
    first, second = event(), event()
    h = Harness(
        [message(first), message(second)],
        script={first.appointment_id: [refused(), refused()], second.appointment_id: [refused()]},
        per_read=1,
    )
    await h.run()

    # first: refused, 0.5 s, refused, 1 s, accepted (committed); second: refused, 0.5 s again.
    assert h.kafka.waits() == pytest.approx([0.5, 1.0, 0.0, 0.5])
    assert h.commits() == [1, 2]


async def test_a_stop_during_the_back_off_ends_the_loop_without_committing_the_refused_event() -> None:
    only = event()
    h = Harness([message(only)], script={only.appointment_id: [refused()]}, stop_on_refusal=True)
    started = asyncio.get_running_loop().time()
    await h.run()

    # Uncommitted: whoever takes the partition next reads the event again.
    assert h.timeline == [("read", [0]), refusal(only), ("seek", 0)]
    assert asyncio.get_running_loop().time() == started, "the stop did not cut the back-off short"


async def test_a_stop_between_partitions_leaves_the_next_partition_unread() -> None:
    """A batch may hold several partitions; once stop is set, the ones not yet handed over are
    left uncommitted for whoever takes them next (a rebalance or a restart)."""
    first, second = event(), event()
    other = TopicPartition(TP.topic, 1)
    stop = asyncio.Event()
    timeline: Timeline = []

    class TwoPartitions(FakeKafka):
        async def getmany(
            self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
        ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
            self.timeline.append(("read", [0]))
            on_other = dataclasses.replace(record(0, *message(second)), partition=other.partition)
            return {TP: [record(0, *message(first))], other: [on_other]}

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            self.timeline.append(("commit", {tp.partition: at for tp, at in offsets.items()}))

    kafka = TwoPartitions([], stop, timeline)
    temporal = FakeTemporal(timeline, {}, on_refusal=lambda: None)

    async def accept_then_stop(workflow: Any, arg: BillingRequest, **options: Any) -> object:
        stop.set()  # the stop arrives while the first partition is being handed over
        return await FakeTemporal.start_workflow(temporal, workflow, arg, **options)

    temporal.start_workflow = accept_then_stop  # type: ignore[method-assign]
    stored = {
        e.appointment_id: StoredAppointment(patient_id=e.patient_id, doctor_id=e.doctor_id)
        for e in (first, second)
    }
    consumer = BillingConsumer(
        consumer=cast(AIOKafkaConsumer, kafka),
        temporal=cast(TemporalClient, temporal),
        settings=Settings(temporal_task_queue=TASK_QUEUE, billing_payment_terms_days=TERMS.days),
        appointments=FakeAppointments(stored, timeline),
        dead_letters=FakeDeadLetters(timeline),
    )
    await asyncio.wait_for(consumer.run(stop), timeout=10)

    assert timeline == [("read", [0]), ok(first), ("commit", {0: 1})]


async def test_one_appointments_events_go_in_order_and_wait_behind_its_refused_one() -> None:
    created = event()
    cancelled = event("APPOINTMENT_CANCELLED", appointment_id=created.appointment_id)
    h = Harness([message(created), message(cancelled)], script={created.appointment_id: [refused()]})
    await h.run()

    # The cancellation is not sent before the creation it follows has been accepted.
    assert h.timeline == [
        ("read", [0, 1]),
        refusal(created),
        ("seek", 0),
        ("read", [0, 1]),
        ok(created),
        ok(cancelled),
        ("commit", 2),
    ]


def _created_json(**changes: Any) -> bytes:
    body = json.loads(event().value())
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


MALFORMED: dict[str, Message] = {
    "not json": (str(uuid.uuid4()).encode(), b"{not json"),
    "tombstone": (str(uuid.uuid4()).encode(), None),
    "no key, empty value": (None, b""),
    "unknown event type": (None, _created_json(event="APPOINTMENT_COMPLETED")),
    "missing appointment id": (None, _created_json(appointmentId=None)),
    "bad patient id": (None, _created_json(patientId="patient-42")),
}


@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_event_is_parked_as_it_was_read_and_committed_past(malformed: Message) -> None:
    before, after = event(), event()
    h = Harness([message(before), malformed, message(after)], headers={1: (("traceparent", b"00-ab"),)})
    with capture_logs() as logs:
        await h.run()

    assert h.timeline[0] == ("read", [0, 1, 2])
    assert sorted(map(str, h.starts())) == sorted(str(ok(e)) for e in (before, after))
    assert h.parks() == [("park", 1, "MALFORMED")]
    assert h.commits() == [3]
    h.assert_commits_follow_acceptance([before, None, after])
    # The dead letter is the record as it came (key, value, headers) and where it came from.
    [letter] = h.dead_letters.letters
    assert (letter.key, letter.value, letter.headers) == (*malformed, (("traceparent", b"00-ab"),))
    assert (letter.topic, letter.partition, letter.offset) == (TP.topic, TP.partition, 1)
    assert letter.reason is RefusalReason.malformed and letter.detail == "not an appointment event"
    # Where it is, never what it says (an event names a patient).
    parked = [entry for entry in logs if entry["event"] == "billing event parked on the dead-letter topic"]
    assert parked == [
        {
            "event": "billing event parked on the dead-letter topic",
            "log_level": "warning",
            "reason": "MALFORMED",
            "detail": "not an appointment event",
            "appointment_id": None,
            "partition": TP.partition,
            "offset": 1,
        }
    ]


async def test_a_batch_of_only_malformed_events_is_parked_and_committed_past() -> None:
    h = Harness([(None, b""), (None, b"[]")])
    await h.run()

    assert h.timeline == [("read", [0, 1]), ("park", 0, "MALFORMED"), ("park", 1, "MALFORMED"), ("commit", 2)]
    assert h.temporal.calls == []


async def test_a_redelivered_created_event_asks_for_the_same_run_and_is_committed_when_it_ran() -> None:
    created = event()
    # The second copy finds the run there: Temporal answers a duplicate start with AlreadyStarted.
    h = Harness(
        [message(created), message(created)],
        script={created.appointment_id: [None, already_started(created.appointment_id)]},
    )
    await h.run()

    assert h.timeline == [("read", [0, 1]), ok(created), found_running(created), ("commit", 2)]
    first, second = h.temporal.calls
    assert first == second
    assert first["id"] == billing_workflow_id(created.appointment_id)


async def test_an_already_started_run_is_committed_and_not_retried() -> None:
    created = event()
    h = Harness(
        [message(created)], script={created.appointment_id: [already_started(created.appointment_id)]}
    )
    await h.run()

    assert h.timeline == [("read", [0]), found_running(created), ("commit", 1)]


async def test_a_cancellation_signals_the_run_or_starts_it_with_the_signal() -> None:
    created = event()
    cancelled = event("APPOINTMENT_CANCELLED", appointment_id=created.appointment_id)
    h = Harness([message(created), message(cancelled)])
    await h.run()

    assert h.timeline == [("read", [0, 1]), ok(created), ok(cancelled), ("commit", 2)]
    start, cancel = h.temporal.calls
    assert cancel["start_signal"] == "cancel"
    assert cancel["start_signal_args"] == [CancelSignal(event_id=cancelled.event_id)]
    # The same run, under the same policies: signal-with-start reaches it or starts it.
    for option in ("workflow", "id", "task_queue", "id_conflict_policy", "id_reuse_policy"):
        assert cancel[option] == start[option], option
    assert cancel["arg"] == BillingRequest(
        appointment_id=cancelled.appointment_id,
        patient_id=cancelled.patient_id,
        doctor_id=cancelled.doctor_id,
        appointment_time=cancelled.time,
        payment_terms_seconds=int(TERMS.total_seconds()),
    )


async def test_a_cancellation_refused_by_temporal_is_retried_as_signal_with_start() -> None:
    cancelled = event("APPOINTMENT_CANCELLED")
    h = Harness([message(cancelled)], script={cancelled.appointment_id: [refused()]})
    await h.run()

    assert h.timeline == [
        ("read", [0]),
        refusal(cancelled),
        ("seek", 0),
        ("read", [0]),
        ok(cancelled),
        ("commit", 1),
    ]
    assert [c["start_signal"] for c in h.temporal.calls] == ["cancel", "cancel"]
    assert [c["start_signal_args"] for c in h.temporal.calls] == [
        [CancelSignal(event_id=cancelled.event_id)]
    ] * 2


async def test_an_unexpected_error_leaves_the_batch_uncommitted_for_redelivery() -> None:
    first, second = event(), event()
    h = Harness([message(first), message(second)], script={second.appointment_id: [RuntimeError("bug")]})
    with pytest.raises(RuntimeError):
        await h.run()

    assert h.commits() == []
    assert ("start", second.appointment_id, "create", "RuntimeError") in h.timeline


# -- Refused for good: parked on the dead-letter topic, and consumption goes on ---------------------


@pytest.mark.parametrize(
    "status", [RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.NOT_FOUND]
)
async def test_a_permanent_temporal_refusal_is_parked_once_and_the_partition_goes_on(
    status: RPCStatusCode,
) -> None:
    first, second, third = events = [event() for _ in range(3)]
    h = Harness([message(e) for e in events], script={second.appointment_id: [refused(status)]})
    await h.run()

    # Not retried: one start for it, parked with the status, and the events after it go through.
    assert h.starts().count(refusal(second)) == 1 and ok(second) not in h.starts()
    assert h.parks() == [("park", 1, "TEMPORAL_REFUSED")]
    assert ok(first) in h.starts() and ok(third) in h.starts()
    assert h.commits() == [3] and ("seek", 1) not in h.timeline
    assert h.kafka.waits() == []  # parked, not retried: no back-off
    [letter] = h.dead_letters.letters
    assert letter.detail == f"{status.name}: temporal says {status.name}"
    assert letter.value == second.value() and letter.key == second.key()
    h.assert_commits_follow_acceptance([first, None, third])


@pytest.mark.parametrize(
    "status",
    [
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.INTERNAL,
    ],
)
async def test_a_transient_temporal_refusal_is_read_again_and_never_parked(status: RPCStatusCode) -> None:
    only = event()
    h = Harness([message(only)], script={only.appointment_id: [refused(status)]})
    await h.run()

    assert h.timeline == [("read", [0]), refusal(only), ("seek", 0), ("read", [0]), ok(only), ("commit", 1)]
    assert h.parks() == []


async def test_an_event_whose_appointment_is_not_stored_is_parked_without_asking_temporal() -> None:
    ghost, real = event(), event()
    h = Harness([message(ghost), message(real)], not_stored=[ghost.appointment_id])
    await h.run()

    assert h.parks() == [("park", 0, "APPOINTMENT_NOT_FOUND")]
    assert h.starts() == [ok(real)]
    assert h.commits() == [2]
    assert h.dead_letters.letters[0].detail == f"no appointment {ghost.appointment_id}"


@pytest.mark.parametrize("party", ["patient", "doctor"])
async def test_an_event_naming_other_parties_than_the_stored_appointment_is_parked(party: str) -> None:
    forged = event()
    stored = StoredAppointment(
        patient_id=uuid.uuid4() if party == "patient" else forged.patient_id,
        doctor_id=uuid.uuid4() if party == "doctor" else forged.doctor_id,
    )
    h = Harness([message(forged)], stored={forged.appointment_id: stored})
    await h.run()

    assert h.timeline == [("read", [0]), ("park", 0, f"{party.upper()}_MISMATCH"), ("commit", 1)]
    assert h.temporal.calls == []


SYNTHETIC: Headers = ((SYNTHETIC_HEADER, b"bench.analytics_freshness"),)


async def test_a_synthetic_event_of_no_stored_appointment_is_skipped_not_parked() -> None:
    synthetic, real = event(), event()
    h = Harness(
        [message(synthetic), message(real)], not_stored=[synthetic.appointment_id], headers={0: SYNTHETIC}
    )
    await h.run()

    assert h.parks() == [] and h.starts() == [ok(real)]
    assert h.commits() == [2]


async def test_the_synthetic_mark_never_keeps_a_stored_appointment_from_its_bill() -> None:
    marked = event()
    h = Harness([message(marked)], headers={0: SYNTHETIC})
    await h.run()

    assert h.timeline == [("read", [0]), ok(marked), ("commit", 1)]


async def test_a_database_outage_reads_the_batch_again_and_commits_nothing_meanwhile() -> None:
    first, second = event(), event()
    h = Harness([message(first), message(second)])
    h.appointments.failures = [ConnectionRefusedError(), ConnectionRefusedError()]
    await h.run()

    assert h.timeline[:5] == [
        ("read", [0, 1]),
        ("lookup", "ConnectionRefusedError"),
        ("seek", 0),
        ("read", [0, 1]),
        ("lookup", "ConnectionRefusedError"),
    ]
    assert h.commits() == [2] and h.parks() == []
    assert sorted(map(str, h.starts())) == sorted(str(ok(e)) for e in (first, second))
    # The outage backs off as a Temporal refusal does (fake loop time, so exact).
    assert h.kafka.waits() == pytest.approx([0.5, 1.0])


async def test_an_event_that_cannot_be_parked_yet_stays_on_the_topic_until_it_is() -> None:
    ghost, after = event(), event()
    h = Harness([message(ghost), message(after)], not_stored=[ghost.appointment_id])
    h.dead_letters.failures = [ConnectionError("dead-letter topic down")]
    await h.run()

    # The first park failed: offset 0 is not committed, the batch is read again and it is parked then.
    assert h.parks() == [("park", 0, "ConnectionError"), ("park", 0, "APPOINTMENT_NOT_FOUND")]
    assert h.timeline.index(("seek", 0)) < h.timeline.index(("park", 0, "APPOINTMENT_NOT_FOUND"))
    assert h.commits() == [2]
    assert [d.offset for d in h.dead_letters.letters] == [0]
    assert h.kafka.waits() == pytest.approx([0.5])


async def test_a_cancellation_for_a_failed_run_is_parked_so_it_does_not_vanish() -> None:
    cancelled = event("APPOINTMENT_CANCELLED")
    workflow_id = billing_workflow_id(cancelled.appointment_id)
    h = Harness(
        [message(cancelled)],
        script={cancelled.appointment_id: [already_started(cancelled.appointment_id)]},
        closed={workflow_id: WorkflowExecutionStatus.FAILED},
    )
    await h.run()

    assert h.timeline == [
        ("read", [0]),
        found_running(cancelled),
        ("describe", workflow_id, "FAILED"),
        ("park", 0, "RUN_CLOSED"),
        ("commit", 1),
    ]
    assert "FAILED" in h.dead_letters.letters[0].detail


async def test_a_cancellation_for_a_completed_run_is_accepted() -> None:
    cancelled = event("APPOINTMENT_CANCELLED")
    workflow_id = billing_workflow_id(cancelled.appointment_id)
    h = Harness(
        [message(cancelled)],
        script={cancelled.appointment_id: [already_started(cancelled.appointment_id)]},
        closed={workflow_id: WorkflowExecutionStatus.COMPLETED},
    )
    await h.run()

    assert h.parks() == [] and h.commits() == [1]


def _counted() -> dict[str, float]:
    """The consumer's outcome counters as Prometheus exports them (per outcome, per parking reason)."""
    samples = {
        f"{s.labels.get('outcome', '')}{s.labels.get('reason', '')}": s.value
        for family in (metrics.BILLING_EVENTS, metrics.BILLING_DEAD_LETTERED)
        for metric in family.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }
    return {name: samples.get(name, 0.0) for name in OUTCOMES}


OUTCOMES = ("accepted", "synthetic", "dead_lettered", "refused", "APPOINTMENT_NOT_FOUND")


async def test_each_outcome_is_counted_under_its_label_and_logged_where_it_is() -> None:
    """What an operator reads on /metrics and in the log: one count per outcome, and each log line
    names the partition and offset (and for a run its workflow id), never the event's content."""
    accepted, synthetic, ghost, later = events = [event() for _ in range(4)]
    h = Harness(
        [message(e) for e in events],
        script={later.appointment_id: [refused()]},
        not_stored=[synthetic.appointment_id, ghost.appointment_id],
        headers={1: SYNTHETIC},
    )
    before = _counted()
    with capture_logs() as logs:
        await h.run()
    after = _counted()

    assert {name: after[name] - before[name] for name in OUTCOMES} == {
        "accepted": 2,  # `accepted`, and `later` when read again
        "synthetic": 1,
        "dead_lettered": 1,
        "refused": 1,
        "APPOINTMENT_NOT_FOUND": 1,
    }
    by_event: dict[str, list[dict[str, Any]]] = {}
    for entry in logs:
        by_event.setdefault(entry["event"], []).append(dict(entry))
    assert by_event["synthetic billing event skipped"] == [
        {
            "event": "synthetic billing event skipped",
            "log_level": "info",
            "partition": TP.partition,
            "offset": 1,
        }
    ]
    assert [
        {k: v for k, v in e.items() if k != "correlation_id"} for e in by_event["billing event handled"]
    ] == [
        {
            "event": "billing event handled",
            "log_level": "info",
            "billing_event": "APPOINTMENT_CREATED",
            "workflow_id": billing_workflow_id(e.appointment_id),
            "partition": TP.partition,
            "offset": offset,
        }
        for e, offset in ((accepted, 0), (later, 3))
    ]
    assert by_event["billing event refused for now; will retry"] == [
        {
            "event": "billing event refused for now; will retry",
            "log_level": "warning",
            "partition": TP.partition,
            "offset": 3,
            "detail": "UNAVAILABLE: temporal says UNAVAILABLE",  # Temporal's status, not the event
        }
    ]
    [parked] = by_event["billing event parked on the dead-letter topic"]
    assert parked["appointment_id"] == str(ghost.appointment_id) and parked["offset"] == 2


# -- What the consumer asks of the broker, the lag gauge, and what it passes on --------------
async def test_a_long_topic_is_read_in_batches_of_200_each_committed_after_its_own() -> None:
    """At most 200 records a read: a batch's starts are bounded, and so is what a crash repeats."""
    events = [event() for _ in range(450)]
    h = Harness([message(e) for e in events])
    await h.run()
    reads = [entry[1] for entry in h.timeline if entry[0] == "read"]
    assert [(r[0], r[-1]) for r in reads] == [(0, 199), (200, 399), (400, 449)]
    assert h.commits() == [200, 400, 450]


class IdleKafka:
    """A topic with nothing new: a read waits its `timeout_ms` (a long poll) and returns nothing."""

    def __init__(self, stop: asyncio.Event, polls: int) -> None:
        self.stop = stop
        self.polls = polls
        self.read_at: list[float] = []

    async def getmany(
        self, *_: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        loop = asyncio.get_running_loop()
        self.read_at.append(loop.time())
        if len(self.read_at) >= self.polls:
            self.stop.set()
        await asyncio.sleep((timeout_ms or 0) / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


async def test_an_idle_consumer_long_polls_one_second_at_a_time() -> None:
    """Not a spin on an empty topic, and a stop is seen within a second (fake loop time: exact)."""
    stop = asyncio.Event()
    kafka = IdleKafka(stop, polls=4)
    consumer = Harness([]).consumer
    consumer._consumer = cast(AIOKafkaConsumer, kafka)
    await asyncio.wait_for(consumer.run(stop), timeout=600)
    waits = [b - a for a, b in zip(kafka.read_at, kafka.read_at[1:], strict=False)]
    assert waits == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


class LagKafka:
    """Three assigned partitions, listed in this order: one never committed to, one read to its
    end, one behind."""

    def __init__(self, topic: str) -> None:
        self.parts = [TopicPartition(topic, p) for p in (0, 1, 2)]
        self.high = dict(zip(self.parts, (7, 10, 8), strict=True))
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return self.parts

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp)  # None for a partition not assigned here, as aiokafka answers

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


async def test_the_lag_gauge_is_set_per_partition_committed_to_and_is_zero_when_caught_up() -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"  # gauges are process-wide: a topic of this test's own
    kafka = LagKafka(topic)
    consumer = Harness([]).consumer
    consumer._consumer = cast(AIOKafkaConsumer, kafka)
    never, caught_up, behind = kafka.parts
    await consumer._commit(caught_up, 9)  # the next to read: 10, the high-water mark
    await consumer._commit(behind, 4)
    consumer._report_lag()

    def gauge(tp: TopicPartition) -> float | None:
        return REGISTRY.get_sample_value(
            "healthcare_billing_consumer_lag", {"topic": tp.topic, "partition": str(tp.partition)}
        )

    assert (gauge(never), gauge(caught_up), gauge(behind)) == (None, 0.0, 3.0)


async def test_the_retry_log_names_the_cause_of_a_lookup_or_dead_letter_failure() -> None:
    """What an operator reads to tell a database outage from a dead-letter topic outage."""
    h = Harness([message(event())])
    h.appointments.failures = [ConnectionRefusedError()]
    ghost = event()
    g = Harness([message(ghost)], not_stored=[ghost.appointment_id])
    g.dead_letters.failures = [TimeoutError()]
    with capture_logs() as logs:
        await h.run()
        await g.run()
    retries = [e["detail"] for e in logs if e["event"] == "billing event refused for now; will retry"]
    assert retries == ["appointments: ConnectionRefusedError", "dead-letter topic: TimeoutError"]


async def test_a_refused_event_holds_back_only_its_own_appointment_within_a_batch() -> None:
    """Appointments are lanes: B is started in the same pass in which A is refused, not after A's
    back-off and re-read."""
    a, b = event(), event()
    h = Harness([message(a), message(b)], script={a.appointment_id: [refused()]})
    await h.run()
    first_seek = h.timeline.index(("seek", 0))
    assert ok(b) in h.timeline[:first_seek]
    assert h.timeline[:first_seek].count(refusal(a)) == 1


async def test_the_billing_run_starts_with_the_events_correlation_id_bound() -> None:
    """The Temporal client's interceptor reads the bound id into the run's header and memo; the
    consumer binds the one the booking request sent along as a Kafka header."""
    from healthcare import correlation

    created, bare = event(), event()
    h = Harness([message(created), message(bare)], headers={0: ((correlation.HEADER, b"booking-42"),)})
    bound: dict[uuid.UUID, str | None] = {}
    start = h.temporal.start_workflow

    async def recording(workflow: Any, arg: BillingRequest, **options: Any) -> object:
        bound[arg.appointment_id] = correlation.current()
        return await start(workflow, arg, **options)

    h.temporal.start_workflow = recording  # type: ignore[method-assign]
    await h.run()
    assert bound == {created.appointment_id: "booking-42", bare.appointment_id: None}


async def test_each_event_is_processed_in_a_span_continuing_the_bookings_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from healthcare import tracing

    exporter = InMemorySpanExporter()
    provider = tracing.new_provider("unit", exporter, batch=False)
    monkeypatch.setattr(tracing, "_provider", provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01".encode()
    events = [event(), event()]
    h = Harness([message(e) for e in events], headers={1: ((tracing.TRACEPARENT, traceparent),)})
    try:
        await h.run()
    finally:
        provider.shutdown()
    (span,) = exporter.get_finished_spans()  # offset 0 came without a trace: no span of its own
    assert span.name == f"process {TP.topic}"
    assert span.context is not None and format(span.context.trace_id, "032x") == trace_id
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": TP.topic,
        "messaging.destination.partition.id": str(TP.partition),
        "messaging.kafka.message.offset": 1,
    }


async def test_at_most_32_starts_are_in_flight_at_once_by_default() -> None:
    events = [event() for _ in range(40)]
    h = Harness([message(e) for e in events])
    in_flight = peak = 0
    start = h.temporal.start_workflow

    async def counting(workflow: Any, arg: BillingRequest, **options: Any) -> object:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.05)  # a round trip to Temporal (fake loop time)
            return await start(workflow, arg, **options)
        finally:
            in_flight -= 1

    h.temporal.start_workflow = counting  # type: ignore[method-assign]
    await h.run()
    assert peak == 32
    assert h.commits() == [40]
