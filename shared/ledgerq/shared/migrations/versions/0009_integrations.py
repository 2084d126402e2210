"""Integrations: webhooks and their deliveries, reconciliation runs, audit bodies.

Revision ID: 0009
Revises: 0008

- `webhooks`: an endpoint, the event types it wants, its signing secret and its fan-out cursor
  (the last event id it has been given deliveries for; the events' visibility rule of 0008 makes
  a cursor exact). The API's role may not read the secret (column grants): only the webhook
  process, which runs as `ledgerq_worker`, signs with it.
- `webhook_deliveries`: one row per (webhook, event), unique, claimed by a webhook process for one
  attempt at a time with a lease (`claimed_until`, `claim_token`); `webhook_attempts` one row per
  attempt, written when it starts, finished when it ends (a process killed mid-delivery leaves
  one unfinished).
- `reconciliations`, `reconciliation_items`: a run and its items, kept (never updated).
- `audit_log` keeps the request body and the response body (capped, secrets redacted).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE webhooks (
    id varchar(40) PRIMARY KEY,
    url text NOT NULL,
    events text[] NOT NULL,
    secret text NOT NULL,
    prefix text NOT NULL DEFAULT '',
    created_by varchar(32),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    fanout_cursor bigint NOT NULL,
    CONSTRAINT webhooks_events_known CHECK (
        cardinality(events) >= 1
        AND events <@ ARRAY['command.applied', 'command.rejected', 'command.failed', 'hold.expired']::text[]),
    CONSTRAINT webhooks_url_http CHECK (url ~ '^https?://')
);

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    webhook_id varchar(40) NOT NULL REFERENCES webhooks (id),
    event_id bigint NOT NULL REFERENCES events (id),
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    claim_token varchar(32),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id),
    CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    CONSTRAINT webhook_deliveries_finished_iff_final CHECK ((status = 'pending') = (finished_at IS NULL)),
    CONSTRAINT webhook_deliveries_attempts CHECK (attempts >= 0)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id),
    n integer NOT NULL,
    made_by text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status_code integer,
    error text,
    duration_ms integer,
    response_excerpt text,
    PRIMARY KEY (delivery_id, n),
    CONSTRAINT webhook_attempts_n CHECK (n >= 1)
);

CREATE TABLE reconciliations (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    key_id varchar(32),
    prefix text NOT NULL DEFAULT '',
    account_id varchar(160),
    since timestamptz,
    until timestamptz,
    source text NOT NULL,
    summary jsonb NOT NULL,
    CONSTRAINT reconciliations_source CHECK (source IN ('api', 'cli'))
);
CREATE TABLE reconciliation_items (
    reconciliation_id varchar(40) NOT NULL REFERENCES reconciliations (id),
    n integer NOT NULL,
    status text NOT NULL,
    external_id text,
    reference text,
    command_id varchar(300),
    external_amount bigint,
    external_currency varchar(3),
    ledger_amount bigint,
    ledger_currency varchar(3),
    date text,
    PRIMARY KEY (reconciliation_id, n),
    CONSTRAINT reconciliation_items_status CHECK (
        status IN ('matched', 'mismatched', 'unmatched_external', 'unmatched_ledger'))
);
-- Reconciliation finds applied commands by their reference.
CREATE INDEX commands_reference ON commands ((payload ->> 'reference')) WHERE payload ? 'reference';

ALTER TABLE audit_log ADD COLUMN request_body text, ADD COLUMN response_body text;

REVOKE ALL ON webhooks, webhook_deliveries, webhook_attempts, reconciliations, reconciliation_items FROM PUBLIC;
GRANT SELECT (id, url, events, prefix, created_by, created_at, deleted_at, fanout_cursor) ON webhooks TO ledgerq_api;
GRANT INSERT, UPDATE (deleted_at) ON webhooks TO ledgerq_api;
GRANT SELECT, UPDATE (status, finished_at) ON webhook_deliveries TO ledgerq_api;
GRANT SELECT ON webhook_attempts, reconciliations, reconciliation_items TO ledgerq_api;
GRANT INSERT ON reconciliations, reconciliation_items TO ledgerq_api;
GRANT SELECT, UPDATE (fanout_cursor) ON webhooks TO ledgerq_worker;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries, webhook_attempts TO ledgerq_worker;
GRANT USAGE ON SEQUENCE webhook_deliveries_id_seq TO ledgerq_worker;
GRANT SELECT ON reconciliations, reconciliation_items TO ledgerq_worker;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute("ALTER TABLE audit_log DROP COLUMN request_body, DROP COLUMN response_body")
    op.execute("DROP INDEX commands_reference")
    op.execute("DROP TABLE reconciliation_items, reconciliations, webhook_attempts, webhook_deliveries, webhooks")
