"""Putting a claimed command on its partition's RQ queue, exactly once.

RQ's unique enqueue runs one Lua script that creates the job hash and pushes
its id only if the hash does not exist. The hash lives until the command is
final (then `result_ttl`), so for a command still `queued` in Postgres, "no
hash" means "never enqueued" (or lost by a Redis without durable AOF), and
enqueueing again is safe. The API does it on accept and on a replay; a worker
does it for its partition's orphans when it takes the partition.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rq import Queue
from rq.exceptions import DuplicateJobError

from shared.keys import JOB_FUNC, job_id
from shared.settings import Settings
from shared.signing import sign


def enqueue_command(queue: Queue, payload: dict[str, Any], settings: Settings) -> bool:
    """Enqueue unless a job for this command exists; True if this call queued it."""
    with contextlib.suppress(DuplicateJobError):
        queue.enqueue(
            JOB_FUNC,
            kwargs={"command": payload, "signature": sign(payload, settings.signing_keys()[0])},
            job_id=job_id(payload["id"]),
            unique=True,
            result_ttl=settings.result_ttl_s,
            failure_ttl=settings.failure_ttl_s,
            description=f"{payload['type']} {payload['id']}",
        )
        return True
    return False
