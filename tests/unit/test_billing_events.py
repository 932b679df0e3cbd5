"""How billing judges an event: Temporal's errors classified, events checked against the stored
appointment, and dead letters that keep the original record byte for byte."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from temporalio.service import RPCError, RPCStatusCode

from healthcare.contracts.events import SYNTHETIC_HEADER, AppointmentEvent, RefusalReason
from healthcare.dead_letters import DETAIL_LIMIT, DeadLetter
from services.billing_events import (
    SKIPPED,
    StoredAppointment,
    Verdict,
    check,
    is_permanent,
    is_synthetic,
    parse,
)

# Every gRPC status Temporal can answer with, and whether resending the same request can succeed.
PERMANENT = {
    RPCStatusCode.INVALID_ARGUMENT: True,  # e.g. a search attribute the namespace does not have
    RPCStatusCode.PERMISSION_DENIED: True,  # the credential may not start workflows here
    RPCStatusCode.NOT_FOUND: True,  # the namespace does not exist
    RPCStatusCode.FAILED_PRECONDITION: True,
    RPCStatusCode.OUT_OF_RANGE: True,
    RPCStatusCode.UNIMPLEMENTED: True,
    RPCStatusCode.UNAVAILABLE: False,  # server down or restarting
    RPCStatusCode.DEADLINE_EXCEEDED: False,
    RPCStatusCode.RESOURCE_EXHAUSTED: False,  # rate limited
    RPCStatusCode.ABORTED: False,
    RPCStatusCode.CANCELLED: False,
    RPCStatusCode.INTERNAL: False,
    RPCStatusCode.UNKNOWN: False,
    RPCStatusCode.DATA_LOSS: False,
    RPCStatusCode.UNAUTHENTICATED: False,  # a credential being rotated: fixed by the credential
    RPCStatusCode.OK: False,
    RPCStatusCode.ALREADY_EXISTS: False,  # the SDK turns it into WorkflowAlreadyStartedError first
}


def test_every_status_code_is_classified() -> None:
    assert set(PERMANENT) == set(RPCStatusCode)


@pytest.mark.parametrize("status", list(RPCStatusCode), ids=lambda s: s.name)
def test_temporal_errors_are_permanent_only_when_the_request_itself_is_refused(status: RPCStatusCode) -> None:
    assert is_permanent(RPCError("refused", status, b"")) is PERMANENT[status]


def test_errors_that_are_not_temporal_answers_are_never_called_permanent() -> None:
    assert not is_permanent(TimeoutError())
    assert not is_permanent(ValueError("bug"))


def _event(**changes: object) -> AppointmentEvent:
    body = {
        "event": "APPOINTMENT_CREATED",
        "eventId": uuid.uuid4(),
        "appointmentId": uuid.uuid4(),
        "patientId": uuid.uuid4(),
        "doctorId": uuid.uuid4(),
        "time": datetime(2030, 1, 2, 9, 0, tzinfo=UTC),
        "occurredAt": datetime(2029, 12, 1, 9, 0, tzinfo=UTC),
    }
    return AppointmentEvent.model_validate({**body, **changes})


def test_an_event_that_matches_its_stored_appointment_passes() -> None:
    e = _event()
    assert check(e, StoredAppointment(patient_id=e.patient_id, doctor_id=e.doctor_id)) is None


def test_an_event_is_refused_for_a_missing_appointment_or_other_parties() -> None:
    e = _event()
    missing = check(e, None)
    assert missing is not None and missing.verdict is Verdict.park
    assert missing.reason is RefusalReason.appointment_not_found
    other_patient = check(e, StoredAppointment(patient_id=uuid.uuid4(), doctor_id=e.doctor_id))
    assert other_patient is not None and other_patient.reason is RefusalReason.patient_mismatch
    other_doctor = check(e, StoredAppointment(patient_id=e.patient_id, doctor_id=uuid.uuid4()))
    assert other_doctor is not None and other_doctor.reason is RefusalReason.doctor_mismatch
    # Ids in the detail, never names or the visit's time.
    assert str(e.patient_id) not in f"{missing.detail}{other_patient.detail}{other_doctor.detail}"


def test_only_a_synthetic_event_of_no_stored_appointment_is_skipped() -> None:
    e = _event()
    assert check(e, None, synthetic=True) is SKIPPED
    stored = StoredAppointment(patient_id=e.patient_id, doctor_id=e.doctor_id)
    assert check(e, stored, synthetic=True) is None  # billed: the mark cannot hide a real visit
    wrong = check(e, StoredAppointment(patient_id=uuid.uuid4(), doctor_id=e.doctor_id), synthetic=True)
    assert wrong is not None and wrong.verdict is Verdict.park  # a forged event is refused, marked or not
    assert is_synthetic([(SYNTHETIC_HEADER, b"bench")]) and not is_synthetic([("other", b"x")])


def test_parse_refuses_what_is_not_an_appointment_event() -> None:
    e = _event()
    assert parse(e.value()) == e
    assert parse(None) is None and parse(b"[]") is None and parse(b'{"event": "APPOINTMENT_CREATED"}') is None


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def test_a_dead_letter_keeps_the_record_and_reads_back_with_its_reason_and_origin() -> None:
    original = Record(
        "appointment-events", 2, 41, 1_700_000_000_000, b"k", b"\x00raw", (("traceparent", b"00-1"),)
    )
    letter = DeadLetter.of(original, RefusalReason.temporal_refused, "INVALID_ARGUMENT: " + "x" * 1000)
    assert len(letter.detail) == DETAIL_LIMIT
    on_dlq = Record(
        "appointment-events-dlq",
        0,
        7,
        1_700_000_000_500,
        letter.key,
        letter.value,
        tuple(letter.record_headers()),
    )
    back = DeadLetter.from_record(on_dlq)
    assert (back.topic, back.partition, back.offset, back.timestamp) == (
        "appointment-events",
        2,
        41,
        original.timestamp,
    )
    assert (back.key, back.value, back.headers) == (b"k", b"\x00raw", (("traceparent", b"00-1"),))
    assert back.reason is RefusalReason.temporal_refused and back.detail == letter.detail
    assert (back.dlq_partition, back.dlq_offset, back.redrives) == (0, 7, 0)
    assert back.parked_at == letter.parked_at
    again = back.refused_again(RefusalReason.appointment_not_found, "no appointment")
    assert again.redrives == 1 and again.offset == 41
    # Our headers are replaced, not piled up, when a dead letter is parked again.
    assert [k for k, _ in again.record_headers()].count("dlq-reason") == 1
