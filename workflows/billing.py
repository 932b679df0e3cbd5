"""The billing workflow: price the visit, record the invoice, render its PDF, then wait for payment.

Id `billing-<appointmentId>`, started by the billing consumer from APPOINTMENT_CREATED. The invoice
is ISSUED once its PDF is stored, then ends PAID (the `pay` update), VOID (the `cancel` signal; the
PDF is kept) or becomes OVERDUE at its due date (a durable timer) and may still be paid.

A cancellation that arrives before the invoice is recorded ends the run with no invoice at all
(final status UNBILLED): a visit that never happened is not billed. Once the row exists (even if the
cancellation raced the insert) the invoice ends VOID.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from healthcare.contracts.billing import (
        DOCTOR_NOT_FOUND,
        INVALID_INVOICE_TRANSITION,
        INVOICE_NOT_FOUND,
        INVOICE_NOT_ISSUED,
        INVOICE_VOID,
        PDF_REJECTED,
        UNBILLED,
        WORKFLOW_TYPE,
        BillingOutcome,
        BillingRequest,
        CancelSignal,
        InvoiceDraft,
        InvoiceState,
        InvoiceStatus,
        InvoiceStatusChange,
        IssueRequest,
        PayRequest,
        PdfRequest,
        PdfResult,
        Price,
        PriceRequest,
        invoice_id_for,
    )

T = TypeVar("T")

# Database steps: quick retries, backing off to 10 s; business refusals are non-retryable.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[DOCTOR_NOT_FOUND, INVOICE_NOT_FOUND, INVALID_INVOICE_TRANSITION],
)
# The Lambda: exponential back-off for function errors and unreadable answers, for about 30 minutes;
# a 400 (the request can never succeed) is final and fails the run so an operator sees it.
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


@workflow.defn(name=WORKFLOW_TYPE)
class BillingWorkflow:
    @workflow.init
    def __init__(self, request: BillingRequest) -> None:
        self._request = request
        self._invoice: InvoiceState | None = None
        self._cancelled = False
        self._pay_requested = False

    @workflow.run
    async def run(self, request: BillingRequest) -> BillingOutcome:
        workflow.deprecate_patch(LOCAL_DB_STEPS)
        price = await self._db_step("billing.price_visit", PriceRequest(doctor_id=request.doctor_id), Price)
        if self._cancelled:
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
        # The PDF is rendered even when a cancellation raced the insert: a VOID invoice keeps its PDF.
        pdf = await workflow.execute_activity(
            "billing.render_pdf",
            PdfRequest(invoice=self._invoice, appointment_time=request.appointment_time),
            result_type=PdfResult,
            start_to_close_timeout=timedelta(seconds=90),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=PDF_RETRY,
        )
        self._invoice = await self._db_step(
            "billing.issue",
            IssueRequest(invoice_id=self._invoice.id, pdf=pdf, at=workflow.now()),
            InvoiceState,
        )

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

    async def _set_status(self, target: InvoiceStatus) -> None:
        assert self._invoice is not None
        self._invoice = await self._db_step(
            "billing.set_status",
            InvoiceStatusChange(invoice_id=self._invoice.id, target=target, at=workflow.now()),
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
    async def pay(self, _: PayRequest) -> InvoiceState:
        """PAID once; paying a PAID invoice answers with it (idempotent)."""
        self._pay_requested = True
        await workflow.wait_condition(
            lambda: self._invoice is not None and self._invoice.status == InvoiceStatus.paid
        )
        assert self._invoice is not None
        return self._invoice

    @pay.validator
    def _validate_pay(self, _: PayRequest) -> None:
        # Refused updates leave no trace in the history.
        if self._cancelled or (self._invoice is not None and self._invoice.status == InvoiceStatus.void):
            raise ApplicationError("a void invoice cannot be paid", type=INVOICE_VOID)
        if self._invoice is None:
            raise ApplicationError("the invoice is not issued yet", type=INVOICE_NOT_ISSUED)

    @workflow.query
    def invoice(self) -> InvoiceState | None:
        return self._invoice
