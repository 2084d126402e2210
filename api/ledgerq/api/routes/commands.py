"""Commands: submit (idempotent by id) and read status, with a bounded long-poll."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ledgerq.api.body import BATCH_BODY_BYTES_MAX, json_object, validate
from ledgerq.api.context import Context
from ledgerq.api.deps import ContextDep, ReadKey, WriteKey, authorize
from ledgerq.api.models import BatchOut, CommandOut, SubmittedOut
from ledgerq.api.problems import error_body
from ledgerq.api.reads import Poll, command_view
from ledgerq.api.submit import Submission, submit_async
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import COMMAND_ADAPTER, AnyCommand
from ledgerq.shared.errors import InvalidRequest, LedgerError, NotFound, ValidationFailed
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
    command = _scoped_command(key, data)
    done = await submit_async(ctx, command, request.scope["state"].get("request_id"), key.prefix)
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


BATCH_COMMANDS_MAX = 1000


@router.post(
    "/batch",
    response_model=BatchOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["commands"],
                        "additionalProperties": False,
                        "properties": {
                            "commands": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": BATCH_COMMANDS_MAX,
                                "items": COMMAND_ADAPTER.json_schema(),
                            }
                        },
                    }
                }
            },
        }
    },
)
async def submit_batch(request: Request, ctx: ContextDep, key: WriteKey) -> JSONResponse:
    """Up to 1,000 commands in one claim round, each submitted as if alone (idempotent, not atomic):
    one result per command, in the order sent. Only a dependency outage fails the whole request."""
    items = _batch_items(await json_object(request, BATCH_BODY_BYTES_MAX))
    results: list[dict[str, Any] | None] = [None] * len(items)
    accepted: list[tuple[int, Submission]] = []
    request_id = request.scope["state"].get("request_id")
    for i, item in enumerate(items):
        try:
            accepted.append((i, Submission(_scoped_command(key, item), request_id, key.prefix)))
        except LedgerError as refused:
            results[i] = _refusal(item.get("id") if isinstance(item, dict) else None, refused)
    outcomes = await ctx.submits.run_async([s for _, s in accepted])
    for (i, submission), outcome in zip(accepted, outcomes, strict=True):
        if isinstance(outcome, LedgerError):
            results[i] = _refusal(shown_id(key.prefix, submission.command.id), outcome)
        elif isinstance(outcome, BaseException):
            raise outcome  # Postgres or Redis away: no outcome is known for any of them
        else:
            results[i] = {
                "id": shown_id(key.prefix, outcome.id),
                "http_status": 200 if outcome.replayed else 202,
                "status": outcome.status,
                "partition": outcome.partition,
            }
    # Returned as is (the model above documents it): `id` is null for an item that is not an object,
    # and a field a result does not have is left out.
    return JSONResponse({"results": results})


def _batch_items(data: dict[str, Any]) -> list[Any]:
    items = data.get("commands")
    if set(data) != {"commands"} or not isinstance(items, list) or not 1 <= len(items) <= BATCH_COMMANDS_MAX:
        where = "commands" if set(data) <= {"commands"} else next(iter(set(data) - {"commands"}))
        raise ValidationFailed(
            f'{where}: the body is {{"commands": [...]}} with 1 to {BATCH_COMMANDS_MAX} commands',
            [{"loc": [where], "msg": f"1 to {BATCH_COMMANDS_MAX} commands", "type": "batch"}],
        )
    return items


def _scoped_command(key: ApiKey, item: Any) -> AnyCommand:
    """One command as a lone submit validates it: the key's scope on its id, its accounts the key's."""
    if not isinstance(item, dict):
        raise ValidationFailed("command: must be a JSON object", [{"loc": [], "msg": "object", "type": "dict_type"}])
    command = scope_command(key.prefix, validate(COMMAND_ADAPTER, item))
    for account_id in command.account_ids():
        if not key.covers(account_id):
            raise NotFound(f"account {account_id!r} not found")
    return command


def _refusal(command_id: object, refused: LedgerError) -> dict[str, Any]:
    body = error_body(refused)
    return {"id": command_id if isinstance(command_id, str) else None, "http_status": body["status"], "error": body}


# `:path`: an unconfined key reads a confined key's command by its stored id, which holds a `/`.
@router.get("/{command_id:path}", response_model=CommandOut, response_model_exclude_none=True)
async def get_command(
    command_id: str,
    ctx: ContextDep,
    key: ReadKey,
    wait: Annotated[str | None, Query(description="seconds to wait for a final status, 0..30")] = None,
) -> dict[str, Any]:
    wait_s = parse_wait(wait, ctx.settings.wait_s_max)
    poll = Poll(time.monotonic() + wait_s)
    while True:
        found = await run_in_threadpool(command_view, ctx, stored_id(key.prefix, command_id), key)
        if found is None:
            raise NotFound(f"command {command_id!r} not found")
        if found["status"] in FINAL_STATUSES or poll.due():
            return found
        await asyncio.sleep(poll.next_sleep_s())


def parse_wait(raw: str | None, wait_s_max: int) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw) if "." in raw else int(raw)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds") from None
    if not 0 <= value <= wait_s_max:
        raise InvalidRequest(f"wait must be between 0 and {wait_s_max} seconds")
    return float(value)
