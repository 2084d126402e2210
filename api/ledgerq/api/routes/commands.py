"""Commands: submit (idempotent by id) and read status, with a bounded long-poll."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ledgerq.api.body import json_object, validate
from ledgerq.api.context import Context
from ledgerq.api.deps import ContextDep, ReadKey, authorize
from ledgerq.api.models import CommandOut, SubmittedOut
from ledgerq.api.submit import submit_async
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import COMMAND_ADAPTER
from ledgerq.shared.errors import InvalidRequest, NotFound
from ledgerq.shared.keys import job_key
from ledgerq.shared.schema import FINAL_STATUSES, commands
from ledgerq.shared.scoping import is_own, scope_command, shown_id, stored_id

log = logging.getLogger("ledgerq.api")
router = APIRouter(prefix="/v1/commands", tags=["commands"])

WAIT_POLL_S_MIN = 0.02
WAIT_POLL_S_MAX = 0.25


@router.post(
    "",
    status_code=202,
    response_model=SubmittedOut,
    responses={
        200: {"model": SubmittedOut, "description": "replay of an earlier submit of the same command"},
        409: {"description": "the id was taken by another payload"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": COMMAND_ADAPTER.json_schema()}}},
        "security": [{"HTTPBearer": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the command id, if the body leaves it out (must equal it otherwise)",
            }
        ],
    },
)
async def submit_command(request: Request) -> Response:
    # The hot path: no dependency injection and no response-model round trip (about half the
    # CPU of a submit went there); the OpenAPI above documents what this reads and answers.
    ctx: Context = request.app.state.ctx
    key = await authorize(request, ctx, "write")
    data = await json_object(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        if "id" in data and data["id"] != idempotency_key:
            raise InvalidRequest("the Idempotency-Key header and the body's id differ")
        data["id"] = idempotency_key
    command = scope_command(key.prefix, validate(COMMAND_ADAPTER, data))
    for account_id in command.account_ids():
        if not key.covers(account_id):
            raise NotFound(f"account {account_id!r} not found")
    done = await submit_async(ctx, command, request.scope["state"].get("request_id"))
    shown = shown_id(key.prefix, done.id)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("command %s %s", done.id, "replayed" if done.replayed else "accepted", extra={"command_id": done.id})
    headers = {"Location": f"/v1/commands/{shown}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        {"id": shown, "status": done.status, "partition": done.partition},
        status_code=200 if done.replayed else 202,
        headers=headers,
    )


# `:path`: an unconfined key reads a confined key's command by its stored id, which holds a `/`.
@router.get("/{command_id:path}", response_model=CommandOut, response_model_exclude_none=True)
async def get_command(
    command_id: str,
    ctx: ContextDep,
    key: ReadKey,
    wait: Annotated[str | None, Query(description="seconds to wait for a final status, 0..30")] = None,
) -> dict[str, Any]:
    wait_s = _parse_wait(wait, ctx.settings.wait_s_max)
    deadline = time.monotonic() + wait_s
    delay_s = WAIT_POLL_S_MIN
    while True:
        found = await run_in_threadpool(_read_command, ctx, stored_id(key.prefix, command_id), key)
        if found is None:
            raise NotFound(f"command {command_id!r} not found")
        if found["status"] in FINAL_STATUSES or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(min(delay_s, max(0.0, deadline - time.monotonic())))
        delay_s = min(delay_s * 2, WAIT_POLL_S_MAX)


def _parse_wait(raw: str | None, wait_s_max: int) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw) if "." in raw else int(raw)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds") from None
    if not 0 <= value <= wait_s_max:
        raise InvalidRequest(f"wait must be between 0 and {wait_s_max} seconds")
    return float(value)


def _read_command(ctx: Context, command_id: str, key: ApiKey) -> dict[str, Any] | None:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(
                commands.c.id,
                commands.c.type,
                commands.c.status,
                commands.c.partition,
                commands.c.payload,
                commands.c.error_code,
                commands.c.error_detail,
                commands.c.result,
                commands.c.accepted_at,
                commands.c.finished_at,
            ).where(commands.c.id == command_id)
        ).one_or_none()
    if row is None:
        return None
    result, detail = row.result, row.error_detail or ""
    if key.prefix:
        # A confined key sees only its accounts' legs, even of its own commands: the others' balances
        # (another tenant's, or the `@world` account every tenant's deposits move) are not its to see.
        named = [row.payload.get("account_id", ""), row.payload.get("to_account_id", "")]
        if not is_own(key.prefix, row.id) and not any(key.covers(a) for a in named if a):
            return None  # another key's command that touches none of this key's accounts
        if result and "entries" in result:
            result = {**result, "entries": [e for e in result["entries"] if key.covers(e["account_id"])]}
        elif result and "account_id" in result and not key.covers(result["account_id"]):
            result = None
        if not key.covers(named[0]):  # a rejection's detail speaks of the debited account
            detail = "withheld: it concerns an account outside this key's prefix"
    status = row.status
    if status == "queued" and ctx.redis.hget(job_key(command_id), "status") == b"started":
        status = "started"
    out: dict[str, Any] = {
        "id": shown_id(key.prefix, row.id),
        "type": row.type,
        "status": status,
        "partition": row.partition,
        "result": result,
        "accepted_at": row.accepted_at,
        "finished_at": row.finished_at,
    }
    if row.error_code:
        out["error"] = {"code": row.error_code, "detail": detail}
    return out
