"""Commands claimed in Postgres whose job never reached Redis (an API crash or a Redis outage between
claim and enqueue, or a Redis that lost data): a new owner queues them again so nothing is left behind.
They were never acknowledged with a 202, so no order was promised for them."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine, text

from shared.enqueue import enqueue_command
from shared.keys import job_key, queue_name
from shared.settings import Settings

ORPHANS_MAX = 10_000


def requeue_orphans(engine: Engine, redis: Redis, partition: int, settings: Settings) -> int:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, payload FROM commands WHERE partition = :p AND status = 'queued' "
                "ORDER BY accepted_at LIMIT :n"
            ),
            {"p": partition, "n": ORPHANS_MAX},
        ).all()
    if not rows:
        return 0
    with redis.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.exists(job_key(row.id))
        present = pipe.execute()
    queue = Queue(queue_name(partition), connection=redis, serializer=JSONSerializer)
    return sum(
        enqueue_command(queue, row.payload, settings) for row, there in zip(rows, present, strict=True) if not there
    )
