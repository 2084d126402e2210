"""A whole ledgerq on real processes for fault injection: PostgreSQL, Redis, `ledgerq api`, and
`ledgerq worker` processes kept alive by a small supervisor (as supervisord would)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ledgerq.ops.embedded import ClusterServers, PostgresServer, RedisServer, SentinelServer, free_port, sentinel_url
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.db import fix_partitions, make_engine, migrate
from ledgerq.shared.settings import Settings
from tests.conftest import SIGNING_KEY

LEDGERQ = [sys.executable, "-m", "ledgerq.ops.cli"]
PARTITIONS = 4
# A bound on waiting for a process to come up, far beyond any healthy start even on a loaded machine.
START_S_MAX = 180


@dataclass
class WorkerProcess:
    partitions: list[int]
    env: dict[str, str]
    log: Path
    prefix: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", "h1"): run it on another "host"
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    exits: list[int] = field(default_factory=list)
    restart: bool = True

    def start(self) -> None:
        args = [a for p in self.partitions for a in ("--partition", str(p))]
        with open(self.log, "ab") as log:
            command = [*self.prefix, *LEDGERQ, "worker", *args]
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

    def poll(self) -> int | None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            self.exits.append(code)
            self.kills += code == -signal.SIGKILL
        return code

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.restart = False
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# A replica starts its first sync at once (Redis waits 5 s by default for more replicas to share it).
REPLICATION = ("--repl-diskless-sync-delay", "0")


class Cluster:
    def __init__(
        self,
        root: Path,
        *,
        lease_ttl_ms: int = 2000,
        sentinels: bool = False,
        redis_dir: Path | None = None,
        redis_options: tuple[str, ...] = (),
        postgres: PostgresServer | None = None,
        redis_cluster: bool = False,
    ) -> None:
        self.root = root
        self.postgres = (postgres or PostgresServer(root / "pgdata")).start()
        # With `redis_cluster`: a Redis Cluster of 3 primaries with a replica each instead of one Redis
        # (`self.redis` is then its first node).
        self.redis_cluster = ClusterServers(root / "redis-cluster").start() if redis_cluster else None
        if self.redis_cluster:
            self.redis = self.redis_cluster.nodes[0]
        else:
            self.redis = RedisServer(redis_dir or root / "redis", options=(*REPLICATION, *redis_options)).start()
        # With sentinels: a replica of `redis` and three sentinels; every process is given the
        # Sentinel URL, so the API and workers follow a failover (and WAIT for the replica).
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []
        redis_url = self.redis_cluster.url if self.redis_cluster else self.redis.url
        if sentinels:
            replica_of = ("--replicaof", "127.0.0.1", str(self.redis.port))
            self.replica = RedisServer(root / "replica", options=(*REPLICATION, *replica_of)).start()
            self.sentinels = [SentinelServer(root / f"sentinel-{n}", self.redis.port).start() for n in range(3)]
            redis_url = sentinel_url(self.sentinels)
        self.settings = Settings(
            database_url=self.postgres.url,
            redis_url=redis_url,
            partitions=PARTITIONS,
            lease_ttl_ms=lease_ttl_ms,
            backoff_s_max=0.5,
            signing_key=SIGNING_KEY,
        )
        migrate(self.settings)
        self.engine = make_engine(self.settings, pool_size=4)
        fix_partitions(self.engine, PARTITIONS)
        self.key = create_key(self.engine, "admin", name="chaos")[0]
        self.env = {
            **os.environ,
            "LEDGERQ_DATABASE_URL": self.postgres.url,
            "LEDGERQ_REDIS_URL": redis_url,
            "LEDGERQ_PARTITIONS": str(PARTITIONS),
            "LEDGERQ_LEASE_TTL_MS": str(lease_ttl_ms),
            "LEDGERQ_BACKOFF_S_MAX": "0.5",
            "LEDGERQ_LOG_LEVEL": "INFO",
            "LEDGERQ_SIGNING_KEY": SIGNING_KEY,
            # Tests' webhook receivers listen on loopback.
            "LEDGERQ_WEBHOOK_ALLOW_HOSTS": "*,127.0.0.1",
        }
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[WorkerProcess] = []
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    # -- processes ---------------------------------------------------------------------------------

    def start_api(self, prefix: tuple[str, ...] = (), host: str = "127.0.0.1", **env: str) -> None:
        """`prefix` and `host`: run it on another "host" (a network namespace), listening there."""
        self.url = f"http://{host}:{self.api_port}"
        with open(self.root / "api.log", "ab") as log:
            command = [*prefix, *LEDGERQ, "api", "--host", host, "--port", str(self.api_port)]
            self.api = subprocess.Popen(command, env={**self.env, **env}, stdout=log, stderr=log)
        # Wait for the API itself, not for a guess at how long a busy machine takes: fail at once if it
        # exits, and give up only after a bound far beyond any healthy start.
        deadline = time.monotonic() + START_S_MAX
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"api exited with {self.api.returncode}: {self._log_tail('api.log')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"api did not answer /healthz within {START_S_MAX}s: {self._log_tail('api.log')}")

    def _log_tail(self, name: str) -> str:
        return (self.root / name).read_text(errors="replace")[-2000:]

    def add_worker(self, partitions: list[int], prefix: tuple[str, ...] = (), **env: str) -> WorkerProcess:
        log = self.root / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(partitions, {**self.env, **env}, log, prefix)
        worker.start()
        self.workers.append(worker)
        return worker

    def _supervise(self) -> None:
        """Restart any worker that died (kill -9 included), like supervisord's autorestart."""
        while not self._stop.wait(0.05):
            for worker in list(self.workers):
                if worker.restart and worker.process is not None and worker.poll() is not None:
                    worker.start()

    def kills(self) -> int:
        return sum(w.kills for w in self.workers)

    def close(self) -> None:
        self._stop.set()
        self._supervisor.join(timeout=5)
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.terminate()
            self.api.wait(timeout=30)
        self.engine.dispose()
        for server in [*self.sentinels, self.redis, *([self.replica] if self.replica else [])]:
            server.stop()
        if self.redis_cluster:
            self.redis_cluster.stop()
        self.postgres.stop()

    # -- waiting -----------------------------------------------------------------------------------

    def wait_drained(self, timeout_s: float = 120) -> None:
        """Until no command is left queued in Postgres (every one final)."""
        from sqlalchemy import text

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM commands WHERE status = 'queued'")).scalar_one()
            if left == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{left} commands still queued after {timeout_s}s")
