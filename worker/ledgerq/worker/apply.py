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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, Engine

from ledgerq.shared.commands import AnyCommand, Capture, Reversal, Void
from ledgerq.shared.db import driver_cursor
from ledgerq.shared.errors import Fenced, InvariantViolation
from ledgerq.shared.routing import world_account
from ledgerq.shared.schema import FINAL_STATUSES, CommandStatus, HoldStatus
from ledgerq.shared.scoping import parse_stored
from ledgerq.worker import faults
from ledgerq.worker.references import accounts_touched, load_references
from ledgerq.worker.rules import AccountState, Applied, HoldState, References, Rejected, plan, rfc3339, settle


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
    held_changed: set[str] = field(default_factory=set)
    holds_placed: dict[str, HoldState] = field(default_factory=dict)
    holds_resolved: dict[str, HoldState] = field(default_factory=dict)
    reversed: dict[str, int] = field(default_factory=dict)  # original id -> what this batch reverses of it
    reversible: dict[str, int] = field(default_factory=dict)  # applied command id -> reversible_amount
    # command id -> (its type, the client accounts it touches): what its event says
    event_facts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Pending:
    command_id: str
    command: AnyCommand | str  # a str is why it is recorded `failed`
    accepted_at: datetime
    currency: str | None
    type: str = ""


# The apply path's statements are fixed SQL run on the driver's cursor (`driver_cursor`): at batches of one
# or two, SQLAlchemy's per-statement compile-cache lookup and result wrapping were a third of the
# worker's CPU. Bulk writes take one JSON document each: one parameter to send and parse, one
# statement per table (all legs of a command in one INSERT), whatever the batch size; lookups take one
# array (`= ANY`), so the statement text, and its prepared plan, is the same for every batch.
_INSERT_ENTRIES = """
    INSERT INTO entries (account_id, seq, command_id, amount, balance_after, counterparty)
    SELECT account_id, seq, command_id, amount, balance_after, counterparty
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(account_id text, seq bigint, command_id text, amount bigint, balance_after bigint, counterparty text)
    """

_UPDATE_ACCOUNTS = """
    UPDATE accounts AS a SET balance = v.balance, entry_count = v.entry_count, held = v.held, updated_at = now()
      FROM json_to_recordset(CAST(%(rows)s AS json)) AS v(id text, balance bigint, entry_count bigint, held bigint)
     WHERE a.id = v.id
    """

_FINISH_COMMANDS = """
    UPDATE commands AS c
       SET status = v.status, error_code = v.error_code, error_detail = v.error_detail,
           result = v.result, finished_at = clock_timestamp(), attempts = c.attempts + 1,
           reversible_amount = v.reversible_amount
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(id text, status text, error_code text, error_detail text, result jsonb, reversible_amount bigint)
     WHERE c.id = v.id AND c.status NOT IN ('applied', 'rejected', 'failed')
    """

_PLACE_HOLDS = """
    INSERT INTO holds (id, account_id, to_account_id, partition, amount, currency, expires_at)
    SELECT id, account_id, to_account_id, %(partition)s, amount, currency, expires_at
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(id text, account_id text, to_account_id text, amount bigint, currency text, expires_at timestamptz)
    """

# One event per outcome, in the same transaction (migration 0008: why the id is made of the xid).
INSERT_EVENTS = """
    INSERT INTO events (id, type, command_id, accounts, data)
    SELECT (pg_current_xact_id()::text::bigint << 16) + v.n, v.type, v.command_id, v.accounts, v.data
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(n int, type text, command_id text, accounts text[], data jsonb)
    """

# The holds trigger refuses any change but one transition out of `pending`.
_RESOLVE_HOLDS = """
    UPDATE holds AS h
       SET status = v.status, captured_amount = v.captured_amount, resolved_by = v.resolved_by,
           finished_at = clock_timestamp()
      FROM json_to_recordset(CAST(%(rows)s AS json))
           AS v(id text, status text, captured_amount bigint, resolved_by text)
     WHERE h.id = v.id
    """

# An increment, so no reversal is lost whatever was read; the commands_reversed_within CHECK holds the
# total to the original's reversible amount.
_REVERSED = """
    UPDATE commands AS c SET reversed_amount = c.reversed_amount + v.amount
      FROM json_to_recordset(CAST(%(rows)s AS json)) AS v(id text, amount bigint)
     WHERE c.id = v.id AND c.status = 'applied'
    """


_SELECT_COMMANDS = """
    SELECT id, status, payload, partition, error_code, error_detail, result, payload_hash, accepted_at, currency, type
      FROM commands WHERE id = ANY(%(ids)s)
    """

_ENSURE_WORLDS = """
    INSERT INTO accounts (id, currency, kind) SELECT unnest(%(ids)s::text[]), unnest(%(currencies)s::text[]), 'system'
    ON CONFLICT DO NOTHING
    """

# Sorted by id: every partition locks shared rows in one order, so two batches cannot deadlock.
_LOCK_ACCOUNTS = """
    SELECT id, currency, balance, overdraft_limit, entry_count, kind, held
      FROM accounts WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
    """

# Every bulk statement joins a JSON recordset the planner guesses at 100 rows against a table it may
# not have statistics for yet (a fresh or fast-growing ledger), and `status = 'queued'` matches the
# partial queue index: left to itself it hashes every queued command (or every account) for a batch
# of one, so a backlog drains in quadratic time. The apply transaction only ever touches rows it
# names by key: it turns off the plans that read more (for this transaction only), and the
# finishing UPDATE says "not final" rather than "queued" so the partial index cannot match it.
_FENCE = """
    SELECT epoch, set_config('enable_seqscan', 'off', true) || set_config('enable_hashjoin', 'off', true)
                  || set_config('enable_mergejoin', 'off', true) AS plans
      FROM partitions WHERE partition = %(p)s FOR SHARE
    """


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


def check_epoch(conn: Connection, partition: int, epoch: int) -> None:
    """Fencing: refuse to write unless this worker's epoch is still the partition's epoch.

    The first statement of every fenced transaction; it also sets the transaction's plans (`_FENCE`)."""
    row = driver_cursor(conn).execute(_FENCE, {"p": partition}).fetchone()
    current = None if row is None else row.epoch
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
    lost: Callable[[list[str]], set[str]] | None = None,
    idle_after_s: float = 5.0,
) -> list[Finished]:
    """Apply `command_ids` in order in one transaction; `failures` are recorded `failed` instead.

    Returns one `Finished` per id found in Postgres, in the given order. Ids with no
    command row, or whose signed job payload differs from the claim (`expected_hashes`),
    are left out: the caller fails their jobs without touching the ledger.

    With `lost` (which of these claims' jobs Redis no longer has), this partition's claims still
    queued, accepted before the batch's newest command (for an empty batch: `idle_after_s` ago) and
    lost are applied too, each ahead of the batch's commands accepted after it (`_ORPHANS`); their
    `Finished` come in that order.
    """
    failures = failures or {}
    command_ids = list(dict.fromkeys(command_ids))  # a duplicated job id applies once
    with engine.begin() as conn:
        check_epoch(conn, partition, epoch)
        rows = {row.id: row for row in driver_cursor(conn).execute(_SELECT_COMMANDS, {"ids": command_ids})}
        pending: list[_Pending] = []
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
            else:
                pending.append(_pending(row, partition, failures))
        order = command_ids
        if lost is not None and (pending or not command_ids):
            pending = _with_orphans(conn, partition, pending, command_ids, lost, idle_after_s)
            order = list(dict.fromkeys([p.command_id for p in pending] + command_ids))
        batch = _plan_batch(conn, partition, pending)
        _write(conn, batch, partition)
        if before_commit is not None:
            before_commit()
    done = {f.command_id: f for f in batch.finished} | replayed
    return [done[c] for c in order if c in done]


def order_with_orphans(
    engine: Engine, partition: int, command_ids: list[str], lost: Callable[[list[str]], set[str]], idle_after_s: float
) -> list[str]:
    """The ids `apply_batch(..., lost=lost)` would apply, orphans merged in, in its order: for applying
    them one at a time when the batch raised (a poison command may be an orphan)."""
    with engine.begin() as conn:
        rows = driver_cursor(conn).execute(_SELECT_COMMANDS, {"ids": command_ids}).fetchall()
        queued = {r.id: _pending(r, partition, {}) for r in rows if r.status not in FINAL_STATUSES}
        pending = [queued[c] for c in dict.fromkeys(command_ids) if c in queued]
        if not pending and command_ids:
            return command_ids
        merged = _with_orphans(conn, partition, pending, command_ids, lost, idle_after_s)
    return list(dict.fromkeys([p.command_id for p in merged] + command_ids))


def _pending(row: Any, partition: int, failures: dict[str, str]) -> _Pending:
    parsed: AnyCommand | str
    if row.partition != partition:
        parsed = f"command belongs to partition {row.partition}"
    elif row.id in failures:
        parsed = failures[row.id]
    else:
        parsed = _parse(row.payload)
    currency = row.currency or row.payload.get("currency")
    return _Pending(row.id, parsed, row.accepted_at, currency, row.type)


# Orphans: claims whose job Redis no longer has (a failover that lost the last writes, a restore from
# an older AOF, an API that died between claim and enqueue). A job is pushed before its 202 and an
# owner takes its queue in order, so a claim accepted before a command of this batch and still
# `queued` should be in this batch, in flight or behind it only if the two raced in from two API
# processes; if Redis has no job for it, it is applied now from its claim, ahead of the batch's
# commands accepted after it: acceptance order. A claim whose enqueue is merely slow is applied a
# little early, still in acceptance order, and its job is then a replay. The partial queue index
# finds the candidates; in the common case the range holds only the batch itself.
_ORPHANS = """
    SELECT id FROM commands
     WHERE partition = %(p)s AND status = 'queued'
       AND accepted_at < coalesce(%(before)s::timestamptz, clock_timestamp() - make_interval(secs => %(idle)s))
     ORDER BY accepted_at
     LIMIT %(n)s
    """
# The batch itself is in that range and left out here, not by `id <> ALL(...)` (batch x range
# comparisons); only the lost ones' rows are then read.
_ORPHAN_ROWS = """
    SELECT id, status, payload, partition, error_code, error_detail, result, payload_hash, accepted_at, currency, type
      FROM commands WHERE id = ANY(%(ids)s) AND status = 'queued' ORDER BY accepted_at
    """
ORPHAN_CANDIDATES_MAX = 1_000


def _with_orphans(
    conn: Connection,
    partition: int,
    pending: list[_Pending],
    command_ids: list[str],
    lost: Callable[[list[str]], set[str]],
    idle_after_s: float,
) -> list[_Pending]:
    newest = max((p.accepted_at for p in pending), default=None)  # None: an idle owner's scan
    cursor = driver_cursor(conn)
    in_batch = set(command_ids)
    ranged = cursor.execute(
        _ORPHANS,
        {"p": partition, "before": newest, "idle": idle_after_s, "n": len(in_batch) + ORPHAN_CANDIDATES_MAX},
    )
    candidates = [row.id for row in ranged if row.id not in in_batch]
    gone = lost(candidates) if candidates else set()
    if not gone:
        return pending
    orphans = [_pending(row, partition, {}) for row in cursor.execute(_ORPHAN_ROWS, {"ids": sorted(gone)})]
    if not orphans:
        return pending
    merged: list[_Pending] = []
    rest = iter(orphans)
    orphan = next(rest, None)
    for p in pending:  # the batch keeps its own order; each orphan goes before the first accepted after it
        while orphan is not None and orphan.accepted_at < p.accepted_at:
            merged.append(orphan)
            orphan = next(rest, None)
        merged.append(p)
    if orphan is not None:
        merged += [orphan, *rest]
    return merged


def _parse(payload: dict[str, Any]) -> AnyCommand | str:
    try:
        return parse_stored(payload)
    except ValidationError as exc:  # the API validated it; a bad row here is a bug, not a crash
        return f"stored payload is invalid: {exc.errors()[0]['msg']}"
    except ValueError as exc:
        return f"stored payload is invalid: {exc}"


def _plan_batch(conn: Connection, partition: int, pending: list[_Pending]) -> _Batch:
    in_batch = {p.command_id: p.command for p in pending if not isinstance(p.command, str)}
    refs = load_references(conn, partition, in_batch.values())
    touched = {
        p.command_id: accounts_touched(p.command, p.currency, partition, refs, in_batch)
        for p in pending
        if not isinstance(p.command, str)
    }
    worlds = {world_account(p.currency, partition): p.currency for p in pending if p.currency is not None}
    if worlds:
        ids = sorted(worlds)
        driver_cursor(conn).execute(_ENSURE_WORLDS, {"ids": ids, "currencies": [worlds[w] for w in ids]})
    wanted = sorted({a for ids in touched.values() for a in ids if not a.startswith("@")} | set(worlds))
    states = _lock_accounts(conn, wanted)
    batch = _Batch()
    for p in pending:
        named = sorted({a for a in touched.get(p.command_id, ()) if not a.startswith("@")})
        batch.event_facts[p.command_id] = (p.type, named)
        command = p.command
        if isinstance(command, str):
            batch.finished.append(Finished(p.command_id, CommandStatus.FAILED, "apply_failed", command))
            continue
        faults.check_poison(p.command_id)
        world = world_account(p.currency or "XXX", partition)
        outcome = plan(command, states, world, refs, p.accepted_at)
        if isinstance(outcome, Rejected):
            # The state the refusal was decided on, so anyone can check it against the history.
            # A command naming another (a capture, void or reversal) is refused by the hold's or the
            # original's state unless an account's balance refused it.
            names_another = isinstance(command, Capture | Void | Reversal)
            decided_on = outcome.account_id or (None if names_another else next(iter(touched[p.command_id]), None))
            seen = states.get(decided_on) if decided_on else None
            result = None
            if seen is not None and not seen.is_system:  # `@world`'s shard balance is nobody's business
                result = {"account_id": seen.id, "balance": seen.balance, "seq": seen.entry_count}
                if seen.held:
                    result["held"] = seen.held
            batch.finished.append(Finished(p.command_id, CommandStatus.REJECTED, outcome.code, outcome.detail, result))
            continue
        result = _record(batch, p.command_id, states, refs, command, outcome, p.currency or "")
        batch.finished.append(Finished(p.command_id, CommandStatus.APPLIED, result=result))
    batch.accounts = states
    return batch


def _record(
    batch: _Batch,
    command_id: str,
    states: dict[str, AccountState],
    refs: References,
    command: AnyCommand,
    outcome: Applied,
    currency: str,
) -> dict[str, Any]:
    legs = []
    for leg, after in settle(states, refs, command, outcome, currency):
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
    result: dict[str, Any] = {"entries": legs}
    batch.held_changed.update(a for a, _ in outcome.held)
    if outcome.reversible_amount is not None:
        batch.reversible[command_id] = outcome.reversible_amount
    hold = outcome.hold
    if hold is not None:
        if hold.status == HoldStatus.PENDING:
            batch.holds_placed[hold.id] = hold
            result["expires_at"] = rfc3339(hold.expires_at)
        else:
            batch.holds_resolved[hold.id] = hold
            result["hold_id"] = hold.id
            result["captured_amount"] = hold.captured_amount
        state = states[hold.account_id]
        result |= {"account_id": hold.account_id, "held": state.held, "available": state.available}
    if outcome.reversed is not None:
        original_id, amount = outcome.reversed
        batch.reversed[original_id] = batch.reversed.get(original_id, 0) + amount
        result["reversed_amount"] = amount
    return result


def _lock_accounts(conn: Connection, account_ids: list[str]) -> dict[str, AccountState]:
    if not account_ids:
        return {}
    rows = driver_cursor(conn).execute(_LOCK_ACCOUNTS, {"ids": account_ids})
    return {
        r.id: AccountState(r.id, r.currency, r.balance, r.overdraft_limit, r.entry_count, r.kind == "system", r.held)
        for r in rows
    }


def _write(conn: Connection, batch: _Batch, partition: int) -> None:
    cur = driver_cursor(conn)
    if batch.entry_rows:
        cur.execute(_INSERT_ENTRIES, {"rows": _json(batch.entry_rows)})
    touched = sorted({r["account_id"] for r in batch.entry_rows} | batch.held_changed)
    if touched:
        rows = [
            {
                "id": a,
                "balance": batch.accounts[a].balance,
                "entry_count": batch.accounts[a].entry_count,
                "held": batch.accounts[a].held,
            }
            for a in touched
        ]
        updated = cur.execute(_UPDATE_ACCOUNTS, {"rows": _json(rows)}).rowcount
        if updated != len(touched):
            raise InvariantViolation(f"updated {updated} of {len(touched)} account rows")
    if batch.holds_placed:
        rows = [
            {
                "id": h.id,
                "account_id": h.account_id,
                "to_account_id": h.to_account_id,
                "amount": h.amount,
                "currency": h.currency,
                "expires_at": h.expires_at.isoformat(),
            }
            for h in batch.holds_placed.values()
        ]
        cur.execute(_PLACE_HOLDS, {"rows": _json(rows), "partition": partition})
    if batch.finished:
        rows = [
            {
                "id": f.command_id,
                "status": f.status,
                "error_code": f.error_code,
                # Exception text can hold anything; Postgres text cannot hold NUL.
                "error_detail": None if f.error_detail is None else f.error_detail.replace("\x00", ""),
                "result": f.result,
                "reversible_amount": batch.reversible.get(f.command_id),
            }
            for f in batch.finished
        ]
        finished = cur.execute(_FINISH_COMMANDS, {"rows": _json(rows)}).rowcount
        if finished != len(batch.finished):
            # Only this partition's fenced owner finishes its commands; anything else is a second writer.
            raise InvariantViolation(f"finished {finished} of {len(batch.finished)} commands")
    if batch.reversed:
        # After the commands are finished: an original applied earlier in this batch is `applied`, with
        # its reversible amount, only from here on.
        rows = [{"id": i, "amount": n} for i, n in sorted(batch.reversed.items())]
        if cur.execute(_REVERSED, {"rows": _json(rows)}).rowcount != len(rows):
            raise InvariantViolation("a reversal's original is not applied")
    if batch.finished:
        cur.execute(INSERT_EVENTS, {"rows": _json(_events(batch, partition))})
    if batch.holds_resolved:
        # After the commands are finished: `resolved_by` names a capture or void that is final.
        rows = [
            {"id": h.id, "status": h.status, "captured_amount": h.captured_amount, "resolved_by": h.resolved_by}
            for h in batch.holds_resolved.values()
        ]
        if cur.execute(_RESOLVE_HOLDS, {"rows": _json(rows)}).rowcount != len(rows):
            raise InvariantViolation("a resolved hold has no row")


def _events(batch: _Batch, partition: int) -> list[dict[str, Any]]:
    rows = []
    for n, f in enumerate(batch.finished):
        kind, named = batch.event_facts.get(f.command_id, ("", []))
        data: dict[str, Any] = {"type": kind, "status": f.status, "partition": partition}
        if f.error_code:
            data["error"] = {"code": f.error_code, "detail": (f.error_detail or "").replace("\x00", "")}
        if f.result is not None:
            data["result"] = f.result
        rows.append(
            {"n": n, "type": f"command.{f.status}", "command_id": f.command_id, "accounts": named, "data": data}
        )
    return rows
