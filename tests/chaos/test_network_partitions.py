"""Real network partitions: two worker hosts (network namespaces), each serving all partitions, one
owning them and one waiting. Under load the owner's host is cut off from Redis only, then (the
other host owning by then) from Postgres only, then from both; each time the other host takes
over, and nothing acknowledged is lost, doubled or reordered.

The API, Redis and Postgres stay in the root namespace; the hosts reach Redis and Postgres over
links of their own (`tests.chaos.hosts`), cut with `ip link set down`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ledgerq.ops.embedded import PostgresServer
from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import PARTITIONS, Cluster, WorkerProcess
from tests.chaos.hosts import Net, Network
from tests.chaos.test_faults import wait_until
from tests.chaos.workload import line, record, run

# Bounds on a takeover, far above what it takes (the lease TTL, plus a dead query's TCP timeout
# and Postgres ending the cut-off owner's open transaction when Postgres is cut).
TAKEOVER_S_MAX = 120


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    net = Network()
    yield net
    net.close()


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
    pg_address, redis_address = network.server_address("postgres"), network.server_address("redis")
    postgres = PostgresServer(tmp_path / "pgdata", options=(f"listen_addresses=127.0.0.1,{pg_address}",))
    postgres.init()
    with open(tmp_path / "pgdata" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {pg_address.rsplit('.', 1)[0]}.0/24 trust\n")
    # Protected mode would refuse the hosts (no password, not loopback); the network is this machine's own.
    redis_options = ("--bind", "127.0.0.1", redis_address, "--protected-mode", "no")
    cluster = Cluster(tmp_path, postgres=postgres, redis_options=redis_options)
    try:
        cluster.start_api()
        hosts = [network.add_host(), network.add_host()]
        env = {
            "LEDGERQ_DATABASE_URL": cluster.postgres.url.replace("127.0.0.1", pg_address),
            "LEDGERQ_REDIS_URL": cluster.redis.url.replace("127.0.0.1", redis_address),
        }
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
