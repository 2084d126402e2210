"""Database roles for the API and the workers, the audit log, and command ids scoped per key prefix.

Revision ID: 0002
Revises: 0001

Roles are NOLOGIN groups; grant them to login users (`GRANT ledgerq_api TO app_api`).
- `ledgerq_api` reads everything, creates accounts and command claims, writes the audit log;
  it cannot write entries, balances or outcomes.
- `ledgerq_worker` reads everything, appends entries, moves balances, finishes commands,
  bumps partition epochs; it cannot touch API keys or the audit log.
- Nobody the service uses may UPDATE, DELETE or TRUNCATE entries (and the triggers refuse
  even the owner).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UP = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledgerq_api') THEN
        CREATE ROLE ledgerq_api NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledgerq_worker') THEN
        CREATE ROLE ledgerq_worker NOLOGIN;
    END IF;
END $$;

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    key_id varchar(32),
    client_addr text,
    request_id varchar(128) NOT NULL,
    method varchar(10) NOT NULL,
    path text NOT NULL,
    body_sha256 varchar(64) NOT NULL,
    status integer NOT NULL
);

ALTER TABLE commands ALTER COLUMN id TYPE varchar(300);
ALTER TABLE entries ALTER COLUMN command_id TYPE varchar(300);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ledgerq_api, ledgerq_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ledgerq_api, ledgerq_worker;
GRANT INSERT ON accounts, commands, audit_log TO ledgerq_api;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO ledgerq_api;
GRANT INSERT ON entries TO ledgerq_worker;
GRANT INSERT, UPDATE ON accounts TO ledgerq_worker;
GRANT UPDATE ON commands, partitions TO ledgerq_worker;
REVOKE UPDATE, DELETE, TRUNCATE ON entries FROM ledgerq_api, ledgerq_worker;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute("DROP TABLE audit_log")
    op.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ledgerq_api, ledgerq_worker")
