"""The `ledgerq` command line as operators run it: real processes, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import text

from ledgerq.ops.embedded import free_port
from ledgerq.shared.keys import lease_key
from ledgerq.shared.settings import Settings
from tests.conftest import SIGNING_KEY, uid

LEDGERQ = [sys.executable, "-m", "ledgerq.ops.cli"]


def env_for(database_url: str, redis_url: str, partitions: int = 4) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGERQ_DATABASE_URL": database_url,
        "LEDGERQ_REDIS_URL": redis_url,
        "LEDGERQ_PARTITIONS": str(partitions),
        "LEDGERQ_SIGNING_KEY": SIGNING_KEY,
    }


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEDGERQ, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def fresh_db(servers: Any) -> tuple[str, str]:
    postgres, redis = servers
    return postgres.create_database(uid("cli").replace("-", "_")), redis.url.replace("/0", "/5")


def test_init_fixes_p_and_refuses_another(fresh_db: tuple[str, str], tmp_path: Path) -> None:
    """`ledgerq init` is repeatable, works from any folder, and refuses a different P."""
    env = env_for(*fresh_db)
    first = run(["init"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "4 partitions" in first.stdout
    assert run(["init"], env).returncode == 0
    refused = run(["init"], env_for(*fresh_db, partitions=8))
    assert refused.returncode != 0 and "initialised with 4 partitions" in refused.stderr
    worker = run(["worker", "--partition", "0"], env_for(*fresh_db, partitions=8))
    assert worker.returncode != 0 and "4 partitions" in worker.stderr


def test_verify_passes_on_a_clean_ledger_and_fails_on_drift(fresh_db: tuple[str, str]) -> None:
    """`ledgerq verify` exits 1 when a balance no longer equals its entries."""
    env = env_for(*fresh_db)
    assert run(["init"], env).returncode == 0
    assert run(["verify"], env).returncode == 0
    engine_url = Settings(database_url=fresh_db[0]).sqlalchemy_url
    from sqlalchemy import create_engine

    engine = create_engine(engine_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, currency, balance) VALUES ('drifted', 'USD', 5)"))
    engine.dispose()
    drift = run(["verify"], env)
    assert drift.returncode == 1
    assert "balance_is_sum_of_entries" in drift.stdout and "trial_balance" in drift.stdout


def test_keys_create_list_revoke(fresh_db: tuple[str, str]) -> None:
    env = env_for(*fresh_db)
    assert run(["init"], env).returncode == 0
    created = run(["keys", "create", "--scope", "read", "--prefix", "shop1:", "--name", "reports"], env)
    assert created.returncode == 0 and created.stdout.startswith("lq_")
    key_id = created.stdout.split("_")[1]
    listed = run(["keys", "list"], env)
    assert key_id in listed.stdout and "active" in listed.stdout
    assert created.stdout.strip().split("_", 2)[2] not in listed.stdout  # never the secret
    assert run(["keys", "revoke", key_id], env).returncode == 0
    assert "revoked" in run(["keys", "list"], env).stdout
    assert run(["keys", "revoke", key_id], env).returncode != 0


def test_worker_sigterm_releases_the_lease(fresh_db: tuple[str, str]) -> None:
    """SIGTERM: the worker finishes what it holds, gives its lease back at once, and exits 0."""
    env = env_for(*fresh_db)
    assert run(["init"], env).returncode == 0
    redis = Redis.from_url(fresh_db[1])
    redis.flushdb()
    worker = subprocess.Popen(
        [*LEDGERQ, "worker", "--partition", "0", "--partition", "2"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not (redis.get(lease_key(0)) and redis.get(lease_key(2))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis.get(lease_key(0)) and redis.get(lease_key(2))
    status = run(["status", "--json"], env)
    assert status.returncode == 0
    owners = {row["partition"]: row["owner"] for row in json.loads(status.stdout)["partitions"]}
    assert sorted(owners) == [0, 1, 2, 3]
    assert owners[1] is None and owners[3] is None
    assert f":{worker.pid}:" in owners[0] and f":{worker.pid}:" in owners[2]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert redis.get(lease_key(0)) is None and redis.get(lease_key(2)) is None


def test_sigterm_while_redis_is_away_exits_cleanly(fresh_db: tuple[str, str]) -> None:
    """A worker waiting out a Redis outage stops on SIGTERM with exit 0 (it used to crash on the way out)."""
    env = env_for(fresh_db[0], f"redis://127.0.0.1:{free_port()}/0", partitions=4)
    assert run(["init"], env).returncode == 0
    env["LEDGERQ_BACKOFF_S_MAX"] = "5"
    worker = subprocess.Popen([*LEDGERQ, "worker", "--partition", "1"], env=env, stderr=subprocess.PIPE, text=True)
    assert worker.stderr is not None
    deadline = time.monotonic() + 30
    seen = ""
    while "dependency away" not in seen and time.monotonic() < deadline:
        seen += worker.stderr.readline()
    assert "dependency away" in seen
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.stderr.read()[-2000:]


def test_unreachable_servers_are_one_clear_line_not_a_traceback() -> None:
    env = env_for(f"postgresql://postgres@127.0.0.1:{free_port()}/x", f"redis://127.0.0.1:{free_port()}/0")
    for args in (["verify"], ["status"], ["keys", "list"]):
        done = run(args, env)
        assert done.returncode != 0 and "Traceback" not in done.stderr, args
        assert "PostgreSQL unreachable" in done.stderr and "LEDGERQ_DATABASE_URL" in done.stderr
