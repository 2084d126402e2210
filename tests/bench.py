"""Throughput benchmark, side by side in one run (not a test: it prints figures, it asserts nothing).

    python -m tests.bench [--commands N] [--partitions P ...]

Starts private PostgreSQL (fsync on, synchronous commit) and Redis (AOF appendfsync always) and measures:
- B: `SELECT ... FOR UPDATE` + UPDATE + INSERT per command, 16 connections;
- E: stock RQ, one job per command, a SimpleWorker applying the same SQL;
- ledgerq end to end (accepted -> applied) through the in-process client, with P worker processes;
each on one hot account and on 10,000 accounts. Ratios are against B and E measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

CONNECTIONS = 16
ACCOUNTS_SPREAD = 10_000


def timed(n: int, work: Callable[[int], None], threads: int = CONNECTIONS) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(n)))
    return n / (time.perf_counter() - started)


# -- B: lock the row per command -------------------------------------------------------------------


def baseline_b(url: str, n: int, hot: bool) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS b_entries, b_accounts")
        conn.execute("CREATE TABLE b_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("CREATE TABLE b_entries (id bigserial PRIMARY KEY, account int, amount bigint, after bigint)")
        conn.execute("INSERT INTO b_accounts SELECT g, 0 FROM generate_series(0, %s) g", (ACCOUNTS_SPREAD,))
    local = threading.local()

    def work(i: int) -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(url)
        account = 0 if hot else random.randrange(ACCOUNTS_SPREAD)
        with local.conn.transaction():
            (balance,) = local.conn.execute(
                "SELECT balance FROM b_accounts WHERE id = %s FOR UPDATE", (account,)
            ).fetchone()
            local.conn.execute("UPDATE b_accounts SET balance = %s WHERE id = %s", (balance + 1, account))
            local.conn.execute(
                "INSERT INTO b_entries (account, amount, after) VALUES (%s, 1, %s)", (account, balance + 1)
            )

    return timed(n, work)


# -- E: stock RQ, one job per command ---------------------------------------------------------------


def rq_job(url: str, account: int) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        (balance,) = conn.execute("SELECT balance FROM b_accounts WHERE id = %s FOR UPDATE", (account,)).fetchone()
        conn.execute("UPDATE b_accounts SET balance = %s WHERE id = %s", (balance + 1, account))
        conn.execute("INSERT INTO b_entries (account, amount, after) VALUES (%s, 1, %s)", (account, balance + 1))


def baseline_e(url: str, redis_url: str, n: int, hot: bool) -> float:
    from rq import Queue, SimpleWorker

    logging.getLogger("rq").setLevel(logging.WARNING)
    redis = Redis.from_url(redis_url)
    queue = Queue("bench-e", connection=redis)
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue("tests.bench.rq_job", url, 0 if hot else random.randrange(ACCOUNTS_SPREAD))
    SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
    return n / (time.perf_counter() - started)


# -- ledgerq ------------------------------------------------------------------------------------------


def ledgerq_run(root: Path, pg: Any, redis_url: str, n: int, hot: bool, partitions: int) -> dict[str, float]:
    from api.inprocess import LedgerClient
    from shared.db import fix_partitions, make_engine, migrate
    from shared.settings import Settings

    db = f"bench_{int(time.time() * 1000)}"
    url = pg.create_database(db)
    key = "bench-signing-key-0123456789abcdef0123"
    settings = Settings(database_url=url, redis_url=redis_url, partitions=partitions, signing_key=key)
    Redis.from_url(redis_url).flushdb()
    migrate(settings)
    fix_partitions(make_engine(settings, pool_size=1), partitions)
    client = LedgerClient.from_settings(settings)
    accounts = ["hot"] if hot else [f"a{i}" for i in range(ACCOUNTS_SPREAD)]
    with client.ctx.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO accounts (id, currency, overdraft_limit) SELECT unnest(%(ids)s::text[]), 'USD', 0",
            {"ids": accounts},
        )
    env = {
        **os.environ,
        "LEDGERQ_DATABASE_URL": url,
        "LEDGERQ_REDIS_URL": redis_url,
        "LEDGERQ_PARTITIONS": str(partitions),
        "LEDGERQ_SIGNING_KEY": key,
        "LEDGERQ_LOG_LEVEL": "WARNING",
    }
    workers = [
        subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--partition", str(p)], env=env)
        for p in range(partitions)
    ]
    time.sleep(2.0)  # let them take their leases
    started = time.perf_counter()

    def work(i: int) -> None:
        client.submit(
            {"id": f"c{i}", "type": "deposit", "account_id": random.choice(accounts), "amount": 1, "currency": "USD"}
        )

    accepted_per_s = timed(n, work)
    with client.ctx.engine.connect() as conn:
        while conn.exec_driver_sql("SELECT count(*) FROM commands WHERE status = 'queued'").scalar_one():
            time.sleep(0.05)
            conn.rollback()
        elapsed = time.perf_counter() - started
        lat = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT extract(epoch FROM finished_at - accepted_at) FROM commands ORDER BY 1"
            ).all()
        ]
    rss_kb = max(int(Path(f"/proc/{w.pid}/status").read_text().split("VmRSS:")[1].split()[0]) for w in workers)
    for w in workers:
        w.terminate()
        w.wait()
    client.close()
    return {
        "per_s": n / elapsed,
        "accepted_per_s": accepted_per_s,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
        "rss_mb": rss_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--rq-commands", type=int, default=1000)
    parser.add_argument("--partitions", type=int, nargs="*", default=[1, 2, 4])
    args = parser.parse_args()
    from shared.embedded import PostgresServer, RedisServer

    root = Path(tempfile.mkdtemp(prefix="ledgerq-bench-"))
    os.chmod(root, 0o755)
    pg = PostgresServer(root / "pg").start()
    redis = RedisServer(root / "redis").start()
    try:
        print(f"machine: {os.cpu_count()} cores; postgres fsync on; redis appendfsync always")
        print(f"{'what':<40} {'cmds/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7} {'÷B':>6} {'÷E':>6}")
        for hot in (True, False):
            shape = "hot account" if hot else f"{ACCOUNTS_SPREAD} accounts"
            b = baseline_b(pg.url, args.commands, hot)
            e = baseline_e(pg.url, redis.url, args.rq_commands, hot)
            print(f"{'B  SELECT FOR UPDATE, ' + shape:<40} {b:>10.0f}")
            print(f"{'E  stock RQ SimpleWorker, ' + shape:<40} {e:>10.0f}")
            for partitions in args.partitions:
                r = ledgerq_run(root, pg, redis.url, args.commands, hot, partitions)
                label = f"ledgerq in-process P={partitions}, {shape}"
                print(
                    f"{label:<40} {r['per_s']:>10.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                    f"{r['rss_mb']:>7.0f} {r['per_s'] / b:>6.2f} {r['per_s'] / e:>6.1f}",
                    flush=True,
                )
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
