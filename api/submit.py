"""Submitting a command: validate facts, claim the id in Postgres, enqueue once in Redis.

The claim (INSERT ... ON CONFLICT DO NOTHING with the payload hash) is the
idempotency record and lives as long as the ledger. The enqueue uses RQ's
unique enqueue (one Lua script: create the job hash and push its id only if
the hash does not exist), so of any number of racing submits of one id
exactly one job is queued. A replay whose command is still `queued` enqueues
again in the same unique way: that heals a crash between claim and enqueue,
and is a no-op otherwise (the job hash exists until the command is final).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from api.context import Context
from shared.commands import Deposit, Transfer, Withdraw
from shared.enqueue import enqueue_command
from shared.errors import CurrencyMismatch, IdempotencyConflict, QueueFull, UnknownAccount
from shared.keys import queue_key
from shared.routing import partition_for
from shared.schema import commands

AnyCommand = Deposit | Withdraw | Transfer


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    status: str
    partition: int
    replayed: bool
    accepted_at: datetime


def submit(ctx: Context, command: AnyCommand) -> Submitted:
    _check_accounts(ctx, command)
    partition = partition_for(command.routing_account, ctx.settings.partitions)
    if ctx.redis.llen(queue_key(partition)) >= ctx.settings.queue_depth_max:
        raise QueueFull(f"partition {partition} has {ctx.settings.queue_depth_max} commands waiting; retry later")
    digest = command.payload_hash()
    with ctx.engine.begin() as conn:
        claimed = conn.execute(
            insert(commands)
            .values(
                id=command.id, payload_hash=digest, type=command.type, partition=partition, payload=command.payload()
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(commands.c.accepted_at)
        ).scalar_one_or_none()
        if claimed is None:
            row = conn.execute(
                select(commands.c.payload_hash, commands.c.status, commands.c.partition, commands.c.accepted_at).where(
                    commands.c.id == command.id
                )
            ).one()
    if claimed is not None:
        _enqueue(ctx, command, partition)
        return Submitted(command.id, "queued", partition, False, claimed)
    if row.payload_hash != digest:
        raise IdempotencyConflict(f"command {command.id!r} was already submitted with another payload")
    if row.status == "queued":
        _enqueue(ctx, command, row.partition)
    return Submitted(command.id, row.status, row.partition, True, row.accepted_at)


def _check_accounts(ctx: Context, command: AnyCommand) -> None:
    known = ctx.currencies_of(command.account_ids())
    for account_id in command.account_ids():
        currency = known.get(account_id)
        if currency is None:
            raise UnknownAccount(f"account {account_id!r} does not exist")
        if currency != command.currency:
            raise CurrencyMismatch(f"account {account_id!r} holds {currency}, not {command.currency}")


def _enqueue(ctx: Context, command: AnyCommand, partition: int) -> None:
    enqueue_command(ctx.queue(partition), command.payload(), ctx.settings)
