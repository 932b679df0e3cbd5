"""The payload codec: encryption round trip, key rotation, pass-through of plain payloads, tampering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext
from temporalio.exceptions import ApplicationError

from healthcare import codec
from healthcare.codec import ENCODING, KEY_ID, WORKFLOW_ID, CodecError, EncryptionCodec, Keyring
from healthcare.contracts.appointments import BookingRequest

OLD = codec.generate_key()
NEW = codec.generate_key()
REASON = "HIV follow-up"


def booking() -> BookingRequest:
    return BookingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=datetime(2027, 5, 3, 9, 30, tzinfo=UTC),
        duration_minutes=30,
        reason=REASON,
    )


async def test_payloads_are_encrypted_and_decode_to_the_same_model() -> None:
    converter = codec.data_converter(Keyring.parse(f"k1:{OLD}", "k1"))
    request = booking()
    (payload,) = await converter.encode([request])
    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[KEY_ID] == b"k1"
    raw = payload.SerializeToString()
    assert REASON.encode() not in raw and str(request.patient_id).encode() not in raw
    (decoded,) = await converter.decode([payload], [BookingRequest])
    assert decoded == request


async def test_each_encryption_uses_a_fresh_nonce() -> None:
    c = EncryptionCodec(Keyring.parse(f"k1:{OLD}", "k1"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a":1}')
    first, second = await c.encode([plain, plain])
    assert first.data != second.data


async def test_old_key_payloads_stay_readable_after_rotation() -> None:
    before = codec.data_converter(Keyring.parse(f"old:{OLD}", "old"))
    after = codec.data_converter(Keyring.parse(f"old:{OLD},new:{NEW}", "new"))
    request = booking()
    (written_before,) = await before.encode([request])
    (written_after,) = await after.encode([request])
    assert written_after.metadata[KEY_ID] == b"new"
    assert (await after.decode([written_before], [BookingRequest]))[0] == request
    # The old key alone cannot read what the new key wrote: rotation needs the new key everywhere first.
    with pytest.raises(CodecError, match="unknown key 'new'"):
        await before.decode([written_after], [BookingRequest])


async def test_plain_payloads_pass_through() -> None:
    # Histories stored before encryption (and the UI's decoded export) hold plain JSON payloads.
    converter = codec.data_converter(Keyring.parse(f"k1:{OLD}", "k1"))
    request = booking()
    (plain,) = await pydantic_data_converter.encode([request])
    (decoded,) = await converter.decode([plain], [BookingRequest])
    assert decoded == request


async def test_tampered_ciphertext_is_refused() -> None:
    c = EncryptionCodec(Keyring.parse(f"k1:{OLD}", "k1"))
    (sealed,) = await c.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    with pytest.raises(CodecError, match="does not authenticate"):
        await c.decode([Payload(metadata=dict(sealed.metadata), data=bytes(flipped))])
    # The key id is bound to the ciphertext: relabelling it to another configured key fails too.
    two = EncryptionCodec(Keyring.parse(f"k1:{OLD},k2:{NEW}", "k1"))
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID: b"k2"}, data=sealed.data)
    with pytest.raises(CodecError):
        await two.decode([relabelled])
    with pytest.raises(CodecError, match="truncated"):
        await c.decode([Payload(metadata=dict(sealed.metadata), data=b"short")])


async def test_workflow_id_from_the_serialization_context_is_recorded() -> None:
    base = EncryptionCodec(Keyring.parse(f"k1:{OLD}", "k1"))
    wf = base.with_context(WorkflowSerializationContext(namespace="default", workflow_id="billing-1"))
    act = base.with_context(
        ActivitySerializationContext(
            namespace="default",
            activity_id="1",
            activity_type="billing.issue",
            activity_task_queue="q",
            workflow_id="billing-2",
            workflow_type="Billing",
            is_local=False,
        )
    )
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    assert WORKFLOW_ID not in (await base.encode([plain]))[0].metadata
    assert (await wf.encode([plain]))[0].metadata[WORKFLOW_ID] == b"billing-1"
    assert (await act.encode([plain]))[0].metadata[WORKFLOW_ID] == b"billing-2"
    assert (await base.decode(await wf.encode([plain])))[0] == plain


async def test_failure_messages_and_stack_traces_are_encrypted() -> None:
    converter = codec.data_converter(Keyring.parse(f"k1:{OLD}", "k1"))
    secret = "INSERT INTO patients (name) VALUES ('Ada Lovelace')"
    failure = Failure()
    try:
        raise ApplicationError(secret, type="IntegrityError")
    except ApplicationError as exc:
        await converter.encode_failure(exc, failure)
    raw = failure.SerializeToString()
    assert b"Ada Lovelace" not in raw and b"INSERT" not in raw
    assert failure.message == "Encoded failure"
    assert failure.application_failure_info.type == "IntegrityError"  # types stay readable
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == secret


@pytest.mark.parametrize(
    ("spec", "active", "error"),
    [
        (f"k1:{OLD}", "k2", "not among"),
        ("k1", "k1", "id:base64key"),
        ("k1:not-base64!", "k1", "base64"),
        ("k1:AAAA", "k1", "32 bytes"),
        (f"k1:{OLD},k1:{NEW}", "k1", "twice"),
        (f"bad id:{OLD}", "bad id", "1-64"),
    ],
)
def test_bad_keyrings_are_refused(spec: str, active: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Keyring.parse(spec, active)


def test_every_payload_of_an_event_is_found() -> None:
    from temporalio.api.common.v1 import Header, Memo, Payloads
    from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionStartedEventAttributes

    one = Payload(data=b"1")
    event = HistoryEvent(
        workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
            input=Payloads(payloads=[one, one]),
            memo=Memo(fields={"correlationId": one}),
            header=Header(fields={"trace": one}),
        )
    )
    assert len(list(codec.iter_payloads(event))) == 4
    c = EncryptionCodec(Keyring.parse(f"k1:{OLD}", "k1"))
    codec.check_decodable(c, [event])  # plain payloads pass
    sealed = c.encrypt(one)
    other = EncryptionCodec(Keyring.parse(f"k2:{NEW}", "k2"))
    event.workflow_execution_started_event_attributes.memo.fields["correlationId"].CopyFrom(sealed)
    with pytest.raises(CodecError, match="unknown key 'k1'"):
        codec.check_decodable(other, [event])
