"""Redis key names, queue names and job ids: one place, so API and worker agree.

Two layouts of the same keys. On one Redis (plain or behind Sentinel) they are RQ's own names
(`rq:queue:ledgerq-p3`, `rq:job:lq-…`), so RQ's tools and Job API read them. On a Redis Cluster
every key of a partition carries the partition's hash tag (`rq:queue:ledgerq-{p3}`,
`rq:job:{p3}lq-…`, `ledgerq:lease:{p3}`), so a partition lives in one slot and each of its Lua
scripts runs on one node, atomically. RQ refuses `{` in a job id, so RQ's Job API cannot read a
cluster's jobs (and RQ's client is not cluster-aware anyway); the hashes keep RQ's fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
WORKERS_KEY = "ledgerq:workers"
"""Sorted set of live `ledgerq worker` processes in claim mode, scored by when their heartbeat lapses (ms)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one layout: `tagged` for a Redis Cluster (see the module's docstring)."""

    tagged: bool = False

    def _part(self, partition: int, plain: str) -> str:
        return f"{{p{partition}}}" if self.tagged else plain

    def queue_name(self, partition: int) -> str:
        return f"ledgerq-{self._part(partition, f'p{partition}')}"

    def queue_key(self, partition: int) -> str:
        """RQ's list of job ids for the partition's queue."""
        return f"{QUEUE_KEY_PREFIX}{self.queue_name(partition)}"

    def started_registry_key(self, partition: int) -> str:
        """RQ's StartedJobRegistry of the partition's queue (jobs in flight, as `rq info` counts them)."""
        return f"rq:wip:{self.queue_name(partition)}"

    def finished_registry_key(self, partition: int) -> str:
        return f"rq:finished:{self.queue_name(partition)}"

    def failed_registry_key(self, partition: int) -> str:
        return f"rq:failed:{self.queue_name(partition)}"

    def inflight_key(self, partition: int) -> str:
        """Jobs taken by the owner and not yet completed, in queue order."""
        return f"ledgerq:inflight:{self._part(partition, str(partition))}"

    def lease_key(self, partition: int) -> str:
        return f"ledgerq:lease:{self._part(partition, str(partition))}"

    def replication_mark_key(self, partition: int) -> str:
        """Written before each WAIT, on the node that holds the partition (`rq_format`)."""
        return "ledgerq:replication-mark" + self._part(partition, "")

    def job_id(self, command_id: str, partition: int) -> str:
        """RQ job ids allow only [A-Za-z0-9_-]; command ids also allow '.' and ':'. Tagged, the id
        carries its partition's slot (which RQ's own id check refuses)."""
        return self._part(partition, "") + "lq-" + hashlib.sha256(command_id.encode()).hexdigest()[:40]

    def job_key(self, command_id: str, partition: int) -> str:
        return f"{JOB_KEY_PREFIX}{self.job_id(command_id, partition)}"

    def in_partition(self, job_id: str, partition: int) -> bool:
        """Whether a job id found on the partition's lists names a hash in the partition's slot (on one
        Redis, every id does; on a cluster, only ids with the partition's tag)."""
        return not self.tagged or job_id.startswith(self._part(partition, ""))


STANDALONE = Keys()
"""RQ's own names, for one Redis (plain or behind Sentinel)."""
CLUSTER = Keys(tagged=True)
"""Every partition in its own hash slot, for Redis Cluster."""


# The standalone layout's names, for tools and tests written against one Redis (RQ's dashboards,
# `rq info`). The service itself takes its layout from the settings (`Settings.redis_keys`).
def queue_name(partition: int) -> str:
    return STANDALONE.queue_name(partition)


def queue_key(partition: int) -> str:
    return STANDALONE.queue_key(partition)


def inflight_key(partition: int) -> str:
    return STANDALONE.inflight_key(partition)


def lease_key(partition: int) -> str:
    return STANDALONE.lease_key(partition)


def job_id(command_id: str) -> str:
    return STANDALONE.job_id(command_id, 0)


def job_key(command_id: str) -> str:
    return STANDALONE.job_key(command_id, 0)
