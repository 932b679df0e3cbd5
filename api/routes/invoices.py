"""Invoices: read under the appointment role rules, pay (online checkout or at the desk), download the PDF."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import RedirectResponse

from api.deps import (
    Ctx,
    PageDep,
    PatientStoreDep,
    PaymentProviderDep,
    S3Dep,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from healthcare.contracts.billing import InvoiceStatus
from healthcare.schemas import CheckoutPublic, DeskPaymentIn, Page, PaymentPublic
from services import invoices, payments
from services.invoices import InvoicePublic

router = APIRouter(prefix="/invoices", tags=["invoices"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such invoice (or not yours to see), or no PDF of its status yet"},
}


@router.get("", response_model=Page[InvoicePublic])
async def list_invoices(
    session: SessionDep,
    store: PatientStoreDep,
    ctx: Ctx,
    page: PageDep,
    status_filter: Annotated[InvoiceStatus | None, Query(alias="status")] = None,
    patient_id: Annotated[uuid.UUID | None, Query(alias="patientId")] = None,
) -> Page[InvoicePublic]:
    items, total = await invoices.list_invoices(
        session,
        store,
        ctx,
        limit=page.limit,
        offset=page.offset,
        status=status_filter.value if status_filter else None,
        patient_id=patient_id,
    )
    return Page[InvoicePublic](items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{invoice_id}", response_model=InvoicePublic, responses=RESPONSES)
async def get_invoice(
    invoice_id: uuid.UUID, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> InvoicePublic:
    return await invoices.get(session, store, ctx, invoice_id)


@router.post(
    "/{invoice_id}/pay",
    response_model=InvoicePublic,
    responses={
        **RESPONSES,
        403: {"description": "Only staff and admins record payments (patients use /checkout)"},
        409: {"description": "The invoice is void, not issued yet, or already paid with another reference"},
        422: {"description": "The amount is not the invoice's (partial payments are not supported)"},
        503: {"description": "Billing did not confirm in time (Retry-After; the body's invoiceId)"},
    },
)
async def pay(
    invoice_id: uuid.UUID,
    body: DeskPaymentIn,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    ctx: Ctx,
    settings: SettingsDep,
) -> InvoicePublic:
    """Record a payment taken at the desk (staff and admins) and mark the invoice PAID. Idempotent:
    the same reference again answers with the invoice it paid."""
    paid = await payments.pay_at_desk(
        session,
        store,
        temporal,
        ctx,
        invoice_id,
        method=body.method,
        reference=body.reference,
        amount=body.amount,
        deadline_seconds=settings.temporal_update_timeout_seconds,
    )
    return invoices.public(paid)


@router.post(
    "/{invoice_id}/checkout",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckoutPublic,
    responses={
        **RESPONSES,
        403: {"description": "Online checkout is for the patient who owns the invoice"},
        409: {"description": "The invoice is void, not issued yet, or already paid"},
        503: {"description": "The payment provider is unavailable, or online payment is off"},
    },
)
async def checkout(
    invoice_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    provider: PaymentProviderDep,
    settings: SettingsDep,
    ctx: Ctx,
) -> CheckoutPublic:
    """Start paying your invoice online: open the answer's `checkoutUrl` (the payment provider's
    page). The provider confirms the payment to the API, which marks the invoice PAID; the provider
    then sends the browser back to the portal. Calling again while that checkout is open answers
    with the same one."""
    payment = await payments.checkout(
        session,
        store,
        provider,
        ctx,
        invoice_id,
        return_url=f"{settings.return_url.rstrip('/')}/invoices/{invoice_id}",
    )
    assert payment.checkout_url is not None
    return CheckoutPublic(
        payment_id=payment.id,
        checkout_url=payment.checkout_url,
        status=payment.status,
        amount=payment.amount,
        currency=payment.currency,
    )


@router.get("/{invoice_id}/payments", response_model=list[PaymentPublic], responses=RESPONSES)
async def list_payments(
    invoice_id: uuid.UUID, session: SessionDep, store: PatientStoreDep, ctx: Ctx
) -> list[PaymentPublic]:
    """The invoice's payments and payment attempts, newest first."""
    rows = await payments.list_for_invoice(session, store, ctx, invoice_id)
    return [PaymentPublic.model_validate(p) for p in rows]


@router.get(
    "/{invoice_id}/pdf",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={
        **RESPONSES,
        307: {"description": "Redirect to a presigned URL valid for five minutes"},
        502: {"description": "The stored PDF is not the one billing recorded (never served)"},
    },
)
async def pdf(
    invoice_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    s3: S3Dep,
    settings: SettingsDep,
    ctx: Ctx,
) -> RedirectResponse:
    url = await invoices.pdf_url(session, store, s3, ctx, invoice_id, bucket=settings.s3_bucket)
    # no-store: the link is a short-lived credential and must not be cached by proxies.
    return RedirectResponse(
        url, status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers={"Cache-Control": "no-store"}
    )
