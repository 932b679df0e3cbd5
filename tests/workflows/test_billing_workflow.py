"""The billing workflow on the time-skipping test server, with activities stood in by name."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.billing import _pdf_result
from healthcare.contracts.billing import (
    INVALID_INVOICE_TRANSITION,
    INVOICE_NOT_FOUND,
    INVOICE_VOID,
    NOT_NEEDING_ATTENTION,
    PAYMENT_REQUIRED,
    PDF_FAILED,
    PDF_REJECTED,
    TRANSITIONS,
    BillingOutcome,
    BillingRequest,
    CancelSignal,
    InvoiceDraft,
    InvoiceState,
    InvoiceStatusChange,
    IssueRequest,
    PayRequest,
    PdfAttention,
    PdfRecord,
    PdfRequest,
    PdfResult,
    Price,
    PriceRequest,
    RetryPdfRequest,
    billing_workflow_id,
    invoice_id_for,
)
from tests.waiting import eventually
from tests.workflows import capture
from workflows.billing import CANCEL_BEFORE_ISSUE, LOST_TASK_PAYMENT, PDF_RETRY, BillingWorkflow
from workflows.search_attributes import BILLING_STATUS

GOOD_PDF = {
    "statusCode": 200,
    "pdfUrl": "s3://invoices/k.pdf",
    "key": "k.pdf",
    "sha256": "ab" * 32,
    "bytes": 9,
}


@dataclass
class FakeBilling:
    """In-memory stand-ins with the real activities' names and idempotency rules."""

    lambda_answers: list[tuple[str | None, bytes]] = field(default_factory=list)
    invoices: dict[uuid.UUID, InvoiceState] = field(default_factory=dict)
    pdf_attempts: int = 0
    status_changes: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    rendered: list[str] = field(default_factory=list)  # the status each render showed
    # Steps held until the test releases them: "render" (the first PDF), "set_status:<TARGET>".
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: dict[str, asyncio.Event] = field(default_factory=dict)

    def hold(self, step: str) -> tuple[asyncio.Event, asyncio.Event]:
        """(entered, release) for `step`: the run reached it; let it go on."""
        self.entered[step], self.held[step] = asyncio.Event(), asyncio.Event()
        return self.entered[step], self.held[step]

    async def _maybe_held(self, step: str) -> None:
        if step in self.held:
            self.entered[step].set()
            await self.held.pop(step).wait()

    @activity.defn(name="billing.price_visit")
    async def price_visit(self, data: PriceRequest) -> Price:
        return Price(amount=Decimal("120.00"), currency="USD")

    @activity.defn(name="billing.record_invoice")
    async def record_invoice(self, data: InvoiceDraft) -> InvoiceState:
        for inv in self.invoices.values():
            if inv.appointment_id == data.appointment_id:
                return inv
        now = datetime.now(UTC)
        inv = InvoiceState(
            **data.model_dump(exclude={"invoice_id"}),
            id=data.invoice_id,
            status="PENDING",
            created_at=now,
            updated_at=now,
        )
        self.invoices[inv.id] = inv
        return inv

    @activity.defn(name="billing.render_pdf")
    async def render_pdf(self, data: PdfRequest) -> PdfResult:
        if self.pdf_attempts == 0:
            await self._maybe_held("render")
        self.pdf_attempts += 1
        self.rendered.append("ISSUED" if data.invoice.status == "PENDING" else data.invoice.status.value)
        # The real answer parser decides what is retryable; later attempts reuse the last answer.
        answer = self.lambda_answers[min(self.pdf_attempts, len(self.lambda_answers)) - 1]
        return _pdf_result(*answer)

    @activity.defn(name="billing.issue")
    async def issue(self, data: IssueRequest) -> InvoiceState:
        inv = self.invoices[data.invoice_id]
        # As the real step: the PDF is stored once whatever the status; only PENDING becomes ISSUED.
        if inv.pdf_key is None:
            inv = inv.model_copy(
                update={"pdf_key": data.pdf.key, "pdf_sha256": data.pdf.sha256, "pdf_status": "ISSUED"}
            )
        if inv.status == "PENDING":
            inv = inv.model_copy(update={"status": "ISSUED"})
        self.invoices[inv.id] = inv
        return inv

    @activity.defn(name="billing.set_status")
    async def set_status(self, data: InvoiceStatusChange) -> InvoiceState:
        await self._maybe_held(f"set_status:{data.target.value}")
        if data.invoice_id not in self.invoices:  # as the real step: no row, a final refusal
            raise ApplicationError("invoice not found", type=INVOICE_NOT_FOUND, non_retryable=True)
        inv = self.invoices[data.invoice_id]
        if inv.status != data.target:
            self.status_changes.append((data.target.value, data.invoice_id))
            if data.target not in TRANSITIONS[inv.status]:
                raise ApplicationError("bad transition", type=INVALID_INVOICE_TRANSITION, non_retryable=True)
            paid_at = data.at if data.target == "PAID" else None
            inv = inv.model_copy(
                update={"status": data.target, "paid_at": paid_at, "payment_id": data.payment_id}
            )
            self.invoices[inv.id] = inv
        return inv

    @activity.defn(name="billing.record_pdf")
    async def record_pdf(self, data: PdfRecord) -> InvoiceState:
        inv = self.invoices[data.invoice_id]
        if inv.status == data.status:
            inv = inv.model_copy(update={"pdf_key": data.pdf.key, "pdf_status": data.status})
            self.invoices[inv.id] = inv
        return inv

    def all(self) -> list[Callable[..., object]]:
        return [
            self.price_visit,
            self.record_invoice,
            self.render_pdf,
            self.issue,
            self.set_status,
            self.record_pdf,
        ]


def payment() -> PayRequest:
    return PayRequest(
        payment_id=uuid.uuid4(), provider="desk", method="cash", reference="R-1", amount=Decimal("120.00")
    )


def ok_answers() -> list[tuple[str | None, bytes]]:
    return [(None, json.dumps(GOOD_PDF).encode())]


def request(terms: timedelta = timedelta(days=30)) -> BillingRequest:
    return BillingRequest(
        appointment_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        doctor_id=uuid.uuid4(),
        appointment_time=datetime(2030, 5, 1, 9, 30, tzinfo=UTC),
        payment_terms_seconds=int(terms.total_seconds()),
    )


@asynccontextmanager
async def billing_worker(client: Client, task_queue: str, fake: FakeBilling) -> AsyncIterator[Worker]:
    async with Worker(client, task_queue=task_queue, workflows=[BillingWorkflow], activities=fake.all()) as w:
        yield w


async def start(
    client: Client, task_queue: str, req: BillingRequest
) -> WorkflowHandle[BillingWorkflow, BillingOutcome]:
    return await client.start_workflow(
        BillingWorkflow.run, req, id=billing_workflow_id(req.appointment_id), task_queue=task_queue
    )


async def start_cancelled(
    client: Client, task_queue: str, req: BillingRequest
) -> WorkflowHandle[BillingWorkflow, BillingOutcome]:
    """What the consumer does when APPOINTMENT_CANCELLED is the first event it sees (signal-with-start)."""
    return await client.start_workflow(
        BillingWorkflow.run,
        req,
        id=billing_workflow_id(req.appointment_id),
        task_queue=task_queue,
        start_signal="cancel",
        start_signal_args=[CancelSignal()],
    )


async def until_status(
    handle: WorkflowHandle[BillingWorkflow, BillingOutcome],
    wanted: str,
    env: WorkflowEnvironment | None = None,
) -> InvoiceState:
    """Poll the query; with `env`, skip time between polls (retry back-off is durable time too)."""

    async def reached() -> InvoiceState:
        inv = await handle.query(BillingWorkflow.invoice)
        if inv is not None and inv.status == wanted:
            return inv
        if env is not None:
            await env.sleep(timedelta(seconds=5))  # the test server's time, not a wait
        raise AssertionError(f"invoice {inv.status if inv else None}")

    return await eventually(reached, timeout=30, interval=0.05, what=f"invoice status {wanted}")


async def keep_history(handle: WorkflowHandle[BillingWorkflow, BillingOutcome], name: str) -> None:
    """`make histories` stores the run's history for the replay test (tests/workflows/capture.py)."""
    capture.keep_history(await handle.fetch_history(), name)


async def test_paid(client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        issued = await until_status(handle, "ISSUED")
        assert issued.pdf_key == "k.pdf" and issued.amount == Decimal("120.00")
        with pytest.raises(WorkflowUpdateFailedError) as unpaid:
            await handle.execute_update(BillingWorkflow.pay, PayRequest())  # no payment recorded
        assert (
            isinstance(unpaid.value.cause, ApplicationError) and unpaid.value.cause.type == PAYMENT_REQUIRED
        )
        pay = payment()
        paid = await handle.execute_update(BillingWorkflow.pay, pay)
        assert paid.status == "PAID" and paid.paid_at is not None and paid.payment_id == pay.payment_id
        outcome = await handle.result()
        assert outcome.final_status == "PAID" and outcome.invoice_id == issued.id
        # The paid invoice gets a PDF that says so.
        assert fake.rendered == ["ISSUED", "PAID"]
        assert fake.invoices[issued.id].pdf_status == "PAID"
        await keep_history(handle, "status_pdf_paid")


async def test_cancelled_keeps_the_pdf_and_refuses_payment(client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_status(handle, "ISSUED")
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(BillingWorkflow.pay, payment())
        assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == INVOICE_VOID
        outcome = await handle.result()
        assert outcome.final_status == "VOID"
        assert outcome.invoice_id is not None
        assert fake.invoices[outcome.invoice_id].pdf_key == "k.pdf"
        assert fake.rendered == ["ISSUED", "VOID"] and fake.invoices[outcome.invoice_id].pdf_status == "VOID"
        await keep_history(handle, "status_pdf_cancelled")


async def test_cancellation_before_the_invoice_bills_nothing(client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    req = request()
    async with billing_worker(client, task_queue, fake):
        handle = await start_cancelled(client, task_queue, req)
        outcome = await handle.result()
        assert outcome.final_status == "UNBILLED" and outcome.invoice_id is None
        assert fake.invoices == {} and fake.pdf_attempts == 0
        # CANCEL_BEFORE_ISSUE: it looked for a row a lost task might have left, and found none.
        assert await patched_in(handle) == [CANCEL_BEFORE_ISSUE]
        await keep_history(handle, "cancel_before_issue_unbilled")


async def patched_in(handle: WorkflowHandle[BillingWorkflow, BillingOutcome]) -> list[str]:
    """The patch ids the run's markers record (the deprecated local-steps one aside)."""
    ids = []
    for event in (await handle.fetch_history()).events:
        attrs = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and attrs.marker_name == "core_patch":
            ids.append(json.loads(attrs.details["patch-data"].payloads[0].data)["id"])
    return [i for i in ids if i != "billing-local-db-steps-v1"]


def stray_row(req: BillingRequest) -> InvoiceState:
    """The PENDING row a lost workflow task's record_invoice left (its completion never landed)."""
    now = datetime.now(UTC)
    return InvoiceState(
        id=invoice_id_for(req.appointment_id),
        appointment_id=req.appointment_id,
        patient_id=req.patient_id,
        doctor_id=req.doctor_id,
        amount=Decimal("120.00"),
        currency="USD",
        status="PENDING",
        workflow_id=billing_workflow_id(req.appointment_id),
        due_at=now + timedelta(days=30),
        created_at=now,
        updated_at=now,
    )


async def test_a_row_left_by_a_lost_task_is_voided_when_the_cancellation_comes_first(
    client: Client, task_queue: str
) -> None:
    """Bug (1): a workflow task that timed out (worker frozen) still ran price_visit and
    record_invoice; the retried task sees the cancellation first. The row is voided, never left
    PENDING with no run, and no PDF is made for it."""
    req = request()
    fake = FakeBilling(lambda_answers=ok_answers())
    fake.invoices[invoice_id_for(req.appointment_id)] = stray_row(req)
    async with billing_worker(client, task_queue, fake):
        handle = await start_cancelled(client, task_queue, req)
        outcome = await handle.result()
    stray = invoice_id_for(req.appointment_id)
    assert (outcome.final_status, outcome.invoice_id) == ("VOID", stray)
    assert fake.status_changes == [("VOID", stray)] and fake.pdf_attempts == 0
    assert fake.invoices[stray].pdf_key is None
    await keep_history(handle, "cancel_before_issue_stray_void")


async def test_a_cancellation_while_the_first_pdf_renders_keeps_that_pdf_on_the_void_invoice(
    client: Client, task_queue: str
) -> None:
    """Cancelled while the first PDF renders: the PDF is stored by then, so the invoice is issued
    with it and voided (with its VOID PDF); voiding it unissued would leave a stored PDF that no
    invoice names (the chaos suite counted those as orphans)."""
    fake = FakeBilling(lambda_answers=ok_answers())
    entered, release = fake.hold("render")
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await asyncio.wait_for(entered.wait(), 30)
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        release.set()
        outcome = await handle.result()
    assert outcome.final_status == "VOID" and outcome.invoice_id is not None
    invoice = fake.invoices[outcome.invoice_id]
    assert (invoice.status, invoice.pdf_status) == ("VOID", "VOID") and invoice.pdf_key is not None
    assert fake.status_changes == [("VOID", outcome.invoice_id)] and fake.rendered == ["ISSUED", "VOID"]
    assert CANCEL_BEFORE_ISSUE not in await patched_in(handle)
    await keep_history(handle, "cancel_while_first_pdf_renders")


async def test_overdue_then_cancelled(env: WorkflowEnvironment, client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request(terms=timedelta(days=30)))
        await until_status(handle, "ISSUED")
        await env.sleep(timedelta(days=31))
        await until_status(handle, "OVERDUE")
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"
        await keep_history(handle, "overdue_void")


async def test_overdue_then_paid(env: WorkflowEnvironment, client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request(terms=timedelta(days=30)))
        await until_status(handle, "ISSUED")
        await env.sleep(timedelta(days=31))
        await until_status(handle, "OVERDUE")
        paid = await handle.execute_update(BillingWorkflow.pay, payment())
        assert paid.status == "PAID"
        assert (await handle.result()).final_status == "PAID"
        assert fake.rendered == ["ISSUED", "OVERDUE", "PAID"]
        await keep_history(handle, "status_pdf_overdue")


async def test_lambda_failures_are_retried(env: WorkflowEnvironment, client: Client, task_queue: str) -> None:
    fake = FakeBilling(
        lambda_answers=[
            ("Unhandled", b'{"errorType": "ClientError", "errorMessage": "storage down"}'),
            (None, b'{"errorType": "ClientError", "errorMessage": "no FunctionError header"}'),
            (None, b"not json"),
            (None, b'{"statusCode": 200, "pdfUrl": "s3://invoices/k.pdf"}'),
            (None, json.dumps(GOOD_PDF).encode()),
        ]
    )
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        issued = await until_status(handle, "ISSUED", env)
        assert fake.pdf_attempts == 5 and issued.pdf_sha256 == GOOD_PDF["sha256"]
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"
        await keep_history(handle, "status_pdf_lambda_retried")


BAD_REQUEST = {"statusCode": 400, "error": "invalid request: amount must be ...", "errorType": "BadRequest"}


def rejected_then_ok() -> list[tuple[str | None, bytes]]:
    return [(None, json.dumps(BAD_REQUEST).encode()), (None, json.dumps(GOOD_PDF).encode())]


async def until_attention(
    handle: WorkflowHandle[BillingWorkflow, BillingOutcome], *, retries: int = 0
) -> PdfAttention:
    """The failure the run waits on, once it waits after `retries` operator retries."""

    async def waiting() -> PdfAttention:
        attention = await handle.query(BillingWorkflow.attention)
        assert attention is not None and attention.retries == retries, attention
        return attention

    return await eventually(
        waiting, timeout=30, interval=0.05, what=f"the run waiting for an operator after {retries} retries"
    )


async def billing_status(
    client: Client, handle: WorkflowHandle[BillingWorkflow, BillingOutcome]
) -> str | None:
    desc = await handle.describe()
    return desc.typed_search_attributes.get(BILLING_STATUS)


async def test_a_400_is_not_retried_and_leaves_the_run_waiting_for_an_operator(
    client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=rejected_then_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        attention = await until_attention(handle)
        assert attention.failure_type == PDF_REJECTED and "amount must be" in attention.message
        assert attention.retries == 0 and fake.pdf_attempts == 1  # a 400 is final: no automatic retry
        invoice = await until_status(handle, "NEEDS_ATTENTION")
        assert invoice.pdf_key is None
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await billing_status(client, handle) == "NEEDS_ATTENTION"

        # The operator fixed the cause and retries: the PDF is rendered, the invoice ISSUED.
        accepted = await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest(reason="fixed"))
        assert accepted.invoice_id == invoice.id and accepted.attention.failure_type == PDF_REJECTED
        issued = await until_status(handle, "ISSUED")
        assert issued.pdf_key == "k.pdf" and fake.pdf_attempts == 2
        assert await handle.query(BillingWorkflow.attention) is None
        assert await billing_status(client, handle) is None
        statuses = [s for s, _ in fake.status_changes]
        assert statuses == ["NEEDS_ATTENTION", "PENDING"]

        paid = await handle.execute_update(BillingWorkflow.pay, payment())
        assert paid.status == "PAID"
        assert (await handle.result()).final_status == "PAID"
        # The failed render, the retried one, and the PAID one (billing-status-pdf-v1).
        assert fake.rendered == ["ISSUED", "ISSUED", "PAID"]
        assert fake.invoices[invoice.id].pdf_status == "PAID"
        await keep_history(handle, "status_pdf_attention_retried")


async def test_a_cancellation_while_the_pdf_needs_attention_voids_the_invoice(
    client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=rejected_then_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_status(handle, "NEEDS_ATTENTION")
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        outcome = await handle.result()
        assert outcome.final_status == "VOID" and outcome.invoice_id is not None
        assert fake.invoices[outcome.invoice_id].pdf_key is None and fake.pdf_attempts == 1
        # Never issued: no VOID PDF either (nothing to say "void" on).
        assert fake.rendered == ["ISSUED"]
        await keep_history(handle, "status_pdf_attention_cancelled")


async def test_a_payment_while_the_pdf_needs_attention_is_recorded_and_the_pdf_follows(
    client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=rejected_then_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_status(handle, "NEEDS_ATTENTION")
        paid = await handle.execute_update(BillingWorkflow.pay, payment())
        assert paid.status == "PAID" and paid.pdf_key is None
        # Still waiting, for the PDF only; a cancellation after the payment changes nothing.
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert await billing_status(client, handle) == "NEEDS_ATTENTION"
        await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        outcome = await handle.result()
        assert outcome.final_status == "PAID"
        assert outcome.invoice_id is not None and fake.invoices[outcome.invoice_id].pdf_key == "k.pdf"
        # The retried render shows the invoice as it is by then (PAID), and PAID is recorded as its
        # status's PDF once the run goes on.
        assert fake.rendered == ["ISSUED", "PAID", "PAID"]
        assert fake.invoices[outcome.invoice_id].pdf_status == "PAID"
        await keep_history(handle, "status_pdf_attention_paid")


def ok_rejected_ok() -> list[tuple[str | None, bytes]]:
    """The first PDF renders; the next (a status's PDF) is refused; the one after renders."""
    good = (None, json.dumps(GOOD_PDF).encode())
    return [good, (None, json.dumps(BAD_REQUEST).encode()), good]


async def test_a_paid_pdf_that_fails_for_good_waits_for_an_operator(client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_rejected_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        issued = await until_status(handle, "ISSUED")
        paid = await handle.execute_update(BillingWorkflow.pay, payment())
        assert paid.status == "PAID"  # the payment is answered; the PDF for it is what waits
        attention = await until_attention(handle)
        assert attention.failure_type == PDF_REJECTED
        assert (await handle.query(BillingWorkflow.invoice)).status == "PAID"  # type: ignore[union-attr]
        assert await billing_status(client, handle) == "NEEDS_ATTENTION"
        assert fake.invoices[issued.id].pdf_status != "PAID"
        await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        assert (await handle.result()).final_status == "PAID"
        assert fake.rendered == ["ISSUED", "PAID", "PAID"]
        assert fake.invoices[issued.id].pdf_status == "PAID"
        assert await billing_status(client, handle) is None
        await keep_history(handle, "status_pdf_attention_after_paid")


async def test_a_void_pdf_that_fails_for_good_waits_for_an_operator(client: Client, task_queue: str) -> None:
    fake = FakeBilling(lambda_answers=ok_rejected_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        issued = await until_status(handle, "ISSUED")
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        await until_attention(handle)
        # The cancellation that voided it does not end the wait: the VOID PDF is still owed.
        assert (await handle.query(BillingWorkflow.invoice)).status == "VOID"  # type: ignore[union-attr]
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        assert (await handle.result()).final_status == "VOID"
        assert fake.rendered == ["ISSUED", "VOID", "VOID"]
        assert fake.invoices[issued.id].pdf_status == "VOID"
        await keep_history(handle, "status_pdf_attention_after_void")


async def test_a_cancellation_while_the_overdue_pdf_waits_voids_and_renders_the_void_pdf(
    env: WorkflowEnvironment, client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=ok_rejected_ok())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request(terms=timedelta(days=30)))
        issued = await until_status(handle, "ISSUED")
        await env.sleep(timedelta(days=31))
        await until_attention(handle)
        assert (await handle.query(BillingWorkflow.invoice)).status == "OVERDUE"  # type: ignore[union-attr]
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"
        # The OVERDUE PDF is given up (the invoice is not OVERDUE any more); the VOID one once.
        assert fake.rendered == ["ISSUED", "OVERDUE", "VOID"]
        assert fake.invoices[issued.id].pdf_status == "VOID"
        await keep_history(handle, "status_pdf_attention_overdue_cancelled")


async def test_a_retry_that_fails_again_waits_again(client: Client, task_queue: str) -> None:
    bad = (None, json.dumps(BAD_REQUEST).encode())
    fake = FakeBilling(lambda_answers=[bad, bad, (None, json.dumps(GOOD_PDF).encode())])
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_attention(handle)
        await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        await until_attention(handle, retries=1)  # the second failure: waiting again
        await until_status(handle, "NEEDS_ATTENTION")
        await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        await until_status(handle, "ISSUED")
        assert fake.pdf_attempts == 3
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"
        assert fake.rendered == ["ISSUED", "ISSUED", "ISSUED", "VOID"]


async def test_lambda_failures_for_good_after_every_retry_wait_for_an_operator(
    env: WorkflowEnvironment, client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=[("Unhandled", b'{"errorType": "ClientError"}')])
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        for _ in range(400):  # the retry policy's back-off is durable time: skip it
            attention = await handle.query(BillingWorkflow.attention)
            if attention is not None:
                break
            await env.sleep(timedelta(minutes=1))
        else:
            raise AssertionError("the run never waited for an operator")
        assert attention.failure_type == PDF_FAILED
        assert fake.pdf_attempts == PDF_RETRY.maximum_attempts
        assert (await handle.query(BillingWorkflow.invoice)).status == "NEEDS_ATTENTION"  # type: ignore[union-attr]
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"


async def test_retry_pdf_is_refused_when_the_run_is_not_waiting_for_an_operator(
    client: Client, task_queue: str
) -> None:
    fake = FakeBilling(lambda_answers=ok_answers())
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_status(handle, "ISSUED")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(BillingWorkflow.retry_pdf, RetryPdfRequest())
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == NOT_NEEDING_ATTENTION
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        assert (await handle.result()).final_status == "VOID"


# -- A payment racing a cancellation (README: "a payment accepted before the cancellation wins") ----
def event_names(history: WorkflowHistory) -> list[str]:
    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]


ADMITTED = UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED


async def until_admitted(client: Client, workflow_id: str, update_id: str) -> None:
    """The server holds the update (admitted): the next workflow task delivers it."""
    request = PollWorkflowExecutionUpdateRequest(
        namespace=client.namespace,
        update_ref=UpdateRef(
            workflow_execution=WorkflowExecution(workflow_id=workflow_id), update_id=update_id
        ),
        wait_policy=WaitPolicy(lifecycle_stage=ADMITTED),
    )

    async def admitted() -> bool:
        try:
            await client.workflow_service.poll_workflow_execution_update(
                request, timeout=timedelta(seconds=10)
            )
        except RPCError as exc:  # the request has not reached the server yet
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            raise AssertionError("not admitted yet") from exc
        return True

    await eventually(admitted, timeout=30, interval=0.05, what=f"update {update_id} admitted")


async def test_a_payment_accepted_before_a_cancellation_wins_while_it_is_being_recorded(
    client: Client, task_queue: str
) -> None:
    """The pay update passed its validator and the run is recording PAID (held) when the cancel
    signal arrives: the invoice ends PAID, the payment's, and the cancellation changes nothing."""
    fake = FakeBilling(lambda_answers=ok_answers())
    entered, release = fake.hold("set_status:PAID")
    pay = payment()
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await until_status(handle, "ISSUED")
        paying = asyncio.ensure_future(handle.execute_update(BillingWorkflow.pay, pay, id="pay"))
        await asyncio.wait_for(entered.wait(), 30)  # accepted, PAID being recorded
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        release.set()
        paid = await paying
        outcome = await handle.result()
    assert (paid.status, paid.payment_id) == ("PAID", pay.payment_id)
    assert outcome.final_status == "PAID" and fake.status_changes == [("PAID", outcome.invoice_id)]
    events = event_names(await handle.fetch_history())
    assert events.index("WORKFLOW_EXECUTION_UPDATE_ACCEPTED") < events.index("WORKFLOW_EXECUTION_SIGNALED")
    await keep_history(handle, "race_pay_accepted_then_cancel")


@pytest.mark.parametrize("first", ["cancel", "pay"])
async def test_a_cancellation_and_a_payment_in_one_workflow_task_the_first_wins(
    client: Client, task_queue: str, first: str
) -> None:
    """Both reach the server while no worker runs, so one workflow task delivers them together, in
    the order they came. Cancel first: the validator sees it and refuses the payment as void (the
    API then marks the payment REFUND_DUE). Pay first: it is accepted and the cancellation ignored."""
    fake = FakeBilling(lambda_answers=ok_answers())
    activities = fake.all()
    # No cache: the second worker replays the run instead of waiting for the first one's sticky queue.
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BillingWorkflow],
        activities=activities,
        max_cached_workflows=0,
    ):
        handle = await start(client, task_queue, request())
        await until_status(handle, "ISSUED")
    pay = payment()
    if first == "cancel":
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
    paying = asyncio.ensure_future(handle.execute_update(BillingWorkflow.pay, pay, id="pay"))
    await until_admitted(client, handle.id, "pay")
    if first == "pay":
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
    async with billing_worker(client, task_queue, fake):
        if first == "cancel":
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await paying
            cause = refused.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == INVOICE_VOID
        else:
            assert (await paying).payment_id == pay.payment_id
        outcome = await handle.result()
    history = await handle.fetch_history()
    events = event_names(history)
    signalled = events.index("WORKFLOW_EXECUTION_SIGNALED")
    # Delivered together: no workflow task ran between the signal and the one that took the update
    # (admitted before any worker polled), so that task saw both.
    signalled = events.index("WORKFLOW_EXECUTION_SIGNALED")
    taken = events.index("WORKFLOW_TASK_STARTED", signalled)
    assert "WORKFLOW_TASK_COMPLETED" not in events[signalled:taken], events
    if first == "cancel":
        assert outcome.final_status == "VOID" and "WORKFLOW_EXECUTION_UPDATE_ACCEPTED" not in events
        assert fake.status_changes == [("VOID", outcome.invoice_id)]
    else:
        assert outcome.final_status == "PAID" and fake.status_changes == [("PAID", outcome.invoice_id)]
    await keep_history(handle, f"race_{first}_first_one_task")


@pytest.mark.parametrize("first", ["cancel", "pay"])
async def test_a_race_while_the_first_pdf_renders_is_won_by_the_first(
    client: Client, task_queue: str, first: str
) -> None:
    """Held while the first PDF renders (PENDING): a payment accepted first makes the run issue and
    record PAID, the later cancellation ignored; a cancellation first refuses the payment as void, and
    the invoice (its PDF stored by then) is issued with it and voided."""
    fake = FakeBilling(lambda_answers=ok_answers())
    entered, release = fake.hold("render")
    pay = payment()
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        await asyncio.wait_for(entered.wait(), 30)
        if first == "cancel":
            await handle.signal(BillingWorkflow.cancel, CancelSignal())
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(BillingWorkflow.pay, pay)
            cause = refused.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == INVOICE_VOID
            release.set()
        else:
            paying = asyncio.ensure_future(handle.execute_update(BillingWorkflow.pay, pay, id="pay"))
            await until_admitted(client, handle.id, "pay")
            await eventually(
                lambda: _accepted(handle), timeout=30, interval=0.05, what="the payment accepted"
            )
            await handle.signal(BillingWorkflow.cancel, CancelSignal())
            release.set()
            assert (await paying).payment_id == pay.payment_id
        outcome = await handle.result()
    invoice = fake.invoices[outcome.invoice_id] if outcome.invoice_id else None
    assert invoice is not None
    if first == "cancel":  # the PDF was stored meanwhile: issued with it, then VOID
        assert (outcome.final_status, invoice.pdf_key is not None) == ("VOID", True)
        assert fake.status_changes == [("VOID", invoice.id)] and fake.rendered == ["ISSUED", "VOID"]
    else:
        assert (outcome.final_status, invoice.payment_id) == ("PAID", pay.payment_id)
        assert fake.status_changes == [("PAID", invoice.id)] and fake.rendered == ["ISSUED", "PAID"]
    await keep_history(handle, f"race_{first}_first_while_pdf_renders")


async def _accepted(handle: WorkflowHandle[BillingWorkflow, BillingOutcome]) -> bool:
    return "WORKFLOW_EXECUTION_UPDATE_ACCEPTED" in event_names(await handle.fetch_history())


async def test_a_payment_a_lost_task_recorded_wins_over_a_cancellation_seen_first(
    client: Client, task_queue: str
) -> None:
    """Bug 2: a lost workflow task (worker frozen, task timed out) validated a `pay` update and
    recorded PAID; the retried task saw a cancellation first and voids. The database refuses (PAID
    is final): the run ends PAID, with a PAID PDF, instead of failing (billing-lost-task-payment-v1)."""
    fake = FakeBilling(lambda_answers=ok_answers())
    pay = payment()
    async with billing_worker(client, task_queue, fake):
        handle = await start(client, task_queue, request())
        issued = await until_status(handle, "ISSUED")
        # What the lost task's set_status(PAID) left in the database; the run's history never saw it.
        fake.invoices[issued.id] = issued.model_copy(update={"status": "PAID", "payment_id": pay.payment_id})
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        outcome = await handle.result()
    assert (outcome.final_status, outcome.invoice_id) == ("PAID", issued.id)
    assert fake.invoices[issued.id].payment_id == pay.payment_id and fake.rendered == ["ISSUED", "PAID"]
    assert fake.invoices[issued.id].pdf_status == "PAID"
    assert await patched_in(handle) == [LOST_TASK_PAYMENT, "billing-status-pdf-v1"]
    await keep_history(handle, "lost_task_payment_then_cancel")
