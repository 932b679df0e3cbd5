"""Correlation ids on outbox rows and invoices: one booking followed from its request to its invoice PDF.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows written before this (and by callers without a request) have none.
    op.add_column("outbox", sa.Column("correlation_id", sa.String(64), nullable=True))
    op.add_column("invoices", sa.Column("correlation_id", sa.String(64), nullable=True))
    op.create_index("ix_invoices_correlation_id", "invoices", ["correlation_id"])


def downgrade() -> None:
    op.drop_index("ix_invoices_correlation_id", table_name="invoices")
    op.drop_column("invoices", "correlation_id")
    op.drop_column("outbox", "correlation_id")
