"""Admin reads: the audit log, with a cursor, and one call's row with its request and response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from ledgerq.api.audit import audit_entry, audit_page
from ledgerq.api.deps import AdminKey, ContextDep
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX
from ledgerq.shared.errors import Forbidden, NotFound

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/audit")
async def list_audit(
    ctx: ContextDep,
    key: AdminKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    _unconfined(key)
    return await run_in_threadpool(audit_page, ctx.engine, after_id, limit)


def _unconfined(key: ApiKey) -> None:
    # The log holds every tenant's requests and answers: a key confined to a prefix reads none of it.
    if key.prefix:
        raise Forbidden("the audit log is readable by admin keys without an account prefix only")


@router.get("/audit/{entry_id}")
async def get_audit(
    ctx: ContextDep, key: AdminKey, entry_id: Annotated[int, Path(ge=1, le=INT64_MAX)]
) -> dict[str, Any]:
    _unconfined(key)
    found = await run_in_threadpool(audit_entry, ctx.engine, entry_id)
    if found is None:
        raise NotFound(f"audit entry {entry_id} not found")
    return found
