"""`ledgerq verify`: re-derive the ledger from its entries and report any drift (invariants 2, 3, 4, 6),
and the holds and reversals from their commands (held = pending holds, each hold resolved at most once
and captured within its amount, no original reversed above what it posted).

Each check is one SQL query that returns the offending rows, so a clean
ledger yields nothing and every finding names the account, command or
currency. Account checks run over ranges of account ids and command checks
over ranges of command ids (each range an index scan), so a large ledger is
verified in steps a progress bar can follow; all steps read one snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

# Checks over one range of account ids: `:lo` < id <= `:hi`.
ACCOUNT_CHECKS: dict[str, str] = {
    "seq_gapless": """
        SELECT account_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi
          FROM entries WHERE account_id > :lo AND account_id <= :hi GROUP BY account_id
        HAVING min(seq) <> 1 OR max(seq) <> count(*)
    """,
    "balance_is_sum_of_entries": """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS entries_sum, a.entry_count, count(e.seq) AS n
          FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
         WHERE a.id > :lo AND a.id <= :hi
         GROUP BY a.id
        HAVING a.balance <> coalesce(sum(e.amount), 0) OR a.entry_count <> count(e.seq)
    """,
    "balance_is_last_balance_after": """
        SELECT a.id, a.balance, e.balance_after
          FROM accounts a JOIN entries e ON e.account_id = a.id AND e.seq = a.entry_count
         WHERE a.id > :lo AND a.id <= :hi AND a.balance <> e.balance_after
    """,
    "running_balance": """
        SELECT account_id, seq, balance_after, running
          FROM (SELECT account_id, seq, balance_after,
                       sum(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running
                  FROM entries WHERE account_id > :lo AND account_id <= :hi) t
         WHERE balance_after <> running
    """,
    "no_overdraft": """
        SELECT id, balance, held, overdraft_limit FROM accounts
         WHERE id > :lo AND id <= :hi AND kind = 'user' AND balance - held < -overdraft_limit
    """,
    "held_is_sum_of_pending_holds": """
        SELECT a.id, a.held, coalesce(sum(h.amount) FILTER (WHERE h.status = 'pending'), 0) AS pending
          FROM accounts a LEFT JOIN holds h ON h.account_id = a.id
         WHERE a.id > :lo AND a.id <= :hi
         GROUP BY a.id
        HAVING a.held <> coalesce(sum(h.amount) FILTER (WHERE h.status = 'pending'), 0)
    """,
}
# Checks over one range of command ids.
COMMAND_CHECKS: dict[str, str] = {
    "command_entries_balance": """
        SELECT command_id, sum(amount) FROM entries WHERE command_id > :lo AND command_id <= :hi
         GROUP BY command_id HAVING sum(amount) <> 0
    """,
    # An applied command posts one entry per leg (holds and voids none, a reversal as many as its
    # original); anything not applied posts none.
    "applied_have_entries": """
        SELECT c.id, c.status, count(e.seq) FROM commands c LEFT JOIN entries e ON e.command_id = c.id
         WHERE c.id > :lo AND c.id <= :hi
         GROUP BY c.id, c.status, c.type, c.payload, c.ref_id
        HAVING count(e.seq) <> CASE WHEN c.status <> 'applied' OR c.type IN ('hold', 'void') THEN 0
                                    WHEN c.type = 'transaction' THEN jsonb_array_length(c.payload->'legs')
                                    WHEN c.type = 'reversal'
                                    THEN (SELECT count(*) FROM entries o WHERE o.command_id = c.ref_id)
                                    ELSE 2 END
    """,
    # A hold is captured or voided by exactly one applied command, or by none while pending or expired.
    "hold_resolved_once": """
        SELECT h.id, h.status, count(c.id) AS resolutions
          FROM holds h LEFT JOIN commands c
            ON c.ref_id = h.id AND c.type IN ('capture', 'void') AND c.status = 'applied'
         WHERE h.id > :lo AND h.id <= :hi
         GROUP BY h.id, h.status
        HAVING count(c.id) <> CASE WHEN h.status IN ('captured', 'voided') THEN 1 ELSE 0 END
    """,
    # What a hold shows captured is what its capture posted, and never more than the hold.
    "hold_captured_within": """
        SELECT h.id, h.amount, h.captured_amount, coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS posted
          FROM holds h LEFT JOIN entries e ON e.command_id = h.resolved_by
         WHERE h.id > :lo AND h.id <= :hi
         GROUP BY h.id, h.amount, h.captured_amount
        HAVING h.captured_amount > h.amount
            OR h.captured_amount <> coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0)
    """,
    # An original's reversed_amount is what its applied reversals posted, never above what it posted.
    "reversed_within_original": """
        SELECT o.id, o.reversible_amount, o.reversed_amount, coalesce(sum(e.amount), 0) AS reversed
          FROM commands o
          LEFT JOIN commands r ON r.ref_id = o.id AND r.type = 'reversal' AND r.status = 'applied'
          LEFT JOIN entries e ON e.command_id = r.id AND e.amount > 0
         WHERE o.id > :lo AND o.id <= :hi AND o.type IN ('deposit', 'withdraw', 'transfer', 'capture', 'transaction')
         GROUP BY o.id, o.reversible_amount, o.reversed_amount
        HAVING o.reversed_amount <> coalesce(sum(e.amount), 0)
            OR o.reversed_amount > coalesce(o.reversible_amount, 0)
    """,
}
LEDGER_CHECKS: dict[str, str] = {
    "trial_balance": """
        SELECT currency, sum(balance) FROM accounts GROUP BY currency HAVING sum(balance) <> 0
    """,
}
CHECKS = {**ACCOUNT_CHECKS, **COMMAND_CHECKS, **LEDGER_CHECKS}
STEP_ROWS = 10_000

Progress = Callable[[str, int, int], None]
"""Called after each step with (what, done, total): "accounts", "commands" or "ledger"."""


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    rows: list[tuple[object, ...]]


def verify(
    engine: Engine, *, sample_max: int = 20, step_rows: int = STEP_ROWS, progress: Progress | None = None
) -> list[Finding]:
    found: dict[str, list[tuple[object, ...]]] = {}
    report = progress or (lambda _what, _done, _total: None)
    with engine.connect() as conn:
        # One snapshot for every step, so a ledger being written still verifies consistently.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        for what, table, checks in (("accounts", "accounts", ACCOUNT_CHECKS), ("commands", "commands", COMMAND_CHECKS)):
            total = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            done = 0
            report(what, done, total)
            for lo, hi, rows in _ranges(conn, table, step_rows):
                for name, sql in checks.items():
                    _keep(found, name, conn.execute(text(sql + f" LIMIT {sample_max}"), {"lo": lo, "hi": hi}))
                done += rows
                report(what, done, total)
        for name, sql in LEDGER_CHECKS.items():
            _keep(found, name, conn.execute(text(sql + f" LIMIT {sample_max}")))
        report("ledger", 1, 1)
    return [Finding(name, rows[:sample_max]) for name, rows in found.items()]


def _ranges(conn: Connection, table: str, step_rows: int) -> Iterator[tuple[str, str, int]]:
    """Consecutive (lo, hi] id ranges of at most `step_rows` rows each, with their row counts."""
    lo = ""  # every id is non-empty, so '' sorts before all of them
    while True:
        row = conn.execute(
            text(f"SELECT max(id), count(*) FROM (SELECT id FROM {table} WHERE id > :lo ORDER BY id LIMIT :n) t"),
            {"lo": lo, "n": step_rows},
        ).one()
        if not row[1]:
            return
        yield lo, row[0], int(row[1])
        lo = row[0]


def _keep(found: dict[str, list[tuple[object, ...]]], name: str, result: Iterable[Row[Any]]) -> None:
    rows = [tuple(r) for r in result]
    if rows:
        found.setdefault(name, []).extend(rows)
