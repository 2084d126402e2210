"""`ledgerq dev`: the whole system on private servers: PostgreSQL, Redis (AOF always), API, workers.

It prints one line when everything answers, then waits; SIGINT or SIGTERM stops
every process it started, in order: API, workers (each finishes its batch and
releases its lease), Redis, PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from shared.apikeys import create_key
from shared.db import fix_partitions, make_engine, migrate
from shared.embedded import PostgresServer, RedisServer, _die_with_parent
from shared.settings import Settings

READY_TIMEOUT_S = 60.0


def run_dev(port: int, partitions: int, data_dir: Path | None, host: str = "127.0.0.1") -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    keep = data_dir is not None
    root = Path(data_dir or tempfile.mkdtemp(prefix="ledgerq-dev-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    postgres = PostgresServer(root / "pgdata")
    redis = RedisServer(root / "redis")
    children: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        redis.start()
        signing_key = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "LEDGERQ_DATABASE_URL": postgres.url,
            "LEDGERQ_REDIS_URL": redis.url,
            "LEDGERQ_PARTITIONS": str(partitions),
            "LEDGERQ_SIGNING_KEY": signing_key,
        }
        settings = Settings(database_url=postgres.url, redis_url=redis.url, partitions=partitions)
        migrate(settings)
        engine = make_engine(settings, pool_size=1)
        fix_partitions(engine, partitions)
        secret, _ = create_key(engine, "admin", name="ledgerq dev")
        engine.dispose()
        cli = [sys.executable, "-m", "shared.cli"]
        children.append(_spawn([*cli, "api", "--host", host, "--port", str(port)], env))
        children += [_spawn([*cli, "worker", "--partition", str(p)], env) for p in range(partitions)]
        url = f"http://{host}:{port}"
        _wait_ready(url, children, stop)
        print(f"ledgerq dev ready: url={url} key={secret}", flush=True)
        print(f"  postgres {postgres.url}\n  redis    {redis.url} (appendfsync always)\n  data     {root}", flush=True)
        # For the in-process client and the CLI against this system (dev-only secrets):
        exports = " ".join(f"{k}={env[k]}" for k in sorted(env) if k.startswith("LEDGERQ_"))
        print(f"  export {exports}", flush=True)
        while not stop.wait(0.5):
            dead = [c for c in children if c.poll() is not None]
            if dead:
                print(f"ledgerq dev: a child exited ({dead[0].args!r}); stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        redis.stop()
        postgres.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # stdin closed and a new process group: Ctrl-C reaches `ledgerq dev`, which stops children in order.
    return subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
    )


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set():
        if any(c.poll() is not None for c in children):
            raise RuntimeError("a ledgerq process exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not become ready within {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.1)
    raise KeyboardInterrupt
