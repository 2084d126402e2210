"""The function ledgerq jobs name, and the quarantine for jobs the worker refuses.

Decoding a job lives with its encoding, in `ledgerq.shared.rq_format`: RQ would import whatever
`func_name` a job carries; the worker never does.
"""

from __future__ import annotations

import json
from typing import Any

from ledgerq.shared.keys import QUARANTINE_KEY
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.rq_format import DecodedJob


def apply_command(command: dict[str, Any]) -> None:
    """The function ledgerq jobs name, so RQ tools can show them. It refuses to run under RQ:
    an RQ worker would apply out of order and outside the fenced transaction."""
    raise RuntimeError("ledgerq jobs are applied by `ledgerq worker`, never by an RQ worker")


QUARANTINE_MAX = 10_000


def quarantine(redis: RedisClient, partition: int, jobs: list[tuple[DecodedJob, str]]) -> None:
    """Keep a bounded record of refused jobs for operators (`LRANGE ledgerq:quarantine 0 -1`)."""
    with redis.pipeline(transaction=False) as pipe:
        for job, reason in jobs:
            pipe.lpush(
                QUARANTINE_KEY,
                json.dumps(
                    {
                        "job_id": job.job_id,
                        "partition": partition,
                        "reason": reason,
                        "names": job.named_command_id or job.command_id,
                    }
                ),
            )
        pipe.ltrim(QUARANTINE_KEY, 0, QUARANTINE_MAX - 1)
        pipe.execute()
