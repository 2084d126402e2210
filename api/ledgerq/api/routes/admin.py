"""Admin reads: the audit log, with a cursor, and one call's row with its request and response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from ledgerq.api.audit import audit_entry, audit_page
from ledgerq.api.deps import AdminKey, ContextDep
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX
from ledgerq.shared.errors import NotFound

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/audit")
async def list_audit(
    ctx: ContextDep,
    key: AdminKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    return await run_in_threadpool(audit_page, ctx.engine, after_id, limit)


@router.get("/audit/{entry_id}")
async def get_audit(
    ctx: ContextDep, key: AdminKey, entry_id: Annotated[int, Path(ge=1, le=INT64_MAX)]
) -> dict[str, Any]:
    found = await run_in_threadpool(audit_entry, ctx.engine, entry_id)
    if found is None:
        raise NotFound(f"audit entry {entry_id} not found")
    return found
