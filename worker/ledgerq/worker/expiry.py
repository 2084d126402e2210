"""Releasing expired holds: the partition's owner, between batches, in a fenced transaction.

DESIGN's rule: a capture or void *accepted* before the hold's `expires_at` is honoured even if it
is applied later. So the sweep expires a pending hold past `expires_at` only when no capture or
void for it accepted before `expires_at` is still queued:

1. take the candidate holds' locks (`ledgerq.shared.hold_locks`) exclusive. A claim round naming
   a hold holds its lock shared until it commits, so this waits for every claim in flight, and any
   claim that comes later waits for this sweep and is stamped `accepted_at` after it (the claim
   writes `clock_timestamp()` once its lock is granted) — so after `expires_at`: `hold_expired`.
2. in a new statement (a fresh snapshot, which sees the claims step 1 waited for) expire the holds
   with no such capture or void queued, and release their amounts from `accounts.held`.

A hold with a capture still queued is left pending; the capture is applied in queue order and
the hold is then captured (or, were it voided, released). Accounts are locked in id order, as the
apply transaction locks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Engine, text

from ledgerq.shared.errors import InvariantViolation
from ledgerq.shared.hold_locks import lock_for_expiry
from ledgerq.worker.apply import INSERT_EVENTS, check_epoch

SWEEP_MAX = 1000
"""Holds expired per sweep: a partition with more due catches up over the next sweeps."""

_CANDIDATES = text(
    """
    SELECT h.id FROM holds h
     WHERE h.partition = :p AND h.status = 'pending' AND h.expires_at <= clock_timestamp()
     ORDER BY h.expires_at
     LIMIT :n
    """
)

_EXPIRE = text(
    """
    UPDATE holds AS h SET status = 'expired', finished_at = clock_timestamp()
     WHERE h.id = ANY(CAST(:ids AS text[])) AND h.status = 'pending'
       AND NOT EXISTS (SELECT 1 FROM commands c
                        WHERE c.ref_id = h.id AND c.status = 'queued' AND c.accepted_at < h.expires_at)
    RETURNING h.id, h.account_id, h.amount
    """
)

_LOCK_ACCOUNTS = text("SELECT id FROM accounts WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE")

_RELEASE = text(
    """
    UPDATE accounts AS a SET held = a.held - v.amount, updated_at = now()
      FROM (SELECT account_id, sum(amount) AS amount
              FROM json_to_recordset(CAST(:rows AS json)) AS r(account_id text, amount bigint)
             GROUP BY account_id) v
     WHERE a.id = v.account_id
    """
)


@dataclass(frozen=True, slots=True)
class Expired:
    hold_id: str
    account_id: str
    amount: int


def expire_holds(engine: Engine, partition: int, epoch: int, limit: int = SWEEP_MAX) -> list[Expired]:
    """Expire what is due on `partition` under the rule above; returns the holds expired."""
    with engine.begin() as conn:
        check_epoch(conn, partition, epoch)
        ids = list(conn.execute(_CANDIDATES, {"p": partition, "n": limit}).scalars())
        if not ids:
            return []
        lock_for_expiry(conn, ids)
        expired = [Expired(r.id, r.account_id, r.amount) for r in conn.execute(_EXPIRE, {"ids": ids})]
        if not expired:
            return []
        account_ids = sorted({e.account_id for e in expired})
        conn.execute(_LOCK_ACCOUNTS, {"ids": account_ids})
        rows = [{"account_id": e.account_id, "amount": e.amount} for e in expired]
        if conn.execute(_RELEASE, {"rows": json.dumps(rows)}).rowcount != len(account_ids):
            raise InvariantViolation("an expired hold's account has no row")
        events = [
            {
                "n": n,
                "type": "hold.expired",
                "command_id": e.hold_id,
                "accounts": [e.account_id],
                "data": {"hold_id": e.hold_id, "account_id": e.account_id, "amount": e.amount, "partition": partition},
            }
            for n, e in enumerate(expired)
        ]
        conn.exec_driver_sql(INSERT_EVENTS, {"rows": json.dumps(events)})
    return expired
