"""One error root with three families, as the house style asks.

- `Rejection`: a business outcome recorded on the command, never retried.
- `TransientFault`: a dependency is away; retry in place, never reorder.
- `InvariantViolation`: something that must never happen; loud.

`RequestError` covers refusals at the API door (bad input, auth, conflicts).
The mapping from these to HTTP status codes lives in `ledgerq.api.problems` only.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    code: str = "ledger_error"
    # For a refusal answered over HTTP: its status, problem body and Retry-After (the client's own
    # tree, `ledgerq_client.errors`, mirrors these).
    status: int | None = None
    problem: dict[str, object] | None = None
    retry_after_s: float | None = None

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code
        if code is not None:
            self.code = code


class Rejection(LedgerError):
    code = "rejected"

    def __init__(self, detail: str = "", *, code: str | None = None, account_id: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.account_id = account_id  # the account whose state decided it, where there is one


class InsufficientFunds(Rejection):
    code = "insufficient_funds"


class CurrencyMismatch(Rejection):
    code = "currency_mismatch"


class UnknownAccount(Rejection):
    code = "unknown_account"


class TransientFault(LedgerError):
    code = "unavailable"


class Fenced(TransientFault):
    """This worker's epoch is stale: another worker owns the partition now."""

    code = "fenced"


class LeaseLost(Fenced):
    """This worker's partition lease lapsed or was taken: stop applying, acquire again."""

    code = "lease_lost"


class Stopping(LedgerError):
    """A stop was asked for while waiting out an outage: the loop ends cleanly, nothing half done."""

    code = "stopping"


class InvariantViolation(LedgerError):
    code = "invariant_violation"


class RequestError(LedgerError):
    """A refusal at the API: bad input, missing auth, a conflict. Nothing was enqueued."""

    code = "invalid_request"


class InvalidRequest(RequestError):
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """Well-formed JSON that breaks the contract (types, ranges, patterns): 422, with every field's error
    in `errors` (`[{"loc": [...], "msg", "type"}]`)."""

    code = "validation_failed"

    def __init__(self, detail: str = "", errors: list[dict[str, Any]] | None = None, *, code: str | None = None):
        super().__init__(detail, code=code)
        self.errors = errors or []


class UnsupportedMediaType(RequestError):
    """A body that is not `application/json` (415): refused before it is read."""

    code = "unsupported_media_type"


class LegsSpanPartitions(RequestError):
    """A transaction's debited accounts route to different partitions: no one owner could apply it in
    order with their other debits (422, nothing claimed)."""

    code = "legs_span_partitions"


class UnknownHold(RequestError):
    """A capture or void names no hold command (or one this key may not see): 422, nothing claimed."""

    code = "unknown_hold"


class UnknownCommand(RequestError):
    """A reversal names no command (or one this key may not see): 422, nothing claimed."""

    code = "unknown_command"


class WebhookTargetRefused(RequestError):
    """A webhook URL of the wrong shape, or a host whose addresses the allow list refuses."""

    code = "webhook_target_refused"


class InvalidJson(RequestError):
    code = "invalid_json"


class BodyTooLarge(RequestError):
    code = "body_too_large"


class Unauthorized(RequestError):
    code = "unauthorized"


class Forbidden(RequestError):
    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class Conflict(RequestError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class RateLimited(RequestError):
    code = "rate_limited"

    def __init__(
        self,
        detail: str = "",
        retry_after_s: float | None = None,
        key_id: str | None = None,
        *,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, code=code)
        self.retry_after_s = retry_after_s
        self.key_id = key_id


class QueueFull(TransientFault):
    """Back-pressure: the partition's queue is at its bound; nothing was claimed."""

    code = "queue_full"


class ConfigurationError(LedgerError):
    code = "configuration_error"
