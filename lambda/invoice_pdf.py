"""AWS Lambda handler: renders a one-page A4 invoice PDF and stores it in the private invoice bucket.

Self-contained on purpose (stdlib, boto3, reportlab only): it deploys alone as a zip on AWS Lambda.

Request  {"invoiceId", "patientId", "amount", "date", "status"} plus the optional "patientName",
         "doctorName", "clinicName", "currency", "appointmentTime", "invoiceNumber"; unknown fields
         are ignored so that a caller can add fields before this function learns them.
Answers  {"statusCode": 200, "pdfUrl": "s3://<bucket>/<key>", "key", "sha256", "bytes"}
         {"statusCode": 400, "error", "errorType": "BadRequest"} for a request that can never succeed
         {"statusCode": 200, "status": "ok"} for {"healthcheck": true}
A storage failure raises, so the invocation reports a function error and the caller retries.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

logger = logging.getLogger()
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

STATUSES = frozenset({"ISSUED", "PENDING", "PAID", "OVERDUE", "VOID"})
SSE_MODES = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
DEFAULT_BUCKET = "invoices"
DEFAULT_CURRENCY = "USD"
DEFAULT_CLINIC = "Healthcare Clinic"
MAX_NAME = 120

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_AMOUNT = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,2})?")  # at most 999,999,999.99
_PATIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_INVOICE_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")  # also the download file name
_CURRENCY = re.compile(r"[A-Z]{3}")


class BadRequest(ValueError):
    """The request can never succeed; `fields` names the offending fields (never their values)."""

    def __init__(self, fields: list[str], rules: list[str]) -> None:
        super().__init__("invalid request: " + "; ".join(rules))
        self.fields = fields


@dataclass(frozen=True)
class Invoice:
    invoice_id: str  # canonical lower-case UUID
    patient_id: str
    amount: Decimal
    issued_on: date
    status: str
    invoice_number: str
    currency: str
    clinic_name: str
    patient_name: str | None = None
    doctor_name: str | None = None
    appointment_time: datetime | None = None

    @property
    def key(self) -> str:
        # Derived from the invoice id and the status it shows, so a retry overwrites the same
        # object and a PDF of one status is never replaced by one of another (an ISSUED invoice
        # keeps the key it always had).
        if self.status in ("ISSUED", "PENDING"):
            return f"invoices/{self.invoice_id}.pdf"
        return f"invoices/{self.invoice_id}-{self.status.lower()}.pdf"


# -- Validation -------------------------------------------------------------------------------
def _uuid(value: Any) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValueError("must be a UUID")
    return value.lower()


def _amount(value: Any) -> Decimal:
    # bool is an int; a float must print exactly as written (0.1 + 0.2 does not).
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a decimal string or number")
    text = str(value)
    if not _AMOUNT.fullmatch(text) or Decimal(text) <= 0:
        raise ValueError("must be a positive decimal below 1e9 with at most 2 places")
    return Decimal(text).quantize(Decimal("0.01"))


def _date(value: Any) -> date:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be an ISO 8601 date")
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        raise ValueError("must be an ISO 8601 date") from None


def _aware_datetime(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 40 else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() is None:
        raise ValueError("must be an ISO 8601 date-time with offset")
    return parsed


def _status(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in STATUSES:
        raise ValueError("must be one of " + "/".join(sorted(STATUSES)))
    return value.upper()


def _matching(pattern: re.Pattern[str], rule: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(rule)
        return value

    return check


def _text(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else None
    if text is None or len(text) > MAX_NAME or not text.isprintable():
        raise ValueError(f"must be printable text of at most {MAX_NAME} characters")
    return text


_REQUIRED = {
    "invoiceId": _uuid,
    "patientId": _matching(_PATIENT_ID, "must be 1-64 letters, digits or ._:-"),
    "amount": _amount,
    "date": _date,
    "status": _status,
}
_OPTIONAL = {
    "patientName": _text,
    "doctorName": _text,
    "clinicName": _text,
    "currency": _matching(_CURRENCY, "must be an ISO 4217 code such as USD"),
    "appointmentTime": _aware_datetime,
    "invoiceNumber": _matching(_INVOICE_NUMBER, "must be 1-40 letters, digits or ._-"),
}


def parse_request(event: Any) -> Invoice:
    """The validated invoice, or BadRequest naming each bad field and its rule (never its value)."""
    if not isinstance(event, dict):
        raise BadRequest(["(request)"], ["request must be a JSON object"])
    values: dict[str, Any] = {}
    bad: list[str] = []
    rules: list[str] = []
    for field, parse in (_REQUIRED | _OPTIONAL).items():
        raw = event.get(field)
        if field in _OPTIONAL and (raw is None or (isinstance(raw, str) and not raw.strip())):
            continue
        if raw is None:
            bad.append(field)
            rules.append(f"{field} is required")
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            bad.append(field)
            rules.append(f"{field} {exc}")
    if bad:
        raise BadRequest(bad, rules)
    invoice_id = values["invoiceId"]
    return Invoice(
        invoice_id=invoice_id,
        patient_id=values["patientId"],
        amount=values["amount"],
        issued_on=values["date"],
        status=values["status"],
        invoice_number=values.get("invoiceNumber") or "INV-" + invoice_id[:8].upper(),
        currency=values.get("currency") or DEFAULT_CURRENCY,
        clinic_name=values.get("clinicName") or os.environ.get("INVOICE_CLINIC_NAME") or DEFAULT_CLINIC,
        patient_name=values.get("patientName"),
        doctor_name=values.get("doctorName"),
        appointment_time=values.get("appointmentTime"),
    )


# -- Rendering --------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _fonts() -> tuple[str, str]:
    """DejaVu Sans when available (Latin, Greek, Cyrillic names), else Helvetica (Latin-1 only).

    The deploy zip carries the fonts in fonts/; locally Debian's fonts-dejavu-core provides them.
    """
    candidates = [
        os.environ.get("INVOICE_FONT_DIR", ""),
        str(Path(__file__).resolve().parent / "fonts"),
        "/usr/share/fonts/truetype/dejavu",
    ]
    for folder in filter(None, candidates):
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("InvoiceSans", str(regular)))
            pdfmetrics.registerFont(TTFont("InvoiceSans-Bold", str(bold)))
            return "InvoiceSans", "InvoiceSans-Bold"
    return "Helvetica", "Helvetica-Bold"


_INK = colors.HexColor("#1f2933")
_MUTED = colors.HexColor("#616e7c")
_ACCENT = colors.HexColor("#0b6e99")
_RULE = colors.HexColor("#cbd2d9")
_SHADE = colors.HexColor("#eef2f5")
_STATUS_COLOURS = {
    "PAID": colors.HexColor("#1b7f3b"),
    "VOID": colors.HexColor("#7b8794"),
    "OVERDUE": colors.HexColor("#b3261e"),
    "PENDING": colors.HexColor("#b7791f"),
    "ISSUED": _ACCENT,
}


def _money(invoice: Invoice) -> str:
    return f"{invoice.currency} {invoice.amount:,.2f}"


def _when(moment: datetime) -> str:
    offset = moment.strftime("%z")
    zone = "UTC" if offset in ("+0000", "-0000") else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{moment:%Y-%m-%d %H:%M} ({zone})"


class _Page:
    """A thin pen over one reportlab canvas: text in the invoice's two fonts, wrapped where needed."""

    margin = 50.0

    def __init__(self, pdf: canvas.Canvas) -> None:
        self.pdf = pdf
        self.regular, self.bold = _fonts()
        self.width: float = A4[0]
        self.height: float = A4[1]
        self.right = self.width - self.margin

    def text(
        self,
        x: float,
        y: float,
        value: str,
        *,
        size: float = 10,
        bold: bool = False,
        colour: Any = _INK,
        align: str = "left",
    ) -> None:
        self.pdf.setFont(self.bold if bold else self.regular, size)
        self.pdf.setFillColor(colour)
        draw = {"left": self.pdf.drawString, "right": self.pdf.drawRightString}[align]
        draw(x, y, value)

    def wrapped(
        self,
        x: float,
        y: float,
        value: str,
        max_width: float,
        *,
        size: float = 10,
        bold: bool = False,
        colour: Any = _INK,
        max_lines: int = 2,
    ) -> float:
        """Fits `value` in `max_lines` lines (shrinking the font, then cutting with an ellipsis).

        Returns the baseline of the next line.
        """
        font = self.bold if bold else self.regular
        lines = simpleSplit(value, font, size, max_width) or [""]
        while len(lines) > max_lines and size > 7:
            size -= 1
            lines = simpleSplit(value, font, size, max_width)
        if len(lines) > max_lines:
            lines = [*lines[: max_lines - 1], lines[max_lines - 1] + "\u2026"]
        for line in lines:
            self.fitted(x, y, line, max_width, size=size, bold=bold, colour=colour)
            y -= size * 1.3
        return y

    def fitted(
        self, x: float, y: float, value: str, max_width: float, *, size: float, bold: bool, colour: Any
    ) -> None:
        """One line; text wider than the box (a word with nowhere to break) is drawn smaller."""
        natural = pdfmetrics.stringWidth(value, self.bold if bold else self.regular, size)
        fitted = min(size, size * max_width / natural) if natural else size
        self.text(x, y, value, size=fitted, bold=bold, colour=colour)

    def rule(self, y: float) -> None:
        self.pdf.setStrokeColor(_RULE)
        self.pdf.setLineWidth(0.8)
        self.pdf.line(self.margin, y, self.right, y)


def _header(page: _Page, invoice: Invoice) -> None:
    page.pdf.setFillColor(_ACCENT)
    page.pdf.rect(0, page.height - 10, page.width, 10, stroke=0, fill=1)
    page.wrapped(page.margin, page.height - 62, invoice.clinic_name, 300, size=18, bold=True)
    page.text(page.right, page.height - 64, "INVOICE", size=26, bold=True, colour=_ACCENT, align="right")
    page.rule(page.height - 110)
    y = page.height - 140
    for label, value in (
        ("Invoice number", invoice.invoice_number),
        ("Invoice date", invoice.issued_on.isoformat()),
        ("Status", invoice.status),
    ):
        page.text(page.right - 150, y, label, size=9, colour=_MUTED, align="right")
        page.text(page.right, y, value, bold=True, align="right")
        y -= 18


def _parties(page: _Page, invoice: Invoice) -> float:
    """Bill-to and visit blocks; returns the baseline below them."""
    x, y = page.margin, page.height - 140
    page.text(x, y, "BILL TO", size=9, bold=True, colour=_MUTED)
    y = page.wrapped(x, y - 18, invoice.patient_name or "Patient", 250, size=12, bold=True, max_lines=3)
    page.fitted(x, y - 2, f"Patient ID: {invoice.patient_id}", 260, size=9, bold=False, colour=_MUTED)
    y = page.height - 250
    page.text(x, y, "VISIT", size=9, bold=True, colour=_MUTED)
    y -= 18
    appointment = _when(invoice.appointment_time) if invoice.appointment_time else None
    details = [
        (label, value)
        for label, value in (("Doctor", invoice.doctor_name), ("Appointment", appointment))
        if value
    ]
    for label, value in details:
        page.text(x, y, f"{label}:", colour=_MUTED)
        y = page.wrapped(x + 80, y, value, page.right - x - 80) - 4
    if not details:
        page.text(x, y, "Medical consultation")
        y -= 17
    return y


def _items(page: _Page, invoice: Invoice, y: float) -> float:
    """The line-item table and its total; returns the baseline below the total."""
    left, right = page.margin, page.right
    y -= 22
    page.pdf.setFillColor(_SHADE)
    page.pdf.rect(left, y - 7, right - left, 24, stroke=0, fill=1)
    page.text(left + 10, y, "Description", size=9, bold=True, colour=_MUTED)
    page.text(right - 10, y, "Amount", size=9, bold=True, colour=_MUTED, align="right")
    y -= 28
    description = "Medical consultation"
    if invoice.doctor_name:
        description += f" with {invoice.doctor_name}"
    below = page.wrapped(left + 10, y, description, right - left - 170)
    page.text(right - 10, y, _money(invoice), align="right")
    y = min(below, y - 13) - 6
    page.rule(y)
    y -= 26
    label = {"PAID": "Amount paid", "VOID": "Total (void)"}.get(invoice.status, "Amount due")
    total = _money(invoice)
    page.text(right - 10, y, total, size=14, bold=True, align="right")
    label_right = right - 10 - pdfmetrics.stringWidth(total, page.bold, 14) - 24
    page.text(min(right - 170, label_right), y, label, size=12, bold=True, align="right")
    return y


def _stamp(page: _Page, status: str, y: float) -> None:
    colour = _STATUS_COLOURS[status]
    width = pdfmetrics.stringWidth(status, page.bold, 16) + 28
    page.pdf.setStrokeColor(colour)
    page.pdf.setLineWidth(2)
    page.pdf.roundRect(page.right - width, y - 10, width, 32, 6, stroke=1, fill=0)
    page.pdf.setFont(page.bold, 16)
    page.pdf.setFillColor(colour)
    page.pdf.drawCentredString(page.right - width / 2, y, status)


def _footer(page: _Page, invoice: Invoice) -> None:
    page.rule(78)
    note = f"Please quote invoice number {invoice.invoice_number} with any payment or enquiry."
    page.text(page.margin, 62, note, size=8, colour=_MUTED)
    page.text(page.margin, 50, f"Invoice ID {invoice.invoice_id}", size=8, colour=_MUTED)
    page.text(page.right, 50, "Page 1 of 1", size=8, colour=_MUTED, align="right")


def render_pdf(invoice: Invoice) -> bytes:
    """One A4 page. `invariant=1` fixes the dates and ids reportlab embeds: same input, same bytes."""
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=A4, invariant=1, pageCompression=1)
    # Metadata stays free of patient data: it shows in file browsers and search indexes.
    pdf.setTitle(f"Invoice {invoice.invoice_number}")
    pdf.setAuthor(invoice.clinic_name)
    pdf.setSubject("Invoice")
    pdf.setCreator("invoice-pdf-lambda")
    page = _Page(pdf)
    _header(page, invoice)
    y = _items(page, invoice, _parties(page, invoice))
    _stamp(page, invoice.status, y - 60)
    _footer(page, invoice)
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


# -- Storage ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _s3_client() -> Any:
    """One client per container, reused by every invocation it serves.

    botocore takes the endpoint from AWS_ENDPOINT_URL_S3 by itself (unset on AWS); a local
    S3-compatible server needs path-style addresses, Amazon S3 prefers virtual-hosted ones.
    """
    s3_options: Any = {"addressing_style": "path"} if os.environ.get("AWS_ENDPOINT_URL_S3") else None
    config = Config(
        signature_version="s3v4",
        s3=s3_options,
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=20,
    )
    return boto3.session.Session().client("s3", config=config)


def _encryption() -> dict[str, str]:
    # Encrypted at rest unless told otherwise: SSE-S3 by default, KMS by setting; `none` only for
    # an S3-compatible server that cannot encrypt.
    mode = os.environ.get("INVOICE_SSE") or "AES256"
    if mode == "none":
        return {}
    if mode not in SSE_MODES:
        raise RuntimeError(f"INVOICE_SSE must be one of {sorted(SSE_MODES)}")
    options = {"ServerSideEncryption": mode}
    if mode.startswith("aws:kms") and os.environ.get("INVOICE_KMS_KEY_ID"):
        options["SSEKMSKeyId"] = os.environ["INVOICE_KMS_KEY_ID"]
    return options


def store_pdf(invoice: Invoice, body: bytes, digest: str, bucket: str) -> None:
    _s3_client().put_object(
        Bucket=bucket,
        Key=invoice.key,
        Body=body,
        ContentType="application/pdf",
        ContentDisposition=f'inline; filename="{invoice.invoice_number}.pdf"',
        CacheControl="private, no-store",
        Metadata={"invoice-id": invoice.invoice_id, "sha256": digest},
        # S3 checks the body against this digest and keeps it: whoever serves the object can ask
        # S3 for the checksum of what it holds (HEAD with ChecksumMode) and compare it.
        ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        **_encryption(),
    )


# -- Entry point ------------------------------------------------------------------------------
def _log(**fields: Any) -> None:
    # One JSON line per invocation: invoice id and outcome only, never patient data.
    logger.info(json.dumps({"msg": "invoice_pdf", **fields}, sort_keys=True, separators=(",", ":")))


def _correlation_id(context: Any) -> str | None:
    """The caller's correlation id, sent in the invocation's client context (`custom`)."""
    custom = getattr(getattr(context, "client_context", None), "custom", None)
    value = custom.get("correlationId") if isinstance(custom, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable() else None


def handler(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("healthcheck") is True:
        return {"statusCode": 200, "status": "ok"}
    started = time.monotonic()
    request_id = getattr(context, "aws_request_id", None)
    correlation_id = _correlation_id(context)
    try:
        invoice = parse_request(event)
    except BadRequest as exc:
        raw_id = event.get("invoiceId") if isinstance(event, dict) else None
        safe_id = raw_id.lower() if isinstance(raw_id, str) and _UUID.fullmatch(raw_id) else None
        _log(
            invoiceId=safe_id,
            outcome="rejected",
            invalidFields=exc.fields,
            requestId=request_id,
            correlationId=correlation_id,
        )
        return {"statusCode": 400, "error": str(exc), "errorType": "BadRequest"}

    bucket = os.environ.get("INVOICE_BUCKET") or DEFAULT_BUCKET
    stage = "render"
    try:
        body = render_pdf(invoice)
        digest = hashlib.sha256(body).hexdigest()
        stage = "store"
        store_pdf(invoice, body, digest, bucket)
    except Exception as exc:
        _log(
            invoiceId=invoice.invoice_id,
            outcome=f"{stage}_failed",
            errorType=type(exc).__name__,
            requestId=request_id,
            correlationId=correlation_id,
        )
        raise
    _log(
        invoiceId=invoice.invoice_id,
        outcome="stored",
        bytes=len(body),
        requestId=request_id,
        correlationId=correlation_id,
        durationMs=round((time.monotonic() - started) * 1000),
    )
    return {
        "statusCode": 200,
        "pdfUrl": f"s3://{bucket}/{invoice.key}",
        "key": invoice.key,
        "sha256": digest,
        "bytes": len(body),
    }
