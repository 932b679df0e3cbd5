"""Billing activities: price a visit, record the invoice, render its PDF (Lambda), set its status."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from healthcare import audit, correlation
from healthcare.contracts.billing import (
    DOCTOR_NOT_FOUND,
    INVALID_INVOICE_TRANSITION,
    INVOICE_NOT_FOUND,
    PAYMENT_REQUIRED,
    PDF_FAILED,
    PDF_REJECTED,
    InvoiceDraft,
    InvoiceState,
    InvoiceStatus,
    InvoiceStatusChange,
    IssueRequest,
    PdfRecord,
    PdfRequest,
    PdfResult,
    Price,
    PriceRequest,
    can_become,
)
from healthcare.db import session_factory
from healthcare.models import Doctor, Invoice, Payment, PaymentStatus, utcnow
from healthcare.stores.patients import PatientStore

CURRENCY = "USD"
HEARTBEAT_EVERY = 5.0
PDF_MAX_TEXT = 120  # the invoice-PDF Lambda's limit for a name (lambda/invoice_pdf.py MAX_NAME)


def _state(row: Invoice) -> InvoiceState:
    return InvoiceState.model_validate(row, from_attributes=True)


class BillingActivities:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        lambda_client: Any,
        function_name: str,
        patient_store: Callable[[AsyncSession], PatientStore],
        audit_key: bytes,
        currency: str = CURRENCY,
    ) -> None:
        self._sessions = session_factory(engine)
        self._lambda = lambda_client
        self._function = function_name
        self._patient_store = patient_store
        self._audit_key = audit_key
        self._currency = currency

    async def _audit_change(self, session: AsyncSession, row: Invoice, before: str, **detail: str) -> None:
        """A status change this worker made, in its transaction (the caller commits)."""
        entry = audit.Entry(
            action="set_status",
            resource_type="invoice",
            resource_id=str(row.id),
            actor_role="worker",
            detail={"from": before, "to": row.status, "workflowId": row.workflow_id, **detail},
        )
        await audit.append(session, [entry], key=self._audit_key)

    @activity.defn(name="billing.price_visit")
    async def price_visit(self, data: PriceRequest) -> Price:
        async with self._sessions() as session:
            doctor = await session.get(Doctor, data.doctor_id)
            if doctor is None:
                raise ApplicationError("doctor not found", type=DOCTOR_NOT_FOUND, non_retryable=True)
            return Price(amount=Decimal(doctor.fee).quantize(Decimal("0.01")), currency=self._currency)

    @activity.defn(name="billing.record_invoice")
    async def record_invoice(self, data: InvoiceDraft) -> InvoiceState:
        """One invoice per appointment: a retry (or a second run) gets the row that already exists."""
        async with self._sessions() as session:
            await session.execute(
                insert(Invoice)
                .values(
                    id=data.invoice_id,
                    appointment_id=data.appointment_id,
                    patient_id=data.patient_id,
                    doctor_id=data.doctor_id,
                    amount=data.amount,
                    currency=data.currency,
                    status=InvoiceStatus.pending.value,
                    workflow_id=data.workflow_id,
                    due_at=data.due_at,
                    correlation_id=correlation.current(),
                )
                .on_conflict_do_nothing(index_elements=["appointment_id"])
            )
            await session.commit()
            row = (
                await session.exec(select(Invoice).where(Invoice.appointment_id == data.appointment_id))
            ).one()
            return _state(row)

    @activity.defn(name="billing.render_pdf")
    async def render_pdf(self, data: PdfRequest) -> PdfResult:
        """Invoke the invoice-PDF Lambda; the object key depends only on the invoice id: retries overwrite.

        The invoice is read again here: a retry after an operator corrected the row renders the row
        as it is now, not as the workflow first saw it."""
        async with self._sessions() as session:
            row = await session.get(Invoice, data.invoice.id)
            invoice = _state(row) if row is not None else data.invoice
            patient = await self._patient_store(session).get(invoice.patient_id)
            doctor = await session.get(Doctor, invoice.doctor_id)
        payload = {
            "invoiceId": str(invoice.id),
            "patientId": str(invoice.patient_id),
            "amount": f"{invoice.amount:.2f}",
            "date": invoice.created_at.date().isoformat(),
            # The first render happens before the invoice is issued, and shows it issued.
            "status": (
                InvoiceStatus.issued if invoice.status == InvoiceStatus.pending else invoice.status
            ).value,
            "currency": invoice.currency,
            "patientName": _pdf_text(patient.name) if patient else None,
            "doctorName": _pdf_text(doctor.name) if doctor else None,
            "appointmentTime": data.appointment_time.isoformat(),
            "invoiceNumber": "INV-" + invoice.id.hex[:8].upper(),
        }
        call = asyncio.ensure_future(
            asyncio.to_thread(self._invoke, json.dumps(payload).encode(), correlation.current())
        )
        while True:
            done, _ = await asyncio.wait({call}, timeout=HEARTBEAT_EVERY)
            if done:
                break
            activity.heartbeat()
        function_error, body = call.result()
        return _pdf_result(function_error, body)

    def _invoke(self, payload: bytes, correlation_id: str | None) -> tuple[str | None, bytes]:
        extra = {}
        if correlation_id:
            # Lambda's client context (base64 JSON, `custom` reaches the handler as
            # context.client_context.custom): the request contract itself stays as it is.
            custom = json.dumps({"custom": {"correlationId": correlation_id}}).encode()
            extra["ClientContext"] = base64.b64encode(custom).decode()
        response = self._lambda.invoke(FunctionName=self._function, Payload=payload, **extra)
        return response.get("FunctionError"), response["Payload"].read()

    @activity.defn(name="billing.issue")
    async def issue(self, data: IssueRequest) -> InvoiceState:
        """Store the PDF's key and digest; PENDING → ISSUED. A retry finds it done and returns the row."""
        async with self._sessions() as session:
            await session.execute(
                update(Invoice)
                .where(col(Invoice.id) == data.invoice_id, col(Invoice.pdf_key).is_(None))
                .values(**_pdf_columns(data.pdf, InvoiceStatus.issued))
            )
            issued = await session.execute(
                update(Invoice)
                .where(col(Invoice.id) == data.invoice_id, col(Invoice.status) == InvoiceStatus.pending.value)
                .values(status=InvoiceStatus.issued.value, issued_at=data.at, updated_at=utcnow())
                .returning(col(Invoice.id))
            )
            row = await session.get(Invoice, data.invoice_id)
            if row is None:  # a retry cannot make a missing invoice appear: fail the run visibly
                raise ApplicationError("invoice not found", type=INVOICE_NOT_FOUND, non_retryable=True)
            if issued.first() is not None:  # not on a retry that finds it done
                await self._audit_change(session, row, InvoiceStatus.pending.value, pdfSha256=data.pdf.sha256)
            await session.commit()
            return _state(row)

    @activity.defn(name="billing.set_status")
    async def set_status(self, data: InvoiceStatusChange) -> InvoiceState:
        """Apply one allowed transition; a retry finds the target already set and returns the row."""
        async with self._sessions() as session:
            row = await session.scalar(select(Invoice).where(Invoice.id == data.invoice_id).with_for_update())
            if row is None:  # a retry cannot make a missing invoice appear: fail the run visibly
                raise ApplicationError("invoice not found", type=INVOICE_NOT_FOUND, non_retryable=True)
            if row.status != data.target:
                if not can_become(row.status, data.target):
                    raise ApplicationError(
                        f"an invoice that is {row.status} cannot become {data.target}",
                        type=INVALID_INVOICE_TRANSITION,
                        non_retryable=True,
                    )
                if data.target == InvoiceStatus.paid and data.payment_id is not None:
                    await _check_payment(session, row, data.payment_id)
                    row.payment_id = data.payment_id
                before = row.status
                row.status = data.target.value
                if data.target == InvoiceStatus.paid:
                    row.paid_at = data.at
                row.updated_at = utcnow()
                session.add(row)
                await session.flush()
                await self._audit_change(session, row, before)
                await session.commit()
                await session.refresh(row)
            return _state(row)

    @activity.defn(name="billing.record_pdf")
    async def record_pdf(self, data: PdfRecord) -> InvoiceState:
        """Store the PDF rendered for a later status, if the invoice still has it (a newer status's
        PDF follows otherwise). A retry stores the same key and digest again."""
        async with self._sessions() as session:
            await session.execute(
                update(Invoice)
                .where(col(Invoice.id) == data.invoice_id, col(Invoice.status) == data.status.value)
                .values(**_pdf_columns(data.pdf, data.status))
            )
            await session.commit()
            row = await session.get(Invoice, data.invoice_id)
            if row is None:
                raise ApplicationError("invoice not found", type=INVOICE_NOT_FOUND, non_retryable=True)
            return _state(row)


async def _check_payment(session: AsyncSession, invoice: Invoice, payment_id: uuid.UUID) -> None:
    """An invoice is PAID only by a confirmed payment of its own amount (the API records it first)."""
    payment = await session.get(Payment, payment_id)
    if (
        payment is None
        or payment.invoice_id != invoice.id
        or payment.status != PaymentStatus.confirmed
        or payment.amount != invoice.amount
    ):
        raise ApplicationError(
            "the payment does not pay this invoice", type=PAYMENT_REQUIRED, non_retryable=True
        )


def _pdf_columns(pdf: PdfResult, status: InvoiceStatus) -> dict[str, object]:
    """Where a rendered PDF is, its digest and the status it shows, as the invoice row stores them."""
    return {
        "pdf_key": pdf.key,
        "pdf_url": pdf.pdf_url,
        "pdf_sha256": pdf.sha256,
        "pdf_status": status.value,
        "updated_at": utcnow(),
    }


def _pdf_text(text: str, limit: int = PDF_MAX_TEXT) -> str | None:
    """A name as the Lambda accepts it: printable, at most `limit` characters. The API allows longer
    names and stored records may hold tabs or line breaks; refusing them would fail billing for good."""
    printable = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not printable:
        return None
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def _pdf_result(function_error: str | None, body: bytes) -> PdfResult:
    """Read the Lambda's answer; the text of a failure never goes into the error (it may name a patient)."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if function_error or not isinstance(answer, dict) or "statusCode" not in answer:
        # The local emulator omits FunctionError; a payload without statusCode is a failure too.
        kind = answer.get("errorType") if isinstance(answer, dict) else None
        raise ApplicationError(
            f"invoice-PDF function failed ({kind or function_error or 'no answer'})", type=PDF_FAILED
        )
    if answer["statusCode"] == 400:
        # The Lambda's message names the bad fields and rules, never their values: safe to surface.
        reason = str(answer.get("error") or "bad request")[:500]
        raise ApplicationError(
            f"invoice-PDF function refused the request: {reason}", type=PDF_REJECTED, non_retryable=True
        )
    try:
        if answer["statusCode"] != 200:
            raise ValueError("unexpected status")
        return PdfResult(
            pdf_url=answer["pdfUrl"], key=answer["key"], sha256=answer["sha256"], bytes=answer["bytes"]
        )
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ApplicationError("invoice-PDF function gave a malformed answer", type=PDF_FAILED) from exc
