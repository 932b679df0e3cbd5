"""An index on login_throttle.updated_at: every throttle write deletes a batch of old rows by it.

Without it the table (one row per client address, account and registration window seen) only
grew, and finding old rows would mean a scan on every login.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_login_throttle_updated_at", "login_throttle", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_updated_at", table_name="login_throttle")
