"""Invoices: reading them under the appointment role rules and PDF links (paying: services/payments.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.contracts.billing import InvoiceState
from healthcare.db import release_connection
from healthcare.logging import get_logger
from healthcare.models import Invoice
from healthcare.schemas import ApiOut, Money
from healthcare.stores.patients import PatientStore
from services import audit
from services.access import list_care_records, read_care_record
from services.context import RequestContext

NOT_FOUND = "invoice not found"
PDF_URL_SECONDS = 300
PDF_MAX_BYTES = 5 * 1024 * 1024

log = get_logger(__name__)


class InvoicePublic(ApiOut):
    id: uuid.UUID
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    amount: Money
    currency: str
    status: str
    # A PDF that shows the current status (after a status change it is re-rendered within seconds).
    pdf_available: bool = Field(default=False)
    created_at: datetime
    paid_at: datetime | None = None
    payment_id: uuid.UUID | None = None


def _pdf_current(row: Invoice | InvoiceState) -> bool:
    return row.pdf_key is not None and row.pdf_status is not None and row.pdf_status == row.status


def public(row: Invoice | InvoiceState) -> InvoicePublic:
    return InvoicePublic(
        id=row.id,
        appointment_id=row.appointment_id,
        patient_id=row.patient_id,
        amount=row.amount,
        currency=row.currency.strip(),
        status=row.status,
        pdf_available=_pdf_current(row),
        created_at=row.created_at,
        paid_at=row.paid_at,
        payment_id=row.payment_id,
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


async def pdf_url(
    session: AsyncSession,
    store: PatientStore,
    s3: Any,
    ctx: RequestContext,
    invoice_id: uuid.UUID,
    *,
    bucket: str,
) -> str:
    """A presigned GET valid for five minutes, after the same check as reading the invoice, for a
    PDF that shows the invoice's current status and is, byte for byte, the one billing stored."""
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
    if not _pdf_current(row):
        raise errors.NotFound(
            f"the PDF of this {row.status.lower()} invoice is not ready yet; try again shortly"
        )
    await release_connection(session)
    if not await _stored_pdf_matches(s3, bucket, row.pdf_key, row.pdf_sha256):
        await audit.record(
            session,
            ctx,
            action="download",
            resource_type="invoice",
            resource_id=invoice_id,
            outcome="tampered",
            detail={"key": row.pdf_key},
        )
        log.error("invoice PDF failed its checksum", invoice_id=str(invoice_id))
        raise errors.IntegrityFailure(
            "the stored PDF failed its integrity check; the clinic has been alerted"
        )
    url: str = await asyncio.to_thread(
        s3.generate_presigned_url,
        "get_object",
        Params={"Bucket": bucket, "Key": row.pdf_key},
        ExpiresIn=PDF_URL_SECONDS,
    )
    return url


async def _stored_pdf_matches(s3: Any, bucket: str, key: str, sha256: str | None) -> bool:
    """Whether the object is the PDF billing recorded. S3 keeps the SHA-256 it checked the upload
    against (the Lambda sends ChecksumSHA256), so a HEAD tells without moving the bytes; an object
    stored without one (before that) is read and hashed here (PDFs are a few kilobytes, at most
    PDF_MAX_BYTES)."""

    def check() -> bool:
        try:
            head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            kept = head.get("ChecksumSHA256")
            if kept and "-" not in kept:  # a composite (multipart) checksum is not the file's digest
                return bool(base64.b64decode(kept).hex() == sha256)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(PDF_MAX_BYTES + 1)
        except s3.exceptions.ClientError:  # missing, or unreadable: not the PDF we stored
            return False
        return len(body) <= PDF_MAX_BYTES and hashlib.sha256(body).hexdigest() == sha256

    return sha256 is not None and await asyncio.to_thread(check)
