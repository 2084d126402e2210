"""Clients that record what they were told (acknowledged, refused, unknown), and the end-of-run check.

The workload mixes every command type: deposits, withdrawals and transfers; holds (some with a
`to_account_id`, some expiring within seconds so the expiry sweep races the captures), captures
(whole, partial, a few above the hold), voids, reversals (of deposits, withdrawals, transfers,
captures and transactions, whole or in part) and transactions whose debits share a partition.
A capture, void or reversal names a command some client was already told was accepted (any
client's, so two releases of one hold, or reversals of one original, may race); what it meets at
its partition (a hold resolved or expired, an original not applied yet or reversed in full) is
for the checker to judge. Each submit records when it was first sent and when it was
acknowledged, so the checker can hold the ledger to real-time order.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ledgerq.shared.routing import partition_for
from tests.chaos.cluster import LEDGERQ, PARTITIONS, Cluster
from tests.checker import Report, Timeline, check

RETRIES_MAX = 40
RETRY_SLEEP_S_MAX = 1.0


@dataclass
class Targets:
    """Acknowledged commands that a later capture, void or reversal may name, shared by all clients."""

    open_holds: list[dict[str, Any]] = field(default_factory=list)  # no capture or void named them yet
    holds: list[dict[str, Any]] = field(default_factory=list)  # every acknowledged hold
    originals: list[tuple[str, int]] = field(default_factory=list)  # (id, amount it moved) a reversal may name


@dataclass
class History:
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent_in_order: dict[str, list[str]] = field(default_factory=dict)
    first_sent_s: dict[str, float] = field(default_factory=dict)  # time.monotonic() of the first send
    acknowledged_s: dict[str, float] = field(default_factory=dict)  # time.monotonic() of the 200/202
    targets: Targets = field(default_factory=Targets)
    retries: int = 0
    unavailable: Counter[str] = field(default_factory=Counter)  # 5xx codes and lost connections seen
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timeline(self) -> Timeline:
        return Timeline(dict(self.first_sent_s), dict(self.acknowledged_s))


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


def random_command(rng: random.Random, accounts: list[str], kind: str | None = None) -> dict[str, Any]:
    """A deposit, withdrawal or transfer (`kind`, or one at random)."""
    kind = kind or rng.choices(["deposit", "withdraw", "transfer"], [4, 3, 3])[0]
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


WEIGHTS = {
    "deposit": 4,
    "withdraw": 2,
    "transfer": 2,
    "transaction": 2,
    "hold": 3,
    "capture": 2,
    "void": 1,
    "reversal": 2,
}
"""Of every 18 commands about 10 are holds, captures, voids, reversals and transactions; a capture, void
or reversal with nothing acknowledged to name yet is sent as a deposit instead."""
SHORT_EXPIRY_S = (1, 2)
"""A fifth of the holds expire this soon, so the sweep and captures race for them."""
LEGS_CREDITED_MAX = 3


class Mix:
    """One client's commands of every type. Thread-safe across clients through `history.lock`."""

    def __init__(self, rng: random.Random, accounts: list[str], history: History) -> None:
        self.rng = rng
        self.accounts = accounts
        self.history = history
        self.targets = history.targets
        by_partition: dict[int, list[str]] = {}
        for account in accounts:
            by_partition.setdefault(partition_for(account, PARTITIONS), []).append(account)
        self.by_partition = [group for _, group in sorted(by_partition.items())]
        # What only the workload needs of a command it sent (never part of the body): for a capture,
        # the most a reversal of it may take back; for a transaction, whether it can be reversed.
        self.notes: dict[str, int | bool] = {}

    def next(self) -> dict[str, Any]:
        kind = self.rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        command: dict[str, Any] | None = None
        if kind == "transaction":
            command = self._transaction()
        elif kind == "hold":
            command = self._hold()
        elif kind in ("capture", "void"):
            command = self._release(kind)
        elif kind == "reversal":
            command = self._reversal()
        if command is None:
            command = random_command(self.rng, self.accounts, kind if kind in ("withdraw", "transfer") else "deposit")
        return command

    def answered(self, command: dict[str, Any], acknowledged: bool) -> None:
        """Make an acknowledged command something later commands may name."""
        kind = command["type"]
        if not acknowledged:
            self.notes.pop(command["id"], None)
            return
        with self.history.lock:
            if kind == "hold":
                self.targets.holds.append(command)
                self.targets.open_holds.append(command)
            elif kind in ("deposit", "withdraw", "transfer"):
                self.targets.originals.append((command["id"], command["amount"]))
            elif kind == "capture":
                self.targets.originals.append((command["id"], int(self.notes.pop(command["id"], 0))))
            elif kind == "transaction" and self.notes.pop(command["id"], False):
                self.targets.originals.append((command["id"], 0))  # reversed whole: no amount

    def _hold(self) -> dict[str, Any]:
        source, target = self.rng.sample(self.accounts, 2)
        command = _body("hold", account_id=source, amount=self.rng.randint(1, 3_000), currency="USD")
        if self.rng.random() < 0.5:
            command["to_account_id"] = target
        if self.rng.random() < 0.2:
            command["expires_in_s"] = self.rng.choice(SHORT_EXPIRY_S)
        return command

    def _release(self, kind: str) -> dict[str, Any] | None:
        """Mostly a hold nothing named yet; sometimes one already named, which must then be refused."""
        with self.history.lock:
            fresh = self.targets.open_holds
            if fresh and self.rng.random() < 0.85:
                n = self.rng.randrange(len(fresh))
                fresh[n], fresh[-1] = fresh[-1], fresh[n]
                hold = fresh.pop()
            elif self.targets.holds:
                hold = self.rng.choice(self.targets.holds)
            else:
                return None
        command = _body(kind, hold_id=hold["id"])
        if kind == "capture":
            whole = hold["amount"]
            roll = self.rng.random()
            if roll < 0.4:
                command["amount"] = self.rng.randint(1, whole)
            elif roll < 0.5:
                command["amount"] = whole + self.rng.randint(1, 100)  # amount_exceeds_hold
            self.notes[command["id"]] = command.get("amount", whole)
        return command

    def _reversal(self) -> dict[str, Any] | None:
        with self.history.lock:
            if not self.targets.originals:
                return None
            n = self.rng.randrange(len(self.targets.originals))
            original_id, amount = self.targets.originals[n]
            if self.rng.random() < 0.5:  # the rest stays reversible: a later reversal may take more
                self.targets.originals[n] = self.targets.originals[-1]
                self.targets.originals.pop()
        command = _body("reversal", command_id=original_id)
        if amount and self.rng.random() < 0.5:
            command["amount"] = self.rng.randint(1, amount + amount // 10)  # a few above what is left
        return command

    def _transaction(self) -> dict[str, Any]:
        """Debits on one partition (credits anywhere, or for half of them, on one partition so that the
        transaction can be reversed: its reversal debits the credited accounts)."""
        debiting = self.rng.choice(self.by_partition)
        debited = self.rng.sample(debiting, min(len(debiting), self.rng.randint(1, 2)))
        reversible = self.rng.random() < 0.5
        pool = self.rng.choice(self.by_partition) if reversible else self.accounts
        others = [a for a in pool if a not in debited]
        if not others:
            others, reversible = [a for a in self.accounts if a not in debited], False
        credited = self.rng.sample(others, min(len(others), self.rng.randint(1, LEGS_CREDITED_MAX)))
        debits = [self.rng.randint(len(credited), 2_000) for _ in debited]
        cuts = sorted(self.rng.sample(range(1, sum(debits)), len(credited) - 1))
        credits = [b - a for a, b in zip([0, *cuts], [*cuts, sum(debits)], strict=True)]
        legs = [{"account_id": a, "amount": -n} for a, n in zip(debited, debits, strict=True)]
        legs += [{"account_id": a, "amount": n} for a, n in zip(credited, credits, strict=True)]
        self.rng.shuffle(legs)
        reversible = reversible and len({partition_for(a, PARTITIONS) for a in credited}) == 1
        command = _body("transaction", currency="USD", legs=legs)
        self.notes[command["id"]] = reversible
        return command


def _body(kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"{kind[:2]}-{uuid.uuid4().hex[:16]}", "type": kind, **fields}


def submit(http: httpx.Client, history: History, client: str, command: dict[str, Any]) -> bool:
    """Send until the answer is known; 5xx and lost connections are retried with the same id.
    True if the command was acknowledged."""
    delay_s = 0.05
    with history.lock:
        history.first_sent_s.setdefault(command["id"], time.monotonic())
    for attempt in range(RETRIES_MAX):
        why = "no_answer"
        try:
            answer = http.post("/v1/commands", json=command, timeout=10)
            code = answer.status_code
            if code >= 500:
                why = _problem_code(answer)
        except httpx.HTTPError:
            code = 0
        if code in (200, 202):
            with history.lock:
                history.acknowledged_s[command["id"]] = time.monotonic()
                history.acknowledged[command["id"]] = command
                history.unknown.pop(command["id"], None)
                history.retries += attempt
            return True
        if 400 <= code < 500:
            with history.lock:
                history.refused[command["id"]] = code
            return False
        with history.lock:
            history.unknown[command["id"]] = command
            history.unavailable[why] += 1
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, RETRY_SLEEP_S_MAX)
    return False


def _problem_code(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("code") or answer.status_code)
    except ValueError:
        return str(answer.status_code)


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
            mix = Mix(rng, accounts, history)
            while not done.is_set() and budget.acquire(blocking=False):
                command = mix.next()
                order.append(command["id"])
                mix.answered(command, submit(http, history, str(n), command))
                sent.release()

    chaos_stop = threading.Event()
    broken: list[BaseException] = []

    def chaos_or_stop(stop: threading.Event) -> None:
        """A fault that fails to inject (or to heal) ends the run at once, instead of leaving the
        clients retrying against a dependency that never comes back."""
        assert chaos is not None
        try:
            chaos(stop)
        except BaseException as exc:
            broken.append(exc)
            done.set()

    chaos_thread = threading.Thread(target=chaos_or_stop, args=(chaos_stop,), daemon=True) if chaos else None
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
    if broken:
        raise AssertionError(f"the fault injection failed: {broken[0]!r}") from broken[0]
    return history, settle(cluster, history)


def settle(cluster: Cluster, history: History) -> Report:
    cluster.wait_drained()
    resolve_unknowns(cluster, history)
    report = check(cluster.engine, history.acknowledged, history.sent_in_order, history.timeline())
    verified = subprocess.run([*LEDGERQ, "verify"], env=cluster.env, capture_output=True, text=True, timeout=300)
    if verified.returncode != 0:
        report.problems.append(f"ledgerq verify: {verified.stdout[-500:]}")
    for worker in cluster.workers:
        # The worker survives an invariant violation (it applies the batch one command at a time), so
        # the ledger alone would not show it; a chaos run must never raise one.
        log = worker.log.read_text(errors="replace") if worker.log.exists() else ""
        if violations := sum("InvariantViolation" in entry for entry in log.splitlines()):
            report.problems.append(f"{worker.log.name}: {violations} log lines name an InvariantViolation")
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
        f"retries={history.retries} kills={cluster.kills()} orphans={orphans_applied(cluster)} "
        f"unavailable=({' '.join(f'{k}={n}' for k, n in sorted(history.unavailable.items()))}) {more}"
    )


_ORPHANS_LOGGED = re.compile(r"applied (\d+) claims whose job Redis no longer had")


def orphans_applied(cluster: Cluster) -> int:
    """Claims the workers applied from Postgres because Redis had lost their jobs (from their logs)."""
    logs = (w.log.read_text(errors="replace") for w in cluster.workers if w.log.exists())
    return sum(int(n) for log in logs for n in _ORPHANS_LOGGED.findall(log))
