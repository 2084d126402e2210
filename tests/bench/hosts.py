"""Throughput by worker host: 1, 2 and 3 worker "hosts" (network namespaces on this machine, each
reaching Redis and Postgres over its own links), the partitions split evenly among them.

    sudo python -m tests.bench.hosts [--commands N] [--partitions P] [--hosts 1 2 3]

For each host count: a fresh ledger, N deposits over 10,000 accounts queued with no worker (the
in-process client, so the API is not what is measured), then one `ledgerq worker` per host serving
its share (`p % hosts == i`, the split claim mode settles on) drains them. Prints applied/s, the
ratio to one host, and CPU ms per command of the workers, Postgres and Redis. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ledgerq.ops.embedded import PostgresServer, RedisServer
from tests.bench.cpu import CpuMeter
from tests.bench.run import Ledger, fresh_ledger
from tests.chaos.hosts import Network


def queue(ledger: Ledger, n: int) -> None:
    from ledgerq.api.inprocess import LedgerClient

    client = LedgerClient.from_settings(ledger.settings())
    with ThreadPoolExecutor(4) as pool:
        chunks = [range(s, min(n, s + 1000)) for s in range(0, n, 1000)]
        list(pool.map(lambda ids: client.submit_many([ledger.command(i) for i in ids]), chunks))
    client.close()


def drain_on_hosts(
    ledger: Ledger, network: Network, hosts: list[str], env: dict[str, str], roles: dict[str, list[int]], n: int
) -> dict[str, float]:
    workers = []
    for i, host in enumerate(hosts):
        share = [str(a) for p in range(ledger.partitions) if p % len(hosts) == i for a in ("--partition", str(p))]
        command = ["ip", "netns", "exec", host, sys.executable, "-m", "ledgerq.ops.cli", "worker", *share]
        workers.append(subprocess.Popen(command, env={**ledger.env, **env}))
    meter = CpuMeter({**roles, "workers": [w.pid for w in workers]})
    meter.start()
    started = time.perf_counter()
    ledger.wait_applied(timeout_s=1200)
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait()
    return {"per_s": n / seconds, **{f"{role}_ms": 1000 * cpu[role] / n for role in ("workers", "postgres", "redis")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6, help="divisible by every host count")
    parser.add_argument("--hosts", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("tests.bench.hosts: network namespaces need root")
    root = Path(tempfile.mkdtemp(prefix="ledgerq-bench-hosts-"))
    network = Network()
    pg_address, redis_address = network.server_address("postgres"), network.server_address("redis")
    pg = PostgresServer(root / "pg", options=(f"listen_addresses=127.0.0.1,{pg_address}",))
    pg.init()
    with open(root / "pg" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {pg_address.rsplit('.', 1)[0]}.0/24 trust\n")
    pg.start()
    redis = RedisServer(root / "redis", options=("--bind", "127.0.0.1", redis_address, "--protected-mode", "no"))
    redis.start()
    assert pg.process is not None and redis.process is not None
    roles = {"postgres": [pg.process.pid], "redis": [redis.process.pid]}
    hosts = [network.add_host() for _ in range(max(args.hosts))]
    cores = os.cpu_count()
    print(f"{args.commands} deposits over 10,000 accounts, P={args.partitions}, {cores} cores", flush=True)
    print(f"{'hosts':>5} {'applied/s':>9} {'x1':>5} {'worker ms':>9} {'pg ms':>6} {'redis ms':>8}")
    first = None
    try:
        for count in args.hosts:
            ledger = fresh_ledger(pg, redis.url, hot=False, partitions=args.partitions)
            env = {
                "LEDGERQ_DATABASE_URL": ledger.url.replace("127.0.0.1", pg_address),
                "LEDGERQ_REDIS_URL": redis.url.replace("127.0.0.1", redis_address),
            }
            queue(ledger, args.commands)
            r = drain_on_hosts(ledger, network, hosts[:count], env, roles, args.commands)
            first = first or r["per_s"]
            print(
                f"{count:>5} {r['per_s']:>9.0f} {r['per_s'] / first:>5.2f} {r['workers_ms']:>9.3f} "
                f"{r['postgres_ms']:>6.3f} {r['redis_ms']:>8.3f}",
                flush=True,
            )
    finally:
        redis.stop()
        pg.stop()
        network.close()


if __name__ == "__main__":
    main()
