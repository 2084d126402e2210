"""ledgerq's HTTP client for web backends: `LedgerqClient` (sync) and `AsyncLedgerqClient`.

    from ledgerq_client import LedgerqClient

    with LedgerqClient("http://ledgerq:8000", api_key) as ledger:
        accepted = ledger.submit("withdraw", "alice", 5_000, "USD", id=f"wd-{form_token}")
        outcome = ledger.wait(accepted.id, timeout_s=10)
        held = ledger.hold("alice", 5_000, "USD", to_account_id="gateway")   # then capture or void it
        ledger.reverse(accepted.id)                                          # a refund of the whole
        for event in ledger.events(after_id=last_seen):                      # pages, then long-polls
            ...

    event = verify_webhook(secret, request.headers, request.body)           # a webhook receiver's check

It depends on httpx and tenacity only: no server code, no database or Redis driver.
"""

from ledgerq_client.client import AsyncLedgerqClient, LedgerqClient, RetryPolicy, new_command_id
from ledgerq_client.errors import (
    BodyTooLarge,
    ConfigurationError,
    Conflict,
    CurrencyMismatch,
    Forbidden,
    IdempotencyConflict,
    InvalidJson,
    InvalidRequest,
    LedgerError,
    LegsSpanPartitions,
    NotFound,
    QueueFull,
    RateLimited,
    Rejection,
    RequestError,
    TransientFault,
    Unauthorized,
    UnknownAccount,
    UnknownCommand,
    UnknownHold,
    UnsupportedMediaType,
    ValidationFailed,
    WebhookTargetRefused,
)
from ledgerq_client.models import (
    Accepted,
    Account,
    Balance,
    Command,
    CommandError,
    CommandStatus,
    CommandType,
    Event,
    EventType,
    Hold,
    HoldsPage,
    HoldStatus,
    SubmitType,
)
from ledgerq_client.webhooks import WebhookSignatureError, sign_webhook, verify_webhook

__all__ = [
    "Accepted",
    "Account",
    "AsyncLedgerqClient",
    "Balance",
    "BodyTooLarge",
    "Command",
    "CommandError",
    "CommandStatus",
    "CommandType",
    "ConfigurationError",
    "Conflict",
    "CurrencyMismatch",
    "Event",
    "EventType",
    "Forbidden",
    "Hold",
    "HoldStatus",
    "HoldsPage",
    "IdempotencyConflict",
    "InvalidJson",
    "InvalidRequest",
    "LedgerError",
    "LedgerqClient",
    "LegsSpanPartitions",
    "NotFound",
    "QueueFull",
    "RateLimited",
    "Rejection",
    "RequestError",
    "RetryPolicy",
    "SubmitType",
    "TransientFault",
    "Unauthorized",
    "UnknownAccount",
    "UnknownCommand",
    "UnknownHold",
    "UnsupportedMediaType",
    "ValidationFailed",
    "WebhookSignatureError",
    "WebhookTargetRefused",
    "new_command_id",
    "sign_webhook",
    "verify_webhook",
]
