"""Admin reads: the audit log, with a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ledgerq.api.deps import AdminKey, ContextDep
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX
from ledgerq.shared.schema import audit_log

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/audit")
async def list_audit(
    ctx: ContextDep,
    key: AdminKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    def read() -> list[dict[str, Any]]:
        with ctx.engine.connect() as conn:
            rows = conn.execute(
                select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    found = await run_in_threadpool(read)
    return {"entries": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}
