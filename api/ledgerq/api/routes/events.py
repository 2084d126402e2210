"""Events: page through the outbox, with a bounded long-poll for new ones."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ledgerq.api.deps import ContextDep, ReadKey
from ledgerq.api.events import events_page
from ledgerq.api.models import EventsOut
from ledgerq.api.reads import Poll
from ledgerq.api.routes.commands import parse_wait
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("", response_model=EventsOut)
async def list_events(
    ctx: ContextDep,
    key: ReadKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
    wait: Annotated[str | None, Query(description="seconds to wait for an event, 0..30")] = None,
) -> dict[str, Any]:
    """Events after `after_id` in id order; resume from `next_after_id` to miss none and see none twice."""
    poll = Poll(time.monotonic() + parse_wait(wait, ctx.settings.wait_s_max))
    while True:
        page = await run_in_threadpool(events_page, ctx, after_id, limit, key)
        if page["events"] or poll.due():
            return page
        await asyncio.sleep(poll.next_sleep_s())
