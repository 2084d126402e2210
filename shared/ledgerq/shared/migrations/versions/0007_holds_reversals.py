"""Holds (pending → captured | voided | expired), held and available balances, reversals.

Revision ID: 0007
Revises: 0006

- `accounts.held` is the sum of the account's pending holds; the no-overdraft CHECK now reads
  `balance - held >= -overdraft_limit`, so a hold reserves funds the database itself protects.
- `holds` has one row per applied hold. A trigger refuses every update but one transition out of
  `pending`, any change to the hold's facts, and every DELETE or TRUNCATE.
- `commands.ref_id` names the hold a capture or void acts on, or a reversal's original; the expiry
  sweep looks up captures and voids still queued for a hold by it.
- `commands.currency` is the currency of the legs a command posts: a capture's and a reversal's
  body names none (it is the hold's or the original's). The balance trigger reads it first.
- `commands.reversible_amount` is what an applied original posted (a transaction: its debits),
  filled in here for the commands already applied; `reversed_amount` the sum of its applied
  reversals, never above it (CHECK).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UP = """
ALTER TABLE accounts ADD COLUMN held bigint NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT accounts_held_nonnegative CHECK (held >= 0);
ALTER TABLE accounts DROP CONSTRAINT accounts_no_overdraft;
ALTER TABLE accounts ADD CONSTRAINT accounts_no_overdraft
    CHECK (kind = 'system' OR balance - held >= -overdraft_limit);

ALTER TABLE commands ADD COLUMN ref_id varchar(300);
ALTER TABLE commands ADD COLUMN currency varchar(3);
ALTER TABLE commands ADD COLUMN reversible_amount bigint;
ALTER TABLE commands ADD COLUMN reversed_amount bigint NOT NULL DEFAULT 0;
-- Commands applied before this migration are reversible too: what each posted.
UPDATE commands SET reversible_amount = CASE type
        WHEN 'transaction' THEN (SELECT sum((leg->>'amount')::bigint) FROM jsonb_array_elements(payload->'legs') leg
                                  WHERE (leg->>'amount')::bigint > 0)
        ELSE (payload->>'amount')::bigint END
 WHERE status = 'applied';
ALTER TABLE commands ADD CONSTRAINT commands_reversed_within
    CHECK (reversed_amount >= 0 AND reversed_amount <= coalesce(reversible_amount, 0));
ALTER TABLE commands DROP CONSTRAINT commands_type;
ALTER TABLE commands ADD CONSTRAINT commands_type CHECK (type IN
    ('deposit', 'withdraw', 'transfer', 'transaction', 'hold', 'capture', 'void', 'reversal'));
ALTER TABLE commands ADD CONSTRAINT commands_ref_iff_reference
    CHECK ((type IN ('capture', 'void', 'reversal')) = (ref_id IS NOT NULL));
CREATE INDEX commands_ref ON commands (ref_id) WHERE ref_id IS NOT NULL;

CREATE TABLE holds (
    id varchar(300) PRIMARY KEY REFERENCES commands (id),
    account_id varchar(160) NOT NULL REFERENCES accounts (id),
    to_account_id varchar(160) REFERENCES accounts (id),
    partition integer NOT NULL,
    amount bigint NOT NULL,
    currency varchar(3) NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    captured_amount bigint NOT NULL DEFAULT 0,
    resolved_by varchar(300) REFERENCES commands (id),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT holds_amount_positive CHECK (amount > 0),
    CONSTRAINT holds_status CHECK (status IN ('pending', 'captured', 'voided', 'expired')),
    CONSTRAINT holds_captured_within CHECK (captured_amount >= 0 AND captured_amount <= amount),
    CONSTRAINT holds_captured_iff_amount CHECK ((status = 'captured') = (captured_amount > 0)),
    CONSTRAINT holds_finished_iff_final CHECK ((status = 'pending') = (finished_at IS NULL)),
    CONSTRAINT holds_resolved_by_command CHECK ((status IN ('captured', 'voided')) = (resolved_by IS NOT NULL))
);
CREATE INDEX holds_account ON holds (account_id, id);
CREATE INDEX holds_pending_expiry ON holds (partition, expires_at) WHERE status = 'pending';

CREATE FUNCTION ledgerq_holds_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'holds are never deleted (% refused)', TG_OP USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status <> 'pending' OR NEW.status NOT IN ('captured', 'voided', 'expired') THEN
        RAISE EXCEPTION 'hold % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.id, NEW.account_id, NEW.to_account_id, NEW.partition, NEW.amount, NEW.currency, NEW.expires_at,
        NEW.created_at) IS DISTINCT FROM (OLD.id, OLD.account_id, OLD.to_account_id, OLD.partition, OLD.amount,
        OLD.currency, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'hold % keeps its facts', OLD.id USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER holds_transition BEFORE UPDATE OR DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION ledgerq_holds_transition();
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerq_holds_transition();

-- The API reads holds; only the worker places and resolves them (never deletes: the trigger).
REVOKE ALL ON holds FROM PUBLIC;
GRANT SELECT ON holds TO ledgerq_api, ledgerq_worker;
GRANT INSERT, UPDATE ON holds TO ledgerq_worker;
"""

# 0003's statement trigger, reading the command's currency column first.
BALANCED = """
CREATE OR REPLACE FUNCTION ledgerq_entries_balanced() RETURNS trigger LANGUAGE plpgsql
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
           LATERAL (SELECT status, coalesce(currency, payload->>'currency') AS currency
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
"""

DOWN = """
DROP TABLE holds;
DROP FUNCTION ledgerq_holds_transition();
DROP INDEX commands_ref;
ALTER TABLE commands DROP CONSTRAINT commands_ref_iff_reference;
ALTER TABLE commands DROP CONSTRAINT commands_type;
ALTER TABLE commands ADD CONSTRAINT commands_type
    CHECK (type IN ('deposit', 'withdraw', 'transfer', 'transaction'));
ALTER TABLE commands DROP CONSTRAINT commands_reversed_within;
ALTER TABLE commands DROP COLUMN reversed_amount, DROP COLUMN reversible_amount, DROP COLUMN currency,
    DROP COLUMN ref_id;
ALTER TABLE accounts DROP CONSTRAINT accounts_no_overdraft;
ALTER TABLE accounts ADD CONSTRAINT accounts_no_overdraft CHECK (kind = 'system' OR balance >= -overdraft_limit);
ALTER TABLE accounts DROP CONSTRAINT accounts_held_nonnegative;
ALTER TABLE accounts DROP COLUMN held;
"""


def upgrade() -> None:
    op.execute(UP)
    op.execute(BALANCED)


def downgrade() -> None:
    op.execute(DOWN)
    op.execute(BALANCED.replace("coalesce(currency, payload->>'currency')", "payload->>'currency'"))
