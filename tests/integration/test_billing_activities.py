"""The billing activities one by one in an ActivityEnvironment, against the real PostgreSQL, Lambda and S3.

The Lambda's failure modes cannot be provoked on demand, so their mapping to retryable or final
errors is checked with a stand-in Lambda client; the happy path uses the real one.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, func, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import billing as billing_module
from activities.billing import BillingActivities
from healthcare.contracts.billing import (
    DOCTOR_NOT_FOUND,
    INVALID_INVOICE_TRANSITION,
    INVOICE_NOT_FOUND,
    PDF_FAILED,
    PDF_REJECTED,
    InvoiceDraft,
    InvoiceState,
    InvoiceStatus,
    InvoiceStatusChange,
    IssueRequest,
    PdfRequest,
    PdfResult,
    Price,
    PriceRequest,
    billing_workflow_id,
    invoice_id_for,
)
from healthcare.db import session_factory
from healthcare.models import Invoice
from healthcare.settings import Settings
from healthcare.stores.factory import patient_store_factory
from tests.integration.factories import Account, create_doctor, create_patient

APPOINTMENT_TIME = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)
# The allowed status changes, written out here rather than read from TRANSITIONS so that a change
# to the table has to be made on purpose in both places.
ALLOWED = {
    ("PENDING", "ISSUED"),
    ("PENDING", "VOID"),
    ("ISSUED", "PAID"),
    ("ISSUED", "VOID"),
    ("ISSUED", "OVERDUE"),
    ("OVERDUE", "PAID"),
    ("OVERDUE", "VOID"),
    # The PDF failed for good: an operator retries it (back to PENDING), or it is paid or voided.
    ("PENDING", "NEEDS_ATTENTION"),
    ("NEEDS_ATTENTION", "PENDING"),
    ("NEEDS_ATTENTION", "PAID"),
    ("NEEDS_ATTENTION", "VOID"),
}


class Created:
    """What a test made: its invoice rows and PDF objects are deleted afterwards."""

    def __init__(self) -> None:
        self.invoice_ids: list[uuid.UUID] = []

    def draft(
        self,
        *,
        doctor_id: uuid.UUID | None = None,
        patient_id: uuid.UUID | None = None,
    ) -> InvoiceDraft:
        appointment_id = uuid.uuid4()
        invoice_id = invoice_id_for(appointment_id)
        self.invoice_ids.append(invoice_id)
        return InvoiceDraft(
            invoice_id=invoice_id,
            appointment_id=appointment_id,
            patient_id=patient_id or uuid.uuid4(),
            doctor_id=doctor_id or uuid.uuid4(),
            amount=Decimal("87.50"),
            currency="USD",
            workflow_id=billing_workflow_id(appointment_id),
            due_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=30),
        )


@pytest.fixture
async def created(engine: AsyncEngine, s3: Any, settings: Settings) -> AsyncIterator[Created]:
    made = Created()
    yield made
    if made.invoice_ids:
        async with engine.begin() as conn:
            await conn.execute(delete(Invoice).where(col(Invoice.id).in_(made.invoice_ids)))
    for invoice_id in made.invoice_ids:
        s3.delete_object(Bucket=settings.s3_bucket, Key=f"invoices/{invoice_id}.pdf")


def billing(engine: AsyncEngine, settings: Settings, lambda_client: Any) -> BillingActivities:
    return BillingActivities(
        engine=engine,
        lambda_client=lambda_client,
        function_name=settings.lambda_function_name,
        patient_store=patient_store_factory(settings),
        audit_key=settings.audit_hmac_key.get_secret_value().encode(),
    )


@pytest.fixture
def activities(engine: AsyncEngine, settings: Settings, lambda_client: Any) -> BillingActivities:
    """Built as the worker builds them: the real database, the real Lambda, the configured patient store."""
    return billing(engine, settings, lambda_client)


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


@pytest.fixture
async def doctor(api: httpx.AsyncClient, admin: Account) -> dict[str, Any]:
    return await create_doctor(api, admin, fee="87.50")


@pytest.fixture
async def patient(api: httpx.AsyncClient, staff: Account) -> dict[str, Any]:
    return await create_patient(api, staff)


async def stored(engine: AsyncEngine, invoice_id: uuid.UUID) -> InvoiceState | None:
    async with session_factory(engine)() as session:
        row = await session.get(Invoice, invoice_id)
        return InvoiceState.model_validate(row, from_attributes=True) if row else None


async def rows_for(engine: AsyncEngine, appointment_id: uuid.UUID) -> int:
    async with session_factory(engine)() as session:
        count = await session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.appointment_id == appointment_id)
        )
        return int(count or 0)


async def recorded(
    env: ActivityEnvironment, activities: BillingActivities, draft: InvoiceDraft
) -> InvoiceState:
    return await env.run(activities.record_invoice, draft)


def pdf_result(invoice_id: uuid.UUID, digest: str = "ab" * 32) -> PdfResult:
    key = f"invoices/{invoice_id}.pdf"
    return PdfResult(pdf_url=f"s3://invoices/{key}", key=key, sha256=digest, bytes=1234)


# -- price_visit ----------------------------------------------------------------------------------


async def test_price_visit_is_the_doctors_fee_to_the_cent(
    env: ActivityEnvironment, activities: BillingActivities, api: httpx.AsyncClient, admin: Account
) -> None:
    doctor = await create_doctor(api, admin, fee="120.5")
    price = await env.run(activities.price_visit, PriceRequest(doctor_id=uuid.UUID(doctor["id"])))
    assert price == Price(amount=Decimal("120.50"), currency="USD")
    assert str(price.amount) == "120.50"


async def test_price_visit_for_an_unknown_doctor_is_a_final_doctor_not_found(
    env: ActivityEnvironment, activities: BillingActivities
) -> None:
    with pytest.raises(ApplicationError) as refused:
        await env.run(activities.price_visit, PriceRequest(doctor_id=uuid.uuid4()))
    assert refused.value.type == DOCTOR_NOT_FOUND
    assert refused.value.non_retryable


# -- record_invoice -------------------------------------------------------------------------------


async def test_record_invoice_makes_a_pending_invoice_from_the_draft(
    env: ActivityEnvironment, activities: BillingActivities, engine: AsyncEngine, created: Created
) -> None:
    draft = created.draft()
    state = await recorded(env, activities, draft)

    assert state.model_dump(include=set(InvoiceDraft.model_fields) - {"invoice_id"}) == draft.model_dump(
        exclude={"invoice_id"}
    )
    assert state.id == draft.invoice_id
    assert state.status == "PENDING"
    assert (state.pdf_key, state.pdf_url, state.pdf_sha256, state.issued_at, state.paid_at) == (None,) * 5
    assert await stored(engine, draft.invoice_id) == state


async def test_record_invoice_twice_keeps_one_row_in_the_same_state(
    env: ActivityEnvironment, activities: BillingActivities, engine: AsyncEngine, created: Created
) -> None:
    draft = created.draft()
    first = await recorded(env, activities, draft)
    again = await recorded(env, activities, draft)

    assert again == first
    assert await rows_for(engine, draft.appointment_id) == 1


async def test_record_invoice_for_a_billed_appointment_returns_the_first_invoice(
    env: ActivityEnvironment, activities: BillingActivities, engine: AsyncEngine, created: Created
) -> None:
    draft = created.draft()
    first = await recorded(env, activities, draft)
    # A second run for the same appointment (say the fee changed meanwhile) must not bill it again.
    changed = draft.model_copy(update={"amount": Decimal("99.00"), "workflow_id": "billing-other-run"})
    again = await recorded(env, activities, changed)

    assert again == first
    assert await rows_for(engine, draft.appointment_id) == 1


# -- issue ----------------------------------------------------------------------------------------


async def test_issue_stores_the_pdf_and_issues_once(
    env: ActivityEnvironment, activities: BillingActivities, engine: AsyncEngine, created: Created
) -> None:
    draft = created.draft()
    pending = await recorded(env, activities, draft)
    pdf = pdf_result(draft.invoice_id)
    at = datetime(2030, 5, 2, 10, 0, tzinfo=UTC)

    issued = await env.run(activities.issue, IssueRequest(invoice_id=draft.invoice_id, pdf=pdf, at=at))
    assert issued.status == "ISSUED"
    assert (issued.pdf_key, issued.pdf_url, issued.pdf_sha256) == (pdf.key, pdf.pdf_url, pdf.sha256)
    assert issued.issued_at == at
    assert issued.updated_at > pending.updated_at
    assert await stored(engine, draft.invoice_id) == issued

    # A retry, even one carrying another render's answer, finds it done and changes nothing.
    later = IssueRequest(
        invoice_id=draft.invoice_id, pdf=pdf_result(draft.invoice_id, "cd" * 32), at=at + timedelta(hours=1)
    )
    assert await env.run(activities.issue, later) == issued
    assert await stored(engine, draft.invoice_id) == issued


# -- set_status -----------------------------------------------------------------------------------


async def _force_status(engine: AsyncEngine, invoice_id: uuid.UUID, status: str) -> None:
    """Test set-up: put a row straight into `status` (PAID needs its payment time)."""
    at = datetime(2030, 5, 3, tzinfo=UTC)
    values: dict[str, Any] = {"status": status}
    if status != "PENDING":
        values["issued_at"] = at
    if status == "PAID":
        values["paid_at"] = at
    async with engine.begin() as conn:
        await conn.execute(update(Invoice).where(col(Invoice.id) == invoice_id).values(**values))


@pytest.mark.parametrize(("current", "target"), list(itertools.product(list(InvoiceStatus), repeat=2)))
async def test_set_status_applies_allowed_transitions_and_refuses_the_rest(
    env: ActivityEnvironment,
    activities: BillingActivities,
    engine: AsyncEngine,
    created: Created,
    current: str,
    target: str,
) -> None:
    draft = created.draft()
    await recorded(env, activities, draft)
    await _force_status(engine, draft.invoice_id, current)
    before = await stored(engine, draft.invoice_id)
    assert before is not None
    change = InvoiceStatusChange(
        invoice_id=draft.invoice_id,
        target=target,
        at=datetime(2030, 6, 1, 12, 0, tzinfo=UTC),
    )

    if current == target:
        # A retry of a change that was already made: the row as it is.
        assert await env.run(activities.set_status, change) == before
        assert await stored(engine, draft.invoice_id) == before
    elif (current, target) in ALLOWED:
        after = await env.run(activities.set_status, change)
        assert after.status == target
        assert after.paid_at == (change.at if target == "PAID" else before.paid_at)
        assert after.updated_at > before.updated_at
        assert after.model_dump(exclude={"status", "paid_at", "updated_at"}) == before.model_dump(
            exclude={"status", "paid_at", "updated_at"}
        )
        assert await stored(engine, draft.invoice_id) == after
        # The same change retried returns the row unchanged (payment time included).
        retried = change.model_copy(update={"at": change.at + timedelta(minutes=5)})
        assert await env.run(activities.set_status, retried) == after
    else:
        with pytest.raises(ApplicationError) as refused:
            await env.run(activities.set_status, change)
        assert refused.value.type == INVALID_INVOICE_TRANSITION
        assert refused.value.non_retryable
        assert await stored(engine, draft.invoice_id) == before


async def test_set_status_of_an_unknown_invoice_is_final(
    env: ActivityEnvironment, activities: BillingActivities
) -> None:
    change = InvoiceStatusChange(invoice_id=uuid.uuid4(), target="PAID", at=datetime.now(UTC))
    with pytest.raises(ApplicationError) as refused:
        await env.run(activities.set_status, change)
    assert refused.value.type == INVOICE_NOT_FOUND
    assert refused.value.non_retryable


# -- render_pdf through the real Lambda -----------------------------------------------------------


def pdf_text(pdf: bytes) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return done.stdout.decode()


async def test_render_pdf_stores_the_invoice_pdf_under_a_key_from_the_invoice_id(
    env: ActivityEnvironment,
    activities: BillingActivities,
    engine: AsyncEngine,
    created: Created,
    s3: Any,
    settings: Settings,
    doctor: dict[str, Any],
    patient: dict[str, Any],
) -> None:
    draft = created.draft(doctor_id=uuid.UUID(doctor["id"]), patient_id=uuid.UUID(patient["id"]))
    invoice = await recorded(env, activities, draft)
    request = PdfRequest(invoice=invoice, appointment_time=APPOINTMENT_TIME)

    result = await env.run(activities.render_pdf, request)

    key = f"invoices/{invoice.id}.pdf"
    assert (result.key, result.pdf_url) == (key, f"s3://{settings.s3_bucket}/{key}")
    stored_pdf = s3.get_object(Bucket=settings.s3_bucket, Key=key)
    body = stored_pdf["Body"].read()
    assert stored_pdf["ContentType"] == "application/pdf"
    assert hashlib.sha256(body).hexdigest() == result.sha256
    assert len(body) == result.bytes
    text = pdf_text(body)
    for expected in (patient["name"], doctor["name"], "INV-" + invoice.id.hex[:8].upper(), "USD 87.50"):
        assert expected in text

    # A retry overwrites the one object with the same bytes, and issuing records that object.
    assert await env.run(activities.render_pdf, request) == result
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"invoices/{invoice.id}")
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    issued = await env.run(
        activities.issue, IssueRequest(invoice_id=invoice.id, pdf=result, at=datetime.now(UTC))
    )
    assert (issued.status, issued.pdf_key, issued.pdf_sha256) == ("ISSUED", key, result.sha256)


# -- render_pdf: what each Lambda answer becomes (stand-in client) ----------------------------------


GOOD_ANSWER = {
    "statusCode": 200,
    "pdfUrl": "s3://invoices/k.pdf",
    "key": "k.pdf",
    "sha256": "ab" * 32,
    "bytes": 9,
}
# A Lambda's error text may quote its input, which names a patient: it must not reach the failure.
SECRET = "Zoë Okafor-Hansen"


class FakeLambda:
    """boto3's Lambda client as render_pdf uses it: `invoke` answering with one fixed response."""

    def __init__(
        self, payload: bytes = b"", function_error: str | None = None, raises: Exception | None = None
    ) -> None:
        self.payload = payload
        self.function_error = function_error
        self.raises = raises
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.before_answer: Callable[[], None] = lambda: None

    def invoke(self, *, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        self.requests.append((FunctionName, json.loads(Payload)))
        self.before_answer()
        if self.raises is not None:
            raise self.raises
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(self.payload)}
        if self.function_error is not None:
            response["FunctionError"] = self.function_error
        return response


def answer(body: Any) -> bytes:
    return json.dumps(body).encode()


def in_memory_invoice() -> InvoiceState:
    """render_pdf reads only names from the database; unknown ids just leave them out."""
    now = datetime.now(UTC)
    invoice_id = uuid.uuid4()
    return InvoiceState(
        id=invoice_id,
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        amount=Decimal("87.50"),
        currency="USD",
        status="PENDING",
        workflow_id="billing-x",
        due_at=now + timedelta(days=30),
        created_at=now,
        updated_at=now,
    )


async def test_render_pdf_sends_the_invoice_with_its_patient_and_doctor_names(
    env: ActivityEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    created: Created,
    doctor: dict[str, Any],
    patient: dict[str, Any],
) -> None:
    fake = FakeLambda(answer(GOOD_ANSWER))
    activities = billing(engine, settings, fake)
    draft = created.draft(doctor_id=uuid.UUID(doctor["id"]), patient_id=uuid.UUID(patient["id"]))
    invoice = await recorded(env, activities, draft)

    result = await env.run(
        activities.render_pdf, PdfRequest(invoice=invoice, appointment_time=APPOINTMENT_TIME)
    )

    assert result == PdfResult(pdf_url="s3://invoices/k.pdf", key="k.pdf", sha256="ab" * 32, bytes=9)
    assert fake.requests == [
        (
            settings.lambda_function_name,
            {
                "invoiceId": str(invoice.id),
                "patientId": patient["id"],
                "amount": "87.50",
                "date": invoice.created_at.date().isoformat(),
                "status": "ISSUED",
                "currency": "USD",
                "patientName": patient["name"],
                "doctorName": doctor["name"],
                "appointmentTime": APPOINTMENT_TIME.isoformat(),
                "invoiceNumber": "INV-" + invoice.id.hex[:8].upper(),
            },
        )
    ]


# Each case is (the function's payload, its FunctionError); a fresh stand-in is made per test.
RETRYABLE: dict[str, tuple[bytes, str | None]] = {
    "function error": (answer({"errorType": "KeyError", "errorMessage": SECRET}), "Unhandled"),
    # The local emulator leaves FunctionError out on an unhandled error: no statusCode is the sign.
    "unhandled error without FunctionError": (
        answer({"errorType": "Runtime.ExitError", "errorMessage": SECRET}),
        None,
    ),
    "function error with a 200 body": (answer(GOOD_ANSWER), "Unhandled"),
    "not json": (b"<html>502 Bad Gateway</html>", None),
    "empty": (b"", None),
    "json but not an object": (answer([GOOD_ANSWER]), None),
    # Everything a good answer has, but a status that is not 200.
    "server error status": (answer({**GOOD_ANSWER, "statusCode": 500}), None),
    "200 without its key": (answer({k: v for k, v in GOOD_ANSWER.items() if k != "key"}), None),
    "200 with a bad size": (answer({**GOOD_ANSWER, "bytes": "many"}), None),
}


@pytest.mark.parametrize(("payload", "function_error"), RETRYABLE.values(), ids=RETRYABLE.keys())
async def test_render_pdf_failures_worth_retrying_are_retryable_and_say_nothing_of_the_patient(
    env: ActivityEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    payload: bytes,
    function_error: str | None,
) -> None:
    fake = FakeLambda(payload, function_error)
    activities = billing(engine, settings, fake)
    with pytest.raises(ApplicationError) as failed:
        await env.run(
            activities.render_pdf, PdfRequest(invoice=in_memory_invoice(), appointment_time=APPOINTMENT_TIME)
        )
    assert failed.value.type == PDF_FAILED
    assert not failed.value.non_retryable
    assert SECRET not in str(failed.value)
    assert len(fake.requests) == 1


async def test_render_pdf_refused_with_400_is_final_and_says_why(
    env: ActivityEnvironment, engine: AsyncEngine, settings: Settings
) -> None:
    reason = "invalid fields: amount; rules: amount must be a positive decimal"
    fake = FakeLambda(answer({"statusCode": 400, "error": reason, "errorType": "BadRequest"}))
    activities = billing(engine, settings, fake)
    with pytest.raises(ApplicationError) as refused:
        await env.run(
            activities.render_pdf, PdfRequest(invoice=in_memory_invoice(), appointment_time=APPOINTMENT_TIME)
        )
    assert refused.value.type == PDF_REJECTED
    assert refused.value.non_retryable
    assert reason in str(refused.value)


INVOKE_API_ERRORS = {
    "400 invalid request content": ("InvalidRequestContentException", 400),
    "429 throttled": ("TooManyRequestsException", 429),
}


@pytest.mark.parametrize(("code", "http_status"), INVOKE_API_ERRORS.values(), ids=INVOKE_API_ERRORS.keys())
async def test_render_pdf_leaves_an_invoke_api_error_to_the_retry_policy(
    env: ActivityEnvironment, engine: AsyncEngine, settings: Settings, code: str, http_status: int
) -> None:
    """An error of the Invoke API itself (not the function's 400 answer) is not a business refusal: it
    reaches Temporal as it is, which retries it like any other error that is not an ApplicationError."""
    response: Any = {
        "Error": {"Code": code, "Message": "refused"},
        "ResponseMetadata": {"HTTPStatusCode": http_status},
    }
    error = ClientError(response, "Invoke")
    activities = billing(engine, settings, FakeLambda(raises=error))
    with pytest.raises(ClientError) as failed:
        await env.run(
            activities.render_pdf, PdfRequest(invoice=in_memory_invoice(), appointment_time=APPOINTMENT_TIME)
        )
    assert failed.value is error
    assert not isinstance(failed.value, ApplicationError)


async def test_render_pdf_heartbeats_while_the_lambda_works(
    env: ActivityEnvironment, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(billing_module, "HEARTBEAT_EVERY", 0.05)
    beat = threading.Event()
    env.on_heartbeat = lambda *_: beat.set()
    fake = FakeLambda(answer(GOOD_ANSWER))
    # The function answers only once the activity has heartbeaten (or fails the wait after 10 s).
    fake.before_answer = lambda: None if beat.wait(timeout=10) else pytest.fail("no heartbeat")
    activities = billing(engine, settings, fake)

    result = await env.run(
        activities.render_pdf, PdfRequest(invoice=in_memory_invoice(), appointment_time=APPOINTMENT_TIME)
    )
    assert result.key == "k.pdf"
