"""Response shapes (kept apart from the command models and the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from ledgerq.shared.schema import HoldStatus


class AccountOut(BaseModel):
    id: str
    currency: str
    balance: int  # posted: the sum of the entries
    held: int  # the sum of pending holds
    available: int  # balance - held: what a debit or a new hold may use (with the overdraft limit)
    overdraft_limit: int
    entry_count: int
    metadata: dict[str, Any]
    updated_at: datetime


class EntryOut(BaseModel):
    seq: int
    command_id: str
    amount: int
    balance_after: int
    counterparty: str
    created_at: datetime


class BalanceOut(BaseModel):
    account_id: str
    balance: int
    seq: int
    at: datetime | None


class EntriesOut(BaseModel):
    entries: list[EntryOut]
    next_after_seq: int | None


class SubmittedOut(BaseModel):
    id: str
    status: str
    partition: int


class BatchResultOut(BaseModel):
    """One command of a batch, answered as a lone submit would be: `http_status` 202 (accepted), 200
    (a replay), or the refusal's status with its problem body in `error`."""

    id: str | None
    http_status: int
    status: str | None = None
    partition: int | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    results: list[BatchResultOut]


class CommandError(BaseModel):
    code: str
    detail: str


CommandType = Literal["deposit", "withdraw", "transfer", "transaction", "hold", "capture", "void", "reversal"]


class CommandOut(BaseModel):
    id: str
    type: CommandType
    status: Literal["queued", "started", "applied", "rejected", "failed"]
    partition: int
    error: CommandError | None = None
    result: dict[str, Any] | None = None
    reversed_amount: int | None = None  # an applied deposit, withdraw, transfer, capture or transaction
    accepted_at: datetime
    finished_at: datetime | None = None


class HoldOut(BaseModel):
    id: str
    account_id: str
    to_account_id: str | None
    amount: int
    currency: str
    status: HoldStatus
    captured_amount: int
    expires_at: datetime
    finished_at: datetime | None


class HoldsOut(BaseModel):
    holds: list[HoldOut]
    next_after_id: str | None


class CurrencyTotal(BaseModel):
    total: int
    balanced: bool


class TrialBalanceOut(BaseModel):
    currencies: dict[str, CurrencyTotal]


class PartitionOut(BaseModel):
    partition: int
    owner: str | None
    queued: int
    inflight: int
    oldest_job_age_s: float | None


class PartitionsOut(BaseModel):
    partitions: list[PartitionOut]


class EventOut(BaseModel):
    id: int
    type: Literal["command.applied", "command.rejected", "command.failed", "hold.expired"]
    command_id: str
    accounts: list[str]
    at: datetime
    data: dict[str, Any]


class EventsOut(BaseModel):
    events: list[EventOut]
    next_after_id: int


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime
    deleted_at: datetime | None = None


class WebhookCreatedOut(WebhookOut):
    secret: str  # shown once: sign-checking key for `Ledgerq-Signature`


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    n: int
    made_by: str  # the webhook process (host:pid)
    started_at: datetime
    finished_at: datetime | None  # none: under way, or its process died (the lease lets another retry)
    status_code: int | None
    error: str | None
    duration_ms: int | None


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    event_type: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut]


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_after_id: int | None


class AccountsOut(BaseModel):
    """A page of accounts by id (`GET /v1/accounts?prefix=`): resume from `next_after_id` (null on the last page)."""

    accounts: list[AccountOut]
    next_after_id: str | None


class ReconciliationSummaryOut(BaseModel):
    records: int
    matched: int
    mismatched: int
    unmatched_external: int
    unmatched_ledger: int


class ReconciliationItemOut(BaseModel):
    """One record (with the command it was paired with, if any), or an applied command no record named."""

    n: int
    status: Literal["matched", "mismatched", "unmatched_external", "unmatched_ledger"]
    external_id: str | None
    reference: str | None
    command_id: str | None  # as the reading key sees it
    external_amount: int | None
    external_currency: str | None
    ledger_amount: int | None
    ledger_currency: str | None
    date: str | None


class ReconciliationOut(BaseModel):
    id: str
    created_at: datetime
    source: Literal["api", "cli"]
    account_id: str | None
    since: datetime | None
    until: datetime | None
    summary: ReconciliationSummaryOut


class ReconciliationRunOut(ReconciliationOut):
    items: list[ReconciliationItemOut]


class ReconciliationsOut(BaseModel):
    reconciliations: list[ReconciliationOut]
    next_after_id: str | None
