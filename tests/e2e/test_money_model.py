"""A seeded random workload of every money movement, predicted command by command by a pure model and
compared with what real servers did: every outcome and rejection code, every balance, held and
available, every hold's state and captured amount, every original's reversed amount, every entry
(amount, counterparty, order, balance_after); then `ledgerq verify` must be clean.

Which order is observable, and why the prediction is exact. A partition applies its queue in
acceptance order, but partitions — and, within one, commands from different submitters —
interleave freely, so a debit's outcome may depend on whether another partition's credit landed
first. The workload therefore runs in rounds with a barrier (every command of a round final before
the next round is sent). Within a round each *lane* (a set of accounts inside one partition, with one
thread submitting its commands one after another, so its queue order is its submission order) only
debits, places holds on, captures, voids and reverses from its own accounts. Lanes meet only by
crediting this round's *receivers*, accounts nobody debits or checks in that round. Credits commute,
so every outcome is independent of how lanes interleave and the model predicts it before sending.
One account's entries are then ordered within a lane and free across lanes: the test asserts exactly
that — per round, each lane's subsequence of the account's entries is the model's, rounds never mix,
and balance_after is the running sum — and at every barrier the balances and held are the model's.
(A lane may also name another lane's command of an earlier round where nothing depends on timing:
a reversal of what cannot be reversed, or a command refused at the door.)

Commands go in over HTTP, through `submit`, or several at once through `submit_many`; some are
retried with the same id (the same door, the other door, or the id in an `Idempotency-Key` header),
some resent with another payload (a 409), some replayed once the round is sent. Some rounds are
sent while no worker runs, so they are applied in large batches, where a command meets in the same
transaction the hold or original it names; the workers must apply every batch without raising.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from ledgerq.api.context import Context
from ledgerq.api.submit import submit, submit_many
from ledgerq.ops.verify import verify
from ledgerq.shared.commands import REVERSIBLE_TYPES, parse_command
from ledgerq.shared.errors import IdempotencyConflict, LedgerError
from ledgerq.shared.routing import SYSTEM_PREFIX, partition_for, world_account
from ledgerq.shared.settings import Settings
from tests.conftest import PARTITIONS, Workers

SEED = int(os.environ.get("LEDGERQ_MODEL_SEED", "20261202"))  # another seed: another workload, as exact
ROUNDS = 10
QUEUED_ROUNDS = {2, 5, 8}  # sent while no worker runs, then applied in large batches
COMMANDS_PER_LANE_ROUND = 40
ACCOUNTS_PER_PARTITION = 5
FIRST_LANE_SIZE = 3  # a partition's first three accounts are one lane, the other two another
RECEIVERS_PER_ROUND = 5
CHUNK_MAX = 8  # commands per `submit_many` call
HTTP_SAMPLE = 80  # holds and commands also read over HTTP
WAIT_S_MAX = 120  # a bound on waiting for a round to be applied, far beyond a healthy run
CURRENCY = "USD"
WEIGHTS = {
    "deposit": 12,
    "withdraw": 10,
    "transfer": 16,
    "transaction": 9,
    "hold": 14,
    "capture": 12,
    "void": 5,
    "reversal": 18,
    "refused": 2,
}

Leg = tuple[str, int, str]  # (account, signed amount, counterparty)
Answer = tuple[str, str | None, int | None]  # (accepted | replayed | refused | conflict, code, partition)


@dataclass(frozen=True)
class Entry:
    command_id: str
    amount: int
    counterparty: str
    round: int
    lane: int


@dataclass
class Account:
    id: str
    partition: int
    lane: int
    overdraft_limit: int
    balance: int = 0
    held: int = 0
    entries: list[Entry] = field(default_factory=list)

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass
class HoldModel:
    id: str
    account: str
    to_account: str | None
    amount: int
    partition: int
    lane: int
    status: str  # pending | captured | voided | rejected (never placed)
    captured: int = 0

    def view(self) -> tuple[str, int, int, str, str | None]:
        return (self.status, self.captured, self.amount, self.account, self.to_account)


@dataclass
class Original:
    """Any claimed command, as a reversal may name it."""

    id: str
    type: str
    lane: int
    round: int
    partition: int
    applied: bool
    credited: tuple[str, ...]  # the named accounts the command credits: a reversal debits and routes by them
    legs: tuple[tuple[str, int], ...] = ()
    reversible: int = 0
    reversed: int = 0


@dataclass
class Planned:
    body: dict[str, Any]
    round: int
    lane: int
    expect: tuple[str, str | None]  # (applied | rejected | refused, code)
    partition: int | None
    legs: tuple[Leg, ...] = ()
    via: str = "inproc"  # http | inproc | many (in-process, consecutive ones in one `submit_many`)
    retry: str = "none"  # none | same | header | cross
    conflict: bool = False
    late_replay: bool = False
    seen: tuple[str, int | None, int | None, int | None] | None = None  # a refusal's (account, balance, seq, held)

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def kind(self) -> str:
        return str(self.body["type"])


def is_system(account_id: str) -> bool:
    return account_id.startswith(SYSTEM_PREFIX)


def counterparties(signed: list[tuple[str, int]]) -> tuple[Leg, ...]:
    """The rules' counterparty: the one account on the other side, or `*` when there are several."""
    debits = [a for a, n in signed if n < 0]
    credits = [a for a, n in signed if n > 0]
    legs = []
    for account, n in signed:
        other = credits if n < 0 else debits
        legs.append((account, n, other[0] if len(other) == 1 else "*"))
    return tuple(legs)


class Model:
    """The ledger's rules, written again from DESIGN.md, and the workload generator built on them."""

    def __init__(self, rng: random.Random, accounts: list[Account]) -> None:
        self.rng = rng
        self.order = [a.id for a in accounts]  # index order: never iterate a set when drawing
        self.accounts = {a.id: a for a in accounts}
        self.lanes: dict[int, list[str]] = {}
        for a in accounts:
            self.lanes.setdefault(a.lane, []).append(a.id)
        self.lane_partition = {a.lane: a.partition for a in accounts}
        self.holds: dict[str, HoldModel] = {}
        self.originals: dict[str, Original] = {}
        self.planned: list[Planned] = []
        self.round = 0
        self.lane = 0
        self.receivers: list[str] = []

    # -- the round and lane being planned ------------------------------------------------------

    def plan_round(self, number: int) -> dict[int, list[Planned]]:
        self.round = number
        self.receivers = self.rng.sample(self.order, RECEIVERS_PER_ROUND)
        plans: dict[int, list[Planned]] = {}
        for lane in sorted(self.lanes):
            self.lane = lane
            plans[lane] = [self._one() for _ in range(COMMANDS_PER_LANE_ROUND)]
        return plans

    def _one(self) -> Planned:
        weights = dict(WEIGHTS)
        if self.round == 0:
            weights["deposit"] = 60
        kind = self.rng.choices(list(weights), list(weights.values()))[0]
        planned: Planned | None = getattr(self, f"_{kind}")()
        if planned is None:
            planned = self._deposit()
        self._transport(planned)
        self.planned.append(planned)
        return planned

    def _transport(self, p: Planned) -> None:
        p.via = self.rng.choices(["http", "inproc", "many"], [25, 25, 50])[0]
        p.retry = self.rng.choices(["none", "same", "header", "cross"], [85, 8, 4, 3])[0]
        if p.retry == "header" and p.via != "http":
            p.retry = "same"
        claimed = p.expect[0] != "refused"
        p.conflict = claimed and self.rng.random() < 0.02
        p.late_replay = claimed and self.rng.random() < 0.05

    def _mine(self) -> list[str]:
        return self.lanes[self.lane]

    def _debitable(self) -> list[str]:
        return [a for a in self._mine() if a not in self.receivers]

    def _creditable(self) -> list[str]:
        return [a for a in self.order if a in self._mine() or a in self.receivers]

    def _near(self, far: list[str] | None = None) -> list[str]:
        """Where a credit goes: this lane's accounts half the time (so it may be reversed from here), else
        anywhere it may (the receivers, or any account for a hold's target)."""
        return self._mine() if self.rng.random() < 0.5 else (far or self._creditable())

    def _world(self, partition: int | None = None) -> str:
        return world_account(CURRENCY, self.lane_partition[self.lane] if partition is None else partition)

    def _covered(self, account_id: str, amount: int) -> bool:
        account = self.accounts[account_id]
        return account.available - amount >= -account.overdraft_limit

    def _settled(self, original: Original) -> bool:
        """Final before anything of this lane's round is applied, or earlier in this lane's own queue."""
        return original.round < self.round or original.lane == self.lane

    # -- recording outcomes --------------------------------------------------------------------

    def _planned(
        self, kind: str, body: dict[str, Any], expect: tuple[str, str | None], partition: int | None
    ) -> Planned:
        body = {"id": f"mm-{kind[:4]}-{uuid.uuid4().hex[:16]}", "type": kind, **body}
        return Planned(body, self.round, self.lane, expect, partition)

    def _applied(
        self,
        kind: str,
        body: dict[str, Any],
        partition: int,
        signed: list[tuple[str, int]],
        credited: tuple[str, ...] = (),
        reversible: int = 0,
    ) -> Planned:
        p = self._planned(kind, body, ("applied", None), partition)
        p.legs = counterparties(signed)
        for account_id, amount, counterparty in p.legs:
            account = self.accounts.get(account_id)
            if account is not None:
                account.balance += amount
                account.entries.append(Entry(p.id, amount, counterparty, self.round, self.lane))
        self._original(p, True, credited, tuple(signed), reversible)
        return p

    def _rejected(
        self,
        kind: str,
        body: dict[str, Any],
        partition: int,
        code: str,
        credited: tuple[str, ...] = (),
        seen: str | None = None,
    ) -> Planned:
        """`seen`: the account whose state decided the refusal (the debit it could not cover), whose state
        it records; None where no account's state did (a hold's or an original's did)."""
        p = self._planned(kind, body, ("rejected", code), partition)
        self._original(p, False, credited)
        if seen is not None:
            a = self.accounts[seen]
            exact = seen not in self.receivers  # a receiver's state depends on how lanes interleave
            p.seen = (seen, a.balance, len(a.entries), a.held) if exact else (seen, None, None, None)
        return p

    def _original(
        self,
        p: Planned,
        applied: bool,
        credited: tuple[str, ...],
        legs: tuple[tuple[str, int], ...] = (),
        reversible: int = 0,
    ) -> None:
        assert p.partition is not None
        self.originals[p.id] = Original(
            p.id, p.kind, self.lane, self.round, p.partition, applied, credited, legs, reversible
        )

    # -- deposits, withdrawals, transfers, transactions ----------------------------------------

    def _deposit(self) -> Planned:
        account = self.rng.choice(self._mine())
        amount = self.rng.randint(100, 5_000)
        body = {"account_id": account, "amount": amount, "currency": CURRENCY}
        signed = [(self._world(), -amount), (account, amount)]
        return self._applied("deposit", body, partition_for(account, PARTITIONS), signed, (account,), amount)

    def _withdraw(self) -> Planned | None:
        if not (sources := self._debitable()):
            return None
        account = self.rng.choice(sources)
        amount = self.rng.randint(50, 4_000)
        body = {"account_id": account, "amount": amount, "currency": CURRENCY}
        partition = partition_for(account, PARTITIONS)
        if not self._covered(account, amount):
            return self._rejected("withdraw", body, partition, "insufficient_funds", seen=account)
        return self._applied("withdraw", body, partition, [(account, -amount), (self._world(), amount)], (), amount)

    def _transfer(self) -> Planned | None:
        if not (sources := self._debitable()):
            return None
        source = self.rng.choice(sources)
        target = self.rng.choice([a for a in self._near() if a != source])
        amount = self.rng.randint(10, 3_000)
        body = {"account_id": source, "to_account_id": target, "amount": amount, "currency": CURRENCY}
        partition = partition_for(source, PARTITIONS)
        if not self._covered(source, amount):
            return self._rejected("transfer", body, partition, "insufficient_funds", (target,), source)
        return self._applied("transfer", body, partition, [(source, -amount), (target, amount)], (target,), amount)

    def _transaction(self) -> Planned | None:
        sources = self._debitable()
        if not sources:
            return None
        debits = self.rng.sample(sources, min(len(sources), self.rng.choice([1, 1, 2])))
        pool = [a for a in self._near() if a not in debits] or [a for a in self._creditable() if a not in debits]
        credits = self.rng.sample(pool, min(len(pool), self.rng.randint(1, 3)))
        if not credits:
            return None
        signed = [(a, -self.rng.randint(10, 1_500)) for a in debits]
        total = -sum(n for _, n in signed)
        cuts = sorted(self.rng.sample(range(1, total), len(credits) - 1))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
        signed += list(zip(credits, parts, strict=True))
        self.rng.shuffle(signed)
        body = {"currency": CURRENCY, "legs": [{"account_id": a, "amount": n} for a, n in signed]}
        partition = partition_for(min(debits), PARTITIONS)
        short = [a for a, n in signed if n < 0 and not self._covered(a, -n)]  # checked in leg order
        if short:
            return self._rejected("transaction", body, partition, "insufficient_funds", tuple(credits), short[0])
        return self._applied("transaction", body, partition, signed, tuple(credits), total)

    # -- holds, captures, voids ----------------------------------------------------------------

    def _hold(self) -> Planned | None:
        if not (sources := self._debitable()):
            return None
        account = self.rng.choice(sources)
        amount = self.rng.randint(50, 2_500)
        to = None if self.rng.random() < 0.3 else self.rng.choice([a for a in self._near(self.order) if a != account])
        body: dict[str, Any] = {"account_id": account, "amount": amount, "currency": CURRENCY}
        body["expires_in_s"] = self.rng.randint(3_600, 2_592_000)  # none expires during the test
        if to is not None:
            body["to_account_id"] = to
        partition = partition_for(account, PARTITIONS)
        placed = self._covered(account, amount)
        if placed:
            self.accounts[account].held += amount
            p = self._planned("hold", body, ("applied", None), partition)
            self._original(p, True, ())
        else:
            p = self._rejected("hold", body, partition, "insufficient_funds", seen=account)
        status = "pending" if placed else "rejected"
        self.holds[p.id] = HoldModel(p.id, account, to, amount, partition, self.lane, status)
        return p

    def _capturable(self, hold: HoldModel) -> bool:
        """A capture this lane may apply this round: it debits a non-receiver and credits what it may."""
        return (
            hold.status == "pending"
            and hold.account not in self.receivers
            and (hold.to_account is None or hold.to_account in self._creditable())
        )

    def _capture(self) -> Planned | None:
        mine = [h for h in self.holds.values() if h.lane == self.lane]
        if not mine:
            return None
        ready = [h for h in mine if self._capturable(h)]
        if ready and self.rng.random() < 0.75:
            hold, mode = self.rng.choice(ready), self.rng.choices(["whole", "part", "over"], [4, 4, 1])[0]
        else:
            hold, mode = self.rng.choice(mine), self.rng.choices(["whole", "part", "over"], [2, 2, 3])[0]
            if hold.status == "pending" and not self._capturable(hold):
                mode = "over"  # refused whatever the interleaving
        amount = {
            "whole": None,
            "part": self.rng.randint(1, hold.amount),
            "over": hold.amount + self.rng.randint(1, 99),
        }
        body: dict[str, Any] = {"hold_id": hold.id}
        if amount[mode] is not None:
            body["amount"] = amount[mode]
        credited = () if hold.to_account is None else (hold.to_account,)
        # Refused by the hold's state, not an account's: the refusal records no account.
        if hold.status != "pending":
            return self._rejected("capture", body, hold.partition, "hold_not_pending", credited)
        captured = amount[mode] or hold.amount
        if captured > hold.amount:
            return self._rejected("capture", body, hold.partition, "amount_exceeds_hold", credited)
        self.accounts[hold.account].held -= hold.amount
        hold.status, hold.captured = "captured", captured
        target = hold.to_account or self._world(hold.partition)
        signed = [(hold.account, -captured), (target, captured)]
        return self._applied("capture", body, hold.partition, signed, credited, captured)

    def _void(self) -> Planned | None:
        mine = [h for h in self.holds.values() if h.lane == self.lane]
        if not mine:
            return None
        pending = [h for h in mine if h.status == "pending"]
        hold = self.rng.choice(pending if pending and self.rng.random() < 0.7 else mine)
        body = {"hold_id": hold.id}
        if hold.status != "pending":
            return self._rejected("void", body, hold.partition, "hold_not_pending")
        self.accounts[hold.account].held -= hold.amount
        hold.status = "voided"
        p = self._planned("void", body, ("applied", None), hold.partition)
        self._original(p, True, ())
        return p

    # -- reversals -----------------------------------------------------------------------------

    def _reversal_partition(self, original: Original) -> int:
        """ledgerq.api.references' rule: the account the reversal debits, or the original's own partition."""
        if original.credited:
            return partition_for(min(original.credited), PARTITIONS)
        return original.partition

    def _spans(self, original: Original) -> bool:
        """A transaction whose credited accounts (the reversal's debits) route to several partitions."""
        return original.type == "transaction" and len({partition_for(a, PARTITIONS) for a in original.credited}) > 1

    def _reversible_here(self, original: Original) -> bool:
        debited = [a for a, n in original.legs if n > 0 and not is_system(a)]
        credited = [a for a, n in original.legs if n < 0 and not is_system(a)]
        lanes = {self.accounts[a].lane for a in debited} or {original.lane}
        return (
            lanes == {self.lane}
            and all(a in self._debitable() for a in debited)
            and all(a in self._creditable() for a in credited)
        )

    def _reversal(self) -> Planned | None:
        settled = [o for o in self.originals.values() if self._settled(o)]
        ready = [o for o in settled if o.applied and o.type in REVERSIBLE_TYPES and self._reversible_here(o)]
        if ready and self.rng.random() < 0.85:
            return self._reverse(self.rng.choice(ready))
        others = [o for o in settled if not (o.applied and o.type in REVERSIBLE_TYPES) or self._spans(o)]
        if not others:
            return None
        return self._reverse_unreversible(self.rng.choice(others))

    def _reverse(self, original: Original) -> Planned:
        left = original.reversible - original.reversed
        amount: int | None = None
        if original.type != "transaction":
            mode = self.rng.choices(["part", "whole", "over"], [5, 3, 1])[0]
            if mode == "part" and left > 0:
                amount = self.rng.randint(1, left)
            elif mode == "over":
                amount = left + self.rng.randint(1, 99)
        body: dict[str, Any] = {"command_id": original.id}
        if amount is not None:
            body["amount"] = amount
        partition = self._reversal_partition(original)
        reversing = left if amount is None else amount
        if reversing > left or reversing == 0:  # decided by the original's state: no account recorded
            return self._rejected("reversal", body, partition, "amount_exceeds_reversible")
        world = self._world(partition)
        signed = [
            (
                world if is_system(a) else a,
                -n if original.type == "transaction" else (-reversing if n > 0 else reversing),
            )
            for a, n in original.legs
        ]
        # The mirrored legs are checked in the order of the original's entries as read back (by account
        # id); an original of this round may be in the same batch, its legs in plan order: not checked.
        short = [a for a, n in sorted(signed) if n < 0 and not is_system(a) and not self._covered(a, -n)]
        if short:
            seen = short[0] if original.round < self.round else None
            return self._rejected("reversal", body, partition, "insufficient_funds", seen=seen)
        original.reversed += reversing
        return self._applied("reversal", body, partition, signed)

    def _reverse_unreversible(self, original: Original) -> Planned:
        """Holds, voids, reversals, and whatever was rejected: `not_reversible` (or refused at the door)."""
        body: dict[str, Any] = {"command_id": original.id}
        if self._spans(original):
            return self._planned("reversal", body, ("refused", "legs_span_partitions"), None)
        if original.type != "transaction" and self.rng.random() < 0.3:
            body["amount"] = self.rng.randint(1, 500)
        return self._rejected("reversal", body, self._reversal_partition(original), "not_reversible")

    # -- refused at the door, nothing claimed --------------------------------------------------

    def _refused(self) -> Planned:
        mine = self.rng.choice(self._mine())
        far = self.rng.choice([a for a in self.order if self.accounts[a].partition != self.accounts[mine].partition])
        settled = [o for o in self.originals.values() if self._settled(o)]
        not_holds = [o for o in settled if o.type != "hold"]
        transactions = [o for o in settled if o.type == "transaction"]
        case = self.rng.choice(["span", "unknown_hold", "unknown_command", "transaction_amount"])
        if case == "unknown_hold" and not_holds:
            body: dict[str, Any] = {"hold_id": self.rng.choice(not_holds).id}
            return self._planned(self.rng.choice(["capture", "void"]), body, ("refused", "unknown_hold"), None)
        if case == "unknown_command":
            body = {"command_id": f"mm-never-{uuid.uuid4().hex[:12]}"}
            return self._planned("reversal", body, ("refused", "unknown_command"), None)
        if case == "transaction_amount" and transactions:
            body = {"command_id": self.rng.choice(transactions).id, "amount": 1}
            return self._planned("reversal", body, ("refused", "validation_failed"), None)
        legs = [{"account_id": mine, "amount": -5}, {"account_id": far, "amount": -5}]
        legs.append({"account_id": self.rng.choice([a for a in self.order if a not in (mine, far)]), "amount": 10})
        return self._planned(
            "transaction", {"currency": CURRENCY, "legs": legs}, ("refused", "legs_span_partitions"), None
        )


# -- the two doors ------------------------------------------------------------------------------


class Doors:
    """Submit over HTTP (the TestClient) or in-process (`ledgerq.api.submit.submit`), answering alike."""

    def __init__(self, http: TestClient, ctx: Context) -> None:
        self.http = http
        self.ctx = ctx

    def send(self, body: dict[str, Any], via: str, header: bool = False) -> Answer:
        return self._http(body, header) if via == "http" else self._inproc(body)

    def _http(self, body: dict[str, Any], header: bool) -> Answer:
        headers = {}
        if header:
            headers["Idempotency-Key"] = body["id"]
            body = {k: v for k, v in body.items() if k != "id"}
        answer = self.http.post("/v1/commands", json=body, headers=headers)
        data = answer.json()
        if answer.status_code in (200, 202):
            replayed = answer.headers.get("Idempotent-Replayed") == "true"
            if replayed != (answer.status_code == 200):
                return ("bad_replay_header", None, data.get("partition"))
            return ("accepted" if answer.status_code == 202 else "replayed", None, data["partition"])
        return ({409: "conflict", 422: "refused"}.get(answer.status_code, str(answer.status_code)), data["code"], None)

    def send_many(self, bodies: list[dict[str, Any]]) -> list[Answer]:
        answers: list[Answer] = []
        for done in submit_many(self.ctx, [parse_command(b) for b in bodies]):
            if isinstance(done, IdempotencyConflict):
                answers.append(("conflict", done.code, None))
            elif isinstance(done, LedgerError):
                answers.append(("refused", done.code, None))
            else:
                answers.append(("replayed" if done.replayed else "accepted", None, done.partition))
        return answers

    def _inproc(self, body: dict[str, Any]) -> Answer:
        try:
            done = submit(self.ctx, parse_command(body))
        except IdempotencyConflict as exc:
            return ("conflict", exc.code, None)
        except LedgerError as exc:
            return ("refused", exc.code, None)
        return ("replayed" if done.replayed else "accepted", None, done.partition)


def expected_first(p: Planned) -> Answer:
    return ("refused", p.expect[1], None) if p.expect[0] == "refused" else ("accepted", None, p.partition)


def expected_again(p: Planned) -> Answer:
    return ("refused", p.expect[1], None) if p.expect[0] == "refused" else ("replayed", None, p.partition)


def chunks(plans: list[Planned]) -> list[list[Planned]]:
    """Consecutive `many` plans share a `submit_many` call, unless one names another of the call
    (it is routed by looking the other up, which is claimed in the same round)."""
    out: list[list[Planned]] = []
    for p in plans:
        named = p.body.get("hold_id") or p.body.get("command_id")
        last = out[-1] if out else []
        joins = p.via == "many" and last and last[0].via == "many" and len(last) < CHUNK_MAX
        if joins and named not in {q.id for q in last}:
            last.append(p)
        else:
            out.append([p])
    return out


def run_lane(doors: Doors, plans: list[Planned], tally: Counter[str]) -> list[str]:
    """One lane's round, sent one after another: its queue order is this order."""
    problems: list[str] = []

    def check(p: Planned, got: Answer, want: Answer, what: str) -> None:
        tally[f"{what}:{got[0]}"] += 1
        if got != want:
            problems.append(f"{p.id} ({p.kind}) {what} via {p.via}: answered {got}, expected {want}")

    for chunk in chunks(plans):
        if chunk[0].via == "many":
            tally["submit_many calls"] += 1
            answers = doors.send_many([p.body for p in chunk])
        else:
            answers = [doors.send(chunk[0].body, chunk[0].via)]
        for p, answer in zip(chunk, answers, strict=True):
            check(p, answer, expected_first(p), "submit")
        for p in chunk:
            via = "inproc" if p.via == "many" else p.via
            if p.retry != "none":
                again = {"cross": "inproc" if via == "http" else "http"}.get(p.retry, via)
                check(p, doors.send(p.body, again, header=p.retry == "header"), expected_again(p), "retry")
            if p.conflict:
                other = {**p.body, "reference": "another payload for this id"}
                check(p, doors.send(other, via), ("conflict", "idempotency_conflict", None), "conflict")
    for p in plans:
        if p.late_replay:
            check(p, doors.send(p.body, "http" if p.via != "http" else "inproc"), expected_again(p), "late")
    return problems


def wait_applied(engine: Engine, ids: list[str]) -> None:
    """Block until every id is final (a bound, not a timed assertion: a healthy run takes seconds)."""
    query = text(
        "SELECT count(*) FROM commands WHERE id = ANY(:ids) AND status NOT IN ('applied', 'rejected', 'failed')"
    )
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        with engine.connect() as conn:
            left = conn.execute(query, {"ids": ids}).scalar_one()
        if left == 0:
            return
        assert time.monotonic() < deadline, f"{left} commands still not final after {WAIT_S_MAX} s"
        time.sleep(0.02)


# -- comparisons --------------------------------------------------------------------------------


def snapshot_problems(engine: Engine, model: Model, round_number: int) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, balance, held, entry_count FROM accounts WHERE id = ANY(:ids)"), {"ids": model.order}
        ).all()
    problems = []
    for row in rows:
        a = model.accounts[row.id]
        if (row.balance, row.held, row.entry_count) != (a.balance, a.held, len(a.entries)):
            problems.append(
                f"after round {round_number}: {row.id} has (balance, held, entries) "
                f"{(row.balance, row.held, row.entry_count)}, model {(a.balance, a.held, len(a.entries))}"
            )
    return problems


def outcome_problems(engine: Engine, model: Model) -> list[str]:
    claimed = {p.id: p for p in model.planned if p.expect[0] != "refused"}
    refused = [p.id for p in model.planned if p.expect[0] == "refused"]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, type, status, error_code, partition, result, reversed_amount FROM commands"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": list(claimed)},
        ).all()
        stray = conn.execute(text("SELECT id FROM commands WHERE id = ANY(:ids)"), {"ids": refused}).scalars().all()
    problems = [f"{i}: refused at the door, yet claimed" for i in stray]
    if len(rows) != len(claimed):
        problems.append(f"{len(claimed) - len(rows)} acknowledged commands have no row")
    for row in rows:
        p = claimed[row.id]
        got = (row.status, row.error_code)
        if got != p.expect or row.partition != p.partition or row.type != p.kind:
            problems.append(
                f"{row.id} ({p.kind}, {p.body}): {got} on {row.partition}, model {p.expect} on {p.partition}"
            )
        original = model.originals[row.id]
        if original.applied and original.type in REVERSIBLE_TYPES and row.reversed_amount != original.reversed:
            problems.append(f"{row.id}: reversed_amount {row.reversed_amount}, model {original.reversed}")
        problems += result_problems(p, row.result)
    return problems


def result_problems(p: Planned, result: dict[str, Any] | None) -> list[str]:
    if p.expect[0] != "applied" or p.kind not in ("capture", "reversal"):
        return []
    credit = max(n for _, n, _ in p.legs)
    key = "captured_amount" if p.kind == "capture" else "reversed_amount"
    if p.kind == "reversal":
        credit = sum(n for _, n, _ in p.legs if n > 0)
    if result is None or result.get(key) != credit:
        return [f"{p.id}: result {result}, expected {key} {credit}"]
    return []


def seen_problems(engine: Engine, model: Model) -> list[str]:
    """A refusal records the state it was decided on: the model's, or where lanes interleave on that
    account, a state the account really had (its balance_after at that seq)."""
    checked = [p for p in model.planned if p.seen is not None]
    # Refused by a hold's or an original's state: nothing recorded of any account.
    stateless = [
        p
        for p in model.planned
        if p.kind in ("capture", "void", "reversal")
        and p.expect[0] == "rejected"
        and p.expect[1] != "insufficient_funds"
    ]
    with engine.connect() as conn:
        results: dict[str, Any] = dict(
            conn.execute(
                text("SELECT id, result FROM commands WHERE id = ANY(:ids)"),
                {"ids": [p.id for p in checked + stateless]},
            ).all()
        )
        after = {
            (r.account_id, r.seq): r.balance_after
            for r in conn.execute(
                text("SELECT account_id, seq, balance_after FROM entries WHERE account_id = ANY(:ids)"),
                {"ids": model.order},
            )
        }
    problems = [f"{p.id} ({p.kind} {p.expect[1]}): records {results[p.id]}" for p in stateless if results[p.id]]
    for p in checked:
        assert p.seen is not None
        account, balance, seq, held = p.seen
        result = results[p.id] or {}
        if balance is None:
            seq = result.get("seq", -1)
            balance = after.get((account, seq), 0 if seq == 0 else None)
            held = result.get("held", 0)
        want = {"account_id": account, "balance": balance, "seq": seq} | ({"held": held} if held else {})
        if result != want:
            problems.append(f"{p.id} ({p.kind} {p.expect[1]}): decided on {result}, model {want}")
    return problems


def legs_problems(engine: Engine, model: Model) -> list[str]:
    """Every command's entries, @world legs included, are the model's legs (and none for the rest)."""
    claimed = {p.id: p for p in model.planned if p.expect[0] != "refused"}
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT command_id, account_id, amount, counterparty FROM entries WHERE command_id = ANY(:ids)"),
            {"ids": list(claimed)},
        ).all()
    written: dict[str, list[Leg]] = {}
    for r in rows:
        written.setdefault(r.command_id, []).append((r.account_id, r.amount, r.counterparty))
    problems = []
    for command_id, p in claimed.items():
        if sorted(written.get(command_id, [])) != sorted(p.legs):
            problems.append(
                f"{command_id} ({p.kind}): entries {sorted(written.get(command_id, []))}, model {sorted(p.legs)}"
            )
    return problems


def history_problems(account: Account, entries: list[dict[str, Any]], tally: Counter[str]) -> list[str]:
    """The account's entries: gapless, running balance_after, rounds in order, and within each round
    each lane's entries exactly the model's, in the model's order; lanes may interleave."""
    problems = []
    running = 0
    for n, e in enumerate(entries, start=1):
        running += e["amount"]
        if (e["seq"], e["balance_after"]) != (n, running):
            problems.append(f"{account.id} seq {e['seq']}: balance_after {e['balance_after']}, running {running}")
            break
    where = {e.command_id: e for e in account.entries}
    if sorted(where) != sorted(e["command_id"] for e in entries):
        return [*problems, f"{account.id}: entries of {len(entries)} commands, model {len(where)}"]
    rounds = [where[e["command_id"]].round for e in entries]
    if rounds != sorted(rounds):
        problems.append(f"{account.id}: entries of rounds {rounds} are out of round order")
    for key in sorted({(e.round, e.lane) for e in account.entries}):
        want = [(e.command_id, e.amount, e.counterparty) for e in account.entries if (e.round, e.lane) == key]
        got = [
            (e["command_id"], e["amount"], e["counterparty"])
            for e in entries
            if (where[e["command_id"]].round, where[e["command_id"]].lane) == key
        ]
        if got != want:
            problems.append(f"{account.id} round {key[0]} lane {key[1]}: entries {got}, model {want}")
    lanes_per_round = Counter(e.round for e in {(e.round, e.lane): e for e in account.entries}.values())
    tally["account-rounds with one lane (order exact)"] += sum(1 for n in lanes_per_round.values() if n == 1)
    tally["account-rounds with lanes interleaving"] += sum(1 for n in lanes_per_round.values() if n > 1)
    return problems


def hold_problems(engine: Engine, model: Model) -> list[str]:
    """Every hold's row is the model's; a rejected hold has none."""
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, status, captured_amount, amount, account_id, to_account_id"
                    " FROM holds WHERE id = ANY(:ids)"
                ),
                {"ids": list(model.holds)},
            )
        }
    problems = []
    for hold in model.holds.values():
        row = rows.get(hold.id)
        got = None if row is None else (row.status, row.captured_amount, row.amount, row.account_id, row.to_account_id)
        want = None if hold.status == "rejected" else hold.view()
        if got != want:
            problems.append(f"hold {hold.id}: {got}, model {want}")
    return problems


def http_problems(http: TestClient, model: Model, tally: Counter[str]) -> list[str]:
    """What clients read over HTTP: every account and its entries, a sample of holds and commands."""
    problems = []
    for account_id in model.order:
        a = model.accounts[account_id]
        body = http.get(f"/v1/accounts/{account_id}").json()
        read = (body["balance"], body["held"], body["available"], body["entry_count"])
        if read != (a.balance, a.held, a.available, len(a.entries)):
            problems.append(f"{account_id}: GET says {read}, model {(a.balance, a.held, a.available, len(a.entries))}")
        problems += history_problems(a, all_entries(http, account_id), tally)
    sample = random.Random(SEED)
    for hold in sample.sample(list(model.holds.values()), HTTP_SAMPLE):
        view = http.get(f"/v1/holds/{hold.id}")
        if hold.status == "rejected":
            if view.status_code != 404:
                problems.append(f"GET hold {hold.id}: {view.status_code}, yet it was rejected")
            continue
        v = view.json()
        if (v["status"], v["captured_amount"], v["amount"], v["account_id"], v["to_account_id"]) != hold.view():
            problems.append(f"GET hold {hold.id}: {v}, model {hold.view()}")
    for p in sample.sample([p for p in model.planned if p.expect[0] != "refused"], HTTP_SAMPLE):
        view = http.get(f"/v1/commands/{p.id}").json()
        got: tuple[Any, ...] = (view["status"], (view.get("error") or {}).get("code"))
        want: tuple[Any, ...] = p.expect
        original = model.originals[p.id]
        if original.applied and original.type in REVERSIBLE_TYPES:
            got, want = (*got, view.get("reversed_amount")), (*want, original.reversed)
        if got != want:
            problems.append(f"GET {p.id}: {got}, model {want}")
    return problems


def all_entries(http: TestClient, account_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    for _ in range(100):  # pages of 1000: far more than any account here has
        page = http.get(f"/v1/accounts/{account_id}/entries", params={"after_seq": after, "limit": 1000}).json()
        entries += page["entries"]
        if page["next_after_seq"] is None:
            return entries
        after = page["next_after_seq"]
    raise AssertionError(f"{account_id}: more than 100 pages of entries")


# -- the test -----------------------------------------------------------------------------------


def open_accounts(http: TestClient) -> list[Account]:
    """Five accounts per partition, found by id so every run has the same layout (the ids differ)."""
    tag = uuid.uuid4().hex[:8]
    accounts = []
    for n in range(ACCOUNTS_PER_PARTITION * PARTITIONS):
        partition, k = n % PARTITIONS, 0
        while partition_for(account_id := f"mm-{tag}-{n:02d}-{k}", PARTITIONS) != partition:
            k += 1
        lane = 2 * partition + (n // PARTITIONS >= FIRST_LANE_SIZE)
        limit = 1_000 if n % 3 == 0 else 0
        body = {"id": account_id, "currency": CURRENCY, "overdraft_limit": limit}
        assert http.post("/v1/accounts", json=body).status_code == 201
        accounts.append(Account(account_id, partition, lane, limit))
    return accounts


def report(model: Model, tally: Counter[str], seconds: float) -> str:
    kinds = Counter(p.kind for p in model.planned)
    outcomes = Counter(f"{p.expect[0]}:{p.expect[1] or '-'}" for p in model.planned)
    reversals = Counter(
        f"{model.originals[p.body['command_id']].type if p.body['command_id'] in model.originals else 'unknown'}"
        f"->{p.expect[1] or 'applied'}"
        for p in model.planned
        if p.kind == "reversal"
    )
    reversal_sizes = Counter(
        ("whole" if "amount" not in p.body else "part") + f":{p.expect[1] or 'applied'}"
        for p in model.planned
        if p.kind == "reversal" and p.expect[1] in (None, "amount_exceeds_reversible", "insufficient_funds")
    )
    captures = Counter(
        "whole" if "amount" not in p.body else ("over" if p.expect[1] == "amount_exceeds_hold" else "part")
        for p in model.planned
        if p.kind == "capture" and p.expect[1] in (None, "amount_exceeds_hold")
    )
    lines = [
        f"money model: seed={SEED} rounds={ROUNDS} (queued: {sorted(QUEUED_ROUNDS)}) lanes={len(model.lanes)} "
        f"accounts={len(model.order)} "
        f"commands={len(model.planned)} entries={sum(len(a.entries) for a in model.accounts.values())} "
        f"in {seconds:.1f} s",
        f"  by type: {dict(sorted(kinds.items()))}",
        f"  outcomes: {dict(sorted(outcomes.items()))}",
        f"  reversals (original -> outcome): {dict(sorted(reversals.items()))}",
        f"  reversals by size: {dict(sorted(reversal_sizes.items()))}",
        f"  captures (applied or over the hold): {dict(sorted(captures.items()))}",
        f"  holds at the end: {dict(sorted(Counter(h.status for h in model.holds.values()).items()))}",
        f"  submits: {dict(sorted(tally.items()))}",
    ]
    return "\n".join(lines)


def test_a_random_workload_matches_the_model_exactly(
    http: TestClient, ctx: Context, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Every outcome, balance, held, hold, reversed amount and entry of ~3,200 commands is the model's,
    and the workers applied it without raising (no batch fell back to one by one)."""
    started = time.monotonic()
    model = Model(random.Random(SEED), open_accounts(http))
    doors = Doors(http, ctx)
    tally: Counter[str] = Counter()
    problems: list[str] = []
    running = Workers(settings)
    try:
        with caplog.at_level(logging.ERROR, logger="ledgerq.worker"), ThreadPoolExecutor(len(model.lanes)) as pool:
            for number in range(ROUNDS):
                plans = model.plan_round(number)
                if number in QUEUED_ROUNDS:  # sent while no worker runs: applied in large batches
                    running.close()
                problems += send_round(pool, doors, plans, tally)
                if number in QUEUED_ROUNDS:
                    running = Workers(settings)
                wait_applied(ctx.engine, [p.id for ps in plans.values() for p in ps if p.expect[0] != "refused"])
                problems += snapshot_problems(ctx.engine, model, number)
    finally:
        running.close()
    problems += outcome_problems(ctx.engine, model)
    problems += legs_problems(ctx.engine, model)
    problems += hold_problems(ctx.engine, model)
    problems += seen_problems(ctx.engine, model)
    problems += http_problems(http, model, tally)
    raised = [
        r.getMessage() for r in caplog.records if r.name.startswith("ledgerq.worker") and r.levelno >= logging.ERROR
    ]
    tally["worker errors logged"] = len(raised)
    print("\n" + report(model, tally, time.monotonic() - started))
    assert not problems, f"{len(problems)} differences from the model, the first: " + "\n".join(problems[:15])
    assert verify(ctx.engine) == []
    assert not raised, f"the workers raised {len(raised)} times, the first: {raised[:5]}"


def send_round(
    pool: ThreadPoolExecutor, doors: Doors, plans: dict[int, list[Planned]], tally: Counter[str]
) -> list[str]:
    """Every lane's commands from its own thread, all lanes at once."""
    lock = threading.Lock()

    def lane(mine: list[Planned]) -> list[str]:
        counts: Counter[str] = Counter()
        found = run_lane(doors, mine, counts)
        with lock:
            tally.update(counts)
        return found

    return [problem for found in pool.map(lane, plans.values()) for problem in found]
