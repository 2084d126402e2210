"""The ledger: accounts, entries, commands, partitions, API keys, and the database guards.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE ledger_config (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE accounts (
    id varchar(160) PRIMARY KEY,
    currency varchar(3) NOT NULL,
    kind text NOT NULL DEFAULT 'user',
    balance bigint NOT NULL DEFAULT 0,
    overdraft_limit bigint NOT NULL DEFAULT 0,
    entry_count bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_kind CHECK (kind IN ('user', 'system')),
    CONSTRAINT accounts_overdraft_limit_nonnegative CHECK (overdraft_limit >= 0),
    CONSTRAINT accounts_entry_count_nonnegative CHECK (entry_count >= 0),
    CONSTRAINT accounts_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT accounts_no_overdraft CHECK (kind = 'system' OR balance >= -overdraft_limit)
);

CREATE TABLE commands (
    id varchar(128) PRIMARY KEY,
    payload_hash varchar(64) NOT NULL,
    type text NOT NULL,
    partition integer NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    error_code text,
    error_detail text,
    result jsonb,
    attempts integer NOT NULL DEFAULT 0,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT commands_type CHECK (type IN ('deposit', 'withdraw', 'transfer')),
    CONSTRAINT commands_status CHECK (status IN ('queued', 'applied', 'rejected', 'failed')),
    CONSTRAINT commands_finished_iff_final CHECK ((status = 'queued') = (finished_at IS NULL))
);

CREATE TABLE entries (
    account_id varchar(160) NOT NULL REFERENCES accounts (id),
    seq bigint NOT NULL,
    command_id varchar(128) NOT NULL REFERENCES commands (id),
    amount bigint NOT NULL,
    balance_after bigint NOT NULL,
    counterparty varchar(160) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entries_pkey PRIMARY KEY (account_id, seq),
    CONSTRAINT entries_command_account UNIQUE (command_id, account_id),
    CONSTRAINT entries_seq_positive CHECK (seq >= 1),
    CONSTRAINT entries_amount_nonzero CHECK (amount <> 0)
);

CREATE TABLE partitions (
    partition integer PRIMARY KEY,
    epoch bigint NOT NULL DEFAULT 0,
    owner text,
    acquired_at timestamptz
);

CREATE TABLE api_keys (
    id varchar(32) PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    secret_hash varchar(64) NOT NULL,
    scope text NOT NULL,
    prefix text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT api_keys_scope CHECK (scope IN ('read', 'write', 'admin'))
);
"""

GUARDS = """
-- History is immutable: corrections are new commands, never edits.
CREATE FUNCTION ledgerq_entries_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER entries_no_update_delete BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledgerq_entries_immutable();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledgerq_entries_immutable();

-- Double entry: at commit, the legs of each command sum to zero in a single currency.
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

CREATE INDEX commands_partition_queued ON commands (partition, accepted_at) WHERE status = 'queued';
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(GUARDS)


def downgrade() -> None:
    op.execute("DROP TABLE entries, commands, accounts, partitions, api_keys, ledger_config CASCADE")
    op.execute("DROP FUNCTION ledgerq_entries_immutable(), ledgerq_entries_balanced()")
