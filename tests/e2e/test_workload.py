"""A random workload through HTTP and real workers, checked against a model of what clients were told."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledgerq.api.context import Context
from ledgerq.shared.settings import Settings
from tests.chaos.workload import random_command
from tests.checker import check
from tests.conftest import SIGNING_KEY, uid, wait_final

pytestmark = pytest.mark.usefixtures("workers")

THREADS = 8
COMMANDS = 2000


@pytest.fixture
def commands_n() -> int:
    """How many commands the workload sends (a module re-running it may ask for fewer)."""
    return COMMANDS


def test_random_workload_keeps_every_invariant(
    http: TestClient, ctx: Context, settings: Settings, commands_n: int
) -> None:
    """Thousands of commands from many threads, some retried with the same id: nothing lost or doubled,
    per-account order kept, every rejection justified, and `ledgerq verify` passes."""
    rng = random.Random(20261121)
    accounts = [uid("wl") for _ in range(30)]
    for n, account in enumerate(accounts):
        limit = 0 if n % 3 else 2_000
        assert (
            http.post("/v1/accounts", json={"id": account, "currency": "USD", "overdraft_limit": limit}).status_code
            == 201
        )
    plans: list[list[dict[str, Any]]] = [[] for _ in range(THREADS)]
    for n in range(commands_n):
        plans[n % THREADS].append(random_command(rng, accounts))
    acknowledged: dict[str, dict[str, Any]] = {}
    sent: dict[str, list[str]] = {}
    lock = threading.Lock()

    def client(thread: int) -> int:
        replays = 0
        for command in plans[thread]:
            tries = 2 if rng.random() < 0.1 else 1  # a retry with the same id
            for _ in range(tries):
                answer = http.post("/v1/commands", json=command)
                assert answer.status_code in (200, 202), answer.text
                replays += answer.status_code == 200
            with lock:
                acknowledged[command["id"]] = command
        sent[str(thread)] = [c["id"] for c in plans[thread]]
        return replays

    with ThreadPoolExecutor(THREADS) as pool:
        replays = sum(pool.map(client, range(THREADS)))
    assert replays > 0
    for ids in sent.values():
        assert wait_final(http, ids[-1])["status"] in ("applied", "rejected")
    for command_id in acknowledged:
        assert wait_final(http, command_id)["status"] in ("applied", "rejected")
    report = check(ctx.engine, acknowledged, sent)
    print(f"\nworkload: {report.line()} replays={replays}")
    assert report.ok(), report.problems[:5]
    assert report.acknowledged == commands_n and report.rejected > 0 and report.applied > commands_n // 2
    env = {
        **os.environ,
        "LEDGERQ_DATABASE_URL": settings.database_url,
        "LEDGERQ_REDIS_URL": settings.redis_url,
        "LEDGERQ_PARTITIONS": str(settings.partitions),
        "LEDGERQ_SIGNING_KEY": SIGNING_KEY,
    }
    verified = subprocess.run(
        [sys.executable, "-m", "ledgerq.ops.cli", "verify"], env=env, capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
