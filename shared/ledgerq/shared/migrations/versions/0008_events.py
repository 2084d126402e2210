"""The events outbox: one row per final outcome (and per expired hold), written by the transaction
that decided it.

Revision ID: 0008
Revises: 0007

An event's id is `xid * 65536 + n`: the writing transaction's id (`pg_current_xact_id()`), then
its n-th event. A reader takes only events of transactions older than every transaction still
running (`xid < pg_snapshot_xmin(pg_current_snapshot())`). Every transaction that may still commit
has an xid at or above that bound, so every id it will ever make is above every id a reader was
given: a reader resuming after the last id it saw misses nothing and sees nothing twice, however
partitions interleave their commits. (A plain sequence would not do: a transaction can take id 7,
another take 8 and commit first, and a reader that saw 8 would skip 7.)
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE events (
    id bigint PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    type text NOT NULL,
    command_id varchar(300) NOT NULL,
    accounts text[] NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    data jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT events_type CHECK (type IN ('command.applied', 'command.rejected', 'command.failed', 'hold.expired')),
    CONSTRAINT events_id_of_its_transaction CHECK (id >> 16 = xid::text::bigint)
);
CREATE FUNCTION ledgerq_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledgerq_events_immutable();
REVOKE ALL ON events FROM PUBLIC;
GRANT SELECT ON events TO ledgerq_api, ledgerq_worker;
GRANT INSERT ON events TO ledgerq_worker;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute("DROP TABLE events")
    op.execute("DROP FUNCTION ledgerq_events_immutable()")
