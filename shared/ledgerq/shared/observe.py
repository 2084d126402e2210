"""Reading the system's state for people: partitions, queue depth, durability. Used by API and CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError
from sqlalchemy import Engine, func, select

from ledgerq.shared.keys import JOB_KEY_PREFIX, Keys
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.schema import accounts, commands


@dataclass(frozen=True, slots=True)
class PartitionState:
    partition: int
    owner: str | None
    queued: int
    inflight: int
    oldest_age_s: float | None


def partition_states(redis: RedisClient, keys: Keys, partitions: int) -> list[PartitionState]:
    with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.get(keys.lease_key(p))
            pipe.llen(keys.queue_key(p))
            pipe.llen(keys.inflight_key(p))
            pipe.lindex(keys.inflight_key(p), 0)
            pipe.lindex(keys.queue_key(p), 0)
        raw = pipe.execute()
    heads = [raw[5 * p + 3] or raw[5 * p + 4] for p in range(partitions)]  # oldest unfinished job, if any
    with redis.pipeline(transaction=False) as pipe:
        for head in filter(None, heads):
            pipe.hget(JOB_KEY_PREFIX.encode() + head, "enqueued_at")
        found = iter(pipe.execute())
    enqueued = [next(found) if head else None for head in heads]
    now = time.time()
    states = []
    for p in range(partitions):
        owner = raw[5 * p]
        stamp = enqueued[p]
        age = None if stamp is None else max(0.0, now - _parse_rq_time(stamp.decode()))
        states.append(
            PartitionState(
                p,
                owner.decode() if owner else None,
                int(raw[5 * p + 1]),
                int(raw[5 * p + 2]),
                age,
            )
        )
    return states


def _parse_rq_time(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _servers(redis: RedisClient) -> list[Redis]:
    """The servers that take writes: the one Redis, or each primary of a cluster."""
    if isinstance(redis, RedisCluster):
        return [redis.get_redis_connection(node) for node in redis.get_primaries()]  # type: ignore[no-untyped-call]
    return [redis]


def replicas_online(redis: RedisClient) -> int:
    """Replicas able to acknowledge a write now (on a cluster: the fewest any primary has)."""
    counts = []
    for server in _servers(redis):
        info = server.info("replication")
        counts.append(sum(1 for k, v in info.items() if k.startswith("slave") and _online(v)))
    return min(counts, default=0)


def _online(replica: object) -> bool:
    """A replica line of INFO replication (parsed by redis-py) in state online: one that can acknowledge."""
    return isinstance(replica, dict) and replica.get("state") == "online"


def redis_durability(redis: RedisClient) -> tuple[bool | None, str]:
    """Whether an acknowledged enqueue survives a Redis crash: AOF with appendfsync always, on Redis 7.0+
    (older versions may reply before the fsync); on a cluster, on every primary."""
    found = [_durability(server) for server in _servers(redis)]
    for durable, how in found:
        if not durable:
            return durable, how
    return found[0] if len(found) == 1 else (True, f"{found[0][1]} on all {len(found)} primaries")


def _durability(redis: Redis) -> tuple[bool | None, str]:
    try:
        appendonly = redis.config_get("appendonly").get("appendonly")
        fsync = redis.config_get("appendfsync").get("appendfsync")
        server = redis.info("server")
        # Valkey reports a Redis-compatible `redis_version` (7.2.4) beside its own: show its own.
        name, version = ("valkey", server["valkey_version"]) if "valkey_version" in server else ("redis", "")
        version = str(version or server.get("redis_version", "0"))
    except ResponseError as exc:  # CONFIG may be renamed or denied by ACL
        return None, f"unknown: CONFIG GET refused ({exc})"
    if appendonly != "yes" or fsync != "always":
        return False, f"appendonly={appendonly} appendfsync={fsync}: a crash can lose acknowledged commands"
    if name == "redis" and int(version.split(".")[0]) < 7:
        return False, f"redis {version} may acknowledge before the fsync; use 7.0+"
    return True, f"{name} {version}, aof appendfsync always"


def trial_balance(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(accounts.c.currency, func.coalesce(func.sum(accounts.c.balance), 0))
            .group_by(accounts.c.currency)
            .order_by(accounts.c.currency)
        ).all()
    return {currency: int(total) for currency, total in rows}


def applied_counts(engine: Engine) -> dict[tuple[int, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(commands.c.partition, commands.c.status, func.count()).group_by(
                commands.c.partition, commands.c.status
            )
        ).all()
    return {(int(p), str(s)): int(n) for p, s, n in rows}
