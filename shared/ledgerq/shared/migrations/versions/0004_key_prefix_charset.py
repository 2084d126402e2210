"""A key's account prefix is in the id charset, enforced by the database too.

Revision ID: 0004
Revises: 0003

`ledgerq keys create` refuses other prefixes, but a row written by hand (or by an older version)
could carry a `/`: its commands would be acknowledged and then refused by the worker, and `/` in
a prefix would let two keys' scoped ids collide (shared/scoping.py). Such keys are revoked here,
and the CHECK (NOT VALID: the revoked rows stay as history) holds every new or changed row.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PREFIX_CHARSET = "prefix ~ '^[A-Za-z0-9._:-]{0,128}$'"


def upgrade() -> None:
    op.execute(f"UPDATE api_keys SET revoked_at = now() WHERE NOT ({PREFIX_CHARSET}) AND revoked_at IS NULL")
    op.execute(f"ALTER TABLE api_keys ADD CONSTRAINT api_keys_prefix_charset CHECK ({PREFIX_CHARSET}) NOT VALID")


def downgrade() -> None:
    op.execute("ALTER TABLE api_keys DROP CONSTRAINT api_keys_prefix_charset")
