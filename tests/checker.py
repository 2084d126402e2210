"""A Jepsen-style checker: compare what clients were told with what the ledger holds.

It needs only the submitted payloads (with which thread sent them, in order)
and the database; it trusts nothing the API or worker computed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from ledgerq.shared.routing import SYSTEM_PREFIX


@dataclass
class Report:
    acknowledged: int = 0
    applied: int = 0
    rejected: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unjustified_rejections: int = 0
    balance_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.out_of_order
            or self.unjustified_rejections
            or self.balance_mismatches
            or self.failed
            or self.problems
        )

    def line(self) -> str:
        return (
            f"acknowledged={self.acknowledged} applied={self.applied} rejected={self.rejected} "
            f"failed={self.failed} lost={self.lost} duplicated={self.duplicated} "
            f"out_of_order={self.out_of_order} unjustified_rejections={self.unjustified_rejections} "
            f"balance_mismatches={self.balance_mismatches}"
        )


def legs(payload: dict[str, Any]) -> dict[str, int]:
    """The non-system legs a command moves when applied."""
    amount = payload["amount"]
    if payload["type"] == "deposit":
        return {payload["account_id"]: amount}
    if payload["type"] == "withdraw":
        return {payload["account_id"]: -amount}
    return {payload["account_id"]: -amount, payload["to_account_id"]: amount}


def check(engine: Engine, acknowledged: dict[str, dict[str, Any]], sent_in_order: dict[str, list[str]]) -> Report:
    """`acknowledged`: id -> payload of every command answered 202/200.
    `sent_in_order`: client (thread) -> ids it sent one after another."""
    report = Report(acknowledged=len(acknowledged))
    ids = list(acknowledged)
    with engine.connect() as conn:
        outcomes = {
            r.id: r
            for r in conn.execute(
                text("SELECT id, status, error_code, result FROM commands WHERE id = ANY(:ids)"), {"ids": ids}
            )
        }
        rows = conn.execute(
            text(
                "SELECT e.account_id, e.seq, e.command_id, e.amount, e.balance_after, a.overdraft_limit "
                "FROM entries e JOIN accounts a ON a.id = e.account_id WHERE e.command_id = ANY(:ids) "
                "ORDER BY e.account_id, e.seq"
            ),
            {"ids": ids},
        ).all()
        touched = sorted({a for p in acknowledged.values() for a in legs(p)})
        balances = dict(
            conn.execute(text("SELECT id, balance FROM accounts WHERE id = ANY(:ids)"), {"ids": touched}).all()
        )
        limits = dict(
            conn.execute(text("SELECT id, overdraft_limit FROM accounts WHERE id = ANY(:ids)"), {"ids": touched}).all()
        )
        all_entries = conn.execute(
            text(
                "SELECT account_id, seq, command_id, amount, balance_after FROM entries WHERE account_id = ANY(:ids) "
                "ORDER BY account_id, seq"
            ),
            {"ids": touched},
        ).all()
    by_command: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_command[row.command_id].append(row)
    for command_id, payload in acknowledged.items():
        outcome = outcomes.get(command_id)
        if outcome is None or outcome.status not in ("applied", "rejected", "failed"):
            report.lost += 1
            continue
        setattr(report, outcome.status, getattr(report, outcome.status) + 1)
        written = {r.account_id: r.amount for r in by_command[command_id] if not r.account_id.startswith(SYSTEM_PREFIX)}
        count = len(by_command[command_id])
        if outcome.status == "applied" and (count != 2 or written != legs(payload)):
            report.duplicated += count > 2
            report.problems.append(f"{command_id}: applied with entries {written} (count {count})")
        if outcome.status != "applied" and count:
            report.duplicated += 1
    history: dict[str, list[Any]] = defaultdict(list)
    for row in all_entries:
        history[row.account_id].append(row)
    _check_histories(report, history, limits, balances)
    _check_rejections(report, acknowledged, outcomes, history, limits)
    _check_order(report, sent_in_order, acknowledged, history)
    return report


def _check_histories(
    report: Report, history: dict[str, list[Any]], limits: dict[str, int], balances: dict[str, int]
) -> None:
    for account, entries in history.items():
        running = 0
        for n, entry in enumerate(entries, start=1):
            running += entry.amount
            if entry.seq != n or entry.balance_after != running or running < -limits[account]:
                report.problems.append(
                    f"{account} seq {entry.seq}: balance_after {entry.balance_after}, "
                    f"replayed {running}, limit {limits[account]}"
                )
                break
        if balances[account] != running:
            report.balance_mismatches += 1


def _check_rejections(
    report: Report,
    acknowledged: dict[str, dict[str, Any]],
    outcomes: dict[str, Any],
    history: dict[str, list[Any]],
    limits: dict[str, int],
) -> None:
    """Each insufficient_funds names the balance and seq it saw: both must be real and must justify it."""
    for command_id, payload in acknowledged.items():
        outcome = outcomes.get(command_id)
        if outcome is None or outcome.error_code != "insufficient_funds":
            continue
        seen = outcome.result
        entries = history.get(seen["account_id"], [])
        actual = entries[seen["seq"] - 1].balance_after if seen["seq"] else 0
        if actual != seen["balance"] or seen["balance"] - payload["amount"] >= -limits[seen["account_id"]]:
            report.unjustified_rejections += 1


def _check_order(
    report: Report,
    sent_in_order: dict[str, list[str]],
    acknowledged: dict[str, dict[str, Any]],
    history: dict[str, list[Any]],
) -> None:
    """Per account, one client's commands routed by that account apply in the order it sent them."""
    position = {(account, e.command_id): e.seq for account, es in history.items() for e in es}
    for ids in sent_in_order.values():
        last_seq: dict[str, int] = {}
        for command_id in ids:
            if command_id not in acknowledged:
                continue
            routing = acknowledged[command_id]["account_id"]
            seq = position.get((routing, command_id))
            if seq is None:
                continue  # rejected: no entry
            if seq < last_seq.get(routing, 0):
                report.out_of_order += 1
            last_seq[routing] = seq
