"""The billing consumer without Kafka or Temporal: what it asks Temporal, and which offsets it commits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from structlog.testing import capture_logs
from temporalio.client import Client as TemporalClient
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import metrics
from healthcare.contracts.billing import BillingRequest, CancelSignal, billing_workflow_id
from healthcare.contracts.events import AppointmentEvent
from healthcare.settings import Settings
from workers.billing_consumer import BillingConsumer
from workflows.billing import BillingWorkflow
from workflows.search_attributes import DOCTOR_ID, PATIENT_ID

TP = TopicPartition("appointment-events", 0)
TASK_QUEUE = "billing-unit"
TERMS = timedelta(days=7)
# Enough for any test here; a consumer that never stops re-reading fails instead of hanging.
MAX_READS = 20

Message = tuple[bytes | None, bytes | None]  # (key, value) as the producer wrote them
Timeline = list[tuple[Any, ...]]


def event(kind: str = "APPOINTMENT_CREATED", appointment_id: uuid.UUID | None = None) -> AppointmentEvent:
    return AppointmentEvent(
        event=kind,
        event_id=uuid.uuid4(),
        appointment_id=appointment_id or uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=datetime(2030, 5, 1, 9, 30, tzinfo=UTC),
        occurred_at=datetime(2030, 4, 1, 8, 0, tzinfo=UTC),
    )


def message(e: AppointmentEvent) -> Message:
    """Keyed by appointment, as the API publishes it: one appointment's events share a partition."""
    return (e.key(), e.value())


def record(offset: int, key: bytes | None, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
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
        headers=(),
    )


def refused() -> RPCError:
    return RPCError("temporal unavailable", RPCStatusCode.UNAVAILABLE, b"")


def already_started(appointment_id: uuid.UUID) -> WorkflowAlreadyStartedError:
    return WorkflowAlreadyStartedError(billing_workflow_id(appointment_id), "Billing")


class FakeKafka:
    """One partition read the way aiokafka reads it: from a position that `seek` moves.

    A message that is read is not read again unless the consumer seeks back, so a consumer that
    forgets to seek after a refusal loses the event here as it would against a broker. Once the
    log is read to its end, `stop` is set and the consumer's loop ends.
    """

    def __init__(self, messages: list[Message], stop: asyncio.Event, timeline: Timeline) -> None:
        self.log = [record(offset, key, value) for offset, (key, value) in enumerate(messages)]
        self.position = 0
        self.stop = stop
        self.timeline = timeline
        self.read_at: list[float] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch = self.log[self.position : self.position + (max_records or len(self.log))]
        if not batch or len(self.read_at) >= MAX_READS:
            self.stop.set()
            return {}
        self.read_at.append(asyncio.get_running_loop().time())
        self.position = batch[-1].offset + 1
        self.timeline.append(("read", [m.offset for m in batch]))
        return {TP: batch}

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


class Harness:
    def __init__(
        self,
        messages: list[Message],
        script: dict[uuid.UUID, list[BaseException | None]] | None = None,
        *,
        stop_on_refusal: bool = False,
    ) -> None:
        self.stop = asyncio.Event()
        self.timeline: Timeline = []
        self.kafka = FakeKafka(messages, self.stop, self.timeline)
        self.temporal = FakeTemporal(
            self.timeline, script or {}, on_refusal=self.stop.set if stop_on_refusal else lambda: None
        )
        self.consumer = BillingConsumer(
            consumer=cast(AIOKafkaConsumer, self.kafka),
            temporal=cast(TemporalClient, self.temporal),
            settings=Settings(temporal_task_queue=TASK_QUEUE, billing_payment_terms_days=TERMS.days),
        )

    async def run(self) -> None:
        await asyncio.wait_for(self.consumer.run(self.stop), timeout=10)

    def commits(self) -> list[int]:
        return [entry[1] for entry in self.timeline if entry[0] == "commit"]

    def starts(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.timeline if entry[0] == "start"]

    def assert_commits_follow_acceptance(self, events: Sequence[AppointmentEvent | None]) -> None:
        """At-least-once: committing offset c needs Temporal to have accepted every event below c.

        `events[offset]` is the event at that offset, None for a malformed one (nothing to accept).
        Accepted: the start succeeded, or found the run already there.
        """
        accepted: set[tuple[uuid.UUID, str]] = set()
        for entry in self.timeline:
            if entry[0] == "start" and entry[3] in ("ok", "WorkflowAlreadyStartedError"):
                accepted.add((entry[1], entry[2]))
            elif entry[0] == "commit":
                for offset, e in enumerate(events[: entry[1]]):
                    if e is not None:
                        assert (e.appointment_id, kind(e)) in accepted, (
                            f"offset {offset} committed before Temporal accepted it: {self.timeline}"
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
    # Lower bounds only (a slow machine may wait longer): 0.5 s, then twice that.
    first_wait, second_wait = (b - a for a, b in zip(h.kafka.read_at, h.kafka.read_at[1:], strict=False))
    assert first_wait >= 0.45
    assert second_wait >= 0.95


async def test_a_stop_during_the_back_off_ends_the_loop_without_committing_the_refused_event() -> None:
    only = event()
    h = Harness([message(only)], script={only.appointment_id: [refused()]}, stop_on_refusal=True)
    started = asyncio.get_running_loop().time()
    await h.run()

    # Uncommitted: whoever takes the partition next reads the event again.
    assert h.timeline == [("read", [0]), refusal(only), ("seek", 0)]
    assert asyncio.get_running_loop().time() - started < 0.4, "the stop did not cut the back-off short"


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
async def test_a_malformed_event_is_logged_skipped_and_committed(malformed: Message) -> None:
    before, after = event(), event()
    h = Harness([message(before), malformed, message(after)])
    with capture_logs() as logs:
        await h.run()

    assert h.timeline[0] == ("read", [0, 1, 2])
    assert sorted(map(str, h.starts())) == sorted(str(ok(e)) for e in (before, after))
    assert h.commits() == [3]
    h.assert_commits_follow_acceptance([before, None, after])
    # Where it is, never what it says (an event names a patient).
    skipped = [entry for entry in logs if entry["event"] == "skipping malformed appointment event"]
    assert skipped == [
        {
            "event": "skipping malformed appointment event",
            "log_level": "warning",
            "partition": TP.partition,
            "offset": 1,
        }
    ]


async def test_a_batch_of_only_malformed_events_is_committed_past() -> None:
    h = Harness([(None, b""), (None, b"[]")])
    await h.run()

    assert h.timeline == [("read", [0, 1]), ("commit", 2)]
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
