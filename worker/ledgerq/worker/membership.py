"""Claim mode: live workers share the partitions out among themselves, by heartbeat and lease.

Every worker started without `--partition` beats into one sorted set (scored by
Redis's clock, so hosts need not agree on the time) and reads back the live
members. Sorted by token, member i wants the partitions p with p % N == i: each
worker computes the same answer from the same set, so N processes on any number
of hosts cover P partitions evenly. When a worker dies its heartbeat lapses (at
once if it was a process on this host), the others recompute, and its
partitions go to whoever now wants them. The lease and the fencing epoch stay
the safety net: two workers that briefly disagree only wait on each other.
"""

from __future__ import annotations

import contextlib

from ledgerq.shared.keys import WORKERS_KEY
from ledgerq.shared.redis_client import RedisClient
from ledgerq.worker.lease import dead_here

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class Membership:
    def __init__(self, redis: RedisClient, token: str, ttl_ms: int) -> None:
        self.redis = redis
        self.token = token
        self.ttl_ms = ttl_ms

    def beat(self) -> list[str]:
        """Say we are alive for another ttl; return the live members, sorted (us included)."""
        raw = self.redis.eval(_BEAT, 1, WORKERS_KEY, self.token, self.ttl_ms)
        members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
        dead = [m for m in members if m != self.token and dead_here(m)]
        if dead:  # killed on this host: no need to wait for the heartbeat to lapse
            self.redis.zrem(WORKERS_KEY, *dead)
            members = [m for m in members if m not in dead]
        return members

    def leave(self) -> None:
        with contextlib.suppress(Exception):  # Redis away: the heartbeat lapses by itself
            self.redis.zrem(WORKERS_KEY, self.token)


def wanted(token: str, members: list[str], partitions: int) -> set[int]:
    """The partitions this member should own, given every live member (sorted)."""
    if token not in members:
        return set()
    index, count = members.index(token), len(members)
    return {p for p in range(partitions) if p % count == index}
