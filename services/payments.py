"""Paying invoices: a patient pays online through the payment provider, staff record a payment taken
at the desk. An invoice becomes PAID only once a payment is recorded, and only by the billing
workflow (its `pay` update carries the payment).

Who may record a payment (README, "Security"): the patient who owns the invoice, online only (the
provider confirms the money by a signed callback); staff and admins, at the desk (cash, card or
transfer, with a reference such as the receipt number). Doctors take no payments. One confirmed
payment pays an invoice in full; partial payments and refunds are not supported yet: money that
arrives for a void or already paid invoice is kept as REFUND_DUE for staff to refund by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import errors
from healthcare.contracts.billing import (
    INVOICE_NOT_ISSUED,
    INVOICE_VOID,
    PAYMENT_REQUIRED,
    InvoiceState,
    InvoiceStatus,
    PayRequest,
)
from healthcare.db import release_connection
from healthcare.models import Invoice, Payment, PaymentStatus, Role, utcnow
from healthcare.payments import (
    CheckoutRequest,
    InvalidCallback,
    PaymentProvider,
    ProviderEvent,
    ProviderUnavailable,
)
from healthcare.stores.patients import PatientStore
from services import audit
from services.access import read_care_record, visible_record
from services.context import RequestContext, require_actor
from services.invoices import NOT_FOUND
from workflows.billing import BillingWorkflow

DESK = "desk"
NOT_CONFIRMED_RETRY_SECONDS = 5  # a payment billing did not confirm in time: look again after this
# NEEDS_ATTENTION: the PDF step waits for an operator; the billing run still takes payment (PAID, the
# PDF follows the retry).
PAYABLE = (InvoiceStatus.issued.value, InvoiceStatus.overdue.value, InvoiceStatus.needs_attention.value)
DeskMethod = Literal["cash", "card", "transfer"]


async def _audit(
    session: AsyncSession, ctx: RequestContext, invoice_id: uuid.UUID, outcome: str, **detail: str
) -> None:
    await audit.record(
        session,
        ctx,
        action="pay",
        resource_type="invoice",
        resource_id=invoice_id,
        outcome=outcome,
        detail=detail,
    )


def _refuse_unpayable(row: Invoice) -> None:
    if row.status == InvoiceStatus.void:
        raise errors.Conflict("a void invoice cannot be paid")
    if row.status == InvoiceStatus.paid:
        raise errors.Conflict("this invoice is already paid")
    if row.status not in PAYABLE:
        raise errors.Conflict("the invoice is not issued yet; try again shortly")


# -- The patient, online ----------------------------------------------------------------------------
async def checkout(
    session: AsyncSession,
    store: PatientStore,
    provider: PaymentProvider | None,
    ctx: RequestContext,
    invoice_id: uuid.UUID,
    *,
    return_url: str,
) -> Payment:
    """Open a checkout at the provider for the patient's own invoice; the patient pays on its page.
    An open checkout of the same invoice is reused (a double click opens one checkout)."""
    actor = require_actor(ctx)
    row = await visible_record(session, store, actor, Invoice, invoice_id)
    if row is None:
        await _audit(session, ctx, invoice_id, "denied", step="checkout")
        raise errors.NotFound(NOT_FOUND)
    if actor.role != Role.patient:
        await _audit(session, ctx, invoice_id, "denied", step="checkout")
        raise errors.Forbidden("online checkout is for the patient; staff record desk payments", audited=True)
    if provider is None:
        raise errors.DependencyUnavailable("online payment is not available; pay at the desk")
    try:
        _refuse_unpayable(row)
    except errors.Conflict:
        await _audit(session, ctx, invoice_id, "conflict", step="checkout", status=row.status)
        raise
    payment = await session.scalar(
        select(Payment).where(
            col(Payment.invoice_id) == invoice_id,
            col(Payment.status) == PaymentStatus.pending.value,
            col(Payment.actor_id) == actor.user_id,
            col(Payment.checkout_url).is_not(None),
        )
    )
    if payment is None:
        payment = Payment(
            invoice_id=invoice_id,
            amount=row.amount,
            currency=row.currency.strip(),
            method="online",
            provider=provider.name,
            actor_id=actor.user_id,
        )
        session.add(payment)
        await session.commit()  # the attempt exists before the provider hears of it
        request = CheckoutRequest(
            payment_id=payment.id,
            invoice_id=invoice_id,
            amount=payment.amount,
            currency=payment.currency,
            description=f"Invoice INV-{invoice_id.hex[:8].upper()}",
            return_url=return_url,
        )
        try:
            opened = await provider.create_checkout(request)
        except ProviderUnavailable as exc:
            payment.status = PaymentStatus.failed.value
            session.add(payment)
            await _audit(session, ctx, invoice_id, "error", step="checkout")
            raise errors.DependencyUnavailable("the payment provider is unavailable; try again") from exc
        payment.reference, payment.checkout_url = opened.reference, opened.url
        session.add(payment)
    await _audit(session, ctx, invoice_id, "ok", step="checkout", paymentId=str(payment.id))
    return payment


async def handle_callback(
    session: AsyncSession,
    temporal: TemporalClient,
    provider: PaymentProvider | None,
    ctx: RequestContext,
    *,
    body: bytes,
    headers: Mapping[str, str],
    deadline_seconds: float,
) -> str:
    """The provider's signed callback: confirm the payment and pay the invoice through its billing
    workflow. Idempotent (the provider delivers at least once): a confirmed payment is applied again,
    which the workflow answers with the PAID invoice. Raises InvalidCallback for a callback that is
    not the provider's; DependencyUnavailable (so the provider retries) when billing cannot answer."""
    if provider is None:
        raise InvalidCallback("online payment is off")
    event = provider.verify_callback(body, headers, now=time.time())
    payment = await session.scalar(
        select(Payment).where(
            col(Payment.provider) == provider.name, col(Payment.reference) == event.reference
        )
    )
    if payment is None or payment.id != event.payment_id:
        await _audit_callback(session, ctx, event, None, "ignored", reason="unknown checkout")
        return "ignored"
    if event.outcome == "failed":
        if payment.status == PaymentStatus.pending:
            payment.status, payment.updated_at = PaymentStatus.failed.value, utcnow()
            session.add(payment)
        await _audit_callback(session, ctx, event, payment, "failed")
        return "failed"
    if payment.status == PaymentStatus.pending:
        invoice = await session.get(Invoice, payment.invoice_id)
        payable = invoice is not None and invoice.status in PAYABLE
        mismatch = event.amount != payment.amount or event.currency != payment.currency
        await _receive(session, payment, refund=mismatch or not payable)
    if payment.status == PaymentStatus.confirmed:
        with contextlib.suppress(errors.Conflict):  # voided meanwhile: `apply` kept it REFUND_DUE
            await apply(session, temporal, ctx, payment, deadline_seconds=deadline_seconds)
    await _audit_callback(session, ctx, event, payment, payment.status.lower())
    return payment.status


async def _audit_callback(
    session: AsyncSession,
    ctx: RequestContext,
    event: ProviderEvent,
    payment: Payment | None,
    outcome: str,
    **detail: str,
) -> None:
    await audit.record(
        session,
        ctx,
        action="payment_callback",
        resource_type="invoice",
        resource_id=payment.invoice_id if payment else None,
        outcome=outcome[:16],
        actor_role="provider",
        detail={"eventId": event.event_id[:100], "paymentId": str(event.payment_id), **detail},
    )


async def _receive(session: AsyncSession, payment: Payment, *, refund: bool) -> None:
    """The money arrived: CONFIRMED, unless another payment already paid the invoice (or the amount
    is not the invoice's), then REFUND_DUE. Commits."""
    payment.confirmed_at = payment.updated_at = utcnow()
    payment.status = (PaymentStatus.refund_due if refund else PaymentStatus.confirmed).value
    session.add(payment)
    try:
        await session.commit()
    except IntegrityError:  # the one confirmed payment per invoice exists already
        await session.rollback()
        payment.status = PaymentStatus.refund_due.value
        session.add(payment)
        await session.commit()


# -- Staff, at the desk ----------------------------------------------------------------------------
async def pay_at_desk(
    session: AsyncSession,
    store: PatientStore,
    temporal: TemporalClient,
    ctx: RequestContext,
    invoice_id: uuid.UUID,
    *,
    method: DeskMethod,
    reference: str,
    amount: Decimal | None,
    deadline_seconds: float,
) -> InvoiceState | Invoice:
    """Record a payment staff took (cash, card or transfer) and pay the invoice with it. Idempotent
    by reference: the same reference again answers with the invoice it paid. Billing gets
    `deadline_seconds` to confirm, else 503 with Retry-After and the invoice id (the payment stays
    recorded; the same reference again applies it)."""
    actor = require_actor(ctx)
    row = await visible_record(session, store, actor, Invoice, invoice_id)
    if row is None:
        await _audit(session, ctx, invoice_id, "denied")
        raise errors.NotFound(NOT_FOUND)
    if not actor.is_clinic_wide:
        await _audit(session, ctx, invoice_id, "denied")
        raise errors.Forbidden(
            "payments are recorded by staff; patients pay online (POST /invoices/{id}/checkout)", audited=True
        )
    payment = await session.scalar(
        select(Payment).where(col(Payment.provider) == DESK, col(Payment.reference) == reference)
    )
    if payment is not None and payment.invoice_id != invoice_id:
        raise errors.Conflict("this reference was recorded for another invoice")
    if payment is None:
        if amount is not None and amount != row.amount:
            raise errors.Unprocessable(
                f"the invoice is {row.amount:.2f} {row.currency}; partial payments are not supported"
            )
        try:
            _refuse_unpayable(row)
        except errors.Conflict:
            await _audit(session, ctx, invoice_id, "conflict", status=row.status)
            raise
        payment = Payment(
            invoice_id=invoice_id,
            amount=row.amount,
            currency=row.currency.strip(),
            method=method,
            provider=DESK,
            reference=reference,
            actor_id=actor.user_id,
            status=PaymentStatus.confirmed.value,
            confirmed_at=utcnow(),
        )
        session.add(payment)
        try:
            await session.commit()
        except IntegrityError as exc:  # a concurrent desk payment of this invoice won
            await session.rollback()
            raise errors.Conflict("a payment of this invoice is already recorded") from exc
    if payment.status != PaymentStatus.confirmed:
        raise errors.Conflict(f"this payment is {payment.status}")
    try:
        result = await apply(session, temporal, ctx, payment, deadline_seconds=deadline_seconds)
    except errors.DependencyUnavailable:
        await _audit(session, ctx, invoice_id, "pending", paymentId=str(payment.id))
        raise
    await _audit(session, ctx, invoice_id, "ok", method=method, paymentId=str(payment.id))
    return result


# -- Applying a payment: the billing workflow's `pay` update ----------------------------------------
async def apply(
    session: AsyncSession,
    temporal: TemporalClient,
    ctx: RequestContext,
    payment: Payment,
    *,
    deadline_seconds: float,
) -> InvoiceState:
    """Send the confirmed payment to the invoice's billing run; it answers with the PAID invoice. An
    invoice that became void meanwhile leaves the payment REFUND_DUE (a Conflict). Temporal gets
    `deadline_seconds` (HC_TEMPORAL_UPDATE_TIMEOUT_SECONDS) to confirm, else 503 with Retry-After."""
    invoice = await session.get(Invoice, payment.invoice_id)
    assert invoice is not None
    request = PayRequest(
        actor_id=ctx.actor.user_id if ctx.actor else None,
        payment_id=payment.id,
        provider=payment.provider,
        method=payment.method,
        reference=payment.reference,
        amount=payment.amount,
        currency=payment.currency,
    )
    await release_connection(session)
    handle = temporal.get_workflow_handle(invoice.workflow_id)
    try:
        state: InvoiceState = await asyncio.wait_for(
            handle.execute_update(BillingWorkflow.pay, request, result_type=InvoiceState),
            deadline_seconds,
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in (
            INVOICE_VOID,
            INVOICE_NOT_ISSUED,
            PAYMENT_REQUIRED,
        ):
            if cause.type == INVOICE_VOID:
                # A workflow task that was lost may have recorded this payment before the run,
                # retried, saw a cancellation first: the invoice is PAID with it (and stays PAID).
                refreshed = await session.get(Invoice, payment.invoice_id, populate_existing=True)
                if refreshed is not None and refreshed.payment_id == payment.id:
                    return InvoiceState.model_validate(refreshed, from_attributes=True)
                await _refund_due(session, payment)
            raise errors.Conflict(str(cause.message)) from exc
        raise errors.DependencyUnavailable("the payment could not be applied; try again") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the run already ended (PAID or VOID) or failed
            refreshed = await session.get(Invoice, payment.invoice_id, populate_existing=True)
            if refreshed is not None and refreshed.payment_id == payment.id:
                return InvoiceState.model_validate(refreshed, from_attributes=True)
            await _refund_due(session, payment)
            raise errors.Conflict("this invoice can no longer be paid") from exc
        raise errors.DependencyUnavailable("billing is unavailable; try again") from exc
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:
        raise errors.DependencyUnavailable(
            "billing did not confirm the payment in time; check the invoice before trying again",
            retry_after_seconds=NOT_CONFIRMED_RETRY_SECONDS,
            details={"invoiceId": str(invoice.id)},
        ) from exc
    if state.payment_id not in (None, payment.id):
        await _refund_due(session, payment)  # another payment paid it first
    return state


async def _refund_due(session: AsyncSession, payment: Payment) -> None:
    payment.status, payment.updated_at = PaymentStatus.refund_due.value, utcnow()
    session.add(payment)
    await session.commit()


async def list_for_invoice(
    session: AsyncSession, store: PatientStore, ctx: RequestContext, invoice_id: uuid.UUID
) -> list[Payment]:
    """The payments of an invoice the actor may see (newest first); the read is audited."""
    await read_care_record(
        session,
        store,
        ctx,
        Invoice,
        invoice_id,
        action="read_payments",
        resource_type="invoice",
        not_found=NOT_FOUND,
    )
    rows = await session.exec(
        select(Payment).where(col(Payment.invoice_id) == invoice_id).order_by(col(Payment.created_at).desc())
    )
    return list(rows.all())
