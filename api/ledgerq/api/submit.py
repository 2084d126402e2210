"""Submitting commands: validate facts, claim the ids in Postgres, enqueue once in Redis, many at a time.

Concurrent submits in one process share a round (`ledgerq.api.group_commit`): one
query for unknown account currencies, a pipelined LLEN for back-pressure (at most every 100 ms),
one claim transaction (a multi-row `INSERT ... ON CONFLICT DO NOTHING`
carrying each payload hash; one fsync for the round) and one Lua call that
creates and pushes every new job. The claim is the idempotency record and
lives as long as the ledger; the enqueue skips any job whose hash exists, so
of any number of racing submits of one id exactly one job is queued. A
replay whose command is still `queued` enqueues again in the same way: that
heals a crash between claim and enqueue, and is a no-op otherwise.

Only a 202 (or a `Submitted` returned) promises anything: it is given after
both the claim commit and the enqueue. A round that fails part way answers
503 to all its callers; their retries with the same ids are replays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection

from ledgerq.api.references import Route, refuse_unclaimed_targets, route
from ledgerq.shared.commands import AnyCommand, Capture, Reversal, Transaction, Void, payload_hash
from ledgerq.shared.db import driver_cursor
from ledgerq.shared.errors import (
    CurrencyMismatch,
    IdempotencyConflict,
    LedgerError,
    LegsSpanPartitions,
    QueueFull,
    UnknownAccount,
)
from ledgerq.shared.hold_locks import lock_for_claim
from ledgerq.shared.keys import Keys
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.routing import partition_for
from ledgerq.shared.rq_format import Claim, enqueue_commands
from ledgerq.shared.schema import CommandStatus

if TYPE_CHECKING:  # the context holds this module's round; it is only named here
    from ledgerq.api.context import Context


class Submission(NamedTuple):
    """One command in a round, with the id of the HTTP request that sent it (for the worker's logs)
    and the account prefix of the key that sent it (a capture, void or reversal may only name a
    command within it)."""

    command: AnyCommand
    request_id: str | None = None
    scope: str = ""


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    status: str
    partition: int
    replayed: bool
    accepted_at: datetime


Outcome = Submitted | LedgerError

# One JSON document for the round; sorted by id so two processes claiming overlapping ids wait on
# each other in one order (no deadlock).
# `accepted_at` is the clock when the row is written, after any hold lock was granted
# (`ledgerq.shared.hold_locks`): a capture that waited for the expiry sweep is accepted after it.
_CLAIM = """
    INSERT INTO commands (id, payload_hash, type, partition, payload, ref_id, currency, accepted_at)
    SELECT v.id, v.hash, v.type, v.partition, v.payload, v.ref_id, v.currency, clock_timestamp()
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(id text, hash text, type text, partition int, payload jsonb, ref_id text, currency text)
     ORDER BY v.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id, accepted_at
    """

_EXISTING = "SELECT id, payload_hash, status, partition, accepted_at FROM commands WHERE id = ANY(%(ids)s)"


def submit(ctx: Context, command: AnyCommand, request_id: str | None = None) -> Submitted:
    """Submit one command (sharing a round with concurrent callers); raises its `LedgerError`."""
    (outcome,) = ctx.submits.run([Submission(command, request_id)])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def submit_async(ctx: Context, command: AnyCommand, request_id: str | None = None, scope: str = "") -> Submitted:
    """`submit` for the event loop: waits for its round without holding a thread."""
    (outcome,) = await ctx.submits.run_async([Submission(command, request_id, scope)])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def submit_many(ctx: Context, batch: Sequence[AnyCommand]) -> list[Outcome]:
    """Submit commands in order; one outcome each, an error instead of raising for the ones refused.

    A dependency failure (Postgres or Redis away) still raises: no outcome is known for any of them.
    """
    outcomes = ctx.submits.run([Submission(command) for command in batch])
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, LedgerError):
            raise outcome
    return outcomes  # type: ignore[return-value]


def submit_round(ctx: Context, batch: list[Submission]) -> list[Outcome]:
    """The group-commit flush: ids repeated within the round are handled in later sub-rounds."""
    outcomes: list[Outcome | None] = [None] * len(batch)
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for index, (command, _, _) in enumerate(batch):
        nth = seen.get(command.id, 0)
        seen[command.id] = nth + 1
        if nth == len(rounds):
            rounds.append([])
        rounds[nth].append(index)
    for indexes in rounds:
        for index, outcome in zip(indexes, _claim_and_enqueue(ctx, [batch[i] for i in indexes]), strict=True):
            outcomes[index] = outcome
    return outcomes  # type: ignore[return-value]


def _claim_and_enqueue(ctx: Context, submissions: list[Submission]) -> list[Outcome]:
    batch = [s.command for s in submissions]
    outcomes: list[Outcome | None] = list(_check_accounts(ctx, batch))
    routes = _routes(ctx, submissions, outcomes)
    partitions = [r.partition for r in routes]
    _check_debits_on_one_partition(ctx, batch, outcomes)
    _check_depth(ctx, partitions, outcomes)
    refuse_unclaimed_targets(batch, routes, outcomes)
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if not todo:
        return outcomes  # type: ignore[return-value]
    payloads = {i: batch[i].payload() for i in todo}
    hashes = {i: payload_hash(payloads[i]) for i in todo}  # the payload is built once per command
    with ctx.engine.begin() as conn:
        claimed, existing = _claim(conn, batch, todo, hashes, payloads, routes)
    to_enqueue: list[Claim] = []
    for i in todo:
        command_id = batch[i].id
        if command_id in claimed:
            outcomes[i] = Submitted(command_id, CommandStatus.QUEUED, partitions[i], False, claimed[command_id])
            to_enqueue.append(Claim(partitions[i], payloads[i], submissions[i].request_id, fresh=True))
            continue
        row = existing[command_id]
        if row.payload_hash != hashes[i]:
            # No id in the detail: the stored one may carry the key's scope, which its client never named.
            outcomes[i] = IdempotencyConflict("this command id was already submitted with another payload")
            continue
        outcomes[i] = Submitted(command_id, row.status, row.partition, True, row.accepted_at)
        if row.status == CommandStatus.QUEUED:
            to_enqueue.append(Claim(row.partition, payloads[i], submissions[i].request_id))
    enqueue_commands(ctx.redis, to_enqueue, ctx.settings)
    return outcomes  # type: ignore[return-value]


def _claim(
    conn: Connection,
    batch: list[AnyCommand],
    todo: list[int],
    hashes: dict[int, str],
    payloads: dict[int, dict[str, Any]],
    routes: list[Route],
) -> tuple[dict[str, datetime], dict[str, Any]]:
    lock_for_claim(conn, sorted({c.hold_id for i in todo if isinstance(c := batch[i], Capture | Void)}))
    cursor = driver_cursor(conn)
    claimed = {
        row.id: row.accepted_at
        for row in cursor.execute(
            _CLAIM,
            {
                "rows": json.dumps(
                    [
                        {
                            "id": batch[i].id,
                            "hash": hashes[i],
                            "type": batch[i].type,
                            "partition": routes[i].partition,
                            "payload": payloads[i],
                            "ref_id": routes[i].ref_id,
                            "currency": routes[i].currency,
                        }
                        for i in todo
                    ]
                )
            },
        )
    }
    others = [batch[i].id for i in todo if batch[i].id not in claimed]
    existing = {row.id: row for row in cursor.execute(_EXISTING, {"ids": others})} if others else {}
    return claimed, existing


_NO_ROUTE = Route(0, "")


def _routes(ctx: Context, submissions: list[Submission], outcomes: list[Outcome | None]) -> list[Route]:
    """Each command's partition: its routing account's, or for one that names another command, that
    command's (`ledgerq.api.references`); a refusal is put in `outcomes`."""
    batch = [s.command for s in submissions]
    found = route(ctx.engine, ctx.settings.partitions, batch, [s.scope for s in submissions])
    routes: list[Route] = []
    for i, r in enumerate(found):
        if isinstance(r, LedgerError):
            if outcomes[i] is None:
                outcomes[i] = r
            routes.append(_NO_ROUTE)
        else:
            routes.append(r)
    return routes


def _check_accounts(ctx: Context, batch: list[AnyCommand]) -> list[LedgerError | None]:
    known = ctx.currencies.of(tuple({a for c in batch for a in c.account_ids()}))
    problems: list[LedgerError | None] = []
    for command in batch:
        problem: LedgerError | None = None
        if isinstance(command, Capture | Void | Reversal):  # their accounts are the named command's
            problems.append(None)
            continue
        for account_id in command.account_ids():
            currency = known.get(account_id)
            if currency is None:
                problem = UnknownAccount(f"account {account_id!r} does not exist")
                break
            if currency != command.currency:
                problem = CurrencyMismatch(f"account {account_id!r} holds {currency}, not {command.currency}")
                break
        problems.append(problem)
    return problems


def _check_debits_on_one_partition(ctx: Context, batch: list[AnyCommand], outcomes: list[Outcome | None]) -> None:
    """A transaction's debits are applied by one owner, in order with the accounts' other debits."""
    for i, command in enumerate(batch):
        if outcomes[i] is None and isinstance(command, Transaction):
            spread = {partition_for(a, ctx.settings.partitions) for a in command.debited_ids()}
            if len(spread) > 1:
                outcomes[i] = LegsSpanPartitions(
                    f"the debited accounts route to partitions {sorted(spread)}; a transaction's debits "
                    "must share one partition (credits may go anywhere)"
                )


class QueueDepths:
    """Each partition's queue depth as last read, read again once older than `fresh_s`: the bound is
    a million-job backstop, not a count, and a read per round was a Redis call per round."""

    def __init__(self, fresh_s: float = 0.1) -> None:
        self.fresh_s = fresh_s
        self.known: dict[int, tuple[int, float]] = {}

    def of(self, redis: RedisClient, keys: Keys, partitions: list[int]) -> dict[int, int]:
        now = time.monotonic()
        stale = [p for p in partitions if p not in self.known or now - self.known[p][1] > self.fresh_s]
        if stale:
            with redis.pipeline(transaction=False) as pipe:
                for partition in stale:
                    pipe.llen(keys.queue_key(partition))
                for partition, depth in zip(stale, pipe.execute(), strict=True):
                    self.known[partition] = (int(depth), now)
        return {p: self.known[p][0] for p in partitions}


def _check_depth(ctx: Context, partitions: list[int], outcomes: list[Outcome | None]) -> None:
    """Back-pressure before the claim: a refused command is not claimed, so a retry is a fresh submit."""
    wanted = sorted({p for p, o in zip(partitions, outcomes, strict=True) if o is None})
    if not wanted:
        return
    depths = ctx.queue_depths.of(ctx.redis, ctx.settings.redis_keys, wanted)
    limit = ctx.settings.queue_depth_max
    for i, partition in enumerate(partitions):
        if outcomes[i] is None and depths[partition] >= limit:
            outcomes[i] = QueueFull(f"partition {partition} has {limit} commands waiting; retry later")
