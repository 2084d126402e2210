"""Reconciliation runs: match outside records (JSON or CSV) against the ledger, keep the run, read it back.

The matching rules are `ledgerq.shared.reconciliation`'s; this module reads the body and the key's
scope. Parsing and matching run in a worker thread: a 10 MiB statement is seconds of CPU and SQL.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from ledgerq.api.body import (
    RECONCILIATION_BODY_BYTES_MAX,
    bounded_body,
    csv_body,
    media_type,
    parse_object,
    require_json,
    validate,
)
from ledgerq.api.context import Context
from ledgerq.api.deps import ContextDep, ReadKey, WriteKey
from ledgerq.api.models import ReconciliationRunOut, ReconciliationsOut
from ledgerq.shared import reconciliation as rec
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import ID_PATTERN, PAGE_LIMIT_MAX, EntityId
from ledgerq.shared.errors import InvalidRequest, UnsupportedMediaType, ValidationFailed

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliations"])


class NewReconciliation(BaseModel):
    """A JSON run: the records (validated by `ledgerq.shared.reconciliation`, so an error names its
    index), an optional account, and a window on the commands' `finished_at`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    records: Annotated[list[Any], Field(max_length=rec.RECORDS_MAX)]
    account_id: EntityId | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


NEW_RECONCILIATION = TypeAdapter(NewReconciliation)
RECORD_SCHEMA = {
    "type": "object",
    "required": list(rec.REQUIRED_FIELDS),
    "properties": {
        "external_id": {"type": "string", "minLength": 1, "maxLength": rec.TEXT_CHARS_MAX},
        "amount": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "reference": {"type": "string", "minLength": 1, "maxLength": rec.TEXT_CHARS_MAX},
        "date": {"type": ["string", "null"], "maxLength": rec.TEXT_CHARS_MAX},
    },
}
BODY_SCHEMA = {
    "type": "object",
    "required": ["records"],
    "additionalProperties": False,
    "properties": {
        "records": {"type": "array", "items": RECORD_SCHEMA},
        "account_id": {"type": "string", "pattern": ID_PATTERN},
        "since": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
    },
}
CSV_EXAMPLE = "external_id,amount,currency,reference,date\npo_1,2500,usd,payout-1,2024-03-04\n"


@router.post(
    "",
    status_code=201,
    response_model=ReconciliationRunOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": BODY_SCHEMA},
                "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            },
        }
    },
)
async def create_reconciliation(
    request: Request,
    ctx: ContextDep,
    key: WriteKey,
    account_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="CSV only: match on this account")] = None,
    since: Annotated[AwareDatetime | None, Query(description="CSV only: window start (finished_at >=)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="CSV only: window end (finished_at <)")] = None,
    columns: Annotated[str | None, Query(max_length=2_000, description="CSV only: ours=theirs,...")] = None,
) -> Response:
    """Match the records against the applied commands with a reference; the run is kept (201), or on any
    error nothing is (a malformed record is a 422 naming its CSV row or JSON index)."""
    kind = media_type(request)
    if kind == "text/csv":
        scope = rec.Scope(account_id, since, until, key.prefix).checked("query")  # before reading 10 MiB
        mapping = _columns(columns)
        data = await csv_body(request, RECONCILIATION_BODY_BYTES_MAX)
        return _answer(await run_in_threadpool(_from_csv, ctx, key, data, scope, mapping), 201)
    if kind != "application/json":
        shown = f"{kind!r}" if kind else "no Content-Type"
        raise UnsupportedMediaType(f"the body must be application/json or text/csv, not {shown}")
    if any(v is not None for v in (account_id, since, until, columns)):
        raise InvalidRequest("with a JSON body, account_id, since and until go in the body (columns is CSV only)")
    require_json(request)
    body = await bounded_body(request, RECONCILIATION_BODY_BYTES_MAX)
    return _answer(await run_in_threadpool(_from_json, ctx, key, body), 201)


def _answer(run: bytes, status: int = 200) -> Response:
    return Response(run, status_code=status, media_type="application/json")


def _shown(run: dict[str, Any]) -> bytes:
    # Up to a few hundred thousand items: validated and serialised here, in the calling thread, not
    # by FastAPI on the event loop.
    return ReconciliationRunOut.model_validate(run).model_dump_json().encode()


def _columns(spec: str | None) -> dict[str, str]:
    try:
        return rec.parse_columns(spec or "")
    except ValueError as exc:
        error = {"loc": ["query", "columns"], "msg": str(exc), "type": "value_error"}
        raise ValidationFailed(f"columns: {exc}", [error]) from exc


def _from_csv(ctx: Context, key: ApiKey, data: bytes, scope: rec.Scope, columns: dict[str, str]) -> bytes:
    records = rec.parse_csv(data, columns)
    return _shown(rec.run_reconciliation(ctx.engine, records, scope, source="api", key_id=key.id))


def _from_json(ctx: Context, key: ApiKey, body: bytes) -> bytes:
    new = validate(NEW_RECONCILIATION, parse_object(body))
    scope = rec.Scope(new.account_id, new.since, new.until, key.prefix).checked()
    records = rec.parse_json_records(new.records)
    return _shown(rec.run_reconciliation(ctx.engine, records, scope, source="api", key_id=key.id))


@router.get("", response_model=ReconciliationsOut)
async def list_reconciliations(
    ctx: ContextDep,
    key: ReadKey,
    after_id: Annotated[
        str | None, Query(pattern=rec.RUN_ID_PATTERN, description="the last id of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    """Runs newest first, without their items; resume from `next_after_id` (null on the last page)."""
    return await run_in_threadpool(rec.list_runs, ctx.engine, key.prefix, after_id, limit)


@router.get("/{reconciliation_id}", response_model=ReconciliationRunOut)
async def get_reconciliation(reconciliation_id: str, ctx: ContextDep, key: ReadKey) -> Response:
    """A kept run with every item, in `n` order; 404 if unknown or made under another key prefix."""
    return _answer(await run_in_threadpool(lambda: _shown(rec.get_run(ctx.engine, reconciliation_id, key.prefix))))
