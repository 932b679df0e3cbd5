"""Invoices: reading them under the appointment role rules, paying through the billing workflow, PDF links."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import errors
from healthcare.contracts.billing import (
    INVOICE_NOT_ISSUED,
    INVOICE_VOID,
    InvoiceState,
    InvoiceStatus,
    PayRequest,
)
from healthcare.db import release_connection
from healthcare.models import Invoice, Role
from healthcare.schemas import ApiOut, Money
from healthcare.stores.patients import PatientStore
from services import audit
from services.access import list_care_records, read_care_record, visible_record
from services.context import RequestContext, require_actor
from workflows.billing import BillingWorkflow

NOT_FOUND = "invoice not found"
PDF_URL_SECONDS = 300


class InvoicePublic(ApiOut):
    id: uuid.UUID
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    amount: Money
    currency: str
    status: str
    pdf_available: bool = Field(default=False)
    created_at: datetime
    paid_at: datetime | None = None


def public(row: Invoice | InvoiceState) -> InvoicePublic:
    return InvoicePublic(
        id=row.id,
        appointment_id=row.appointment_id,
        patient_id=row.patient_id,
        amount=row.amount,
        currency=row.currency.strip(),
        status=row.status,
        pdf_available=row.pdf_key is not None,
        created_at=row.created_at,
        paid_at=row.paid_at,
    )


async def get(
    session: AsyncSession, store: PatientStore, ctx: RequestContext, invoice_id: uuid.UUID
) -> InvoicePublic:
    return public(
        await read_care_record(
            session, store, ctx, Invoice, invoice_id, resource_type="invoice", not_found=NOT_FOUND
        )
    )


async def list_invoices(
    session: AsyncSession,
    store: PatientStore,
    ctx: RequestContext,
    *,
    limit: int,
    offset: int,
    status: str | None = None,
    patient_id: uuid.UUID | None = None,
) -> tuple[list[InvoicePublic], int]:
    conditions = []
    if patient_id is not None:
        conditions.append(Invoice.patient_id == patient_id)
    if status:
        conditions.append(Invoice.status == status)
    rows, total = await list_care_records(
        session,
        store,
        ctx,
        Invoice,
        where=conditions,
        order_by=[Invoice.created_at.desc(), Invoice.id],
        limit=limit,
        offset=offset,
        resource_type="invoice",
    )
    return [public(r) for r in rows], total


async def pay(
    session: AsyncSession,
    store: PatientStore,
    temporal: TemporalClient,
    ctx: RequestContext,
    invoice_id: uuid.UUID,
    *,
    deadline_seconds: float,
) -> InvoicePublic:
    """Staff, admins and the patient who owns the invoice; paying a PAID invoice answers with it.
    Temporal gets `deadline_seconds` to confirm, else 503 with Retry-After."""
    actor = require_actor(ctx)
    row = await visible_record(session, store, actor, Invoice, invoice_id)
    if row is None:
        await _audit_pay(session, ctx, invoice_id, "denied")
        raise errors.NotFound(NOT_FOUND)
    if not actor.is_clinic_wide and actor.role != Role.patient:
        # A doctor sees their patients' invoices but does not take payments.
        await _audit_pay(session, ctx, invoice_id, "denied")
        raise errors.Forbidden("only staff or the patient pay an invoice")
    result: Invoice | InvoiceState = row
    if row.status == InvoiceStatus.void:
        await _audit_pay(session, ctx, invoice_id, "conflict")
        raise errors.Conflict("a void invoice cannot be paid")
    if row.status != InvoiceStatus.paid:
        await release_connection(session)
        try:
            result = await _pay_through_workflow(temporal, row, deadline_seconds)
        except errors.DomainError as exc:
            await _audit_pay(
                session, ctx, invoice_id, "conflict" if isinstance(exc, errors.Conflict) else "error"
            )
            raise
    await _audit_pay(session, ctx, invoice_id, "ok")
    return public(result)


async def _audit_pay(session: AsyncSession, ctx: RequestContext, invoice_id: uuid.UUID, outcome: str) -> None:
    await audit.record(
        session, ctx, action="pay", resource_type="invoice", resource_id=invoice_id, outcome=outcome
    )


async def _pay_through_workflow(temporal: TemporalClient, row: Invoice, deadline: float) -> InvoiceState:
    handle = temporal.get_workflow_handle(row.workflow_id)
    try:
        state: InvoiceState = await asyncio.wait_for(
            handle.execute_update(BillingWorkflow.pay, PayRequest(), result_type=InvoiceState), deadline
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type in (INVOICE_VOID, INVOICE_NOT_ISSUED):
            raise errors.Conflict(str(cause.message)) from exc
        raise errors.DependencyUnavailable("the payment could not be recorded; try again") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the run already ended (PAID or VOID) or failed
            raise errors.Conflict("this invoice can no longer be paid") from exc
        raise errors.DependencyUnavailable("billing is unavailable; try again") from exc
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:
        raise errors.DependencyUnavailable(
            "billing did not confirm the payment in time; check the invoice before trying again",
            retry_after_seconds=5,
            details={"invoiceId": str(row.id)},
        ) from exc
    return state


async def pdf_url(
    session: AsyncSession,
    store: PatientStore,
    s3: Any,
    ctx: RequestContext,
    invoice_id: uuid.UUID,
    *,
    bucket: str,
) -> str:
    """A presigned GET valid for five minutes, only after the same check as reading the invoice."""
    row = await read_care_record(
        session,
        store,
        ctx,
        Invoice,
        invoice_id,
        action="download",
        resource_type="invoice",
        not_found=NOT_FOUND,
    )
    if row.pdf_key is None:
        raise errors.NotFound("this invoice has no PDF yet")
    url: str = await asyncio.to_thread(
        s3.generate_presigned_url,
        "get_object",
        Params={"Bucket": bucket, "Key": row.pdf_key},
        ExpiresIn=PDF_URL_SECONDS,
    )
    return url
