"""The errors a ledgerq API answers, one class per problem `code` (RFC 9457 problem+json).

The client's own tree, mirroring the server's `ledgerq.shared.errors` by name and code (a test
keeps the two in step), so a backend that installs only `ledgerq-client` catches them by type.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """The root: `.status`, `.code`, `.detail`, the whole `.problem`, and `.retry_after_s` if sent."""

    code: str = "ledger_error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code
        if code is not None:
            self.code = code
        self.status: int | None = None
        self.problem: dict[str, Any] = {}
        self.retry_after_s: float | None = None


class Rejection(LedgerError):
    code = "rejected"


class UnknownAccount(Rejection):
    code = "unknown_account"


class CurrencyMismatch(Rejection):
    code = "currency_mismatch"


class TransientFault(LedgerError):
    """A dependency is away (5xx): the same request, with the same id, may succeed later."""

    code = "unavailable"


class QueueFull(TransientFault):
    code = "queue_full"


class ConfigurationError(LedgerError):
    code = "configuration_error"


class RequestError(LedgerError):
    """A refusal at the API's door (4xx): nothing was enqueued; never retried."""

    code = "invalid_request"


class InvalidRequest(RequestError):
    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """A field breaks the contract (422); `.errors` lists each one: `[{"loc", "msg", "type"}]`."""

    code = "validation_failed"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.errors: list[dict[str, Any]] = []


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class LegsSpanPartitions(RequestError):
    code = "legs_span_partitions"


class UnknownHold(RequestError):
    """A capture or void names no hold command (or one this key may not see): 422, nothing claimed."""

    code = "unknown_hold"


class UnknownCommand(RequestError):
    """A reversal names no command (or one this key may not see): 422, nothing claimed."""

    code = "unknown_command"


class WebhookTargetRefused(RequestError):
    """A webhook URL of the wrong shape, or a host whose addresses the allow list refuses: 422."""

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


def _by_code() -> dict[str, type[LedgerError]]:
    found: dict[str, type[LedgerError]] = {}
    todo: list[type[LedgerError]] = [LedgerError]
    while todo:
        cls = todo.pop(0)  # breadth first: a code shared by parent and child maps to the child
        found[cls.code] = cls
        todo += cls.__subclasses__()
    return found


ERRORS_BY_CODE = _by_code()
