"""Admin reads: the audit log, with a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ledgerq.api.audit import audit_page
from ledgerq.api.deps import AdminKey, ContextDep
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/audit")
async def list_audit(
    ctx: ContextDep,
    key: AdminKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    return await run_in_threadpool(audit_page, ctx.engine, after_id, limit)
