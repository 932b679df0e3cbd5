"""The billing workflow: price the visit, record the invoice, render its PDF, then wait for payment.

Id `billing-<appointmentId>`, started by the billing consumer from APPOINTMENT_CREATED. The invoice
is ISSUED once its PDF is stored, then ends PAID (the `pay` update), VOID (the `cancel` signal; the
PDF is kept) or becomes OVERDUE at its due date (a durable timer) and may still be paid.

A cancellation that arrives before the invoice is recorded ends the run with no invoice at all
(final status UNBILLED): a visit that never happened is not billed. Once the row exists (even if the
cancellation raced the insert) the invoice ends VOID. Cancelled before its PDF is rendered, a
PENDING invoice becomes VOID with no PDF (CANCEL_BEFORE_ISSUE), and a row a lost workflow task
inserted (its local activity ran, its completion did not) is voided. Cancelled while the PDF
renders, the invoice is issued with that PDF and then voided: the stored PDF always has its row.

A PDF step that fails for good (the Lambda refused the request, or every retry failed) does not fail
the run: the invoice becomes NEEDS_ATTENTION, the run sets the BillingStatus search attribute and
waits for an operator's `retry_pdf` update (`healthcare billing retry-pdf`), while it still takes
payment (PAID, the PDF follows once a retry succeeds) and cancellation (VOID, no PDF needed).

Once issued, each later status (OVERDUE, PAID, VOID) gets a PDF of its own, rendered and recorded
after the change; one that fails for good waits for an operator the same way (the invoice keeps its
status; a VOID invoice's wait is not ended by the cancellation that voided it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from healthcare.contracts.billing import (
        DOCTOR_NOT_FOUND,
        INVALID_INVOICE_TRANSITION,
        INVOICE_NOT_FOUND,
        INVOICE_NOT_ISSUED,
        INVOICE_VOID,
        NOT_NEEDING_ATTENTION,
        PAYMENT_REQUIRED,
        PDF_REJECTED,
        UNBILLED,
        WORKFLOW_TYPE,
        BillingOutcome,
        BillingRequest,
        BillingRunStatus,
        CancelSignal,
        InvoiceDraft,
        InvoiceState,
        InvoiceStatus,
        InvoiceStatusChange,
        IssueRequest,
        PayRequest,
        PdfAttention,
        PdfRecord,
        PdfRequest,
        PdfResult,
        Price,
        PriceRequest,
        RetryPdfAccepted,
        RetryPdfRequest,
        invoice_id_for,
    )
    from workflows.search_attributes import BILLING_STATUS

T = TypeVar("T")

# Database steps: quick retries, backing off to 10 s, for about a minute (10 attempts); then the run
# fails, visible as FAILED in the Temporal UI and to `healthcare billing reconcile`, rather than
# retrying unseen for ever. Business refusals are non-retryable.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=10,
    non_retryable_error_types=[DOCTOR_NOT_FOUND, INVOICE_NOT_FOUND, INVALID_INVOICE_TRANSITION],
)
# The Lambda: exponential back-off for function errors and unreadable answers, for about 30 minutes;
# a 400 (the request can never succeed) is final and leaves the run waiting for an operator.
PDF_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=20,
    non_retryable_error_types=[PDF_REJECTED],
)
DB_TIMEOUT = timedelta(seconds=15)
# Introduced the database steps as local activities: inside the workflow task, with no activity
# task and no extra workflow task on the server each (five workflow tasks and four activity tasks
# per invoice became two and one). Deprecated: no run of the old path can be open, but stored and
# running histories carry the marker. Remove the call once none of those needs replaying (README).
LOCAL_DB_STEPS = "billing-local-db-steps-v1"
# Introduced: a PDF step that fails for good leaves the run waiting for an operator (NEEDS_ATTENTION)
# instead of failing it with the invoice PENDING. Decided where the paths part, after the failure, so
# runs whose PDF never fails carry no marker. Old failed histories (pdf_rejected) replay the old path.
PDF_ATTENTION = "billing-pdf-attention-v1"
# Introduced: after each status change after ISSUED (OVERDUE, PAID, VOID) the PDF is rendered again
# for that status and recorded, so a paid or void invoice never downloads one that says "amount due".
# Runs without the marker keep their ISSUED PDF (the API then serves none for the later status).
# Asked only after the invoice was issued (the first PDF exists) and outside an operator wait, so
# runs whose invoice never got past NEEDS_ATTENTION carry no marker. A re-render that fails for good
# waits for an operator like the first PDF (PDF_ATTENTION); voided meanwhile, nothing is recorded.
STATUS_PDF = "billing-status-pdf-v1"
# Introduced: a cancellation seen before the first PDF is rendered voids the invoice and ends the
# run, with no PDF (one seen only after the PDF was stored leaves the run as before: issued, then VOID).
# Before the row is recorded, a row may still exist: the local activities of a workflow task that
# was lost (worker frozen or killed; the task timed out) ran all the same, so the retried task,
# which sees the cancellation first, would otherwise return UNBILLED and leave that PENDING row
# owned by no run. Seen after the row, before the PDF, the invoice is voided rather than rendered.
# Asked only where a cancellation was seen before issuing, so other runs carry no marker.
CANCEL_BEFORE_ISSUE = "billing-cancel-before-issue-v1"
# Introduced: voiding an invoice the database holds PAID makes the run PAID instead of failing it.
# A workflow task that was lost (worker frozen; the task timed out) still ran the `pay` update's
# validator and its set_status(PAID) local activity, so the payment is recorded; the retried task
# sees a cancellation that came meanwhile first, refuses the re-delivered update and voids, which
# the database refuses (PAID is final). The money was taken: the payment accepted first wins.
# Asked only after such a refusal, so other runs carry no marker.
LOST_TASK_PAYMENT = "billing-lost-task-payment-v1"
# The statuses after ISSUED whose change is followed by a PDF for them (STATUS_PDF).
STATUS_PDF_TARGETS = frozenset({InvoiceStatus.paid, InvoiceStatus.void, InvoiceStatus.overdue})


@workflow.defn(name=WORKFLOW_TYPE)
class BillingWorkflow:
    @workflow.init
    def __init__(self, request: BillingRequest) -> None:
        self._request = request
        self._invoice: InvoiceState | None = None
        self._cancelled = False
        self._pay_requested = False
        self._attention: PdfAttention | None = None
        self._retry_pdf = False
        self._pdf_retries = 0
        self._payment: PayRequest | None = None
        self._issued = False

    @workflow.run
    async def run(self, request: BillingRequest) -> BillingOutcome:
        workflow.deprecate_patch(LOCAL_DB_STEPS)
        price = await self._db_step("billing.price_visit", PriceRequest(doctor_id=request.doctor_id), Price)
        if self._cancelled:
            if workflow.patched(CANCEL_BEFORE_ISSUE):
                return await self._void_stray_invoice(request)
            return BillingOutcome(
                appointment_id=request.appointment_id, invoice_id=None, final_status=UNBILLED
            )

        info = workflow.info()
        due_at = workflow.now() + timedelta(seconds=request.payment_terms_seconds)
        self._invoice = await self._db_step(
            "billing.record_invoice",
            InvoiceDraft(
                invoice_id=invoice_id_for(request.appointment_id),
                appointment_id=request.appointment_id,
                patient_id=request.patient_id,
                doctor_id=request.doctor_id,
                amount=price.amount,
                currency=price.currency,
                workflow_id=info.workflow_id,
                due_at=due_at,
            ),
            InvoiceState,
        )
        # Without CANCEL_BEFORE_ISSUE the PDF is rendered and the invoice issued even when a
        # cancellation raced the insert, and it ends VOID keeping that PDF.
        if self._cancelled_before_issue():
            return await self._void_unissued(request)
        pdf = await self._render_pdf(request)
        if pdf is None:  # voided while the PDF waited for an operator: nothing left to render
            await workflow.wait_condition(workflow.all_handlers_finished)
            return BillingOutcome(
                appointment_id=request.appointment_id,
                invoice_id=self._invoice.id,
                final_status=self._invoice.status.value,
            )
        # Cancelled while the PDF rendered: the PDF is stored, so the invoice is issued with it and
        # then voided (with its VOID PDF, STATUS_PDF) rather than voided with a stored PDF no row names.
        self._invoice = await self._db_step(
            "billing.issue",
            IssueRequest(invoice_id=self._invoice.id, pdf=pdf, at=workflow.now()),
            InvoiceState,
        )
        self._issued = True

        remaining = (due_at - workflow.now()).total_seconds()
        try:
            await workflow.wait_condition(
                lambda: self._pay_requested or self._cancelled, timeout=max(remaining, 0.001)
            )
        except TimeoutError:
            await self._set_status(InvoiceStatus.overdue)
            await workflow.wait_condition(lambda: self._pay_requested or self._cancelled)
        # A payment accepted before the cancellation wins: the money was taken.
        await self._set_status(InvoiceStatus.paid if self._pay_requested else InvoiceStatus.void)
        # Let the `pay` update answer before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return BillingOutcome(
            appointment_id=request.appointment_id,
            invoice_id=self._invoice.id,
            final_status=self._invoice.status.value,
        )

    def _cancelled_before_issue(self) -> bool:
        """Cancelled, the invoice recorded but not issued (PENDING), and the run takes the new path."""
        return (
            self._cancelled
            and self._invoice is not None
            and self._invoice.status == InvoiceStatus.pending
            and workflow.patched(CANCEL_BEFORE_ISSUE)
        )

    async def _void_unissued(self, request: BillingRequest) -> BillingOutcome:
        await self._set_status(InvoiceStatus.void)  # not issued: no VOID PDF either (STATUS_PDF)
        assert self._invoice is not None
        return BillingOutcome(
            appointment_id=request.appointment_id,
            invoice_id=self._invoice.id,
            final_status=self._invoice.status.value,
        )

    async def _void_stray_invoice(self, request: BillingRequest) -> BillingOutcome:
        """Cancelled before the invoice was recorded: UNBILLED, unless a lost task recorded it."""
        try:
            self._invoice = await self._db_step(
                "billing.set_status",
                InvoiceStatusChange(
                    invoice_id=invoice_id_for(request.appointment_id),
                    target=InvoiceStatus.void,
                    at=workflow.now(),
                ),
                InvoiceState,
            )
        except (ActivityError, ApplicationError) as failure:
            if not _refused_as(failure, INVOICE_NOT_FOUND):
                raise
            return BillingOutcome(
                appointment_id=request.appointment_id, invoice_id=None, final_status=UNBILLED
            )
        return BillingOutcome(
            appointment_id=request.appointment_id,
            invoice_id=self._invoice.id,
            final_status=self._invoice.status.value,
        )

    async def _render_pdf(self, request: BillingRequest) -> PdfResult | None:
        """The PDF, retried by PDF_RETRY; after a failure for good, by an operator. None: the
        invoice was voided while it waited."""
        while True:
            assert self._invoice is not None
            try:
                result = await workflow.execute_activity(
                    "billing.render_pdf",
                    PdfRequest(invoice=self._invoice, appointment_time=request.appointment_time),
                    result_type=PdfResult,
                    start_to_close_timeout=timedelta(seconds=90),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=PDF_RETRY,
                )
                return cast(PdfResult, result)
            except ActivityError as failure:
                if not workflow.patched(PDF_ATTENTION):
                    raise
                if not await self._wait_for_operator(failure):
                    return None

    async def _wait_for_operator(self, failure: ActivityError) -> bool:
        """NEEDS_ATTENTION until an operator retries (True) or the invoice is voided (False); a
        payment meanwhile makes it PAID and the wait goes on for the PDF."""
        assert self._invoice is not None
        cause = failure.cause
        self._attention = PdfAttention(
            failure_type=(cause.type if isinstance(cause, ApplicationError) else None)
            or type(cause or failure).__name__,
            # Our activity's messages name rules and fields, never values (activities/billing.py).
            message=str(cause.message if isinstance(cause, ApplicationError) else cause or failure)[:500],
            since=workflow.now(),
            retries=self._pdf_retries,
        )
        if self._invoice.status == InvoiceStatus.pending:
            await self._set_status(InvoiceStatus.needs_attention)
        workflow.upsert_search_attributes([BILLING_STATUS.value_set(BillingRunStatus.needs_attention.value)])
        while True:
            await workflow.wait_condition(lambda: self._retry_pdf or self._void_due() or self._payment_due())
            if not self._payment_due():
                break
            await self._set_status(InvoiceStatus.paid)  # the money was taken: record it now
        workflow.upsert_search_attributes([BILLING_STATUS.value_unset()])
        self._attention = None
        if self._void_due():
            await self._set_status(InvoiceStatus.void)
            return False
        self._retry_pdf = False
        self._pdf_retries += 1
        if self._invoice.status == InvoiceStatus.needs_attention:
            await self._set_status(InvoiceStatus.pending)
        return True

    def _void_due(self) -> bool:
        """A cancellation ends an operator wait by voiding the invoice, unless it is VOID already (its
        VOID PDF is what waits: STATUS_PDF)."""
        return self._cancelled and self._invoice is not None and self._invoice.status != InvoiceStatus.void

    def _payment_due(self) -> bool:
        return (
            self._pay_requested and self._invoice is not None and self._invoice.status != InvoiceStatus.paid
        )

    async def _set_status(self, target: InvoiceStatus) -> None:
        assert self._invoice is not None
        payment_id = self._payment.payment_id if self._payment and target == InvoiceStatus.paid else None
        try:
            self._invoice = await self._db_step(
                "billing.set_status",
                InvoiceStatusChange(
                    invoice_id=self._invoice.id, target=target, at=workflow.now(), payment_id=payment_id
                ),
                InvoiceState,
            )
        except (ActivityError, ApplicationError) as failure:
            # Only PAID cannot become VOID (TRANSITIONS): PAID again is a no-op that reads the row.
            if not (
                target == InvoiceStatus.void
                and _refused_as(failure, INVALID_INVOICE_TRANSITION)
                and workflow.patched(LOST_TASK_PAYMENT)
            ):
                raise
            target = InvoiceStatus.paid
            self._invoice = await self._db_step(
                "billing.set_status",
                InvoiceStatusChange(invoice_id=self._invoice.id, target=target, at=workflow.now()),
                InvoiceState,
            )
        # Not before the first PDF (it is rendered for the status the invoice has by then), not for a
        # payment recorded while an operator wait goes on (the retried PDF shows it), and not twice.
        if (
            target in STATUS_PDF_TARGETS
            and self._issued
            and self._attention is None
            and self._invoice.pdf_status != target
            and workflow.patched(STATUS_PDF)
        ):
            pdf = await self._render_pdf(self._request)
            if pdf is None:  # voided while this PDF waited for an operator: the VOID PDF followed
                return
            self._invoice = await self._db_step(
                "billing.record_pdf",
                PdfRecord(invoice_id=self._invoice.id, status=target, pdf=pdf),
                InvoiceState,
            )

    async def _db_step(self, name: str, arg: object, result_type: type[T]) -> T:
        """A short, idempotent database step: a local activity retried with DB_RETRY."""
        result = await workflow.execute_local_activity(
            name, arg, result_type=result_type, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
        return cast(T, result)

    @workflow.signal
    def cancel(self, _: CancelSignal) -> None:
        # Once paid, a cancellation changes nothing here (refunds are a separate process).
        if not self._pay_requested:
            self._cancelled = True

    @workflow.update
    async def pay(self, request: PayRequest) -> InvoiceState:
        """PAID once, by the first payment; paying a PAID invoice answers with it (idempotent)."""
        if self._payment is None:
            self._payment = request
        self._pay_requested = True
        await workflow.wait_condition(
            lambda: self._invoice is not None and self._invoice.status == InvoiceStatus.paid
        )
        assert self._invoice is not None
        return self._invoice

    @pay.validator
    def _validate_pay(self, request: PayRequest) -> None:
        # Refused updates leave no trace in the history (and validators do not run on replay).
        if request.payment_id is None:
            raise ApplicationError("a payment must be recorded to pay an invoice", type=PAYMENT_REQUIRED)
        if self._cancelled or (self._invoice is not None and self._invoice.status == InvoiceStatus.void):
            raise ApplicationError("a void invoice cannot be paid", type=INVOICE_VOID)
        if self._invoice is None:
            raise ApplicationError("the invoice is not issued yet", type=INVOICE_NOT_ISSUED)

    @workflow.update
    async def retry_pdf(self, _: RetryPdfRequest) -> RetryPdfAccepted:
        """Render the PDF again (after its cause was fixed); answers once the retry is under way."""
        assert self._invoice is not None and self._attention is not None
        self._retry_pdf = True
        return RetryPdfAccepted(invoice_id=self._invoice.id, attention=self._attention)

    @retry_pdf.validator
    def _validate_retry_pdf(self, _: RetryPdfRequest) -> None:
        if self._attention is None or self._retry_pdf or self._void_due():
            raise ApplicationError(
                "this billing run is not waiting for an operator", type=NOT_NEEDING_ATTENTION
            )

    @workflow.query
    def invoice(self) -> InvoiceState | None:
        return self._invoice

    @workflow.query
    def attention(self) -> PdfAttention | None:
        """Why the run waits for an operator; None when it does not."""
        return self._attention


def _refused_as(failure: ActivityError | ApplicationError, error_type: str) -> bool:
    """A database step refused with `error_type` (a local activity's refusal may arrive as the
    ApplicationError itself, not wrapped in an ActivityError)."""
    cause = failure.cause if isinstance(failure, ActivityError) else failure
    return isinstance(cause, ApplicationError) and cause.type == error_type
