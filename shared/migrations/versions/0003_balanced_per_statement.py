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

CREATE FUNCTION ledgerq_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.command_id, sum(n.amount) AS total, count(DISTINCT a.currency) AS currencies,
           min(c.status) AS status
      INTO bad
      FROM new_entries n
      JOIN accounts a ON a.id = n.account_id
      JOIN commands c ON c.id = n.command_id
     GROUP BY n.command_id
    HAVING sum(n.amount) <> 0
        OR count(DISTINCT a.currency) <> 1
        OR bool_or(a.currency IS DISTINCT FROM c.payload->>'currency')
        OR bool_or(c.status <> 'queued')
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
