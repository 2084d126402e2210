"""The apply transaction alone, in this process: per-batch wall time and CPU at batch sizes 1 and 500,
and (where PostgreSQL has pg_stat_statements) the server's time per statement.

    python -m tests.bench.apply_path [--backlog N]

N deposits over 10,000 accounts are queued first (no statistics gathered: a fresh ledger, as a new
deployment's first minutes are), then applied with `apply_batch` in batches of 1 (1,000 of them) and
500. What a worker adds on top (Redis take and complete, decoding) is not in these figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psycopg

from tests.bench.run import fresh_ledger

STATEMENTS = """
    SELECT calls, total_exec_time / calls AS ms, rows / calls AS rows_per_call,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query
      FROM pg_stat_statements WHERE calls >= %s ORDER BY total_exec_time DESC LIMIT 12
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=6_000)
    args = parser.parse_args()
    from ledgerq.api.inprocess import LedgerClient
    from ledgerq.ops.embedded import PostgresServer, RedisServer, find_pg_bindir
    from ledgerq.shared.db import make_engine
    from ledgerq.worker.apply import apply_batch
    from ledgerq.worker.lease import bump_epoch

    root = Path(tempfile.mkdtemp(prefix="ledgerq-apply-"))
    os.chmod(root, 0o755)
    libdir = find_pg_bindir().parent / "lib"
    stats = (libdir / "pg_stat_statements.so").exists()
    options = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all") if stats else ()
    pg = PostgresServer(root / "pg", options=options).start()
    redis = RedisServer(root / "redis").start()
    try:
        ledger = fresh_ledger(pg, redis.url, hot=False, partitions=1)
        client = LedgerClient.from_settings(ledger.settings())
        for start in range(0, args.backlog, 500):
            client.submit_many([ledger.command(i) for i in range(start, min(args.backlog, start + 500))])
        client.close()
        engine = make_engine(ledger.settings(), pool_size=1)
        epoch = bump_epoch(engine, 0, "apply-path-bench")
        with psycopg.connect(ledger.url, autocommit=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM commands ORDER BY accepted_at")]
            if stats:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        used = 0
        for size, batches in ((1, 1_000), (500, (args.backlog - 1_000) // 500)):
            if batches <= 0:
                continue
            with psycopg.connect(ledger.url, autocommit=True) as conn:
                if stats:
                    conn.execute("SELECT pg_stat_statements_reset()")
            wall, cpu = time.perf_counter(), time.process_time()
            for k in range(batches):
                apply_batch(engine, 0, epoch, ids[used + k * size : used + (k + 1) * size])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            used += size * batches
            print(
                f"batch of {size}: {1000 * wall / batches:.2f} ms wall and {1000 * cpu / batches:.2f} ms of this "
                f"process's CPU per batch, {1e6 * cpu / (batches * size):.0f} us CPU per command, "
                f"{batches * size / wall:.0f} commands/s"
            )
            if stats:
                with psycopg.connect(ledger.url) as conn:
                    for calls, ms, per, query in conn.execute(STATEMENTS, (batches,)):
                        print(f"  {calls:>6} x {ms:7.3f} ms  {per:>6.0f} rows  {query}")
        engine.dispose()
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
