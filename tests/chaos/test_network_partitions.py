"""Real network partitions: two worker hosts (network namespaces), each serving all partitions, one
owning them and one waiting. Under load the owner's host is cut off from Redis only, then (the
other host owning by then) from Postgres only, then from both; each time the other host takes
over, and nothing acknowledged is lost, doubled or reordered.

The API, Redis and Postgres stay in the root namespace; the hosts reach Redis and Postgres over
links of their own (`tests.chaos.hosts`), cut with `ip link set down`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from redis import Redis

from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import PARTITIONS, WorkerProcess
from tests.chaos.hosts import Net, Network, networked_cluster
from tests.chaos.test_faults import wait_until
from tests.chaos.workload import line, record, run

# Bounds on a takeover, far above what it takes (the lease TTL, plus a dead query's TCP timeout
# and Postgres ending the cut-off owner's open transaction when Postgres is cut).
TAKEOVER_S_MAX = 120


def _holds(redis: Redis, partition: int, worker: WorkerProcess) -> bool:
    value = redis.get(lease_key(partition)) or b""
    return worker.process is not None and f":{worker.process.pid}:".encode() in value


def holder_of_0(redis: Redis, workers: list[WorkerProcess]) -> int:
    """The index of the worker holding partition 0's lease, waiting until one does."""
    deadline = time.monotonic() + TAKEOVER_S_MAX
    while time.monotonic() < deadline:
        for i, worker in enumerate(workers):
            if _holds(redis, 0, worker):
                return i
        time.sleep(0.05)
    raise AssertionError("no worker took partition 0")


def all_held_by(redis: Redis, worker: WorkerProcess) -> bool:
    return all(_holds(redis, p, worker) for p in range(PARTITIONS))


def test_worker_hosts_cut_off_from_redis_postgres_and_both(tmp_path: Path, network: Network) -> None:
    cluster, env = networked_cluster(tmp_path, network)
    try:
        cluster.start_api()
        hosts = [network.add_host(), network.add_host()]
        every = list(range(PARTITIONS))
        workers = [cluster.add_worker(every, ("ip", "netns", "exec", hosts[0]), **env)]
        redis = Redis.from_url(cluster.redis.url)
        wait_until(lambda: all_held_by(redis, workers[0]), timeout_s=TAKEOVER_S_MAX)
        workers.append(cluster.add_worker(every, ("ip", "netns", "exec", hosts[1]), **env))
        takeovers: list[tuple[str, float]] = []
        cuts: list[tuple[str, tuple[Net, ...]]] = [
            ("redis", ("redis",)),
            ("postgres", ("postgres",)),
            ("both", ("redis", "postgres")),
        ]

        def chaos(stop: threading.Event) -> None:
            for name, nets in cuts:
                if stop.wait(2.0):
                    return
                owner = holder_of_0(redis, workers)  # the host to cut
                other = workers[1 - owner]
                network.cut(hosts[owner], *nets)
                cut_at = time.monotonic()
                try:
                    wait_until(lambda o=other: all_held_by(redis, o), timeout_s=TAKEOVER_S_MAX)
                    takeovers.append((name, time.monotonic() - cut_at))
                    time.sleep(2.0)  # the new owner applies while the old one is still cut off
                finally:
                    network.heal(hosts[owner], *nets)

        history, report = run(
            cluster, commands_min=800, commands_max=20000, chaos=chaos, enough=lambda: len(takeovers) == len(cuts)
        )
        seconds = " ".join(f"{name}={s:.1f}s" for name, s in takeovers)
        print(line("network partitions (netns hosts)", history, report, cluster, takeovers=seconds))
        record(f"\nchaos network partitions: takeover after the owner's host was cut off: {seconds}")
        assert [name for name, _ in takeovers] == [name for name, _ in cuts]
        assert report.ok(), report.problems[:5]
    finally:
        cluster.close()
