"""The ledger's tables (SQLAlchemy 2.0 Core). Migrations in `ledgerq.shared.migrations` create them.

Design overview:
- `accounts` holds the running balance, a materialised sum of the account's
  entries, kept in the same transaction that writes them (`ledgerq verify`
  re-derives it). A CHECK refuses any overdraft below the account's limit;
  system accounts (`@world:<CUR>:<partition>`) may go negative.
- `entries` is append-only (triggers refuse UPDATE, DELETE, TRUNCATE), one
  row per leg, numbered 1..n per account. A deferred constraint trigger
  refuses a commit in which a command's entries do not sum to zero.
- `commands` is the idempotency record and the outcome: claimed by the API
  with a payload hash, finished by the worker in the apply transaction.
- `holds` has one row per applied hold; a trigger allows only one transition out of `pending`.
  `accounts.held` is the sum of an account's pending holds, inside the no-overdraft CHECK.
- `partitions` carries the fencing epoch; `ledger_config` fixes P.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import UserDefinedType

metadata = MetaData()


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id."""

    cache_ok = True

    def get_col_spec(self, **_: object) -> str:
        return "xid8"


class CommandStatus(StrEnum):
    """A command's status (as RQ's `JobStatus`). Postgres stores the first four; `started` is shown
    while the command's job is in its partition's in-flight list, read from Redis."""

    QUEUED = "queued"
    STARTED = "started"
    APPLIED = "applied"
    REJECTED = "rejected"
    FAILED = "failed"


STORED_STATUSES = (CommandStatus.QUEUED, CommandStatus.APPLIED, CommandStatus.REJECTED, CommandStatus.FAILED)
FINAL_STATUSES = frozenset({CommandStatus.APPLIED, CommandStatus.REJECTED, CommandStatus.FAILED})
SCOPES = ("read", "write", "admin")
COMMAND_TYPES = ("deposit", "withdraw", "transfer", "transaction", "hold", "capture", "void", "reversal")


class HoldStatus(StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


ledger_config = Table(
    "ledger_config",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("kind", Text, nullable=False, server_default="user"),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    # The sum of the account's pending holds; `available` = balance - held.
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("overdraft_limit", BigInteger, nullable=False, server_default="0"),
    Column("entry_count", BigInteger, nullable=False, server_default="0"),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('user', 'system')", name="accounts_kind"),
    CheckConstraint("overdraft_limit >= 0", name="accounts_overdraft_limit_nonnegative"),
    CheckConstraint("entry_count >= 0", name="accounts_entry_count_nonnegative"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_code"),
    CheckConstraint("held >= 0", name="accounts_held_nonnegative"),
    CheckConstraint("kind = 'system' OR balance - held >= -overdraft_limit", name="accounts_no_overdraft"),
)

commands = Table(
    "commands",
    metadata,
    # A client's id (<= 128) behind its key's prefix scope: see ledgerq.shared.scoping.
    Column("id", String(300), primary_key=True),
    Column("payload_hash", String(64), nullable=False),
    Column("type", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=CommandStatus.QUEUED.value),
    Column("error_code", Text),
    Column("error_detail", Text),
    Column("result", JSONB),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    # The hold a capture or void acts on, or a reversal's original (stored ids).
    Column("ref_id", String(300)),
    # The currency of the legs it posts (a capture's or reversal's body names none).
    Column("currency", String(3)),
    # What an applied original posted, and the sum of its applied reversals.
    Column("reversible_amount", BigInteger),
    Column("reversed_amount", BigInteger, nullable=False, server_default="0"),
    CheckConstraint(f"type IN ({', '.join(repr(t) for t in COMMAND_TYPES)})", name="commands_type"),
    CheckConstraint(
        "reversed_amount >= 0 AND reversed_amount <= coalesce(reversible_amount, 0)", name="commands_reversed_within"
    ),
    CheckConstraint(
        "(type IN ('capture', 'void', 'reversal')) = (ref_id IS NOT NULL)", name="commands_ref_iff_reference"
    ),
    CheckConstraint(f"status IN ({', '.join(repr(str(s)) for s in STORED_STATUSES)})", name="commands_status"),
    CheckConstraint("(status = 'queued') = (finished_at IS NULL)", name="commands_finished_iff_final"),
)
# Recovery looks up a partition's unfinished commands in acceptance order.
Index(
    "commands_partition_queued",
    commands.c.partition,
    commands.c.accepted_at,
    postgresql_where=commands.c.status == CommandStatus.QUEUED.value,
)

# The expiry sweep finds captures and voids still queued for a hold.
Index("commands_ref", commands.c.ref_id, postgresql_where=commands.c.ref_id.isnot(None))
# Reconciliation finds applied commands by their reference.
Index(
    "commands_reference",
    commands.c.payload["reference"].astext,
    postgresql_where=commands.c.payload.has_key("reference"),
)

entries = Table(
    "entries",
    metadata,
    Column("account_id", String(160), ForeignKey("accounts.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("command_id", String(300), ForeignKey("commands.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("counterparty", String(160), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("account_id", "seq", name="entries_pkey"),
    # One leg per account per command: a second application of a command cannot insert.
    UniqueConstraint("command_id", "account_id", name="entries_command_account"),
    CheckConstraint("seq >= 1", name="entries_seq_positive"),
    CheckConstraint("amount <> 0", name="entries_amount_nonzero"),
)
# Balance as of a time: the last entry at or before it, one backward step in this index.
Index("entries_account_time", entries.c.account_id, entries.c.created_at, entries.c.seq)

holds = Table(
    "holds",
    metadata,
    Column("id", String(300), ForeignKey("commands.id"), primary_key=True),  # the hold command's id
    Column("account_id", String(160), ForeignKey("accounts.id"), nullable=False),
    Column("to_account_id", String(160), ForeignKey("accounts.id")),
    Column("partition", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False, server_default=HoldStatus.PENDING.value),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Column("resolved_by", String(300), ForeignKey("commands.id")),  # the capture or void
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint("amount > 0", name="holds_amount_positive"),
    CheckConstraint("status IN ('pending', 'captured', 'voided', 'expired')", name="holds_status"),
    CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="holds_captured_within"),
    CheckConstraint("(status = 'captured') = (captured_amount > 0)", name="holds_captured_iff_amount"),
    CheckConstraint("(status = 'pending') = (finished_at IS NULL)", name="holds_finished_iff_final"),
    CheckConstraint("(status IN ('captured', 'voided')) = (resolved_by IS NOT NULL)", name="holds_resolved_by_command"),
)
Index("holds_account", holds.c.account_id, holds.c.id)
Index(
    "holds_pending_expiry",
    holds.c.partition,
    holds.c.expires_at,
    postgresql_where=holds.c.status == HoldStatus.PENDING.value,
)

partitions = Table(
    "partitions",
    metadata,
    Column("partition", Integer, primary_key=True),
    Column("epoch", BigInteger, nullable=False, server_default="0"),
    Column("owner", Text),
    Column("acquired_at", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("prefix", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("scope IN ('read', 'write', 'admin')", name="api_keys_scope"),
    CheckConstraint("prefix ~ '^[A-Za-z0-9._:-]{0,128}$'", name="api_keys_prefix_charset"),
)

EVENT_TYPES = ("command.applied", "command.rejected", "command.failed", "hold.expired")

events = Table(
    "events",
    metadata,
    # xid * 65536 + n: ordered so that a reader never skips one (migration 0008 says why).
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("xid", XID8, nullable=False, server_default=text("pg_current_xact_id()")),
    Column("type", Text, nullable=False),
    Column("command_id", String(300), nullable=False),
    Column("accounts", ARRAY(Text), nullable=False, server_default="{}"),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    Column("data", JSONB, nullable=False, server_default="{}"),
    CheckConstraint(f"type IN ({', '.join(map(repr, EVENT_TYPES))})", name="events_type"),
    CheckConstraint("id >> 16 = xid::text::bigint", name="events_id_of_its_transaction"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("key_id", String(32)),
    Column("client_addr", Text),
    Column("request_id", String(128), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    # Capped, secrets redacted (ledgerq.api.audit_bodies).
    Column("request_body", Text),
    Column("response_body", Text),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    # Readable by the webhook process only (the API's role has no SELECT on it: migration 0009).
    Column("secret", Text, nullable=False),
    # The creating key's prefix: the endpoint gets only events of those accounts, as that key sees them.
    Column("prefix", Text, nullable=False, server_default=""),
    Column("created_by", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    # The last event id deliveries were made for.
    Column("fanout_cursor", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("webhook_id", String(40), ForeignKey("webhooks.id"), nullable=False),
    Column("event_id", BigInteger, ForeignKey("events.id"), nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A webhook process's lease on the attempt in hand (longer than an attempt can take).
    Column("claimed_until", DateTime(timezone=True)),
    Column("claim_token", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("webhook_id", "event_id", name="webhook_deliveries_once"),
)
# What the webhook processes claim next; an endpoint's deliveries view.
Index(
    "webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=webhook_deliveries.c.status == "pending",
)
Index("webhook_deliveries_of_webhook", webhook_deliveries.c.webhook_id, webhook_deliveries.c.id)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", BigInteger, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("n", Integer, nullable=False),
    Column("made_by", Text, nullable=False),  # the webhook process: host:pid
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    Column("finished_at", DateTime(timezone=True)),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
    Column("response_excerpt", Text),
    PrimaryKeyConstraint("delivery_id", "n", name="webhook_attempts_pkey"),
)

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("key_id", String(32)),
    Column("prefix", Text, nullable=False, server_default=""),
    Column("account_id", String(160)),
    Column("since", DateTime(timezone=True)),
    Column("until", DateTime(timezone=True)),
    Column("source", Text, nullable=False),  # 'api' or 'cli'
    Column("summary", JSONB, nullable=False),
)

RECONCILIATION_STATUSES = ("matched", "mismatched", "unmatched_external", "unmatched_ledger")

reconciliation_items = Table(
    "reconciliation_items",
    metadata,
    Column("reconciliation_id", String(40), ForeignKey("reconciliations.id"), nullable=False),
    Column("n", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("external_id", Text),
    Column("reference", Text),
    Column("command_id", String(300)),
    Column("external_amount", BigInteger),
    Column("external_currency", String(3)),
    Column("ledger_amount", BigInteger),
    Column("ledger_currency", String(3)),
    Column("date", Text),
    PrimaryKeyConstraint("reconciliation_id", "n", name="reconciliation_items_pkey"),
)
