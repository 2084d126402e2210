"""The audit log (seed 003): every mutating API call recorded in Postgres, whoever made it and however
it ended: time, key id, client address, request id, method, path, SHA-256 of the body, status, and
the request and response bodies (capped at LEDGERQ_AUDIT_BODY_BYTES, secrets redacted: see
`kept_body`). Headers are never kept, so neither is `Authorization`.

A pure ASGI middleware, so it sees the body as sent and the status as answered, including refusals
that never reach a route (401, 413, 422). Each request gets an `X-Request-Id` (the client's, if it
sent a well-formed one) echoed in the response.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerq.api.body import BATCH_BODY_BYTES_MAX, RECONCILIATION_BODY_BYTES_MAX
from ledgerq.shared.db import driver_cursor
from ledgerq.shared.logs import REQUEST_ID
from ledgerq.shared.schema import audit_log

log = logging.getLogger("ledgerq.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        asked = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = asked if REQUEST_ID_SHAPE.match(asked) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id
        REQUEST_ID.set(request_id)  # every log line of this request carries it
        if scope["method"] not in MUTATING:
            await self.app(scope, receive, _with_request_id(send, request_id))
            return
        body, replay = await _buffer(receive, _buffered_max(scope["path"]))
        status = 500
        echoed = (b"x-request-id", request_id.encode())
        cap = _body_cap(scope)
        answer = bytearray()
        answer_size = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status, answer_size
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(echoed)
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                answer_size += len(chunk)
                if len(answer) < cap:
                    answer.extend(chunk[: cap - len(answer)])
            await send(message)

        try:
            await self.app(scope, replay, send_and_note)
        finally:
            app_state = scope["app"].state
            client = scope.get("client")
            row = {
                "key_id": scope["state"].get("key_id"),
                "client_addr": client[0] if client else None,
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"][:2000].replace("\x00", ""),  # no NUL in text: it would fail the round
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "status": status,
                "request_body": kept_body(body, cap, _bearer(headers)),
                "response_body": kept_body(bytes(answer), cap, _bearer(headers), size=answer_size),
            }
            await _record(app_state, row)


REDACTED_FIELDS = ("secret", "password", "api_key", "token")
"""JSON fields whose string values are never kept: a webhook's creation answers with its signing secret."""
REDACTED = "[redacted]"
# A redacted field's string value, also when the cap cut it short (no closing quote). A pattern, not
# a parse: it works on the capped text, and costs no more than the cap whatever the body's size.
_SECRET_VALUE = re.compile(r'("(?:' + "|".join(REDACTED_FIELDS) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"?')


def kept_body(body: bytes, cap: int, bearer: bytes, size: int | None = None) -> str | None:
    """What the audit row keeps of a body (`size` bytes long, if more were sent than `body` holds):
    text up to `cap` bytes, with the caller's own key (wherever it appears) and the string values of
    secret-like fields replaced by "[redacted]"; None when bodies are not kept."""
    if cap <= 0:
        return None
    size = len(body) if size is None else size
    head = body[: cap + len(bearer)]  # a key that starts before the cap is replaced whole
    if bearer:
        head = head.replace(bearer, REDACTED.encode())
    kept = head[:cap].decode("utf-8", "replace").replace("\x00", "")
    kept = _SECRET_VALUE.sub(lambda m: f'{m.group(1)}"{REDACTED}"', kept)
    return kept if size <= cap else f"{kept}…[{size - cap} more bytes not kept]"


def _bearer(headers: dict[bytes, bytes]) -> bytes:
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and len(token.strip()) >= 8 else b""


def _body_cap(scope: Scope) -> int:
    ctx = getattr(scope["app"].state, "ctx", None)
    return ctx.settings.audit_body_bytes if ctx is not None else 0


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
        await send(message)

    return wrapped


def _buffered_max(path: str) -> int:
    """The most bytes the route can take: past it the route refuses (413), and the hash covers it."""
    return RECONCILIATION_BODY_BYTES_MAX if path.startswith("/v1/reconciliations") else BATCH_BODY_BYTES_MAX


async def _buffer(receive: Receive, bytes_max: int) -> tuple[bytes, Receive]:
    """Read the body (up to just past the limit) for hashing, then hand the same messages to the app."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body") or size > bytes_max:
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return body, replay


async def _record(app_state: Any, row: dict[str, Any]) -> None:
    ctx = getattr(app_state, "ctx", None)
    if ctx is None:
        return
    (outcome,) = await ctx.audits.run_async([row])  # shares one transaction with concurrent requests' rows
    if isinstance(outcome, SQLAlchemyError):  # the call itself already failed with 503 if Postgres is away
        log.error("audit log write failed for request %s: %s", row["request_id"], outcome)
    elif isinstance(outcome, BaseException):
        raise outcome


_INSERT_ROWS = """
    INSERT INTO audit_log (key_id, client_addr, request_id, method, path, body_sha256, status, request_body,
                           response_body)
    SELECT key_id, client_addr, request_id, method, path, body_sha256, status, request_body, response_body
      FROM json_to_recordset(CAST(%(rows)s AS json)) AS v(
           key_id text, client_addr text, request_id text, method text, path text, body_sha256 text, status int,
           request_body text, response_body text)
    """


def write_audit_rows(engine: Engine, rows: list[dict[str, Any]]) -> list[None]:
    """The audit group-commit flush: all rows of a round in one statement with one JSON parameter."""
    with engine.begin() as conn:
        driver_cursor(conn).execute(_INSERT_ROWS, {"rows": json.dumps(rows)})
    return [None] * len(rows)


def audit_page(engine: Engine, after_id: int, limit: int) -> dict[str, Any]:
    """Up to `limit` audit rows after `after_id`, oldest first, with the cursor for the next page."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit))
        found = [dict(r._mapping) for r in rows]
    return {"entries": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}


def audit_entry(engine: Engine, entry_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.id == entry_id)).one_or_none()
    return dict(row._mapping) if row else None
