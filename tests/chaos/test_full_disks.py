"""Full disks: Redis' AOF, then Postgres' WAL, on a small volume of their own (a tmpfs mount), filled
to the last bytes mid-load and freed again a few seconds later.

Redis with `appendfsync always` cannot keep a write it has not got on disk, so on a short AOF write
it exits (an `everysec` Redis refuses writes with MISCONF instead, until a write succeeds); Postgres
PANICs when it cannot create a WAL segment. Either way the API answers 503, a supervisor restarts
the server until there is room again, and nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledgerq.ops.embedded import PostgresServer, RedisServer
from tests.chaos.cluster import Cluster
from tests.chaos.test_faults import all_workers
from tests.chaos.workload import line, run

FULL_S = 4.0  # how long the volume stays full


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small volume needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(volume: Path, leave_bytes: int) -> Path:
    """A ballast file taking all but `leave_bytes` of the volume. The server writes meanwhile, so the
    free space is a moving target: write until the disk refuses, then give `leave_bytes` back."""
    ballast = volume / "ballast"
    chunk = b"\0" * 65536
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    os.truncate(ballast, max(0, ballast.stat().st_size - leave_bytes))
    return ballast


def keep_up(start: Callable[[], object], alive: Callable[[], bool], stop: threading.Event) -> int:
    """A supervisor's restart loop until `stop`: returns how many times the server had to be started."""
    starts = 0
    while not stop.is_set():
        if not alive():
            starts += 1
            with contextlib.suppress(Exception):  # it may die again at once while the disk is full
                start()
        stop.wait(0.2)
    while not alive():
        starts += 1
        start()
    return starts


def fill_then_free(
    volume: Path, leave_bytes: int, start: Callable[[], object], alive: Callable[[], bool]
) -> Callable[[threading.Event], None]:
    """Chaos: twice, fill the volume for FULL_S while restarting the server as it dies; then free it."""
    restarts: list[int] = []

    def chaos(stop: threading.Event) -> None:
        for _ in range(2):
            if stop.wait(2.5):
                return
            ballast = fill(volume, leave_bytes)
            supervising = threading.Event()
            supervisor = threading.Thread(target=lambda done=supervising: restarts.append(keep_up(start, alive, done)))
            supervisor.start()
            time.sleep(FULL_S)
            ballast.unlink()
            supervising.set()
            supervisor.join()

    chaos.restarts = restarts  # type: ignore[attr-defined]
    return chaos


def _alive(server: RedisServer | PostgresServer) -> bool:
    return server.process is not None and server.process.poll() is None


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_aof_volume_full(tmp_path: Path, fsync: str) -> None:
    with small_disk(tmp_path / "redis-volume", 16) as volume:
        cluster = Cluster(tmp_path, redis_dir=volume / "redis")
        try:
            if fsync != "always":
                cluster.redis.options = (*cluster.redis.options, "--appendfsync", fsync)
                cluster.redis.stop()
                cluster.redis.start()
            cluster.start_api()
            all_workers(cluster)
            redis = cluster.redis
            chaos = fill_then_free(volume, 16 * 1024, redis.start, lambda: _alive(redis))
            refusals_before = _misconf_lines(redis)
            history, report = run(
                cluster, commands_min=800, commands_max=8000, chaos=chaos, enough=lambda: len(chaos.restarts) == 2
            )  # type: ignore[attr-defined]
            misconf = _misconf_lines(redis) - refusals_before
            restarts = chaos.restarts  # type: ignore[attr-defined]
            print(
                line(
                    f"redis AOF volume full (appendfsync {fsync})",
                    history,
                    report,
                    cluster,
                    fills=len(restarts),
                    redis_starts=sum(restarts),
                    misconf_log_lines=misconf,
                )
            )
            assert len(restarts) == 2 and history.retries > 0
            if fsync == "always":
                assert sum(restarts) >= 2  # it exited each time rather than acknowledge what it could not keep
            else:
                assert misconf > 0 and sum(restarts) == 0  # it refused writes and carried on by itself
            assert history.unavailable["redis_unavailable"] > 0  # 503s, not 500s
            assert "internal_error" not in history.unavailable, history.unavailable
            assert report.ok(), report.problems[:5]
        finally:
            cluster.close()


def _misconf_lines(redis: RedisServer) -> int:
    log = redis.data_dir / "redis.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count("Error writing to the AOF file") + text.count("Short write while writing to the AOF")


def test_postgres_wal_volume_full(tmp_path: Path) -> None:
    with small_disk(tmp_path / "wal-volume", 48) as volume:
        (volume / "wal").mkdir()
        if os.geteuid() == 0:
            os.chown(volume / "wal", *_nobody())
        postgres = PostgresServer(
            tmp_path / "pgdata",
            init_options=("--waldir", str(volume / "wal"), "--wal-segsize", "1"),
            options=("min_wal_size=4MB", "max_wal_size=8MB"),
        )
        cluster = Cluster(tmp_path, postgres=postgres)
        try:
            cluster.start_api()
            all_workers(cluster)
            chaos = fill_then_free(volume, 256 * 1024, postgres.start, lambda: _alive(postgres))
            history, report = run(
                cluster, commands_min=800, commands_max=8000, chaos=chaos, enough=lambda: len(chaos.restarts) == 2
            )  # type: ignore[attr-defined]
            restarts = chaos.restarts  # type: ignore[attr-defined]
            log = (tmp_path / f"postgres-{postgres.port}.log").read_text(errors="replace")
            panics = log.count("No space left on device")
            print(
                line(
                    "postgres WAL volume full",
                    history,
                    report,
                    cluster,
                    fills=len(restarts),
                    postgres_starts=sum(restarts),
                    enospc_log_lines=panics,
                )
            )
            assert len(restarts) == 2 and panics > 0 and history.unavailable["database_unavailable"] > 0
            assert "internal_error" not in history.unavailable, history.unavailable
            assert report.ok(), report.problems[:5]
        finally:
            cluster.close()


def _nobody() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
