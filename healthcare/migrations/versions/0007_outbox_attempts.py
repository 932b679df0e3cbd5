"""Outbox rows count their failed sends, wait between them, and are parked after too many.

A row the broker refuses for good (an unknown topic, a record too large) used to fail every relay
round, and with it every other row. Now each row has its own attempts, back-off and parking; a
parked row (and the later rows of its key, which must not overtake it) stays in the table until an
operator requeues it (`healthcare outbox requeue`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("outbox", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    # The error's type only: messages of driver errors can quote row values.
    op.add_column("outbox", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("next_attempt_at", TS, nullable=True))
    op.add_column("outbox", sa.Column("parked_at", TS, nullable=True))
    # What `healthcare outbox list` and the parked-rows gauge read.
    op.create_index(
        "outbox_parked",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("parked_at IS NOT NULL AND published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("outbox_parked", table_name="outbox")
    for column in ("parked_at", "next_attempt_at", "last_error", "attempts"):
        op.drop_column("outbox", column)
