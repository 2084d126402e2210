"""Clients that record what they were told (acknowledged, refused, unknown), and the end-of-run check."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.cluster import LEDGERQ, Cluster
from tests.checker import Report, check

RETRIES_MAX = 40
RETRY_SLEEP_S_MAX = 1.0


@dataclass
class History:
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent_in_order: dict[str, list[str]] = field(default_factory=dict)
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_accounts(cluster: Cluster, count: int = 40) -> list[str]:
    accounts = []
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}) as http:
        for n in range(count):
            account = f"chaos-{uuid.uuid4().hex[:10]}"
            limit = 1_000 if n % 4 == 0 else 0
            answer = http.post("/v1/accounts", json={"id": account, "currency": "USD", "overdraft_limit": limit})
            assert answer.status_code == 201, answer.text
            accounts.append(account)
    return accounts


def random_command(rng: random.Random, accounts: list[str]) -> dict[str, Any]:
    kind = rng.choices(["deposit", "withdraw", "transfer"], [4, 3, 3])[0]
    source, target = rng.sample(accounts, 2)
    command: dict[str, Any] = {
        "id": f"k-{uuid.uuid4().hex[:16]}",
        "type": kind,
        "account_id": source,
        "amount": rng.randint(1, 5_000),
        "currency": "USD",
    }
    if kind == "transfer":
        command["to_account_id"] = target
    return command


def submit(http: httpx.Client, history: History, client: str, command: dict[str, Any]) -> None:
    """Send until the answer is known; 5xx and lost connections are retried with the same id."""
    delay_s = 0.05
    for attempt in range(RETRIES_MAX):
        try:
            answer = http.post("/v1/commands", json=command, timeout=10)
            code = answer.status_code
        except httpx.HTTPError:
            code = 0
        if code in (200, 202):
            with history.lock:
                history.acknowledged[command["id"]] = command
                history.unknown.pop(command["id"], None)
                history.retries += attempt
            return
        if 400 <= code < 500:
            with history.lock:
                history.refused[command["id"]] = code
            return
        with history.lock:
            history.unknown[command["id"]] = command
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, RETRY_SLEEP_S_MAX)


def run(
    cluster: Cluster,
    *,
    commands_min: int,
    commands_max: int,
    threads: int = 8,
    enough: Callable[[], bool] = lambda: True,
    chaos: Callable[[threading.Event], None] | None = None,
    seed: int = 7,
) -> tuple[History, Report]:
    """Submit at least `commands_min` commands (more, up to `commands_max`, until `enough()`), while
    `chaos` runs in a thread; then wait until every command is final and check the ledger."""
    accounts = make_accounts(cluster)
    history = History()
    sent = threading.Semaphore(0)
    budget = threading.Semaphore(commands_max)
    done = threading.Event()

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        order: list[str] = []
        history.sent_in_order[str(n)] = order
        with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}) as http:
            while not done.is_set() and budget.acquire(blocking=False):
                command = random_command(rng, accounts)
                order.append(command["id"])
                submit(http, history, str(n), command)
                sent.release()

    chaos_stop = threading.Event()
    chaos_thread = threading.Thread(target=chaos, args=(chaos_stop,), daemon=True) if chaos else None
    if chaos_thread:
        chaos_thread.start()
    workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    count = 0
    while any(w.is_alive() for w in workers):
        if sent.acquire(timeout=0.2):
            count += 1
        if count >= commands_min and enough():
            done.set()
    chaos_stop.set()
    if chaos_thread:
        chaos_thread.join(timeout=120)
    return history, settle(cluster, history)


def settle(cluster: Cluster, history: History) -> Report:
    cluster.wait_drained()
    resolve_unknowns(cluster, history)
    report = check(cluster.engine, history.acknowledged, history.sent_in_order)
    verified = subprocess.run([*LEDGERQ, "verify"], env=cluster.env, capture_output=True, text=True, timeout=300)
    if verified.returncode != 0:
        report.problems.append(f"ledgerq verify: {verified.stdout[-500:]}")
    return report


def resolve_unknowns(cluster: Cluster, history: History) -> None:
    """An unknown submit either never arrived (404) or did; if it did, it must be final like any other."""
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}) as http:
        for command_id, command in list(history.unknown.items()):
            answer = http.get(f"/v1/commands/{command_id}", params={"wait": 30})
            if answer.status_code == 200:
                history.acknowledged[command_id] = command


RESULTS: list[str] = []
"""Every scenario's counts, printed in pytest's terminal summary (tests/chaos/conftest.py)."""


def record(text: str) -> str:
    RESULTS.append(text.strip())
    return text


def line(name: str, history: History, report: Report, cluster: Cluster, **extra: object) -> str:
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    return record(
        f"\nchaos {name}: {report.line()} refused={len(history.refused)} unknown={len(history.unknown)} "
        f"retries={history.retries} kills={cluster.kills()} {more}"
    )
