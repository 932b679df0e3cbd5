"""Billing contracts: the models that travel between the consumer, the API, the workflow and activities."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

# Business failures carried as Temporal ApplicationError types; the API maps each to an HTTP status.
INVOICE_VOID = "InvoiceVoid"
INVOICE_NOT_ISSUED = "InvoiceNotIssued"
INVALID_INVOICE_TRANSITION = "InvalidInvoiceTransition"
DOCTOR_NOT_FOUND = "DoctorNotFound"
INVOICE_NOT_FOUND = "InvoiceNotFound"
# The Lambda refused the request (statusCode 400): retrying the same request can never succeed.
PDF_REJECTED = "InvoicePdfRejected"
# A function error or an answer we cannot read: worth retrying.
PDF_FAILED = "InvoicePdfFailed"

WORKFLOW_TYPE = "Billing"
DEFAULT_PAYMENT_TERMS = timedelta(days=30)
# Invoice ids are derived from the appointment, so every retry (and the Lambda's object key) agrees.
INVOICE_NAMESPACE = uuid.UUID("4b0f2c55-1d7e-4a86-9a0c-2f6e8d5b7c31")

InvoiceStatus = Literal["PENDING", "ISSUED", "PAID", "VOID", "OVERDUE"]
STATUSES: tuple[str, ...] = ("PENDING", "ISSUED", "PAID", "VOID", "OVERDUE")
# Allowed status changes (anything else is refused by the activity and the workflow).
TRANSITIONS: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"ISSUED", "VOID"}),
    "ISSUED": frozenset({"PAID", "VOID", "OVERDUE"}),
    "OVERDUE": frozenset({"PAID", "VOID"}),
    "PAID": frozenset(),
    "VOID": frozenset(),
}


def workflow_id_for(appointment_id: uuid.UUID) -> str:
    return f"billing-{appointment_id}"


def invoice_id_for(appointment_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(INVOICE_NAMESPACE, f"invoice:{appointment_id}")


class BillingRequest(BaseModel):
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    appointment_time: datetime
    payment_terms_seconds: int = int(DEFAULT_PAYMENT_TERMS.total_seconds())


class CancelSignal(BaseModel):
    """APPOINTMENT_CANCELLED reached billing (by signal, or signal-with-start)."""

    event_id: uuid.UUID | None = None


class PayRequest(BaseModel):
    actor_id: uuid.UUID | None = None


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
    status: str
    pdf_url: str | None = None
    pdf_key: str | None = None
    pdf_sha256: str | None = None
    workflow_id: str
    due_at: datetime
    created_at: datetime
    issued_at: datetime | None = None
    paid_at: datetime | None = None
    updated_at: datetime


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


class BillingOutcome(BaseModel):
    appointment_id: uuid.UUID
    invoice_id: uuid.UUID | None
    # PAID or VOID; UNBILLED when the cancellation came before the invoice was recorded.
    final_status: str
