"""Outbox rows keep the trace context they were queued in, so a booking's trace continues across Kafka.

The relay sends it as a W3C `traceparent` header beside `correlation-id` (healthcare/tracing.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows queued with tracing off, or before this, have none. A traceparent is 55 chars.
    op.add_column("outbox", sa.Column("trace_context", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
