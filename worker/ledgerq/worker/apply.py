"""The apply transaction: one Postgres transaction per batch, fenced by the partition epoch.

Inside it: check the epoch (FOR SHARE, so a new owner's epoch bump waits for
us or we see it), read the commands, lock every account row the batch touches
in sorted id order (no deadlock with another partition locking the same
rows), plan each command in queue order with the pure rules, then write
entries, balances and outcomes. A command already final is a no-op that
reports its stored outcome, which is what makes re-applying a dead owner's
in-flight work safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT, insert

from ledgerq.shared.commands import AnyCommand, Transaction
from ledgerq.shared.errors import Fenced, InvariantViolation
from ledgerq.shared.routing import world_account
from ledgerq.shared.schema import FINAL_STATUSES, CommandStatus, accounts, commands
from ledgerq.shared.scoping import parse_stored
from ledgerq.worker import faults
from ledgerq.worker.rules import AccountState, Applied, Rejected, apply_legs, plan


@dataclass(frozen=True, slots=True)
class Finished:
    command_id: str
    status: str  # applied | rejected | failed
    error_code: str | None = None
    error_detail: str | None = None
    result: dict[str, Any] | None = None
    replayed: bool = False  # already final before this batch: nothing was written


@dataclass(slots=True)
class _Batch:
    """What one apply transaction writes, accumulated in queue order."""

    entry_rows: list[dict[str, Any]] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    accounts: dict[str, AccountState] = field(default_factory=dict)


# Bulk writes take one JSON document each: one parameter to send and parse, one statement per table
# (all legs of a command in one INSERT), whatever the batch size.
_INSERT_ENTRIES = text(
    """
    INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty)
    SELECT account_id, seq, command_id, amount, balance_after, counterparty
      FROM json_to_recordset(CAST(:rows AS json))
           AS v(account_id text, seq bigint, command_id text, amount bigint, balance_after bigint, counterparty text)
    """
)

_UPDATE_ACCOUNTS = text(
    """
    UPDATE accounts AS a SET balance = v.balance, entry_count = v.entry_count, updated_at = now()
      FROM json_to_recordset(CAST(:rows AS json)) AS v(id text, balance bigint, entry_count bigint)
     WHERE a.id = v.id
    """
)

_FINISH_COMMANDS = text(
    """
    UPDATE commands AS c
       SET status = v.status, error_code = v.error_code, error_detail = v.error_detail,
           result = v.result, finished_at = clock_timestamp(), attempts = c.attempts + 1
      FROM json_to_recordset(CAST(:rows AS json))
           AS v(id text, status text, error_code text, error_detail text, result jsonb)
     WHERE c.id = v.id AND c.status = 'queued'
    """
)


def check_epoch(conn: Connection, partition: int, epoch: int) -> None:
    """Fencing: refuse to write unless this worker's epoch is still the partition's epoch."""
    current = conn.execute(
        text("SELECT epoch FROM partitions WHERE partition = :p FOR SHARE"), {"p": partition}
    ).scalar_one_or_none()
    if current != epoch:
        raise Fenced(f"partition {partition} epoch is {current}, this worker holds {epoch}")


def apply_batch(
    engine: Engine,
    partition: int,
    epoch: int,
    command_ids: list[str],
    failures: dict[str, str] | None = None,
    before_commit: Callable[[], None] | None = None,
    expected_hashes: dict[str, str] | None = None,
) -> list[Finished]:
    """Apply `command_ids` in order in one transaction; `failures` are recorded `failed` instead.

    Returns one `Finished` per id found in Postgres, in the given order. Ids with no
    command row, or whose signed job payload differs from the claim (`expected_hashes`),
    are left out: the caller fails their jobs without touching the ledger.
    """
    failures = failures or {}
    command_ids = list(dict.fromkeys(command_ids))  # a duplicated job id applies once
    with engine.begin() as conn:
        check_epoch(conn, partition, epoch)
        rows = {
            row.id: row
            for row in conn.execute(
                select(
                    commands.c.id,
                    commands.c.status,
                    commands.c.payload,
                    commands.c.partition,
                    commands.c.error_code,
                    commands.c.error_detail,
                    commands.c.result,
                    commands.c.payload_hash,
                ).where(commands.c.id == any_(bindparam("ids", command_ids, type_=ARRAY(TEXT))))
            )
        }
        pending: list[tuple[str, AnyCommand | str]] = []
        replayed: dict[str, Finished] = {}
        for command_id in command_ids:
            row = rows.get(command_id)
            if row is None or (
                expected_hashes and expected_hashes.get(command_id, row.payload_hash) != row.payload_hash
            ):
                rows.pop(command_id, None)
                continue
            if row.status in FINAL_STATUSES:
                replayed[command_id] = Finished(
                    command_id, row.status, row.error_code, row.error_detail, row.result, replayed=True
                )
            elif row.partition != partition:
                pending.append((command_id, f"command belongs to partition {row.partition}"))
            elif command_id in failures:
                pending.append((command_id, failures[command_id]))
            else:
                pending.append((command_id, _parse(row.payload)))
        batch = _plan_batch(conn, partition, pending)
        _write(conn, batch)
        if before_commit is not None:
            before_commit()
    done = {f.command_id: f for f in batch.finished} | replayed
    return [done[c] for c in command_ids if c in done]


def _parse(payload: dict[str, Any]) -> AnyCommand | str:
    try:
        return parse_stored(payload)
    except ValidationError as exc:  # the API validated it; a bad row here is a bug, not a crash
        return f"stored payload is invalid: {exc.errors()[0]['msg']}"
    except ValueError as exc:
        return f"stored payload is invalid: {exc}"


def _plan_batch(conn: Connection, partition: int, pending: list[tuple[str, AnyCommand | str]]) -> _Batch:
    commands_only = [c for _, c in pending if not isinstance(c, str)]
    worlds = {world_account(c.currency, partition): c.currency for c in commands_only if not isinstance(c, Transaction)}
    if worlds:
        conn.execute(
            insert(accounts)
            .values([{"id": w, "currency": cur, "kind": "system"} for w, cur in sorted(worlds.items())])
            .on_conflict_do_nothing()
        )
    wanted = sorted({w for w in worlds} | {a for c in commands_only for a in c.account_ids()})
    states = _lock_accounts(conn, wanted)
    batch = _Batch()
    for command_id, command in pending:
        if isinstance(command, str):
            batch.finished.append(Finished(command_id, CommandStatus.FAILED, "apply_failed", command))
            continue
        faults.check_poison(command_id)
        outcome = plan(command, states, world_account(command.currency, partition))
        if isinstance(outcome, Rejected):
            # The state the refusal was decided on, so anyone can check it against the history.
            seen = states.get(command.routing_account)
            result = None if seen is None else {"account_id": seen.id, "balance": seen.balance, "seq": seen.entry_count}
            batch.finished.append(Finished(command_id, CommandStatus.REJECTED, outcome.code, outcome.detail, result))
            continue
        batch.finished.append(
            Finished(command_id, CommandStatus.APPLIED, result=_record(batch, command_id, states, outcome))
        )
    batch.accounts = states
    return batch


def _record(batch: _Batch, command_id: str, states: dict[str, AccountState], outcome: Applied) -> dict[str, Any]:
    legs = []
    for leg, after in apply_legs(states, outcome):
        batch.entry_rows.append(
            {
                "account_id": leg.account_id,
                "seq": after.entry_count,
                "command_id": command_id,
                "amount": leg.amount,
                "balance_after": after.balance,
                "counterparty": leg.counterparty,
            }
        )
        legs.append(
            {
                "account_id": leg.account_id,
                "seq": after.entry_count,
                "amount": leg.amount,
                "balance_after": after.balance,
            }
        )
    return {"entries": legs}


# Both lookups take one array parameter (`= ANY`), not an IN list: the statement text stays the same
# whatever the batch size, so it is compiled and parsed once.
def _lock_accounts(conn: Connection, account_ids: list[str]) -> dict[str, AccountState]:
    if not account_ids:
        return {}
    rows = conn.execute(
        select(
            accounts.c.id,
            accounts.c.currency,
            accounts.c.balance,
            accounts.c.overdraft_limit,
            accounts.c.entry_count,
            accounts.c.kind,
        )
        .where(accounts.c.id == any_(bindparam("ids", account_ids, type_=ARRAY(TEXT))))
        .order_by(accounts.c.id)
        .with_for_update()
    )
    return {
        r.id: AccountState(r.id, r.currency, r.balance, r.overdraft_limit, r.entry_count, r.kind == "system")
        for r in rows
    }


def _write(conn: Connection, batch: _Batch) -> None:
    if batch.entry_rows:
        conn.execute(_INSERT_ENTRIES, {"rows": json.dumps(batch.entry_rows)})
        touched = sorted({r["account_id"] for r in batch.entry_rows})
        rows = [
            {"id": a, "balance": batch.accounts[a].balance, "entry_count": batch.accounts[a].entry_count}
            for a in touched
        ]
        updated = conn.execute(_UPDATE_ACCOUNTS, {"rows": json.dumps(rows)}).rowcount
        if updated != len(touched):
            raise InvariantViolation(f"updated {updated} of {len(touched)} account rows")
    if batch.finished:
        rows = [
            {
                "id": f.command_id,
                "status": f.status,
                "error_code": f.error_code,
                # Exception text can hold anything; Postgres text cannot hold NUL.
                "error_detail": None if f.error_detail is None else f.error_detail.replace("\x00", ""),
                "result": f.result,
            }
            for f in batch.finished
        ]
        finished = conn.execute(_FINISH_COMMANDS, {"rows": json.dumps(rows)}).rowcount
        if finished != len(batch.finished):
            # Only this partition's fenced owner finishes its commands; anything else is a second writer.
            raise InvariantViolation(f"finished {finished} of {len(batch.finished)} commands")
