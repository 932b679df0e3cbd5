"""Invoices: read under the appointment role rules, pay through the billing workflow, download the PDF."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import RedirectResponse

from api.deps import Ctx, PageDep, PatientStoreDep, S3Dep, SessionDep, SettingsDep, TemporalDep
from healthcare.contracts.billing import InvoiceStatus
from healthcare.schemas import Page
from services import invoices
from services.invoices import InvoicePublic

router = APIRouter(prefix="/invoices", tags=["invoices"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such invoice (or not yours to see), or no PDF yet"},
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
        403: {"description": "Doctors do not take payments"},
        409: {"description": "The invoice is void"},
    },
)
async def pay(
    invoice_id: uuid.UUID,
    session: SessionDep,
    store: PatientStoreDep,
    temporal: TemporalDep,
    ctx: Ctx,
    settings: SettingsDep,
) -> InvoicePublic:
    """Idempotent: paying a PAID invoice answers with it."""
    return await invoices.pay(
        session, store, temporal, ctx, invoice_id, deadline_seconds=settings.temporal_update_timeout_seconds
    )


@router.get(
    "/{invoice_id}/pdf",
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    response_class=RedirectResponse,
    responses={**RESPONSES, 307: {"description": "Redirect to a presigned URL valid for five minutes"}},
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
