"""Patient name search that ignores accents as well as case: the `unaccent` extension.

`unaccent` ships with PostgreSQL (contrib) and is a trusted extension since PostgreSQL 13, so the
database owner may create it; managed services (RDS, Cloud SQL, Azure) offer it too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")


def downgrade() -> None:
    op.execute("DROP EXTENSION IF EXISTS unaccent")
