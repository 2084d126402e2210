"""Liveness, readiness, metrics, the trial balance and the partitions view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisClusterException, RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from ledgerq.api.deps import AdminKey, ContextDep, ReadKey
from ledgerq.api.metrics import registry_for
from ledgerq.api.models import PartitionsOut, TrialBalanceOut
from ledgerq.api.problems import problem
from ledgerq.shared.db import ping
from ledgerq.shared.observe import partition_states, redis_durability, replicas_online, trial_balance

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
async def readyz(ctx: ContextDep) -> Any:
    def check() -> dict[str, Any]:
        report: dict[str, Any] = {}
        try:
            ping(ctx.engine)
            report["database"] = {"ok": True}
        except SQLAlchemyError as exc:
            report["database"] = {"ok": False, "detail": type(exc).__name__}
        try:
            ctx.redis.ping()
            durable, how = redis_durability(ctx.redis)
            report["redis"] = {"ok": True, "durable": durable, "detail": how}
            if required := ctx.settings.wait_replicas:
                # Submits answer 503 while fewer replicas than this can acknowledge them. Shown, but
                # not "not ready": reads still work, and a load balancer would drop every API at once.
                online = replicas_online(ctx.redis)
                report["redis"]["replicas"] = {"online": online, "required": required, "ok": online >= required}
            states = partition_states(ctx.redis, ctx.settings.redis_keys, ctx.settings.partitions)
            report["partitions"] = {"count": ctx.settings.partitions, "owned": sum(1 for s in states if s.owner)}
        except (RedisError, RedisClusterException) as exc:
            report["redis"] = {"ok": False, "detail": type(exc).__name__}
        return report

    report = await run_in_threadpool(check)
    down = [name for name in ("database", "redis") if not report[name]["ok"]]
    if down:
        return problem(503, "not_ready", f"unavailable: {', '.join(down)}", {"Retry-After": "1"}, checks=report)
    return {"status": "ready", "checks": report}


@router.get("/metrics", response_class=Response)
async def metrics(ctx: ContextDep) -> Response:
    body = await run_in_threadpool(generate_latest, registry_for(ctx))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/trial-balance", response_model=TrialBalanceOut)
async def get_trial_balance(ctx: ContextDep, key: ReadKey) -> dict[str, Any]:
    totals = await run_in_threadpool(trial_balance, ctx.engine)
    return {"currencies": {cur: {"total": total, "balanced": total == 0} for cur, total in totals.items()}}


@router.get("/v1/partitions", response_model=PartitionsOut)
async def get_partitions(ctx: ContextDep, key: AdminKey) -> dict[str, Any]:
    """Each partition's lease owner, queue depth, jobs in flight and oldest job's age (operators only)."""
    states = await run_in_threadpool(partition_states, ctx.redis, ctx.settings.redis_keys, ctx.settings.partitions)
    return {
        "partitions": [
            {
                "partition": s.partition,
                "owner": s.owner,
                "queued": s.queued,
                "inflight": s.inflight,
                "oldest_job_age_s": s.oldest_age_s,
            }
            for s in states
        ]
    }
