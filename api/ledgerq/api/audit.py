"""The audit log (seed 003): every mutating API call recorded in Postgres, whoever made it and however
it ended: time, key id, client address, request id, method, path, SHA-256 of the body, status.

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

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerq.api.body import BATCH_BODY_BYTES_MAX
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
        body, replay = await _buffer(receive)
        status = 500
        echoed = (b"x-request-id", request_id.encode())

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(echoed)
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
            }
            await _record(app_state, row)


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
        await send(message)

    return wrapped


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """Read the body (up to just past the limit) for hashing, then hand the same messages to the app."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body") or size > BATCH_BODY_BYTES_MAX:  # the largest body any route takes
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


_INSERT_ROWS = text(
    """
    INSERT INTO audit_log (key_id, client_addr, request_id, method, path, body_sha256, status)
    SELECT key_id, client_addr, request_id, method, path, body_sha256, status
      FROM json_to_recordset(CAST(:rows AS json)) AS v(
           key_id text, client_addr text, request_id text, method text, path text, body_sha256 text, status int)
    """
)


def write_audit_rows(engine: Engine, rows: list[dict[str, Any]]) -> list[None]:
    """The audit group-commit flush: all rows of a round in one statement with one JSON parameter."""
    with engine.begin() as conn:
        conn.execute(_INSERT_ROWS, {"rows": json.dumps(rows)})
    return [None] * len(rows)


def audit_page(engine: Engine, after_id: int, limit: int) -> dict[str, Any]:
    """Up to `limit` audit rows after `after_id`, oldest first, with the cursor for the next page."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit))
        found = [dict(r._mapping) for r in rows]
    return {"entries": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}
