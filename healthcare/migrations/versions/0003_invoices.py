"""Invoices: one per appointment, written by the billing workflow.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), primary_key=True),
        # UNIQUE: a redelivered event or a retried activity can never bill one appointment twice.
        sa.Column("appointment_id", sa.Uuid(), nullable=False, unique=True),
        # No foreign keys to patients/appointments: patients may live in DynamoDB, and an invoice
        # (a financial record) must outlive what it bills.
        sa.Column("patient_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("doctor_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False, server_default="USD"),
        sa.Column("status", sa.Text(), nullable=False, index=True),
        sa.Column("pdf_url", sa.Text()),
        sa.Column("pdf_key", sa.Text()),
        sa.Column("pdf_sha256", sa.Text()),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("issued_at", TS),
        sa.Column("paid_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "status IN ('PENDING','ISSUED','PAID','VOID','OVERDUE')", name="invoices_status_valid"
        ),
        sa.CheckConstraint("amount > 0", name="invoices_amount_positive"),
        sa.CheckConstraint("status <> 'PAID' OR paid_at IS NOT NULL", name="invoices_paid_has_time"),
    )


def downgrade() -> None:
    op.drop_table("invoices")
