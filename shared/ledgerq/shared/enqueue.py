"""Putting claimed commands on their partitions' RQ queues, exactly once, many per round trip.

Each job is an RQ job in RQ's own format (the hash `rq:job:<id>` with
JSON data naming `ledgerq.worker.jobs.apply_command`, status
`queued`, pushed on `rq:queue:ledgerq-p<N>`), so `rq info` and RQ's Job API
read it. Instead of RQ's one-Lua-call-per-job unique enqueue we run one Lua
script for a whole submit round with the same rule: a job whose hash exists
is left alone. The hash lives until the command is final (then
`result_ttl`), so for a command still `queued` in Postgres "no hash" means
"never enqueued" (or lost by a Redis without durable AOF), and enqueueing
again is safe. The API does it on accept and on a replay; a worker does it
for its partition's orphans when it takes the partition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from redis import Redis

from ledgerq.shared.keys import JOB_FUNC, job_id, queue_name
from ledgerq.shared.settings import Settings
from ledgerq.shared.signing import sign

# RQ's default job timeout; the field is informative here (ledgerq jobs never run under RQ).
RQ_TIMEOUT_S = 180
FIELDS = (
    "data",
    "origin",
    "description",
    "status",
    "created_at",
    "enqueued_at",
    "result_ttl",
    "failure_ttl",
    "timeout",
)

# ARGV: len(FIELDS), the field names, then per job: job id, queue name, one value per field.
# Pushes keep argument order within each queue; queues are registered in rq:queues for `rq info`.
_ENQUEUE = """
local nf = tonumber(ARGV[1])
local names = {}
for f = 1, nf do names[f] = ARGV[1 + f] end
local pushes, queues, pushed = {}, {}, {}
local i = 2 + nf
while i <= #ARGV do
  local id, queue = ARGV[i], ARGV[i + 1]
  local key = 'rq:job:' .. id
  if redis.call('EXISTS', key) == 0 then
    local args = {}
    for f = 1, nf do
      args[2 * f - 1] = names[f]
      args[2 * f] = ARGV[i + 1 + f]
    end
    redis.call('HSET', key, unpack(args))
    if not pushes[queue] then pushes[queue] = {}; queues[#queues + 1] = queue end
    local list = pushes[queue]
    list[#list + 1] = id
    pushed[#pushed + 1] = id
  end
  i = i + 2 + nf
end
for _, queue in ipairs(queues) do
  local ids = pushes[queue]
  for from = 1, #ids, 500 do
    redis.call('RPUSH', 'rq:queue:' .. queue, unpack(ids, from, math.min(from + 499, #ids)))
  end
  redis.call('SADD', 'rq:queues', 'rq:queue:' .. queue)
end
return pushed
"""


class Claim(NamedTuple):
    """A claimed command to enqueue; the request id rides along (unsigned) for the worker's log lines."""

    partition: int
    payload: dict[str, Any]
    request_id: str | None = None


def job_fields(claim: Claim, settings: Settings, now: str) -> list[str | bytes | int]:
    """The RQ job hash for one command, values in `FIELDS` order."""
    payload = claim.payload
    kwargs = {"command": payload, "signature": sign(payload, settings.signing_keys()[0])}
    if claim.request_id:
        kwargs["request_id"] = claim.request_id
    # Not compressed: zlib's set-up alone cost ~10 µs per job on these small payloads; RQ reads
    # uncompressed job data too (`Job.restore` falls back to the raw bytes), and so does the worker.
    data = json.dumps([JOB_FUNC, None, [], kwargs]).encode()
    return [
        data,
        queue_name(claim.partition),
        f"{payload['type']} {payload['id']}",
        "queued",
        now,
        now,
        settings.result_ttl_s,
        settings.failure_ttl_s,
        RQ_TIMEOUT_S,
    ]


def enqueue_commands(redis: Redis, claims: Sequence[Claim], settings: Settings) -> set[str]:
    """Enqueue each (partition, payload) unless its job exists; one round trip. Returns the job ids queued."""
    if not claims:
        return set()
    now = rq_now()
    args: list[str | bytes | int] = [len(FIELDS), *FIELDS]
    for claim in claims:
        args += [job_id(claim.payload["id"]), queue_name(claim.partition), *job_fields(claim, settings, now)]
    pushed = redis.register_script(_ENQUEUE)(args=args)  # EVALSHA, loading the script on first use
    return {p.decode() if isinstance(p, bytes) else p for p in pushed}


def rq_now() -> str:
    """RQ's own timestamp format (rq.utils.utcformat)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
