"""Histories as the Temporal server stores them hold ciphertext only, and replay with the payload keys.

The worker and client here use the platform's data converter (healthcare.codec); each test fetches
the raw history, as anyone with access to the Temporal server or its database would see it, and
looks for the plaintext in its protobuf bytes (a plain JSON payload would appear there verbatim).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from healthcare import codec
from healthcare.contracts.appointments import AppointmentState, BookingRequest, TransitionRequest
from healthcare.contracts.billing import PDF_REJECTED, BillingRequest, CancelSignal
from healthcare.settings import get_settings
from ops.replay import replay
from tests.workflows import capture
from tests.workflows.test_appointment_workflow import TEMPORAL, StandIns, _book, _request
from tests.workflows.test_billing_workflow import (
    FakeBilling,
    billing_worker,
    ok_answers,
    payment,
    request,
    start,
    until_status,
)
from tests.workflows.test_replay import HISTORY_KEY_ID, HISTORY_KEYRING, rotated_keyring
from workflows import search_attributes
from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow

REASON = "HIV follow-up"
PATIENT_NAME = "Ada Lovelace"
SQL = "INSERT INTO invoices (id, patient_id) VALUES ($1, $2)"


@pytest.fixture(scope="module")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=codec.data_converter(get_settings()),
        search_attributes=list(search_attributes.ALL),
        dev_server_extra_args=["--ip", "127.0.0.1"],
    )
    yield env
    await env.shutdown()


def _plaintext_in(history: History, *texts: str) -> list[str]:
    raw = history.SerializeToString()
    return [t for t in texts if t.encode() in raw]


async def test_a_booking_history_holds_no_visit_reason_and_decodes_to_the_same_models(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    queue = f"q-{uuid.uuid4().hex}"
    booking = _request().model_copy(update={"reason": REASON})
    acts = StandIns()
    async with Worker(client, task_queue=queue, workflows=[AppointmentWorkflow], activities=acts.all()):
        booked = await _book(client, booking, queue)
    # Fetched as stored, not decoded: what the server, its database and a UI without the codec hold.
    history = await client.get_workflow_handle(f"appointment-{booking.appointment_id}").fetch_history()
    proto = History(events=history.events)
    assert _plaintext_in(proto, REASON, str(booking.patient_id)) == []
    payloads = [
        p
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        for p in e.workflow_execution_started_event_attributes.input.payloads
    ]
    assert payloads and all(p.metadata["encoding"] == codec.ENCODING for p in payloads)
    # The check above can fail: the same request through the plain converter shows the reason.
    (plain,) = await pydantic_data_converter.encode([booking])
    assert REASON.encode() in plain.SerializeToString()

    converter = codec.data_converter(get_settings())
    (started,) = await converter.decode(payloads, [BookingRequest])
    assert started == booking
    completed = next(
        e.workflow_execution_update_completed_event_attributes.outcome.success.payloads
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    )
    (answer,) = await converter.decode(completed, [AppointmentState])
    assert answer == booked
    assert all(p.metadata[codec.WORKFLOW_ID] == history.workflow_id.encode() for p in payloads)


async def test_a_failure_message_with_sql_and_a_name_is_stored_encrypted(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    # What a careless error message looks like: the failing statement and a patient's name.
    detail = f"{SQL} for {PATIENT_NAME}"
    refused = {"statusCode": 400, "error": detail, "errorType": "BadRequest"}
    fake = FakeBilling(lambda_answers=[(None, json.dumps(refused).encode())])
    async with billing_worker(env.client, task_queue, fake):
        handle = await start(env.client, task_queue, request())
        # Refused for good: the run waits for an operator (patch billing-pdf-attention-v1).
        await until_status(handle, "NEEDS_ATTENTION")
        attention = await handle.query(BillingWorkflow.attention)
        history = await handle.fetch_history()
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        await handle.result()
    assert attention is not None and attention.failure_type == PDF_REJECTED
    assert _plaintext_in(History(events=history.events), SQL, PATIENT_NAME, "INSERT INTO") == []
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failures and failures[0].message == "Encoded failure"
    assert failures[0].application_failure_info.type == PDF_REJECTED  # the type stays readable
    # Decoded with the keys: the operator's tools see the real message.
    decoded = await codec.data_converter(get_settings()).decode_failure(failures[0])
    assert isinstance(decoded, ApplicationError) and detail in decoded.message
    assert decoded.type == PDF_REJECTED


async def test_an_encrypted_history_replays_with_the_keys_and_not_without(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    req: BillingRequest = request()
    async with billing_worker(env.client, task_queue, fake):
        handle = await start(env.client, task_queue, req)
        await handle.signal("cancel", {})
        await handle.result()
    history = await handle.fetch_history()
    # The JSON form is what `billing replay --file` reads (the UI's "encoded" export has it too).
    exported = WorkflowHistory.from_json(history.workflow_id, json.loads(history.to_json()))
    assert await replay(exported) == (True, None)
    other = codec.data_converter(codec.Keyring.parse(f"other:{codec.generate_key()}", "other"))
    with pytest.raises(codec.CodecError, match="unknown key 'local-dev-1'"):
        await replay(exported, converter=other)


def _client_with(client: Client, keys: codec.Keyring) -> Client:
    """The same server connection, with another keyring: what a worker under an older key wrote."""
    config = client.config()
    config["data_converter"] = codec.data_converter(keys)
    return Client(**config)


async def test_runs_written_under_a_retired_key_replay_after_rotation(dev_env: WorkflowEnvironment) -> None:
    """Encrypted stored histories (tests/workflows/histories/encrypted_*.json) are recorded here.

    Each run is written under the stored histories' own key, then replayed by a replayer whose active
    key is another one (the key has rotated) and by one that lacks it. `make histories` stores
    them; tests/workflows/test_replay.py replays the stored ones on every run.
    """
    old = _client_with(dev_env.client, HISTORY_KEYRING)
    runs: dict[str, WorkflowHistory] = {}

    queue = f"q-{uuid.uuid4().hex}"
    booking = _request().model_copy(update={"reason": REASON})
    async with Worker(old, task_queue=queue, workflows=[AppointmentWorkflow], activities=StandIns().all()):
        await _book(old, booking, queue)
        appointment = old.get_workflow_handle_for(
            AppointmentWorkflow.run, f"appointment-{booking.appointment_id}"
        )
        await appointment.execute_update(
            AppointmentWorkflow.transition, TransitionRequest(target="CANCELLED")
        )
        await appointment.result()
    runs["encrypted_appointment_cancelled"] = await appointment.fetch_history()

    queue = f"q-{uuid.uuid4().hex}"
    async with billing_worker(old, queue, FakeBilling(lambda_answers=ok_answers())):
        paid = await start(old, queue, request())
        await until_status(paid, "ISSUED")
        await paid.execute_update(BillingWorkflow.pay, payment())
        await paid.result()
    runs["encrypted_paid"] = await paid.fetch_history()

    # A PDF refused for good waits for an operator, then the appointment is cancelled. (The stored
    # encrypted_pdf_rejected.json was recorded before patch billing-pdf-attention-v1: a run failed
    # by its PDF step, the path runs without the marker still take.)
    refused = {"statusCode": 400, "error": f"{SQL} for {PATIENT_NAME}", "errorType": "BadRequest"}
    async with billing_worker(old, queue, FakeBilling(lambda_answers=[(None, json.dumps(refused).encode())])):
        rejected = await start(old, queue, request())
        await until_status(rejected, "NEEDS_ATTENTION")
        await rejected.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await rejected.result()).final_status == "VOID"
    runs["encrypted_pdf_attention_cancelled"] = await rejected.fetch_history()

    rotated = codec.data_converter(rotated_keyring())
    without = codec.data_converter(get_settings())
    for name, history in runs.items():
        assert _plaintext_in(History(events=history.events), REASON, SQL, PATIENT_NAME) == [], name
        assert await replay(history, converter=rotated) == (True, None), name
        with pytest.raises(codec.CodecError, match=f"unknown key '{HISTORY_KEY_ID}'"):
            await replay(history, converter=without)
        capture.keep_history(history, name)  # `make histories` stores it (tests/workflows/capture.py)
