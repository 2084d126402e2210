"""A partition's queue as its owner sees it: take a batch in order, complete it, fenced by the lease.

Jobs move atomically from RQ's queue list to the partition's in-flight list
(a batch at a time, in a Lua script). A new owner finds a dead owner's in-flight jobs at
the head of that list and re-applies them first, so order survives a crash
without RQ's abandoned-job sweep (which would fail or re-queue at the back).
Every script checks the lease token, so an owner that lost its lease cannot
take or trim anything. A taken job is also listed in RQ's StartedJobRegistry
with an infinite expiry, so `rq info` shows it executing while RQ's
maintenance never sweeps it as abandoned. A finished job's hash is deleted when its outcome is
recorded (Postgres keeps every outcome), so Redis holds what is queued or in flight, not history.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from redis.exceptions import ResponseError

from ledgerq.shared.errors import Fenced
from ledgerq.shared.keys import JOB_KEY_PREFIX, QUEUES_KEY, Keys
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.rq_format import rq_now

# Every script declares every key it touches, and on a cluster they all share the partition's slot,
# so each runs on the partition's node, atomically. Job hashes cannot be declared before their ids
# are read from the lists, so taking a batch is two scripts, each fenced by the lease: the first
# moves ids in flight, the second marks those jobs started and reads their data. An owner that dies
# between them leaves the ids at the head of the in-flight list, where the next take finds them.

# KEYS: lease, in-flight list, queue, started registry. ARGV: token, limit.
_TAKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEDGERQ_FENCED') end
local limit = tonumber(ARGV[2])
local ids = redis.call('LRANGE', KEYS[2], 0, limit - 1)
local recovered = #ids
if #ids < limit then
  -- The next jobs move in flight in three calls for the whole batch, not one LMOVE each.
  local more = redis.call('LRANGE', KEYS[3], 0, limit - #ids - 1)
  if #more > 0 then
    redis.call('LTRIM', KEYS[3], #more, -1)
    for from = 1, #more, 500 do redis.call('RPUSH', KEYS[2], unpack(more, from, math.min(from + 499, #more))) end
    for _, id in ipairs(more) do ids[#ids + 1] = id end
  end
end
-- RQ's StartedJobRegistry entry (job:execution), never expiring, so `rq info` counts it as executing
-- and RQ's cleanup never calls it abandoned; removed on completion.
local wip = {}
for i, id in ipairs(ids) do
  wip[2 * i - 1] = 'inf'
  wip[2 * i] = id .. ':ledgerq'
end
for from = 1, #wip, 500 do redis.call('ZADD', KEYS[4], unpack(wip, from, math.min(from + 499, #wip))) end
return {recovered, ids}
"""

# KEYS: lease, then the taken jobs' hashes. ARGV: token, started_at. A job still `queued` is marked
# started (whether this take, a blocking wait or a dead owner's take moved it). Returns each job's
# `data` (false: the hash is missing).
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEDGERQ_FENCED') end
local data = {}
for k = 2, #KEYS do
  local job = redis.call('HMGET', KEYS[k], 'status', 'data')
  if job[1] == 'queued' then
    redis.call('HSET', KEYS[k], 'status', 'started', 'started_at', ARGV[2])
  end
  data[k - 1] = job[2]
end
return data
"""

# A finished job's hash is deleted (one UNLINK for the batch) unless a result TTL is set: Postgres
# holds every outcome, so Redis holds only what is queued or in flight. A failed job's hash stays
# for `failure_ttl` in RQ's FailedJobRegistry, for operators to look at.
# KEYS: lease, in-flight list, finished registry, failed registry, started registry, then each done
# job's hash. ARGV: token, how many in-flight ids to trim, ended_at, result ttl, failure ttl, then
# per done job: its id and status; then the ids of jobs whose hash cannot be named (`strays`), only
# taken off the started registry.
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEDGERQ_FENCED') end
local n = tonumber(ARGV[2])
local now_s = tonumber(redis.call('TIME')[1])  -- Redis' clock, not a worker's that may be off
local ended = ARGV[3]
local result_ttl = tonumber(ARGV[4])
local failure_ttl = tonumber(ARGV[5])
local wip, gone = {}, {}
for i = 6 + 2 * (#KEYS - 5), #ARGV do wip[#wip + 1] = ARGV[i] .. ':ledgerq' end
for k = 6, #KEYS do
  local i = 6 + 2 * (k - 6)
  local id, status, key = ARGV[i], ARGV[i + 1], KEYS[k]
  wip[#wip + 1] = id .. ':ledgerq'
  if status == 'failed' or result_ttl > 0 then
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'status', status, 'ended_at', ended)
      local ttl = status == 'failed' and failure_ttl or result_ttl
      redis.call('EXPIRE', key, ttl)
      local registry = status == 'failed' and KEYS[4] or KEYS[3]
      redis.call('ZADD', registry, now_s + ttl, id)
    end
  else
    gone[#gone + 1] = key
  end
end
for from = 1, #gone, 500 do redis.call('UNLINK', unpack(gone, from, math.min(from + 499, #gone))) end
for from = 1, #wip, 500 do
  redis.call('ZREM', KEYS[5], unpack(wip, from, math.min(from + 499, #wip)))
end
redis.call('LTRIM', KEYS[2], n, -1)
return n
"""


@dataclass(frozen=True, slots=True)
class Taken:
    job_ids: list[str]
    recovered: int  # how many came from a previous owner's (or our own) in-flight list
    data: list[bytes | None]  # each job's RQ `data` field, read in the same script (None: hash missing)


class PartitionQueue:
    def __init__(
        self, redis: RedisClient, partition: int, *, keys: Keys, result_ttl_s: int, failure_ttl_s: int
    ) -> None:
        self.redis = redis
        self.partition = partition
        self.result_ttl_s = result_ttl_s
        self.failure_ttl_s = failure_ttl_s
        self._take = redis.register_script(_TAKE)
        self._read = redis.register_script(_READ)
        self._complete = redis.register_script(_COMPLETE)
        # On a cluster, a job id outside the partition's slot (a forged or foreign id pushed on its
        # queue) cannot be named in a script with the partition's keys: it is taken as a job without
        # a hash (refused and quarantined) and only its list and registry entries are dropped.
        self._in_slot = partial(keys.in_partition, partition=partition)
        self.lease_key = keys.lease_key(partition)
        self.inflight_key = keys.inflight_key(partition)
        self.queue_key = keys.queue_key(partition)
        started = keys.started_registry_key(partition)
        self._keys_take = [self.lease_key, self.inflight_key, self.queue_key, started]
        self._keys_complete = [
            self.lease_key,
            self.inflight_key,
            keys.finished_registry_key(partition),
            keys.failed_registry_key(partition),
            started,
        ]

    def register(self) -> None:
        """List the queue in `rq:queues` (RQ's `Queue.all()`), so `rq info` and dashboards show every
        partition, not only those that have had a job."""
        self.redis.sadd(QUEUES_KEY, self.queue_key)

    def take(self, token: str, limit: int) -> Taken:
        try:
            recovered, raw = self._take(keys=self._keys_take, args=[token, limit])
            ids = [_text(i) for i in raw]
            readable = [i for i in ids if self._in_slot(i)]
            job_keys = [JOB_KEY_PREFIX + i for i in readable]
            found = self._read(keys=[self.lease_key, *job_keys], args=[token, rq_now()]) if readable else []
        except ResponseError as exc:
            raise _fenced_or(exc, self.partition) from exc
        data = dict(zip(readable, found, strict=True))
        return Taken(ids, int(recovered), [data.get(i) or None for i in ids])

    def wait(self, timeout_s: float) -> None:
        """Block until a job arrives (moving it in flight, where the next `take` finds it first)."""
        # Redis 6+ takes fractional seconds; redis-py's stub says int.
        self.redis.blmove(self.queue_key, self.inflight_key, timeout_s, "LEFT", "RIGHT")  # type: ignore[arg-type]

    def complete(self, token: str, done: list[tuple[str, str]], taken: int) -> None:
        """Mark jobs finished/failed in RQ's terms and drop the first `taken` in-flight ids."""
        args: list[str | int | float] = [token, taken, rq_now(), self.result_ttl_s, self.failure_ttl_s]
        named = [(job_id, status) for job_id, status in done if self._in_slot(job_id)]
        for job_id, status in named:
            args += [job_id, status]
        args += [job_id for job_id, _ in done if not self._in_slot(job_id)]
        keys = [*self._keys_complete, *(JOB_KEY_PREFIX + job_id for job_id, _ in named)]
        try:
            self._complete(keys=keys, args=args)
        except ResponseError as exc:
            raise _fenced_or(exc, self.partition) from exc


def _fenced_or(exc: ResponseError, partition: int) -> Exception:
    if "LEDGERQ_FENCED" in str(exc):
        return Fenced(f"lost the lease of partition {partition}")
    return exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
