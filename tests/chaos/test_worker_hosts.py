"""Many worker hosts: three worker "hosts" (network namespaces) in claim mode, the API on a fourth,
Redis and Postgres reached over the hosts' own links. The partitions spread evenly over the hosts;
one host cut off from everything under load loses nothing, and its partitions move to the others
once its heartbeat and leases lapse (the lease TTL plus a heartbeat)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from redis import Redis

from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import PARTITIONS, WorkerProcess
from tests.chaos.hosts import Network, networked_cluster
from tests.chaos.test_faults import wait_until
from tests.chaos.test_network_partitions import TAKEOVER_S_MAX
from tests.chaos.workload import line, record, run


def holders(redis: Redis, workers: list[WorkerProcess]) -> dict[int, int | None]:
    """Partition -> the index of the worker (host) holding its lease, or None."""
    pids = {w.process.pid: i for i, w in enumerate(workers) if w.process is not None}
    held: dict[int, int | None] = {}
    for p in range(PARTITIONS):
        token = redis.get(lease_key(p))
        held[p] = pids.get(int(token.decode().split(":")[1])) if token else None
    return held


def spread(redis: Redis, workers: list[WorkerProcess], among: set[int]) -> Counter[int | None] | None:
    """The partitions per host once every partition is held by one of `among`, evenly; else None."""
    count = Counter(holders(redis, workers).values())
    even = {PARTITIONS // len(among), -(-PARTITIONS // len(among))}
    if set(count) == among and set(count.values()) <= even:
        return count
    return None


def test_three_worker_hosts_share_the_partitions_and_one_cut_off_loses_nothing(
    tmp_path: Path, network: Network
) -> None:
    cluster, env = networked_cluster(tmp_path, network)
    try:
        api_host = network.add_host()
        hosts = [network.add_host() for _ in range(3)]
        cluster.start_api(("ip", "netns", "exec", api_host), network.address(api_host, "redis"), **env)
        workers = [cluster.add_worker([], ("ip", "netns", "exec", host), **env) for host in hosts]
        redis = Redis.from_url(cluster.redis.url)
        wait_until(lambda: spread(redis, workers, {0, 1, 2}) is not None, timeout_s=TAKEOVER_S_MAX)
        shares = spread(redis, workers, {0, 1, 2})
        moved: list[float] = []
        after: list[Counter[int | None]] = []

        def chaos(stop: threading.Event) -> None:
            if stop.wait(2.0):
                return
            cut = max(range(3), key=lambda i: shares[i] if shares else 0)  # the host with the most
            network.cut(hosts[cut], "redis", "postgres")
            cut_at = time.monotonic()
            others = {0, 1, 2} - {cut}
            try:
                wait_until(lambda: spread(redis, workers, others) is not None, timeout_s=TAKEOVER_S_MAX)
                moved.append(time.monotonic() - cut_at)
                found = spread(redis, workers, others)
                assert found is not None
                after.append(found)
                time.sleep(2.0)  # the others apply its partitions while it is still cut off
            finally:
                network.heal(hosts[cut], "redis", "postgres")

        history, report = run(cluster, commands_min=800, commands_max=20000, chaos=chaos, enough=lambda: bool(moved))
        ttl_s = cluster.settings.lease_ttl_ms / 1000
        bound = ttl_s + cluster.settings.lease_renew_s
        summary = (
            f"partitions per host {sorted(shares.values()) if shares else None}, after the cut "
            f"{sorted(after[0].values()) if after else None}; moved {moved[0]:.1f}s after the cut "
            f"(lease TTL {ttl_s:.1f}s + a heartbeat {cluster.settings.lease_renew_s:.2f}s = {bound:.1f}s)"
            if moved
            else "no move"
        )
        print(line("worker hosts (3 netns hosts, API on a 4th, claim mode)", history, report, cluster))
        record(f"\nchaos worker hosts: {summary}")
        assert shares is not None and sorted(shares.values()) == [1, 1, 2]
        assert moved and after and sorted(after[0].values()) == [2, 2]
        assert report.ok(), report.problems[:5]
    finally:
        cluster.close()

