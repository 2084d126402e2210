"""A partition's queue as its owner sees it: take a batch in order, complete it, fenced by the lease.

Jobs move atomically from RQ's queue list to the partition's in-flight list
(LMOVE in a Lua script). A new owner finds a dead owner's in-flight jobs at
the head of that list and re-applies them first, so order survives a crash
without RQ's abandoned-job sweep (which would fail or re-queue at the back).
Both scripts check the lease token, so an owner that lost its lease cannot
take or trim anything. A taken job is also listed in RQ's StartedJobRegistry
with an infinite expiry, so `rq info` shows it executing while RQ's
maintenance never sweeps it as abandoned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import ResponseError

from ledgerq.shared.errors import Fenced
from ledgerq.shared.keys import (
    LUA_KEY_PREFIXES,
    QUEUES_KEY,
    failed_registry_key,
    finished_registry_key,
    inflight_key,
    lease_key,
    queue_key,
    started_registry_key,
)
from ledgerq.shared.rq_format import rq_now

_TAKE = (
    LUA_KEY_PREFIXES
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEDGERQ_FENCED') end
local limit = tonumber(ARGV[2])
local ids = redis.call('LRANGE', KEYS[2], 0, limit - 1)
local recovered = #ids
while #ids < limit do
  local id = redis.call('LMOVE', KEYS[3], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  ids[#ids + 1] = id
  redis.call('HSET', JOB .. id, 'status', 'started', 'started_at', ARGV[3])
end
local data, wip = {}, {}
for i, id in ipairs(ids) do
  data[i] = redis.call('HGET', JOB .. id, 'data')
  wip[2 * i - 1] = 'inf'
  wip[2 * i] = id .. ':ledgerq'
end
-- RQ's StartedJobRegistry entry (job:execution), never expiring, so `rq info` counts it as executing
-- and RQ's cleanup never calls it abandoned; removed on completion.
for from = 1, #wip, 500 do redis.call('ZADD', KEYS[4], unpack(wip, from, math.min(from + 499, #wip))) end
return {recovered, ids, data}
"""
)

_COMPLETE = (
    LUA_KEY_PREFIXES
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEDGERQ_FENCED') end
local n = tonumber(ARGV[2])
local now_s = tonumber(ARGV[3])
local ended = ARGV[4]
local result_ttl = tonumber(ARGV[5])
local failure_ttl = tonumber(ARGV[6])
local wip = {}
for i = 7, #ARGV, 2 do
  local id, status = ARGV[i], ARGV[i + 1]
  local key = JOB .. id
  wip[#wip + 1] = id .. ':ledgerq'
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'status', status, 'ended_at', ended)
    if status == 'failed' then
      redis.call('EXPIRE', key, failure_ttl)
      redis.call('ZADD', KEYS[4], now_s + failure_ttl, id)
    else
      redis.call('EXPIRE', key, result_ttl)
      redis.call('ZADD', KEYS[3], now_s + result_ttl, id)
    end
  end
end
for from = 1, #wip, 500 do
  redis.call('ZREM', KEYS[5], unpack(wip, from, math.min(from + 499, #wip)))
end
redis.call('LTRIM', KEYS[2], n, -1)
return n
"""
)


@dataclass(frozen=True, slots=True)
class Taken:
    job_ids: list[str]
    recovered: int  # how many came from a previous owner's (or our own) in-flight list
    data: list[bytes | None]  # each job's RQ `data` field, read in the same script (None: hash missing)


class PartitionQueue:
    def __init__(self, redis: Redis, partition: int, *, result_ttl_s: int, failure_ttl_s: int) -> None:
        self.redis = redis
        self.partition = partition
        self.result_ttl_s = result_ttl_s
        self.failure_ttl_s = failure_ttl_s
        self._take = redis.register_script(_TAKE)
        self._complete = redis.register_script(_COMPLETE)
        started = started_registry_key(partition)
        self._keys_take = [lease_key(partition), inflight_key(partition), queue_key(partition), started]
        self._keys_complete = [
            lease_key(partition),
            inflight_key(partition),
            finished_registry_key(partition),
            failed_registry_key(partition),
            started,
        ]

    def register(self) -> None:
        """List the queue in `rq:queues` (RQ's `Queue.all()`), so `rq info` and dashboards show every
        partition, not only those that have had a job."""
        self.redis.sadd(QUEUES_KEY, self._keys_take[2])

    def take(self, token: str, limit: int) -> Taken:
        try:
            recovered, raw, data = self._take(keys=self._keys_take, args=[token, limit, _iso_now()])
        except ResponseError as exc:
            raise _fenced_or(exc, self.partition) from exc
        return Taken([_text(i) for i in raw], int(recovered), data)

    def wait(self, timeout_s: float) -> None:
        """Block until a job arrives (moving it in flight, where the next `take` finds it first)."""
        # Redis 6+ takes fractional seconds; redis-py's stub says int.
        self.redis.blmove(self._keys_take[2], self._keys_take[1], timeout_s, "LEFT", "RIGHT")  # type: ignore[arg-type]

    def complete(self, token: str, done: list[tuple[str, str]], taken: int) -> None:
        """Mark jobs finished/failed in RQ's terms and drop the first `taken` in-flight ids."""
        args: list[str | int | float] = [
            token,
            taken,
            int(time.time()),
            _iso_now(),
            self.result_ttl_s,
            self.failure_ttl_s,
        ]
        for job_id, status in done:
            args += [job_id, status]
        try:
            self._complete(keys=self._keys_complete, args=args)
        except ResponseError as exc:
            raise _fenced_or(exc, self.partition) from exc


def _fenced_or(exc: ResponseError, partition: int) -> Exception:
    if "LEDGERQ_FENCED" in str(exc):
        return Fenced(f"lost the lease of partition {partition}")
    return exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _iso_now() -> str:
    return rq_now()
