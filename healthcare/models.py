"""Table models (SQLModel): the one definition of each table, shared by the API, activities and tools."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Select,
    SmallInteger,
    String,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, col

from healthcare.contracts.appointments import AppointmentStatus
from healthcare.contracts.billing import InvoiceStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kwargs: Any) -> Any:
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now(), **kwargs),
    )


class Role(StrEnum):
    admin = "admin"
    staff = "staff"
    doctor = "doctor"
    patient = "patient"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    role: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    is_active: bool = Field(default=True)
    # In every access token (claim `tv`); incremented to revoke all of them (migration 0007).
    token_version: int = Field(default=0)
    created_at: datetime = _ts()


class Doctor(SQLModel, table=True):
    __tablename__ = "doctors"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    specialty: str = Field(sa_column=Column(String(100), nullable=False))
    fee: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    # The login of the doctor themselves, when they have one: it scopes what they may see.
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", unique=True)
    created_at: datetime = _ts()


class Patient(SQLModel, table=True):
    __tablename__ = "patients"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    date_of_birth: date | None = None
    gender: str | None = Field(default=None, sa_column=Column(String(32)))
    condition: str | None = Field(default=None, sa_column=Column(String(500)))
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    # Set when a patient-role user registered this record for themselves.
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", unique=True)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class AuditRecord(SQLModel, table=True):
    """Append-only, hash-chained: each record's hash covers its fields and the previous hash."""

    __tablename__ = "audit_log"

    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    at: datetime = _ts()
    actor_id: uuid.UUID | None = None
    actor_role: str | None = Field(default=None, sa_column=Column(String(16)))
    action: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    resource_type: str = Field(sa_column=Column(String(32), nullable=False))
    resource_id: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    client_ip: str | None = Field(default=None, sa_column=Column(String(64)))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    outcome: str = Field(default="ok", sa_column=Column(String(16), nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # Facts about the change that are not patient data (canonical JSON: a new role, a status change).
    detail: str | None = Field(default=None, sa_column=Column(Text))
    # 1 and 2: sha256 (before migration 0006); 3: HMAC-SHA256 under HC_AUDIT_HMAC_KEY (healthcare/audit.py).
    hash_version: int = Field(default=3, sa_column=Column(SmallInteger, nullable=False, server_default="1"))


class LoginThrottle(SQLModel, table=True):
    """Throttle counters shared by every API replica (services/throttle.py): failed logins per
    account and per client address, registrations per address and in all per window."""

    __tablename__ = "login_throttle"

    key: str = Field(sa_column=Column(String(300), primary_key=True))
    failures: int = Field(default=0)
    locked_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = _ts(index=True)  # the purge finds old rows by it


class Appointment(SQLModel, table=True):
    """A booked slot. Overlaps of one doctor's or one patient's BOOKED slots are refused by the database."""

    __tablename__ = "appointments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # No foreign key: patients may live in DynamoDB; the booking workflow checks existence.
    patient_id: uuid.UUID = Field(index=True)
    doctor_id: uuid.UUID = Field(foreign_key="doctors.id", index=True)
    time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    end_time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    duration_minutes: int = Field(default=30)
    status: str = Field(
        default=AppointmentStatus.booked.value, sa_column=Column(String(16), nullable=False, index=True)
    )
    reason: str | None = Field(default=None, sa_column=Column(String(500)))
    workflow_id: str = Field(sa_column=Column(String(100), nullable=False))
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


def open_bookings(patient_id: uuid.UUID) -> Select[int]:
    """How many booked appointments of the patient are still to come: what the self-service cap
    counts (the API before it starts a booking, the booking workflow under its lock)."""
    return (
        select(func.count())
        .select_from(Appointment)
        .where(
            col(Appointment.patient_id) == patient_id,
            col(Appointment.status) == AppointmentStatus.booked.value,
            col(Appointment.time) > func.now(),
        )
    )


class Invoice(SQLModel, table=True):
    """One invoice per appointment (the billing workflow is its only writer)."""

    __tablename__ = "invoices"

    id: uuid.UUID = Field(primary_key=True)
    appointment_id: uuid.UUID = Field(unique=True)
    patient_id: uuid.UUID = Field(index=True)
    doctor_id: uuid.UUID = Field(index=True)
    amount: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    # CHAR(3) in the migration; the model only reads and writes it.
    currency: str = Field(default="USD", sa_column=Column(String(3), nullable=False))
    status: str = Field(
        default=InvoiceStatus.pending.value, sa_column=Column(String, nullable=False, index=True)
    )
    pdf_url: str | None = Field(default=None, sa_column=Column(String))
    pdf_key: str | None = Field(default=None, sa_column=Column(String))
    pdf_sha256: str | None = Field(default=None, sa_column=Column(String))
    # The status the stored PDF shows (re-rendered on each status change); the API serves a PDF
    # only when it matches `status`.
    pdf_status: str | None = Field(default=None, sa_column=Column(String))
    payment_id: uuid.UUID | None = Field(default=None, foreign_key="payments.id")
    workflow_id: str = Field(sa_column=Column(String, nullable=False))
    # The request that booked the visit (healthcare.correlation), to follow it across logs and systems.
    correlation_id: str | None = Field(default=None, sa_column=Column(String(64), index=True))
    due_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = _ts()
    issued_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    paid_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = _ts()


class PaymentStatus(StrEnum):
    pending = "PENDING"  # a checkout is open at the provider
    confirmed = "CONFIRMED"  # the money arrived and paid the invoice
    refund_due = "REFUND_DUE"  # the money arrived but the invoice was void or already paid
    failed = "FAILED"  # the checkout was cancelled or expired


class Payment(SQLModel, table=True):
    """A payment of an invoice: online through a provider, or taken at the desk (migration 0008)."""

    __tablename__ = "payments"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    invoice_id: uuid.UUID = Field(foreign_key="invoices.id", index=True)
    amount: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    method: str = Field(sa_column=Column(Text, nullable=False))  # cash | card | transfer | online
    provider: str = Field(sa_column=Column(Text, nullable=False))  # desk | local | ...
    reference: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(default=PaymentStatus.pending.value, sa_column=Column(Text, nullable=False))
    actor_id: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    checkout_url: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _ts()
    confirmed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = _ts()


class OutboxRecord(SQLModel, table=True):
    """An event to publish, written in the transaction of the change it announces; the relay sends it."""

    __tablename__ = "outbox"
    __table_args__ = (
        # Partial: the relay's queue stays small however long the table grows (see 0004_outbox).
        Index("outbox_unpublished_seq", "seq", postgresql_where=text("published_at IS NULL")),
        Index("outbox_unpublished_key", "key", "seq", postgresql_where=text("published_at IS NULL")),
        Index(
            "outbox_parked", "seq", postgresql_where=text("parked_at IS NOT NULL AND published_at IS NULL")
        ),
    )

    seq: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    event_id: uuid.UUID = Field(unique=True)
    topic: str = Field(sa_column=Column(Text, nullable=False))
    key: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    correlation_id: str | None = Field(default=None, sa_column=Column(String(64)))  # sent as a Kafka header
    created_at: datetime = _ts()
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # Failed sends of this row (see 0007_outbox_attempts): the next one waits until next_attempt_at;
    # after HC_OUTBOX_MAX_ATTEMPTS the row is parked (kept, reported, never sent until requeued).
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    parked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
