"""Backup mid-load and restore, as README "Backup and restore" says: Redis' snapshot first, then
Postgres' base backup, so every job in the Redis copy has its claim in the Postgres copy. Restored,
the service applies the claims whose jobs the older Redis copy lacks from Postgres, in acceptance
order (the orphan rule), skips the jobs whose commands are already final, and `ledgerq verify` is
clean. What a restore cannot give back is what was acknowledged after the base backup ended."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from redis import Redis
from sqlalchemy import text

from ledgerq.ops.embedded import PostgresServer, RedisServer
from tests.chaos.cluster import Cluster
from tests.chaos.test_faults import all_workers, wait_until
from tests.chaos.workload import History, line, record, run, settle


def backup(cluster: Cluster, into: Path) -> float:
    """Redis: BGSAVE and copy its dump.rdb; then Postgres: pg_basebackup. Returns when it ended."""
    redis = Redis.from_url(cluster.redis.url)
    before = redis.lastsave()
    redis.bgsave()
    wait_until(lambda: redis.lastsave() != before and not redis.info("persistence")["rdb_bgsave_in_progress"])
    (into / "redis").mkdir(parents=True)
    shutil.copy(cluster.redis.data_dir / "dump.rdb", into / "redis" / "dump.rdb")
    pg_basebackup = cluster.postgres.bindir / "pg_basebackup"
    target = into / "pgdata"
    subprocess.run(
        [str(pg_basebackup), "-d", cluster.postgres.url, "-D", str(target), "-X", "stream", "-c", "fast"],
        check=True,
        capture_output=True,
    )
    return time.monotonic()


def restore_redis(snapshot: Path, data_dir: Path) -> None:
    """Load the snapshot with AOF off, then turn AOF on (Redis writes the AOF from memory)."""
    data_dir.mkdir(parents=True)
    shutil.copy(snapshot / "dump.rdb", data_dir / "dump.rdb")
    server = RedisServer(data_dir, options=("--appendonly", "no")).start()
    client = Redis.from_url(server.url)
    client.config_set("appendonly", "yes")
    wait_until(lambda: not _rewriting(client))
    server.stop()


def _rewriting(client: Redis) -> bool:
    info: dict[str, Any] = client.info("persistence")
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


def test_restore_both_from_a_backup_taken_mid_load(tmp_path: Path) -> None:
    original = Cluster(tmp_path / "original")
    backed_up: list[float] = []
    try:
        original.start_api()
        all_workers(original)

        def take_backup(stop: threading.Event) -> None:
            if not stop.wait(3.0):
                backed_up.append(backup(original, tmp_path / "backup"))

        history, report = run(
            original, commands_min=600, commands_max=8000, chaos=take_backup, enough=lambda: bool(backed_up)
        )
        assert backed_up and report.ok(), report.problems[:5]
    finally:
        original.close()

    restore_redis(tmp_path / "backup" / "redis", tmp_path / "restored" / "redis")
    restored_pg = tmp_path / "restored" / "pgdata"
    shutil.copytree(tmp_path / "backup" / "pgdata", restored_pg)
    postgres = PostgresServer(restored_pg)
    if postgres._user():
        subprocess.run(["chown", "-R", f"{postgres._user()}:{postgres._group()}", str(restored_pg)], check=True)
    restored_pg.chmod(0o700)
    restored = Cluster(tmp_path / "restored", postgres=postgres, redis_dir=tmp_path / "restored" / "redis")
    try:
        with restored.engine.connect() as conn:
            claims = set(conn.execute(text("SELECT id FROM commands")).scalars())
            queued = conn.execute(text("SELECT count(*) FROM commands WHERE status = 'queued'")).scalar_one()
        jobs = sum(1 for _ in Redis.from_url(restored.redis.url).scan_iter("rq:job:*"))
        restored.start_api()
        all_workers(restored)
        kept = History(
            acknowledged={i: c for i, c in history.acknowledged.items() if i in claims},
            sent_in_order={n: [i for i in ids if i in claims] for n, ids in history.sent_in_order.items()},
            first_sent_s={i: t for i, t in history.first_sent_s.items() if i in claims},
            acknowledged_s={i: t for i, t in history.acknowledged_s.items() if i in claims},
        )
        after = settle(restored, kept)
        acknowledged_later = sum(1 for i in history.acknowledged if i not in claims)
        print(
            line(
                "backup mid-load, restore",
                kept,
                after,
                restored,
                acknowledged_in_all=len(history.acknowledged),
                in_backup=len(kept.acknowledged),
                queued_at_restore=queued,
                jobs_in_redis_copy=jobs,
                acknowledged_after_the_backup=acknowledged_later,
            )
        )
        record(f"\nchaos restore: acknowledged after the base backup ended, not in it: {acknowledged_later}")
        assert kept.acknowledged and queued > 0
        assert after.ok() and after.lost == 0, after.problems[:5]
        # Every claim in the backup is final now (settle waited for that), in order, verified.
        with restored.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM commands WHERE status = 'queued'")).scalar_one() == 0
    finally:
        restored.close()
