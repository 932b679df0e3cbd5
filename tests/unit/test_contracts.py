"""The contracts without services: both state machines as tables, and the ids derived from business keys.

The tables are written out here rather than read from the code, so that a change to a state machine
fails a test someone has to read and update on purpose.
"""

import itertools
import uuid

import pytest

from healthcare.contracts import appointments, billing
from healthcare.contracts.appointments import AppointmentStatus
from healthcare.contracts.billing import InvoiceStatus

INVOICE_MOVES = {
    ("PENDING", "ISSUED"),
    ("PENDING", "VOID"),
    # The PDF failed for good (patch billing-pdf-attention-v1): an operator retries it (back to
    # PENDING), or the invoice is paid or voided while it waits.
    ("PENDING", "NEEDS_ATTENTION"),
    ("NEEDS_ATTENTION", "PENDING"),
    ("NEEDS_ATTENTION", "PAID"),
    ("NEEDS_ATTENTION", "VOID"),
    ("ISSUED", "PAID"),
    ("ISSUED", "VOID"),
    ("ISSUED", "OVERDUE"),
    ("OVERDUE", "PAID"),
    ("OVERDUE", "VOID"),
}
APPOINTMENT_MOVES = {("BOOKED", "CANCELLED"), ("BOOKED", "COMPLETED"), ("BOOKED", "NO_SHOW")}

APPOINTMENT = uuid.UUID("00000000-0000-4000-8000-000000000001")
USER = uuid.UUID("00000000-0000-4000-8000-000000000002")


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product([s.value for s in InvoiceStatus], repeat=2))
)
def test_an_invoice_moves_only_along_the_table(current: str, target: str) -> None:
    assert billing.can_become(current, target) is ((current, target) in INVOICE_MOVES)


def test_an_issued_invoice_can_fall_overdue_and_a_paid_one_is_never_voided() -> None:
    assert billing.can_become("ISSUED", "OVERDUE")
    assert billing.can_become("OVERDUE", "PAID")
    assert not billing.can_become("PAID", "VOID")
    assert not billing.can_become("VOID", "PAID")


def test_paid_and_void_are_final_and_every_other_invoice_status_is_open() -> None:
    open_statuses = {
        InvoiceStatus.pending,
        InvoiceStatus.needs_attention,
        InvoiceStatus.issued,
        InvoiceStatus.overdue,
    }
    assert open_statuses == billing.OPEN_STATUSES


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product([s.value for s in AppointmentStatus], repeat=2))
)
def test_an_appointment_moves_only_along_the_table(current: str, target: str) -> None:
    assert appointments.can_become(current, target) is ((current, target) in APPOINTMENT_MOVES)


@pytest.mark.parametrize("can_become", [billing.can_become, appointments.can_become])
@pytest.mark.parametrize(
    ("current", "target"), [("PENDING_RUN", "VOID"), ("", "PAID"), ("booked", "CANCELLED")]
)
def test_a_status_that_is_not_ours_can_become_nothing(can_become, current: str, target: str) -> None:  # type: ignore[no-untyped-def]
    assert can_become(current, target) is False


def test_workflow_ids_are_readable_business_keys() -> None:
    assert billing.billing_workflow_id(APPOINTMENT) == f"billing-{APPOINTMENT}"
    assert appointments.appointment_workflow_id(APPOINTMENT) == f"appointment-{APPOINTMENT}"


def test_the_invoice_id_is_derived_from_the_appointment_alone() -> None:
    """Exactly-once billing rests on it: every retry, redelivery and replay names the same invoice (and
    the same PDF key). The value is pinned because invoices already stored were named by it."""
    assert billing.invoice_id_for(APPOINTMENT) == billing.invoice_id_for(uuid.UUID(str(APPOINTMENT)))
    assert billing.invoice_id_for(APPOINTMENT) == uuid.UUID("fc64b81b-ec4c-5941-8d18-cb9070bdb796")
    assert billing.invoice_id_for(uuid.uuid4()) != billing.invoice_id_for(uuid.uuid4())


def test_event_ids_are_derived_from_the_appointment_and_the_kind_of_event() -> None:
    """Consumers drop redeliveries by event id, so a re-sent event must carry the id it had."""
    created = appointments.event_id_for(APPOINTMENT, "APPOINTMENT_CREATED")
    cancelled = appointments.event_id_for(APPOINTMENT, "APPOINTMENT_CANCELLED")
    assert created == uuid.UUID("2250db4d-78eb-55da-8268-c55378c4e991")
    assert cancelled == uuid.UUID("f8124e2e-1764-5aef-9f7b-cbc85894b003")
    assert appointments.event_id_for(uuid.uuid4(), "APPOINTMENT_CREATED") != created


def test_an_idempotency_key_names_one_appointment_per_caller() -> None:
    named = appointments.idempotent_appointment_id(USER, "key-1")
    assert named == uuid.UUID("c9ef7232-a239-540e-b17f-507950bed954")
    assert appointments.idempotent_appointment_id(USER, "key-2") != named
    assert appointments.idempotent_appointment_id(uuid.uuid4(), "key-1") != named


def test_a_booking_fingerprint_is_what_an_idempotent_retry_must_repeat() -> None:
    from datetime import UTC, datetime

    request = appointments.BookingRequest(
        appointment_id=APPOINTMENT,
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        time=datetime(2030, 5, 1, 9, 30, tzinfo=UTC),
        duration_minutes=30,
        reason="check-up",
        created_by=USER,
    )
    same = request.model_copy(update={"created_by": None})
    assert request.fingerprint() == same.fingerprint()
    for field, value in [
        ("patient_id", uuid.uuid4()),
        ("doctor_id", uuid.uuid4()),
        ("time", datetime(2030, 5, 1, 10, 0, tzinfo=UTC)),
        ("duration_minutes", 45),
        ("reason", "other"),
    ]:
        assert request.model_copy(update={field: value}).fingerprint() != request.fingerprint(), field
