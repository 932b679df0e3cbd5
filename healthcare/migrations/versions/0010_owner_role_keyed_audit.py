"""An owner role for the schema, the app role with only what it needs, and a keyed audit chain.

Until now the application's own role owned every table, `audit_log` and its triggers included, so it
could disable the triggers and rewrite the chain (plain SHA-256, no secret). From here on:

- migrations run as the owner role (HC_DATABASE_OWNER_URL); it owns every table, function and
  trigger. The app role (the user of HC_DATABASE_URL) gets SELECT/INSERT/UPDATE/DELETE on the
  application's tables, SELECT on `audit_log` and `alembic_version`, and EXECUTE on the two audit
  functions; nothing else (no TRUNCATE, no triggers, no DDL). Tables made by later migrations get
  the same row privileges by default; a later table that must be append-only revokes them.
- audit records are hash version 3, HMAC-SHA256 computed by the application with a key the database
  never sees (healthcare/audit.py). `audit_head()` takes the chain lock and returns the last hash;
  `audit_insert(head, bodies, hashes)` inserts records linked to that head. Both are SECURITY
  DEFINER: the app role appends only through them. `audit_append` (version 2, unkeyed) is dropped
  so that nobody can append a record without the key.

A database made before this migration has its tables owned by the app role: make them the owner's
first (the local stack does; elsewhere, as a superuser: REASSIGN OWNED BY <app> TO <owner>).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from healthcare.settings import get_settings

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The chain lock in the functions below: 418581342580 = 0x6175646974 ("audit"), as since 0002.
ROW_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upgrade() -> None:
    bind = op.get_bind()
    owner = bind.execute(sa.text("SELECT current_user")).scalar_one()
    table_owner = bind.execute(
        sa.text("SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'audit_log'")
    ).scalar_one()
    if table_owner != owner:
        raise RuntimeError(
            f"audit_log is owned by {table_owner!r}, not by the migrating role {owner!r}: as a superuser, "
            f"REASSIGN OWNED BY {table_owner} TO {owner} first (HC_DATABASE_OWNER_URL names the owner)"
        )
    op.add_column("audit_log", sa.Column("detail", sa.Text()))
    op.create_check_constraint("audit_log_detail_size", "audit_log", "length(detail) <= 2000")
    op.execute("DROP FUNCTION audit_append(text[])")
    op.execute(
        """
        CREATE FUNCTION audit_head() RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(418581342580);
            RETURN (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1);
        END $$;
        """
    )
    # Each column is read from the body the application hashed, so a row and its hash cannot differ.
    op.execute(
        """
        CREATE FUNCTION audit_insert(head text, bodies text[], hashes text[]) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
        DECLARE
            prev text;
            doc jsonb;
            i int;
        BEGIN
            PERFORM pg_advisory_xact_lock(418581342580);
            prev := coalesce((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), repeat('0', 64));
            IF prev <> head THEN
                RAISE EXCEPTION 'audit chain head moved: take audit_head() in this transaction first';
            END IF;
            IF coalesce(array_length(bodies, 1), 0) <> coalesce(array_length(hashes, 1), 0) THEN
                RAISE EXCEPTION 'audit_insert: one hash per body';
            END IF;
            FOR i IN 1 .. coalesce(array_length(bodies, 1), 0) LOOP
                IF hashes[i] !~ '^[0-9a-f]{64}$' THEN
                    RAISE EXCEPTION 'audit_insert: a hash is 64 hex digits';
                END IF;
                doc := bodies[i]::jsonb;
                INSERT INTO audit_log (at, actor_id, actor_role, action, resource_type, resource_id,
                                       client_ip, request_id, outcome, detail, prev_hash, hash,
                                       hash_version)
                VALUES ((doc->>'at')::timestamptz, (doc->>'actor_id')::uuid, doc->>'actor_role',
                        doc->>'action', doc->>'resource_type', doc->>'resource_id', doc->>'client_ip',
                        doc->>'request_id', doc->>'outcome', doc->>'detail', prev, hashes[i], 3);
                prev := hashes[i];
            END LOOP;
        END $$;
        """
    )
    for function in ("audit_head()", "audit_insert(text, text[], text[])"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")

    app = get_settings().app_role
    if not app or app == owner:
        # One role for everything (HC_DATABASE_URL's user migrates): nothing to grant. Production
        # and the local stack use two roles.
        return
    role = _quote(app)
    database = bind.execute(sa.text("SELECT current_database()")).scalar_one()
    op.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {_quote(database)} TO {role}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    op.execute(f"GRANT {ROW_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {ROW_PRIVILEGES} ON TABLES TO {role}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}")
    # Read-only for the app: the trail is appended through the functions, the version by migrations.
    for table in ("audit_log", "alembic_version"):
        op.execute(f"REVOKE ALL ON {table} FROM {role}")
        op.execute(f"GRANT SELECT ON {table} TO {role}")
    op.execute(f"REVOKE ALL ON SEQUENCE audit_log_seq_seq FROM {role}")
    for function in ("audit_head()", "audit_insert(text, text[], text[])"):
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {role}")


def downgrade() -> None:
    op.execute("DROP FUNCTION audit_insert(text, text[], text[])")
    op.execute("DROP FUNCTION audit_head()")
    op.drop_constraint("audit_log_detail_size", "audit_log")
    op.drop_column("audit_log", "detail")
    # migration 0005's function, as it was (version-2 hashes, no key)
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
