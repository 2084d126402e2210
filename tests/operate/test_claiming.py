"""`ledgerq worker` with no `--partition`: N processes share P partitions by lease, and a dead
worker's partitions are picked up by the others, with nothing lost, doubled or reordered."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

from redis import Redis

from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import PARTITIONS, Cluster, WorkerProcess
from tests.chaos.workload import line, run

SETTLE_S_MAX = 30


def owners(cluster: Cluster) -> dict[int, int | None]:
    """Partition -> the pid holding its lease (tokens are host:pid:random)."""
    held = {}
    redis = Redis.from_url(cluster.settings.redis_url)
    for p in range(PARTITIONS):
        token = redis.get(lease_key(p))
        held[p] = int(token.decode().split(":")[1]) if token else None
    return held


def wait_for_shares(cluster: Cluster, pids: set[int]) -> dict[int, int | None]:
    """Until every partition is held and each of `pids` holds an even share."""
    deadline = time.monotonic() + SETTLE_S_MAX
    share = PARTITIONS // len(pids)
    while time.monotonic() < deadline:
        held = owners(cluster)
        per_pid = Counter(held.values())
        if set(per_pid) == pids and all(n == share for n in per_pid.values()):
            return held
        time.sleep(0.1)
    raise AssertionError(f"partitions never shared out evenly among {pids}: {owners(cluster)}")


def pid(worker: WorkerProcess) -> int:
    assert worker.process is not None
    return worker.process.pid


def test_claim_mode_shares_partitions_and_takes_over_from_a_dead_worker(cluster: Cluster) -> None:
    first, second = cluster.add_worker([]), cluster.add_worker([])
    wait_for_shares(cluster, {pid(first), pid(second)})
    seen: list[str] = []

    def chaos(stop: threading.Event) -> None:
        time.sleep(1.0)
        second.restart = False  # a dead host: nobody restarts it
        assert second.process is not None
        second.process.send_signal(signal.SIGKILL)
        second.process.wait()
        held = wait_for_shares(cluster, {pid(first)})
        seen.append(f"after kill: {sorted(Counter(held.values()).values())}")
        third = cluster.add_worker([])
        held = wait_for_shares(cluster, {pid(first), pid(third)})
        seen.append(f"after join: {sorted(Counter(held.values()).values())}")

    history, report = run(cluster, commands_min=1500, commands_max=6000, chaos=chaos)
    print(line("claim mode: kill -9 one of two, then a third joins", history, report, cluster, shares=seen))
    assert seen == ["after kill: [4]", "after join: [2, 2]"]
    assert report.ok(), report.problems[:5]
    assert report.lost == report.duplicated == report.out_of_order == 0
