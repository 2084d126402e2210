"""Queue a claim again when its job was refused (forged or damaged data under its id): the genuine
command gets a fresh signed job from its claim. (Claims whose job Redis lost altogether are applied
from Postgres in acceptance order by the owner's batches: `ledgerq.worker.apply._ORPHANS`.)"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.rq_format import Claim, enqueue_commands
from ledgerq.shared.settings import Settings


def requeue_commands(
    engine: Engine, redis: RedisClient, partition: int, settings: Settings, command_ids: list[str]
) -> int:
    """Queue these commands again if they are still `queued` in this partition and have no live job."""
    if not command_ids:
        return 0
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, payload FROM commands WHERE id = ANY(:ids) AND partition = :p AND status = 'queued'"),
            {"ids": command_ids, "p": partition},
        ).all()
    return _requeue(redis, partition, settings, [(row.id, row.payload) for row in rows])


def _requeue(redis: RedisClient, partition: int, settings: Settings, claims: list[tuple[str, dict[str, Any]]]) -> int:
    """A job hash that is missing, or `failed` (refused as forged, or run by a foreign RQ worker) while
    Postgres still says `queued`, is replaced by a fresh signed job from the claim."""
    if not claims:
        return 0
    keys = settings.redis_keys
    with redis.pipeline(transaction=False) as pipe:
        for command_id, _ in claims:
            pipe.hget(keys.job_key(command_id, partition), "status")
        states = pipe.execute()
    stale = [keys.job_key(c, partition) for (c, _), state in zip(claims, states, strict=True) if state == b"failed"]
    if stale:
        redis.delete(*stale)
    missing = [Claim(partition, p) for (_, p), state in zip(claims, states, strict=True) if state in (None, b"failed")]
    # No waiting for replicas: the claim is durable in Postgres already, and a job a failover loses
    # is applied from it anyway (the orphan rule); waiting would only stall the partition.
    return len(enqueue_commands(redis, missing, settings, wait_replicas=0))
