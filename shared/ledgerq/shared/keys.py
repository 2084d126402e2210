"""Redis key names, queue names and job ids: one place, so API and worker agree."""

from __future__ import annotations

import hashlib

JOB_FUNC = "ledgerq.worker.jobs.apply_command"
"""The only function a ledgerq job names; the worker never imports anything else from a job."""

JOB_FUNCS_ACCEPTED = frozenset({JOB_FUNC, "worker.jobs.apply_command"})
"""What a worker accepts: the name, and the one jobs queued before the `ledgerq` namespace carried."""


def queue_name(partition: int) -> str:
    return f"ledgerq-p{partition}"


def queue_key(partition: int) -> str:
    """RQ's list of job ids for the partition's queue."""
    return f"rq:queue:{queue_name(partition)}"


def inflight_key(partition: int) -> str:
    """Jobs taken by the owner and not yet completed, in queue order."""
    return f"ledgerq:inflight:{partition}"


def lease_key(partition: int) -> str:
    return f"ledgerq:lease:{partition}"


def job_id(command_id: str) -> str:
    """RQ job ids allow only [A-Za-z0-9_-]; command ids also allow '.' and ':'."""
    return "lq-" + hashlib.sha256(command_id.encode()).hexdigest()[:40]


def job_key(command_id: str) -> str:
    return f"rq:job:{job_id(command_id)}"


WORKERS_KEY = "ledgerq:workers"
"""Sorted set of live `ledgerq worker` processes in claim mode, scored by when their heartbeat lapses (ms)."""
