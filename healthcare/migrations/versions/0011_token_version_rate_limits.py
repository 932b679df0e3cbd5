"""Revocable tokens (a version per account) and a shared rate limiter.

`users.token_version` is carried in every access token (claim `tv`) and compared per request: a
password change, a deactivation or a role change increments it, so every token issued before stops
working at once. `rate_limits` holds one row per limited key (GCRA: the theoretical arrival time of
the next allowed request), shared by every API replica (healthcare/ratelimit.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("rate_limits_tat", "rate_limits", ["tat"])


def downgrade() -> None:
    op.drop_table("rate_limits")
    op.drop_column("users", "token_version")
