"""Events billing refuses, on the real stack: checked against the stored appointment, parked on the
dead-letter topic with the reason, listed, redriven; the partition never stops for them.

Two consumers are used. The stack's own (group billing-group on the stack's topic) for events that
must be refused before any run starts, and for a cancellation that reaches a run that is gone. A
consumer started here, on a topic and dead-letter topic of its own, whose Temporal namespace was
made without our search attributes: every start is refused by Temporal with INVALID_ARGUMENT, the
refusal that used to stop the partition for good. Registering the attributes fixes the cause and a
redrive bills what was parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import NewTopic
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.operatorservice.v1 import DeleteNamespaceRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from bench import analytics_freshness as bench_events
from healthcare import clients
from healthcare.contracts.appointments import event_id_for
from healthcare.contracts.billing import billing_workflow_id, invoice_id_for
from healthcare.contracts.events import AppointmentEvent, RefusalReason
from healthcare.dead_letters import DeadLetter, DeadLetterTopic
from healthcare.settings import Settings, get_settings
from ops import dead_letters as ops_dead_letters
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually
from workers.billing_consumer import run_consumer
from workflows import search_attributes

pytestmark = pytest.mark.integration

V1 = "/api/v1"
HEALTHCARE = Path(sys.executable).parent / "healthcare"
CONSUMER_METRICS_PORT = get_settings().stack_port("consumer_metrics")


async def _book(api: httpx.AsyncClient, admin: Account, staff: Account) -> dict[str, Any]:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    slot = datetime.now(UTC) + timedelta(days=70, minutes=31 * (uuid.uuid4().int % 5000))
    resp = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": patient["id"],
            "doctorId": doctor["id"],
            "time": slot.replace(second=0, microsecond=0).isoformat(),
        },
        headers=staff.headers,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _event_of(
    appointment: dict[str, Any], kind: str = "APPOINTMENT_CREATED", **changes: Any
) -> AppointmentEvent:
    """The event the platform publishes for this appointment (changes: what a forger alters)."""
    body = {
        "event": kind,
        "eventId": event_id_for(uuid.UUID(appointment["id"]), kind),
        "appointmentId": appointment["id"],
        "patientId": appointment["patientId"],
        "doctorId": appointment["doctorId"],
        "time": appointment["time"],
        "occurredAt": datetime.now(UTC).isoformat(),
    }
    return AppointmentEvent.model_validate({**body, **changes})


async def _produce(settings: Settings, topic: str, events: list[AppointmentEvent]) -> None:
    producer = clients.kafka_producer(settings)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event.value(), key=event.key())
    finally:
        await producer.stop()


async def _dead_letters(
    settings: Settings, appointment_ids: set[str], *, at_least: int = 1, timeout: float = 60
) -> list[DeadLetter]:
    """The dead letters (waiting or not) of these appointments, once there are `at_least`."""

    async def parked() -> list[DeadLetter]:
        async with DeadLetterTopic(settings) as topic:
            letters = await topic.read(await topic.backlog(), waiting_only=False)
        ours = [d for d in letters if d.key is not None and d.key.decode() in appointment_ids]
        assert len(ours) >= at_least, ours
        return ours

    return await eventually(parked, timeout=timeout, interval=0.5, what=f"{at_least} dead letters")


async def _runs(temporal: TemporalClient, appointment_id: str) -> int:
    return (
        await temporal.count_workflows(f"WorkflowId = '{billing_workflow_id(uuid.UUID(appointment_id))}'")
    ).count


async def _until_issued(api: httpx.AsyncClient, who: Account, appointment_id: str) -> None:
    invoice_id = invoice_id_for(uuid.UUID(appointment_id))

    async def issued() -> bool:
        resp = await api.get(f"{V1}/invoices/{invoice_id}", headers=who.headers)
        return resp.status_code == 200 and resp.json()["status"] == "ISSUED"

    await eventually(issued, timeout=120, interval=0.5, what=f"the ISSUED invoice of {appointment_id}")


async def _metric(port: int, name: str, labels: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in body.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_events_that_match_no_stored_appointment_are_parked_and_start_no_run(
    api: httpx.AsyncClient, admin: Account, staff: Account, temporal: TemporalClient, settings: Settings
) -> None:
    real = await _book(api, admin, staff)
    ghost = _event_of({**real, "id": str(uuid.uuid4())})  # an appointment nobody booked
    forged = _event_of(real, patientId=str(uuid.uuid4()))  # a real appointment, another patient
    # What bench.analytics_freshness publishes, thousands at a time, marked as synthetic.
    _, synthetic_key, synthetic_value = bench_events.event_value()
    synthetic = AppointmentEvent.model_validate_json(synthetic_value)
    synthetic_before = await _metric(
        CONSUMER_METRICS_PORT, "healthcare_billing_events_total", '{outcome="synthetic"}'
    )
    not_found = ("healthcare_billing_dead_lettered_total", '{reason="APPOINTMENT_NOT_FOUND"}')
    not_found_before = await _metric(CONSUMER_METRICS_PORT, *not_found)
    await _produce(settings, settings.topic_appointment_events, [ghost, forged])
    producer = clients.kafka_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_appointment_events,
            synthetic_value,
            key=synthetic_key,
            headers=bench_events.HEADERS,
        )
    finally:
        await producer.stop()
    after = await _book(api, admin, staff)  # consumption goes on past the refused ones

    letters = await _dead_letters(settings, {str(ghost.appointment_id), real["id"]}, at_least=2)
    reasons = {(d.key, d.reason) for d in letters}
    assert (ghost.key(), RefusalReason.appointment_not_found) in reasons
    assert (forged.key(), RefusalReason.patient_mismatch) in reasons
    by_reason = {d.reason: d for d in letters}
    assert by_reason[RefusalReason.patient_mismatch].value == forged.value()  # the record, byte for byte
    assert by_reason[RefusalReason.appointment_not_found].topic == settings.topic_appointment_events
    await _until_issued(api, staff, after["id"])
    await _until_issued(api, staff, real["id"])  # billed from its own event, once
    assert await _runs(temporal, str(ghost.appointment_id)) == 0
    assert await _runs(temporal, str(synthetic.appointment_id)) == 0
    assert await _runs(temporal, real["id"]) == 1
    # The synthetic event was skipped, not parked.
    synthetic_metric = ("healthcare_billing_events_total", '{outcome="synthetic"}')

    async def skipped() -> bool:
        return await _metric(CONSUMER_METRICS_PORT, *synthetic_metric) > synthetic_before

    await eventually(skipped, timeout=30, interval=0.5, what="the synthetic event's count")
    async with DeadLetterTopic(settings) as topic:
        everything = await topic.read(await topic.backlog(), waiting_only=False)
    assert not [d for d in everything if d.key == synthetic.key()]
    # Parked events are counted by reason, and the ones waiting for a redrive (refreshed every 30 s).
    assert await _metric(CONSUMER_METRICS_PORT, *not_found) >= not_found_before + 1

    async def waiting() -> bool:
        return await _metric(CONSUMER_METRICS_PORT, "healthcare_billing_dead_letters_waiting", "") >= 2

    await eventually(waiting, timeout=90, interval=1, what="the dead-letters-waiting gauge")


async def test_a_cancellation_for_a_run_that_is_gone_is_parked_not_dropped(
    api: httpx.AsyncClient, admin: Account, staff: Account, temporal: TemporalClient, settings: Settings
) -> None:
    appointment = await _book(api, admin, staff)
    await _until_issued(api, staff, appointment["id"])
    workflow_id = billing_workflow_id(uuid.UUID(appointment["id"]))
    await temporal.get_workflow_handle(workflow_id).terminate(reason="test: a run that ended badly")
    resp = await api.post(f"{V1}/appointments/{appointment['id']}/cancel", headers=staff.headers)
    assert resp.status_code == 200, resp.text

    [letter] = await _dead_letters(settings, {appointment["id"]})
    assert letter.reason is RefusalReason.run_closed and "TERMINATED" in letter.detail
    assert AppointmentEvent.model_validate_json(letter.value or b"").event == "APPOINTMENT_CANCELLED"
    # `billing reconcile` shows the same appointment from the other side: its invoice is still open.
    proc = await asyncio.create_subprocess_exec(
        str(HEALTHCARE),
        "billing",
        "reconcile",
        "--appointment",
        appointment["id"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1 and "cancellations not voided: 1" in out.decode()


@dataclass
class PrivateBilling:
    settings: Settings
    temporal: TemporalClient  # on the namespace without our search attributes
    group: str


@pytest.fixture
async def private_billing(settings: Settings, temporal: TemporalClient) -> AsyncIterator[PrivateBilling]:
    """A topic, dead-letter topic and Temporal namespace of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    namespace = f"dlq-test-{suffix}"
    await temporal.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    private = settings.model_copy(
        update={
            "topic_appointment_events": f"dlq-test-events-{suffix}",
            "temporal_namespace": namespace,
            "temporal_task_queue": f"dlq-test-{suffix}",  # no worker: started runs just wait
        }
    )
    admin = clients.kafka_admin(settings)
    await admin.start()
    topics = [private.topic_appointment_events, private.appointment_events_dlq]
    await admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics])

    async def served() -> TemporalClient:  # a new namespace takes a moment to be served
        try:
            client = await TemporalClient.connect(
                settings.temporal_address, namespace=namespace, data_converter=temporal.data_converter
            )
            await client.count_workflows()
        except RPCError as not_yet:
            raise AssertionError(f"namespace {namespace}: {not_yet}") from None
        return client

    ns_client = await eventually(served, timeout=60, interval=0.5, what=f"namespace {namespace}")
    try:
        yield PrivateBilling(private, ns_client, f"dlq-test-{suffix}")
    finally:
        # The namespace goes, with its runs: a stack that ran the suite often looks like a fresh one.
        with contextlib.suppress(RPCError):
            await temporal.operator_service.delete_namespace(DeleteNamespaceRequest(namespace=namespace))
        await admin.delete_topics(topics)
        await admin.close()


async def _committed(settings: Settings, topic: str, group: str) -> int:
    """How many records of `topic` the group has committed past (its offsets, summed)."""
    admin = clients.kafka_admin(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def test_events_temporal_refuses_for_good_are_parked_the_partition_goes_on_and_a_redrive_bills_them(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    engine: AsyncEngine,
    private_billing: PrivateBilling,
) -> None:
    private = private_billing.settings
    appointments = [await _book(api, admin, staff) for _ in range(3)]
    events = [_event_of(a) for a in appointments]
    await _produce(private, private.topic_appointment_events, events)

    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(private, stop=stop, group_id=private_billing.group))
    try:
        # Every start is refused with INVALID_ARGUMENT (no PatientId in this namespace): each event
        # is parked once, and the group commits past all of them: nothing holds the partition.

        async def past_all() -> bool:
            return await _committed(private, private.topic_appointment_events, private_billing.group) >= 3

        await eventually(past_all, timeout=90, interval=0.5, what="the group's commit past the three events")
    finally:
        stop.set()
        await asyncio.wait_for(consumer, 30)
    waiting = await ops_dead_letters.list_dead_letters(private)
    assert sorted(item.letter.key or b"" for item in waiting) == sorted(e.key() for e in events)
    for item in waiting:
        assert item.letter.reason is RefusalReason.temporal_refused and item.waiting
        assert item.letter.detail.startswith("INVALID_ARGUMENT")
        assert item.letter.topic == private.topic_appointment_events
    assert sorted(str(item.event) for item in waiting) == sorted(str(e) for e in events)

    # The operator's view: `billing dlq list` with this topic's settings (exit 1: some wait).
    env = {"HC_TOPIC_APPOINTMENT_EVENTS": private.topic_appointment_events}
    proc = await asyncio.create_subprocess_exec(
        str(HEALTHCARE),
        "billing",
        "dlq",
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1 and "3 dead letter(s) waiting: {'TEMPORAL_REFUSED': 3}" in out.decode()

    # Fix the cause, then redrive until clean: a refusal while the namespace's cache catches up is
    # parked again (nothing lost), and the next redrive takes it.
    await search_attributes.register(private_billing.temporal, private.temporal_namespace)
    producer = clients.kafka_producer(private)
    await producer.start()
    try:

        async def redriven() -> bool:
            summary = ops_dead_letters.RedriveSummary()
            async for _ in ops_dead_letters.redrive(
                private, private_billing.temporal, engine, producer, summary=summary
            ):
                pass
            assert summary.clean and summary.outcomes, summary
            return True

        await eventually(redriven, timeout=120, interval=1, what="a clean redrive")
    finally:
        await producer.stop()
    for appointment in appointments:
        desc = await private_billing.temporal.get_workflow_handle(
            billing_workflow_id(uuid.UUID(appointment["id"]))
        ).describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
    assert await ops_dead_letters.list_dead_letters(private) == []  # nothing waits any more
    # Redriving again is a no-op: nothing waits, nothing is started twice.
    producer = clients.kafka_producer(private)
    await producer.start()
    try:
        again = [
            r async for r in ops_dead_letters.redrive(private, private_billing.temporal, engine, producer)
        ]
    finally:
        await producer.stop()
    assert again == []
    assert (await private_billing.temporal.count_workflows()).count == len(appointments)
