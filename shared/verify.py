"""`ledgerq verify`: re-derive the ledger from its entries and report any drift (invariants 2, 3, 4, 6).

Each check is one SQL query that returns the offending rows, so a clean
ledger yields nothing and every finding names the account or currency.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

CHECKS: dict[str, str] = {
    "seq_gapless": """
        SELECT account_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi
          FROM entries GROUP BY account_id
        HAVING min(seq) <> 1 OR max(seq) <> count(*)
    """,
    "balance_is_sum_of_entries": """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS entries_sum, a.entry_count, count(e.seq) AS n
          FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
         GROUP BY a.id
        HAVING a.balance <> coalesce(sum(e.amount), 0) OR a.entry_count <> count(e.seq)
    """,
    "balance_is_last_balance_after": """
        SELECT a.id, a.balance, e.balance_after
          FROM accounts a JOIN entries e ON e.account_id = a.id AND e.seq = a.entry_count
         WHERE a.balance <> e.balance_after
    """,
    "running_balance": """
        SELECT account_id, seq, balance_after, running
          FROM (SELECT account_id, seq, balance_after,
                       sum(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running
                  FROM entries) t
         WHERE balance_after <> running
    """,
    "no_overdraft": """
        SELECT id, balance, overdraft_limit FROM accounts
         WHERE kind = 'user' AND balance < -overdraft_limit
    """,
    "command_entries_balance": """
        SELECT command_id, sum(amount) FROM entries GROUP BY command_id HAVING sum(amount) <> 0
    """,
    "trial_balance": """
        SELECT currency, sum(balance) FROM accounts GROUP BY currency HAVING sum(balance) <> 0
    """,
    "applied_have_entries": """
        SELECT c.id, c.status, count(e.seq) FROM commands c LEFT JOIN entries e ON e.command_id = c.id
         GROUP BY c.id, c.status
        HAVING (c.status = 'applied') <> (count(e.seq) = 2)
    """,
}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    rows: list[tuple[object, ...]]


def verify(engine: Engine, *, sample_max: int = 20) -> list[Finding]:
    findings: list[Finding] = []
    with engine.connect() as conn:
        # One snapshot for every check, so a ledger being written still verifies consistently.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        for name, sql in CHECKS.items():
            rows = [tuple(r) for r in conn.execute(text(sql + f" LIMIT {sample_max}"))]
            if rows:
                findings.append(Finding(name, rows))
    return findings
