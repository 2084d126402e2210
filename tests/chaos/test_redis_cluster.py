"""Redis Cluster: 3 primaries with a replica each; a primary SIGKILLed under load, its replica promoted.

Every key of a partition carries the partition's hash tag, so each partition lives in one slot and
its scripts run on one node; the API's enqueue goes to each partition's node and WAITs for that
node's replica. The rules of a Sentinel failover hold: nothing acknowledged is lost, doubled or
reordered, and the epoch keeps a stale owner out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ledgerq.ops.embedded import ClusterServers, RedisServer
from ledgerq.shared.redis_client import connect
from tests.chaos.cluster import Cluster
from tests.chaos.test_faults import all_workers, http_for, wait_until
from tests.chaos.workload import line, run

FAILOVER_S_MAX = 60


@pytest.fixture
def on_cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, redis_cluster=True)
    running.start_api()
    with http_for(running) as http:
        ready = http.get("/readyz").json()
    assert ready["status"] == "ready", ready
    assert ready["checks"]["redis"]["replicas"] == {"online": 1, "required": 1, "ok": True}, ready
    yield running
    running.close()


def _role(node: RedisServer) -> tuple[str, int]:
    with Redis(port=node.port, socket_timeout=2) as client:
        info = client.info("replication")
    return str(info["role"]), int(info.get("connected_slaves", 0))


def fail_over(servers: ClusterServers, partition_key: str) -> tuple[float, RedisServer]:
    """SIGKILL the primary holding `partition_key`'s slot; once its replica serves the slot, restart
    the old primary (it rejoins as the new one's replica, as under a supervisor). Returns the seconds
    from the kill to the promotion, and the promoted node."""
    with connect(servers.url, socket_timeout=2) as redis:
        port = redis.get_node_from_key(partition_key).port
    old = next(n for n in servers.nodes if n.port == port)
    killed = time.monotonic()
    old.kill()

    def promoted() -> RedisServer | None:
        serving = [n for n in servers.primaries() if n is not old]
        return next((n for n in serving if _slot_of(n, partition_key)), None)

    wait_until(lambda: promoted() is not None, timeout_s=FAILOVER_S_MAX)
    took = time.monotonic() - killed
    new = promoted()
    assert new is not None
    old.start()
    wait_until(lambda: _role(old)[0] == "slave" and _role(new)[1] == 1, timeout_s=FAILOVER_S_MAX)
    return took, new


def _slot_of(node: RedisServer, key: str) -> bool:
    """Whether `node` serves the slot of `key` (asked of the node itself)."""
    with Redis(port=node.port, socket_timeout=2) as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for low, high, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if low <= slot <= high:
                return int(primary[1]) == node.port
    return False


def test_a_primary_sigkilled_under_load_its_replica_promoted(on_cluster: Cluster) -> None:
    """Twice: the primary of partition 0's slot (then of partition 2's) is killed mid-load and its
    replica promoted by the cluster. Clients see 503s (CLUSTERDOWN while the cluster votes, then
    too few replicas until the old primary has rejoined) and retry with the same id."""
    assert on_cluster.redis_cluster is not None
    keys = on_cluster.settings.redis_keys
    all_workers(on_cluster)
    failovers: list[float] = []

    def chaos(stop: threading.Event) -> None:
        for partition in (0, 2):
            if stop.wait(2.5):
                return
            assert on_cluster.redis_cluster is not None
            took, _ = fail_over(on_cluster.redis_cluster, keys.queue_key(partition))
            failovers.append(took)

    history, report = run(
        on_cluster, commands_min=1000, commands_max=8000, chaos=chaos, enough=lambda: len(failovers) == 2
    )
    print(
        line(
            "redis cluster failover (3 primaries + 3 replicas, WAIT 1)",
            history,
            report,
            on_cluster,
            failovers=len(failovers),
            promoted_s=" ".join(f"{s:.1f}" for s in failovers),
        )
    )
    assert len(failovers) == 2 and history.unavailable["redis_unavailable"] > 0
    assert set(history.unavailable) <= {"redis_unavailable", "no_answer"}, history.unavailable  # never a 500
    assert report.ok(), report.problems[:5]
