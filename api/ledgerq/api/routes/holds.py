"""Holds: one hold by the id of the command that placed it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ledgerq.api.deps import ContextDep, ReadKey
from ledgerq.api.holds import hold_view
from ledgerq.api.models import HoldOut
from ledgerq.shared.scoping import stored_id

router = APIRouter(prefix="/v1/holds", tags=["holds"])


# `:path`: an unconfined key reads a confined key's hold by its stored id, which holds a `/`.
@router.get("/{hold_id:path}", response_model=HoldOut)
async def get_hold(hold_id: str, ctx: ContextDep, key: ReadKey) -> dict[str, Any]:
    return await run_in_threadpool(hold_view, ctx, stored_id(key.prefix, hold_id), key)
