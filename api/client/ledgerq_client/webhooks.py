"""Checking a webhook delivery: `verify_webhook(secret, headers, body) -> Event`.

ledgerq POSTs each event as compact UTF-8 JSON with `Ledgerq-Signature: t=<unix s>,v1=<hex>`, where
the hex is HMAC-SHA256(secret, "<t>.<body>"). A receiver checks it on the raw body bytes (before any
JSON parsing: a re-encoded body would not match), refuses a timestamp far from its clock (a captured
delivery cannot be replayed later), then dedupes on the returned event's `id`: delivery is at least
once, and a retry carries the same id and body under a new timestamp and signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import string
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from ledgerq_client.models import Event

SIGNATURE_HEADER = "Ledgerq-Signature"
TOLERANCE_S_DEFAULT = 300
"""How far (either way) a delivery's `t=` may be from the receiver's clock, in seconds."""
SIGNATURE_HEADER_CHARS_MAX = 4096
"""A bound on the header parsed: a few signatures fit many times over; anything longer is refused."""
MAC_HEX_CHARS = 64
HEX_DIGITS = frozenset(string.hexdigits)


class Headers(Protocol):
    """Any header collection: a dict, Django's `request.headers`, Flask's, Starlette's."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class WebhookSignatureError(ValueError):
    """The delivery is not proven to come from ledgerq: answer 400 and do nothing with it.

    `.code` says why: `signature_missing`, `signature_malformed`, `timestamp_out_of_tolerance`,
    `signature_mismatch` or `invalid_body`. Not a `LedgerError`: no API call failed, the sender's
    request did, so an `except LedgerError` around ledger calls does not swallow it."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The `Ledgerq-Signature` value ledgerq sends with `body` at `timestamp` (unix s): for your receiver's tests."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_webhook(
    secret: str | Sequence[str],
    headers: Headers,
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S_DEFAULT,
    now: float | None = None,
) -> Event:
    """The event in `body` if `headers` carry a valid signature of it; else `WebhookSignatureError`.

    `secret` is the webhook's (`whsec_…`), or several while you move from one webhook to another: any
    one of them signing the body is enough, as is any one of several `v1=` values in the header.
    `headers` is matched without regard to case. `body` is the raw request body, as bytes.
    `now` (unix seconds) is for tests; it defaults to the clock."""
    if not isinstance(body, bytes):
        raise TypeError("pass the raw body bytes: request.body, request.get_data() or await request.body()")
    if not tolerance_s > 0:
        raise ValueError(f"tolerance_s must be positive, not {tolerance_s}")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("no webhook secret to check the signature with")
    timestamp, macs = _parse(_header(headers, SIGNATURE_HEADER))
    expected = [_mac(s, timestamp, body) for s in secrets]
    # Every pair compared in constant time, none skipped after a match: the timing tells nothing.
    if not sum(hmac.compare_digest(e, m) for e in expected for m in macs):
        raise WebhookSignatureError(
            "signature_mismatch", f"no v1 signature in {SIGNATURE_HEADER} matches the body with this secret"
        )
    age_s = (time.time() if now is None else now) - timestamp
    if abs(age_s) > tolerance_s:  # checked once signed: t is then ledgerq's own, not an attacker's
        when = f"{age_s:.0f} s old" if age_s > 0 else f"{-age_s:.0f} s in the future"
        raise WebhookSignatureError(
            "timestamp_out_of_tolerance",
            f"{SIGNATURE_HEADER} t={timestamp} is {when} (tolerance {tolerance_s:g} s): "
            "a replayed delivery, or a clock that is off",
        )
    try:
        return Event.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookSignatureError("invalid_body", f"the signed body is not an event: {exc}") from exc


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _header(headers: Headers, name: str) -> str:
    """Every value of header `name` (any case), joined by commas, as HTTP folds repeated headers."""
    wanted = name.lower()
    found = [value for key, value in headers.items() if key.lower() == wanted]
    if not found:
        raise WebhookSignatureError("signature_missing", f"no {name} header: not a ledgerq delivery")
    return ",".join(found)


def _parse(value: str) -> tuple[int, list[str]]:
    """(t, the v1 signatures) from `t=<unix s>,v1=<hex>[,v1=<hex>…]`; other schemes are skipped."""
    if len(value) > SIGNATURE_HEADER_CHARS_MAX:
        raise _malformed(f"is over {SIGNATURE_HEADER_CHARS_MAX} chars")
    timestamps: set[str] = set()
    macs: list[str] = []
    for part in value.split(","):
        scheme, sep, item = part.strip().partition("=")
        if not sep:
            raise _malformed(f"part {part.strip()!r} is not k=v")
        if scheme == "t":
            timestamps.add(item)
        elif scheme == "v1":
            if len(item) != MAC_HEX_CHARS or not set(item) <= HEX_DIGITS:  # compare_digest needs ASCII, too
                raise _malformed(f"v1={item[:80]!r} is not a SHA-256 hex digest")
            macs.append(item.lower())
    if len(timestamps) != 1 or not (stamp := timestamps.pop()).isascii() or not stamp.isdigit():
        raise _malformed("needs exactly one t=<unix seconds>")
    if not macs:
        raise _malformed("has no v1=<hex> signature")
    return int(stamp), macs


def _malformed(why: str) -> WebhookSignatureError:
    return WebhookSignatureError("signature_malformed", f"{SIGNATURE_HEADER} {why}")
