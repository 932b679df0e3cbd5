"""Invoices may be NEEDS_ATTENTION: the PDF step failed for good and the run waits for an operator.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = "status IN ('PENDING','ISSUED','PAID','VOID','OVERDUE')"
AFTER = "status IN ('PENDING','ISSUED','PAID','VOID','OVERDUE','NEEDS_ATTENTION')"


def upgrade() -> None:
    op.drop_constraint("invoices_status_valid", "invoices", type_="check")
    op.create_check_constraint("invoices_status_valid", "invoices", AFTER)


def downgrade() -> None:
    # An invoice that needs attention has no PDF yet: PENDING is what it was before this revision.
    op.execute("UPDATE invoices SET status = 'PENDING' WHERE status = 'NEEDS_ATTENTION'")
    op.drop_constraint("invoices_status_valid", "invoices", type_="check")
    op.create_check_constraint("invoices_status_valid", "invoices", BEFORE)
