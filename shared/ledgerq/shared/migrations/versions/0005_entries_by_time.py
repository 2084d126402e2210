"""An account's entries by time: `GET /v1/accounts/{id}/balance?at=` is one index lookup.

Revision ID: 0005
Revises: 0004

`?seq=N` reads the primary key (account_id, seq). For `?at=T` this index gives the last entry at or
before T directly: `ORDER BY created_at DESC, seq DESC LIMIT 1` walks it backwards from T and stops
at the first row, whatever the account's history.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX entries_account_time ON entries (account_id, created_at, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX entries_account_time")
