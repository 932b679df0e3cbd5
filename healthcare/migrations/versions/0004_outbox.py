"""Transactional outbox: events written in the same transaction as the change they announce.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbox",
        # bigserial: the relay publishes in seq order, which keeps one appointment's events in order.
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=True),
        # UNIQUE: a retried activity finds its event already queued instead of queueing it twice.
        sa.Column("event_id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("topic", sa.Text(), nullable=False),
        # The exact bytes the producer sends (key and JSON value), so the relay does no re-encoding.
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TS, nullable=True),
    )
    # The relay's queue: only unpublished rows, so it stays small however long the table grows.
    op.create_index(
        "outbox_unpublished_seq",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    # Lets the relay see whether an earlier event of the same key is still pending elsewhere.
    op.create_index(
        "outbox_unpublished_key",
        "outbox",
        ["key", "seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    # Wakes the relay (LISTEN outbox) when the inserting transaction commits, whoever inserted.
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.drop_table("outbox")
