"""Billing contracts: the invoice status vocabulary and its state machine, ids, and the models that travel
between the consumer, the API, the billing workflow and its activities."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel

# Business failures carried as Temporal ApplicationError types; the API maps each to an HTTP status.
INVOICE_VOID = "InvoiceVoid"
INVOICE_NOT_ISSUED = "InvoiceNotIssued"
INVALID_INVOICE_TRANSITION = "InvalidInvoiceTransition"
DOCTOR_NOT_FOUND = "DoctorNotFound"
INVOICE_NOT_FOUND = "InvoiceNotFound"
# A `pay` update without a recorded payment, or naming one that does not pay this invoice.
PAYMENT_REQUIRED = "PaymentRequired"
# The Lambda refused the request (statusCode 400): retrying the same request can never succeed.
PDF_REJECTED = "InvoicePdfRejected"
# A function error or an answer we cannot read: worth retrying.
PDF_FAILED = "InvoicePdfFailed"
# `retry_pdf` was sent to a run whose PDF step is not waiting for an operator.
NOT_NEEDING_ATTENTION = "BillingNotNeedingAttention"

WORKFLOW_TYPE = "Billing"
# Invoice ids are derived from the appointment, so every retry (and the Lambda's object key) agrees.
INVOICE_NAMESPACE = uuid.UUID("4b0f2c55-1d7e-4a86-9a0c-2f6e8d5b7c31")


class InvoiceStatus(StrEnum):
    """The status of an invoice: its row, the API's `status`, the billing workflow's transitions."""

    pending = "PENDING"
    issued = "ISSUED"
    paid = "PAID"
    void = "VOID"
    overdue = "OVERDUE"
    # The PDF step failed for good: the run waits for an operator (`healthcare billing retry-pdf`)
    # and still accepts payment and cancellation.
    needs_attention = "NEEDS_ATTENTION"


# Allowed status changes (anything else is refused by the activity and the workflow); a status with
# nothing after it is final, the others are open (the run still waits on the invoice).
TRANSITIONS: Mapping[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.pending: frozenset(
        {InvoiceStatus.issued, InvoiceStatus.void, InvoiceStatus.needs_attention}
    ),
    # Back to PENDING when an operator retries the PDF; paid or voided while it waits.
    InvoiceStatus.needs_attention: frozenset({InvoiceStatus.pending, InvoiceStatus.paid, InvoiceStatus.void}),
    InvoiceStatus.issued: frozenset({InvoiceStatus.paid, InvoiceStatus.void, InvoiceStatus.overdue}),
    InvoiceStatus.overdue: frozenset({InvoiceStatus.paid, InvoiceStatus.void}),
    InvoiceStatus.paid: frozenset(),
    InvoiceStatus.void: frozenset(),
}
OPEN_STATUSES = frozenset(status for status, after in TRANSITIONS.items() if after)
# A run's outcome when the cancellation came before the invoice was recorded: nothing was billed.
UNBILLED = "UNBILLED"


class BillingRunStatus(StrEnum):
    """Values of the BillingStatus search attribute: set while a run waits for an operator, unset
    otherwise (`BillingStatus="NEEDS_ATTENTION"` in the Temporal UI lists the runs to look at)."""

    needs_attention = "NEEDS_ATTENTION"


def can_become(current: str, target: str) -> bool:
    """Whether an invoice that is `current` may become `target`."""
    try:
        return target in TRANSITIONS[InvoiceStatus(current)]
    except ValueError:  # not a status of ours (e.g. a run that has no row yet)
        return False


def billing_workflow_id(appointment_id: uuid.UUID) -> str:
    return f"billing-{appointment_id}"


def invoice_id_for(appointment_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(INVOICE_NAMESPACE, f"invoice:{appointment_id}")


class BillingRequest(BaseModel):
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    appointment_time: datetime
    # From HC_BILLING_PAYMENT_TERMS_DAYS: set by services.billing.start_billing_run, the one starter.
    payment_terms_seconds: int


class CancelSignal(BaseModel):
    """APPOINTMENT_CANCELLED reached billing (by signal, or signal-with-start)."""

    event_id: uuid.UUID | None = None


class PayRequest(BaseModel):
    """The `pay` update: the payment that pays the invoice (a row of `payments`, CONFIRMED). The
    fields are optional so that histories of runs paid before payments were recorded still decode;
    the update's validator refuses a request without `payment_id`."""

    actor_id: uuid.UUID | None = None
    payment_id: uuid.UUID | None = None
    provider: str | None = None  # desk | local | ...
    method: str | None = None  # cash | card | transfer | online
    reference: str | None = None
    amount: Decimal | None = None
    currency: str | None = None


class PriceRequest(BaseModel):
    doctor_id: uuid.UUID


class Price(BaseModel):
    amount: Decimal
    currency: str


class InvoiceDraft(BaseModel):
    invoice_id: uuid.UUID
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    amount: Decimal
    currency: str
    workflow_id: str
    due_at: datetime


class InvoiceState(BaseModel):
    id: uuid.UUID
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    amount: Decimal
    currency: str
    status: InvoiceStatus
    pdf_url: str | None = None
    pdf_key: str | None = None
    pdf_sha256: str | None = None
    workflow_id: str
    due_at: datetime
    created_at: datetime
    issued_at: datetime | None = None
    paid_at: datetime | None = None
    updated_at: datetime
    payment_id: uuid.UUID | None = None
    pdf_status: InvoiceStatus | None = None


class PdfRequest(BaseModel):
    invoice: InvoiceState
    appointment_time: datetime


class PdfResult(BaseModel):
    pdf_url: str
    key: str
    sha256: str
    bytes: int


class IssueRequest(BaseModel):
    invoice_id: uuid.UUID
    pdf: PdfResult
    at: datetime


class InvoiceStatusChange(BaseModel):
    invoice_id: uuid.UUID
    target: InvoiceStatus
    at: datetime
    # For PAID: the payment that pays it (checked by the activity, stored on the invoice).
    payment_id: uuid.UUID | None = None


class PdfRecord(BaseModel):
    """A PDF rendered for a status after ISSUED (PAID, VOID, OVERDUE): stored on the invoice if it
    still has that status."""

    invoice_id: uuid.UUID
    status: InvoiceStatus
    pdf: PdfResult


class PdfAttention(BaseModel):
    """Why a run waits for an operator: the PDF step's last failure (its type and the message the
    activity wrote, which names rules and fields, never values), since when, and how many operator
    retries it has had."""

    failure_type: str
    message: str
    since: datetime
    retries: int = 0


class RetryPdfRequest(BaseModel):
    """`retry_pdf` update: an operator asks a run that needs attention to render its PDF again."""

    reason: str | None = None


class RetryPdfAccepted(BaseModel):
    invoice_id: uuid.UUID
    # The failure the retry answers.
    attention: PdfAttention


class BillingOutcome(BaseModel):
    appointment_id: uuid.UUID
    invoice_id: uuid.UUID | None
    # PAID or VOID; UNBILLED when the cancellation came before the invoice was recorded.
    final_status: str
