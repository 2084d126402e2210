"""Redis key names, queue names and job ids: one place, so API and worker agree."""

from __future__ import annotations

import hashlib

JOB_FUNC = "ledgerq.worker.jobs.apply_command"
"""The only function a ledgerq job names; the worker never imports anything else from a job."""

JOB_FUNCS_ACCEPTED = frozenset({JOB_FUNC, "worker.jobs.apply_command"})
"""What a worker accepts: the name, and the one jobs queued before the `ledgerq` namespace carried."""


JOB_KEY_PREFIX = "rq:job:"
"""RQ's job hashes: `rq:job:<job id>`."""
QUEUE_KEY_PREFIX = "rq:queue:"
"""RQ's queue lists: `rq:queue:<queue name>`."""
QUEUES_KEY = "rq:queues"
"""RQ's set of queue keys (`Queue.all()`), so `rq info` lists every partition."""
QUARANTINE_KEY = "ledgerq:quarantine"
"""A bounded list of jobs the worker refused (bad signature, not a ledgerq job), for operators."""

LUA_KEY_PREFIXES = f"local JOB, QUEUE, QUEUES = '{JOB_KEY_PREFIX}', '{QUEUE_KEY_PREFIX}', '{QUEUES_KEY}'\n"
"""The same names for the Lua scripts that build keys from job ids: put at the head of each script."""


def queue_name(partition: int) -> str:
    return f"ledgerq-p{partition}"


def queue_key(partition: int) -> str:
    """RQ's list of job ids for the partition's queue."""
    return f"{QUEUE_KEY_PREFIX}{queue_name(partition)}"


def started_registry_key(partition: int) -> str:
    """RQ's StartedJobRegistry of the partition's queue (jobs in flight, as `rq info` counts them)."""
    return f"rq:wip:{queue_name(partition)}"


def finished_registry_key(partition: int) -> str:
    return f"rq:finished:{queue_name(partition)}"


def failed_registry_key(partition: int) -> str:
    return f"rq:failed:{queue_name(partition)}"


def inflight_key(partition: int) -> str:
    """Jobs taken by the owner and not yet completed, in queue order."""
    return f"ledgerq:inflight:{partition}"


def lease_key(partition: int) -> str:
    return f"ledgerq:lease:{partition}"


def job_id(command_id: str) -> str:
    """RQ job ids allow only [A-Za-z0-9_-]; command ids also allow '.' and ':'."""
    return "lq-" + hashlib.sha256(command_id.encode()).hexdigest()[:40]


def job_key(command_id: str) -> str:
    return f"{JOB_KEY_PREFIX}{job_id(command_id)}"


WORKERS_KEY = "ledgerq:workers"
"""Sorted set of live `ledgerq worker` processes in claim mode, scored by when their heartbeat lapses (ms)."""
