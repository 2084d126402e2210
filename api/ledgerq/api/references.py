"""Where captures, voids and reversals go: the facts of the command they name, looked up at submit.

A capture or void is applied by its hold's partition (the hold's account is the one debited, and
only that partition changes the hold). A reversal is applied by the partition of the account it
debits — the original's credited account — so every reversal of one original is applied by one
owner, in order, and its running total needs no lock across partitions. Where that account is
`@world` (the reversal of a withdrawal, or of a capture to `@world`), the original's own account
routes it. A transaction's credited accounts must then share a partition, like any debits.

Commands are immutable once claimed (id, type, partition, payload), so these reads need no lock;
the claim round still locks a capture's or void's hold (`ledgerq.shared.hold_locks`) so that the
expiry sweep waits for the claim and then sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

from ledgerq.shared.commands import AnyCommand, Capture, Reversal, Void
from ledgerq.shared.errors import LedgerError, LegsSpanPartitions, UnknownCommand, UnknownHold, ValidationFailed
from ledgerq.shared.routing import partition_for
from ledgerq.shared.scoping import SEPARATOR


@dataclass(frozen=True, slots=True)
class Route:
    partition: int
    currency: str
    ref_id: str | None = None
    ref_index: int | None = None  # the named command is this one of the same round, not yet claimed


_NAMED = text(
    "SELECT id, type, partition, payload, ref_id, coalesce(currency, payload->>'currency') AS currency"
    " FROM commands WHERE id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))


def route(engine: Engine, partitions: int, batch: list[AnyCommand], scopes: list[str]) -> list[Route | LedgerError]:
    """Each command's partition, currency and reference, or why it is refused (422, nothing claimed).

    `scopes` are the account prefixes of the keys that sent them: a key confined to a prefix may only
    name a command whose accounts it could name itself."""
    wanted = sorted({c.ref_id for c in batch if isinstance(c, Capture | Void | Reversal)})
    named: dict[str, dict[str, Any]] = {}
    holds: dict[str, dict[str, Any]] = {}
    if wanted:  # the common round names no other command: no query
        with engine.connect() as conn:
            named = _lookup(conn, wanted)
            # A reversal of a capture routes by the capture's hold's `to_account_id`: one more lookup.
            captured = sorted({r["ref_id"] for r in named.values() if r["type"] == "capture"} - set(named))
            holds = _lookup(conn, captured) | {k: v for k, v in named.items() if v["type"] == "hold"}
    routes: list[Route | LedgerError] = []
    in_round: dict[str, int] = {}
    for index, (command, scope) in enumerate(zip(batch, scopes, strict=True)):
        found: Route | LedgerError
        if isinstance(command, Capture | Void):
            found = _route_release(command, named.get(command.hold_id), scope)
        elif isinstance(command, Reversal):
            found = _route_reversal(command, named.get(command.command_id), holds, scope, partitions)
        else:
            found = Route(partition_for(command.routing_account, partitions), command.currency)
        if isinstance(found, Route) and found.ref_id in in_round:
            found = Route(found.partition, found.currency, found.ref_id, in_round[found.ref_id])
        routes.append(found)
        if wanted and isinstance(found, Route) and command.id not in named:
            in_round[command.id] = index
            # A later command of the same round (a batch's capture of its own hold) may name this one: it
            # is claimed in the same transaction and queued before it, as sequential submits would be.
            row = {
                "id": command.id,
                "type": command.type,
                "partition": found.partition,
                "payload": command.payload(),
                "ref_id": found.ref_id,
                "currency": found.currency,
            }
            named[command.id] = row
            if command.type == "hold":
                holds[command.id] = row
    return routes


def refuse_unclaimed_targets(batch: list[AnyCommand], routes: list[Route], outcomes: list[Any]) -> None:
    """A command that names one of its own round which was refused (an unknown account, a full queue)
    is refused as if that command did not exist: nothing was claimed under that id."""
    for i, found in enumerate(routes):
        if found.ref_index is not None and outcomes[i] is None and outcomes[found.ref_index] is not None:
            command = batch[i]
            outcomes[i] = (
                UnknownCommand(f"no command has id {found.ref_id!r}")
                if isinstance(command, Reversal)
                else UnknownHold(f"no hold command has id {found.ref_id!r}")
            )


def _lookup(conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    return {r.id: dict(r._mapping) for r in conn.execute(_NAMED, {"ids": ids})}


def _accounts(row: dict[str, Any]) -> list[str]:
    payload = row["payload"]
    if "legs" in payload:
        return [leg["account_id"] for leg in payload["legs"]]
    return [a for a in (payload.get("account_id"), payload.get("to_account_id")) if a]


def _covered(row: dict[str, Any], scope: str) -> bool:
    """Whether a key confined to `scope` may name this command: its own, or one whose accounts are all
    within its prefix (a void or reversal names no account: only its own are visible)."""
    if not scope or row["id"].startswith(f"{scope}{SEPARATOR}"):
        return True
    named = _accounts(row)
    return bool(named) and all(a.startswith(scope) for a in named)


def _route_release(command: Capture | Void, hold: dict[str, Any] | None, scope: str) -> Route | LedgerError:
    if hold is None or hold["type"] != "hold" or not _covered(hold, scope):
        return UnknownHold(f"no hold command has id {command.hold_id!r}")
    return Route(hold["partition"], hold["currency"], command.hold_id)


def _route_reversal(
    command: Reversal,
    original: dict[str, Any] | None,
    holds: dict[str, dict[str, Any]],
    scope: str,
    partitions: int,
) -> Route | LedgerError:
    if original is None or not original["type"] or not _covered(original, scope):
        return UnknownCommand(f"no command has id {command.command_id!r}")
    payload, kind = original["payload"], original["type"]
    if kind == "capture" and original["ref_id"] in holds and not _covered(holds[original["ref_id"]], scope):
        return UnknownCommand(f"no command has id {command.command_id!r}")
    credited: list[str] = []
    if kind == "deposit":
        credited = [payload["account_id"]]
    elif kind == "transfer":
        credited = [payload["to_account_id"]]
    elif kind == "capture" and original["ref_id"] in holds:
        to = holds[original["ref_id"]]["payload"].get("to_account_id")
        credited = [to] if to else []
    elif kind == "transaction":
        if command.amount is not None:
            return ValidationFailed(
                "amount: a transaction is reversed whole; leave amount out",
                [{"loc": ["amount"], "msg": "a transaction is reversed whole", "type": "reversal_amount"}],
            )
        credited = [leg["account_id"] for leg in payload["legs"] if leg["amount"] > 0]
        spread = {partition_for(a, partitions) for a in credited}
        if len(spread) > 1:
            return LegsSpanPartitions(
                f"reversing this transaction debits its credited accounts, which route to partitions "
                f"{sorted(spread)}; they must share one partition"
            )
    # Withdrawals (and captures to @world) credited @world: the original's own account routes it;
    # a command that is not reversible goes to its own partition, which rejects it `not_reversible`.
    partition = partition_for(min(credited), partitions) if credited else original["partition"]
    return Route(partition, original["currency"], command.command_id)
