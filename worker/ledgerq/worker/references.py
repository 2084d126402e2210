"""What a batch's captures, voids and reversals name: the holds and originals, read before the
account rows are locked, so the batch knows every account it touches and locks them in one order.

Holds are locked (`FOR UPDATE`), and only this partition's are read: only its owner changes them,
and the expiry sweep and a capture must never both act on one. Originals are read unlocked: an
applied command's legs never change, and its `reversed_amount` is written only by the one partition
that applies its reversals (this one), as an increment the CHECK holds to the original's amount.
(Locking them would wait on, or deadlock with, the original's own partition applying it; skipping a
locked one refused reversals whose own earlier, stalled attempt still held the lock.)
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

from ledgerq.shared.commands import AnyCommand, Capture, Hold, Reversal, Transaction, Void
from ledgerq.shared.routing import world_account
from ledgerq.shared.schema import HoldStatus, holds
from ledgerq.worker.rules import HoldState, Original, References

_ORIGINALS = text(
    """
    SELECT c.id, c.type, c.status, coalesce(c.currency, c.payload->>'currency') AS currency,
           coalesce(c.reversible_amount, 0) AS reversible_amount, c.reversed_amount,
           coalesce((SELECT json_agg(json_build_array(e.account_id, e.amount) ORDER BY e.account_id)
                       FROM entries e WHERE e.command_id = c.id), '[]') AS legs
      FROM commands c WHERE c.id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))


def load_references(conn: Connection, partition: int, batch: Iterable[AnyCommand]) -> References:
    commands = list(batch)
    hold_ids = sorted({c.hold_id for c in commands if isinstance(c, Capture | Void)})
    original_ids = sorted({c.command_id for c in commands if isinstance(c, Reversal)})
    refs = References()
    if hold_ids:
        rows = conn.execute(
            select(holds)
            .where(holds.c.id == any_(bindparam("ids", hold_ids, type_=ARRAY(TEXT))), holds.c.partition == partition)
            .order_by(holds.c.id)
            .with_for_update()
        )
        for r in rows:
            refs.holds[r.id] = HoldState(
                r.id,
                r.account_id,
                r.to_account_id,
                r.amount,
                r.currency,
                HoldStatus(r.status),
                r.expires_at,
                r.captured_amount,
                r.resolved_by,
            )
    if original_ids:
        for r in conn.execute(_ORIGINALS, {"ids": original_ids}):
            refs.originals[r.id] = Original(
                r.id,
                r.type,
                r.status,
                r.currency,
                tuple((a, int(n)) for a, n in r.legs),
                r.reversible_amount,
                r.reversed_amount,
            )
    return refs


def accounts_touched(
    command: AnyCommand, currency: str | None, partition: int, refs: References, in_batch: dict[str, AnyCommand]
) -> tuple[str, ...]:
    """Every account row applying `command` may change, the account it is decided on first (its
    routing account). A hold or original in the same batch is known from its command."""
    if isinstance(command, Transaction):
        return (command.routing_account, *command.account_ids())
    if isinstance(command, Hold):
        return command.account_ids()
    world = () if currency is None else (world_account(currency, partition),)
    if isinstance(command, Capture | Void):
        hold = refs.holds.get(command.hold_id)
        if hold is not None:
            return (hold.account_id, *([hold.to_account_id] if hold.to_account_id else world))
        placed = in_batch.get(command.hold_id)
        return placed.account_ids() + world if isinstance(placed, Hold) else ()
    if isinstance(command, Reversal):
        original = refs.originals.get(command.command_id)
        # The accounts the reversal debits (the original's credited ones) first.
        legs = [a for a, _ in sorted(original.legs, key=lambda leg: -leg[1])] if original is not None else []
        if not legs and command.command_id in in_batch:
            legs = list(accounts_touched(in_batch[command.command_id], currency, partition, refs, in_batch))
        named = [a for a in legs if not a.startswith("@")]
        return (*named, *world)
    return (*command.account_ids(), *world)
