"""Double entry checked once per INSERT statement, set-based, instead of once per row at commit.

Revision ID: 0003
Revises: 0002

The deferred row trigger of 0001 ran one query per entry row at COMMIT (about half the apply
transaction's database time for a batch). This statement trigger sees the statement's rows as a
transition table and checks, with one grouped query, for every command they post to:
- its legs in this statement sum to zero and are all in one currency,
- that currency is the command's own (`payload->>'currency'`),
- the command is still `queued` (the apply transaction posts the legs, then finishes the command).
Together these hold what 0001 held, for any split of legs over statements: each statement adds a
zero sum in the command's currency, and nothing can be added once the command is final.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UP = """
DROP TRIGGER entries_balanced ON entries;
DROP FUNCTION ledgerq_entries_balanced();

CREATE FUNCTION ledgerq_entries_balanced() RETURNS trigger LANGUAGE plpgsql
-- The plan must be driven by the inserted rows: a transition table has no statistics, and the
-- plan PL/pgSQL caches early in a session sees a young, small `commands` table; left free, the
-- planner scanned all of `commands` once per inserted row (measured: 0.5-1 s per 500 commands).
-- Scalar subqueries and a LATERAL lookup (OFFSET 0 keeps it from being flattened) make each
-- command and account an index lookup, whatever the statistics say.
SET enable_seqscan = off
AS $$
DECLARE
    bad record;
BEGIN
    WITH legs AS MATERIALIZED (
        SELECT n.command_id, n.amount,
               (SELECT a.currency FROM accounts a WHERE a.id = n.account_id) AS currency
          FROM new_entries n
    ), per_command AS MATERIALIZED (
        SELECT command_id, sum(amount) AS total, count(DISTINCT currency) AS currencies,
               min(currency) AS currency
          FROM legs
         GROUP BY command_id
    )
    SELECT p.command_id, p.total, p.currencies, c.status
      INTO bad
      FROM per_command p,
           LATERAL (SELECT status, payload->>'currency' AS currency
                      FROM commands WHERE id = p.command_id OFFSET 0) c
     WHERE p.total <> 0
        OR p.currencies <> 1
        OR p.currency IS DISTINCT FROM c.currency
        OR c.status <> 'queued'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries of command % do not balance (sum %, % currencies, command %)',
            bad.command_id, bad.total, bad.currencies, bad.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_balanced AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerq_entries_balanced();
"""

DOWN = """
DROP TRIGGER entries_balanced ON entries;
DROP FUNCTION ledgerq_entries_balanced();

CREATE FUNCTION ledgerq_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    currencies integer;
BEGIN
    SELECT sum(e.amount), count(DISTINCT a.currency) INTO total, currencies
      FROM entries e JOIN accounts a ON a.id = e.account_id
     WHERE e.command_id = NEW.command_id;
    IF total <> 0 OR currencies <> 1 THEN
        RAISE EXCEPTION 'entries of command % do not balance (sum %, % currencies)',
            NEW.command_id, total, currencies USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledgerq_entries_balanced();
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
