"""Audit records appended by one database call, so the chain lock is held for one round trip.

Before: lock, read the last hash, insert, commit: four round trips under a lock every audited
request takes. Now `audit_append(bodies)` takes the lock, reads the last hash, links and inserts
each record, and the caller's commit follows. Records it writes are hash version 2:
sha256(prev_hash || "\n" || body), body being the canonical JSON the application builds; the
function reads each column from that body, so the row and what its hash covers cannot differ.
Version 1 records (prev_hash inside the hashed JSON) stay valid; `audit verify` checks both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "audit_log", sa.Column("hash_version", sa.SmallInteger(), nullable=False, server_default="1")
    )
    # The chain lock: 418581342580 = 0x6175646974 ("audit"), as since migration 0002.
    op.execute(
        """
        CREATE FUNCTION audit_append(bodies text[]) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            prev text;
            body text;
            doc jsonb;
            digest text;
        BEGIN
            PERFORM pg_advisory_xact_lock(418581342580);
            SELECT hash INTO prev FROM audit_log ORDER BY seq DESC LIMIT 1;
            prev := coalesce(prev, repeat('0', 64));
            FOREACH body IN ARRAY bodies LOOP
                doc := body::jsonb;
                digest := encode(sha256(convert_to(prev || E'\\n' || body, 'UTF8')), 'hex');
                INSERT INTO audit_log (at, actor_id, actor_role, action, resource_type, resource_id,
                                       client_ip, request_id, outcome, prev_hash, hash, hash_version)
                VALUES ((doc->>'at')::timestamptz, (doc->>'actor_id')::uuid, doc->>'actor_role',
                        doc->>'action', doc->>'resource_type', doc->>'resource_id', doc->>'client_ip',
                        doc->>'request_id', doc->>'outcome', prev, digest, 2);
                prev := digest;
            END LOOP;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION audit_append(text[])")
    op.drop_column("audit_log", "hash_version")
