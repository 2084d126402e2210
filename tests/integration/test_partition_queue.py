"""The take and complete scripts keep RQ's started registry truthful for batches of any allowed size
(the Lua calls are chunked: one ZADD/ZREM of thousands of members would exceed Lua's stack)."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from ledgerq.shared.keys import STANDALONE, lease_key, queue_key, queue_name
from ledgerq.worker.partition_queue import PartitionQueue

PARTITION = 900  # beyond any partition the other tests use, in a Redis database of its own


@pytest.mark.parametrize("size", [1, 501, 10_000])
def test_taken_jobs_are_executing_until_completed(servers: Any, size: int) -> None:
    redis = Redis.from_url(servers[1].url.replace("/0", "/7"))
    redis.flushdb()
    ids = [f"lq-{n:08d}" for n in range(size)]
    for start in range(0, size, 1000):
        redis.rpush(queue_key(PARTITION), *ids[start : start + 1000])
    redis.set(lease_key(PARTITION), "me")
    queue = PartitionQueue(redis, PARTITION, keys=STANDALONE, result_ttl_s=60, failure_ttl_s=60)
    started = f"rq:wip:{queue_name(PARTITION)}"

    taken = queue.take("me", size)
    assert taken.job_ids == ids
    assert redis.zcard(started) == size and redis.zscore(started, f"{ids[-1]}:ledgerq") == float("inf")

    queue.complete("me", [(i, "finished") for i in ids], size)
    assert redis.zcard(started) == 0 and redis.llen(f"ledgerq:inflight:{PARTITION}") == 0
