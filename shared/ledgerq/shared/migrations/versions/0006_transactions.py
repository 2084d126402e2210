"""Multi-leg `transaction` commands.

Revision ID: 0006
Revises: 0005

Only the command-type CHECK changes: the statement trigger of 0003 already holds any number of legs
to a zero sum in the command's currency (`payload->>'currency'`, which a transaction carries too).
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE commands DROP CONSTRAINT commands_type")
    op.execute(
        "ALTER TABLE commands ADD CONSTRAINT commands_type"
        " CHECK (type IN ('deposit', 'withdraw', 'transfer', 'transaction'))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE commands DROP CONSTRAINT commands_type")
    op.execute("ALTER TABLE commands ADD CONSTRAINT commands_type CHECK (type IN ('deposit', 'withdraw', 'transfer'))")
