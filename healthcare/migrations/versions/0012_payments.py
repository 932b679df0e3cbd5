"""Payments: an invoice is PAID only by a recorded payment; PDFs know which status they show.

One row per payment attempt: a patient's online checkout (provider `local` locally, a real provider
in production) or a payment staff took at the desk (provider `desk`: cash, card or transfer). A
provider's reference (its checkout id, or the desk's receipt number) is unique per provider, so a
repeated callback or a retried desk entry finds the payment it already made. At most one CONFIRMED
payment per invoice (partial payments and refunds come later); money that arrived but could not be
applied (the invoice was void, or already paid) is REFUND_DUE.

`invoices.payment_id` names the payment that paid it; `invoices.pdf_status` the status the stored
PDF shows (the billing workflow re-renders it when the status changes), so the API never serves a
PDF that says "amount due" for an invoice that is paid or void.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("invoice_id", sa.Uuid(), sa.ForeignKey("invoices.id"), nullable=False, index=True),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), sa.ForeignKey("users.id")),
        sa.Column("checkout_url", sa.Text()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("confirmed_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("amount > 0", name="payments_amount_positive"),
        sa.CheckConstraint("method IN ('cash','card','transfer','online')", name="payments_method_valid"),
        sa.CheckConstraint(
            "status IN ('PENDING','CONFIRMED','REFUND_DUE','FAILED')", name="payments_status_valid"
        ),
        sa.CheckConstraint(
            "status NOT IN ('CONFIRMED','REFUND_DUE') OR confirmed_at IS NOT NULL",
            name="payments_confirmed_has_time",
        ),
        sa.CheckConstraint("length(reference) <= 200", name="payments_reference_size"),
        sa.UniqueConstraint("provider", "reference", name="payments_provider_reference"),
    )
    op.create_index(
        "payments_one_confirmed_per_invoice",
        "payments",
        ["invoice_id"],
        unique=True,
        postgresql_where=sa.text("status = 'CONFIRMED'"),
    )
    op.add_column("invoices", sa.Column("payment_id", sa.Uuid(), sa.ForeignKey("payments.id")))
    op.add_column("invoices", sa.Column("pdf_status", sa.Text()))
    # PDFs stored so far show ISSUED (the only status the workflow rendered).
    op.execute("UPDATE invoices SET pdf_status = 'ISSUED' WHERE pdf_key IS NOT NULL")


def downgrade() -> None:
    op.drop_column("invoices", "pdf_status")
    op.drop_column("invoices", "payment_id")
    op.drop_table("payments")
