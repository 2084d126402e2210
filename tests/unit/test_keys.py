"""Key layouts: RQ's own names on one Redis; on a cluster, every key of a partition in one slot, and
no script that builds a key name itself (every key a script touches is passed in KEYS)."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from ledgerq.shared import rq_format
from ledgerq.shared.keys import CLUSTER, STANDALONE, Keys
from ledgerq.shared.redis_client import key_layout
from ledgerq.worker import lease, membership, partition_queue

SCRIPTS = {
    "enqueue": rq_format._ENQUEUE,
    "take": partition_queue._TAKE,
    "read": partition_queue._READ,
    "complete": partition_queue._COMPLETE,
    "renew": lease._RENEW,
    "release": lease._RELEASE,
    "take over": lease._TAKE_OVER,
    "beat": membership._BEAT,
}


def partition_keys(keys: Keys, partition: int) -> list[str]:
    return [
        keys.queue_key(partition),
        keys.inflight_key(partition),
        keys.lease_key(partition),
        keys.started_registry_key(partition),
        keys.finished_registry_key(partition),
        keys.failed_registry_key(partition),
        keys.replication_mark_key(partition),
        keys.job_key("shop1:order-7.pay", partition),
        keys.job_key("c-1", partition),
    ]


def test_one_redis_keeps_rqs_own_names() -> None:
    assert partition_keys(STANDALONE, 3)[:7] == [
        "rq:queue:ledgerq-p3",
        "ledgerq:inflight:3",
        "ledgerq:lease:3",
        "rq:wip:ledgerq-p3",
        "rq:finished:ledgerq-p3",
        "rq:failed:ledgerq-p3",
        "ledgerq:replication-mark",
    ]
    assert re.fullmatch(r"lq-[0-9a-f]{40}", STANDALONE.job_id("c-1", 3))  # RQ's job id charset
    assert STANDALONE.job_id("c-1", 3) == STANDALONE.job_id("c-1", 0)  # the partition is not in it


@pytest.mark.parametrize("partition", [0, 1, 3, 17, 1023])
def test_on_a_cluster_every_key_of_a_partition_is_in_its_one_slot(partition: int) -> None:
    slots = {key_slot(k.encode()) for k in partition_keys(CLUSTER, partition)}
    assert slots == {key_slot(f"p{partition}".encode())}, partition_keys(CLUSTER, partition)


def test_partitions_spread_over_the_slots() -> None:
    slots = {key_slot(CLUSTER.queue_key(p).encode()) for p in range(1024)}
    assert len(slots) == 1024  # no two partitions forced onto one node by their tags


def test_the_url_chooses_the_layout() -> None:
    assert key_layout("redis+cluster://10.0.0.1:7000,10.0.0.2:7000") is CLUSTER
    assert key_layout("redis://127.0.0.1:6379/0") is STANDALONE
    assert key_layout("redis+sentinel://10.0.0.1:26379/ledgerq") is STANDALONE


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_no_script_builds_a_key_name(name: str) -> None:
    """A cluster routes a script by its KEYS, and Redis' docs require every key a script touches to be
    among them: a name built inside the script (a prefix joined to an id) may live on another node."""
    script = SCRIPTS[name]
    assert not re.search(r"['\"](rq|ledgerq):", script), f"{name} names a key itself"
    assert ".. id" not in script and "..id" not in script, f"{name} builds a key from an id"
    for call in re.finditer(r"redis\.call\('(\w+)'(?:,\s*([^,)]+))?", script):
        command, first = call.group(1), call.group(2)
        if command == "TIME":
            continue
        assert first is not None and (first.startswith("KEYS[") or first in ("key", "registry", "unpack(gone")), (
            f"{name}: {command} on {first}, not a declared key"
        )
