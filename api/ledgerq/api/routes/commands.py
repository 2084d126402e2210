"""Commands: submit (idempotent by id) and read status, with a bounded long-poll."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ledgerq.api.body import json_object, validate
from ledgerq.api.context import Context
from ledgerq.api.deps import ContextDep, ReadKey, authorize
from ledgerq.api.models import CommandOut, SubmittedOut
from ledgerq.api.reads import Poll, command_view
from ledgerq.api.submit import submit_async
from ledgerq.shared.commands import COMMAND_ADAPTER
from ledgerq.shared.errors import InvalidRequest, NotFound
from ledgerq.shared.schema import FINAL_STATUSES
from ledgerq.shared.scoping import scope_command, shown_id, stored_id

log = logging.getLogger("ledgerq.api")
router = APIRouter(prefix="/v1/commands", tags=["commands"])


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
    poll = Poll(time.monotonic() + wait_s)
    while True:
        found = await run_in_threadpool(command_view, ctx, stored_id(key.prefix, command_id), key)
        if found is None:
            raise NotFound(f"command {command_id!r} not found")
        if found["status"] in FINAL_STATUSES or poll.due():
            return found
        await asyncio.sleep(poll.next_sleep_s())


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
