"""A Jepsen-style checker: compare what clients were told with what the ledger holds.

It needs only the submitted payloads (with which thread sent them, in order, and optionally when
each was first sent and acknowledged) and the database, read in one snapshot; it trusts nothing
the API or worker computed beyond what the ledger's own rows can confirm.

What it checks:
- Exactly once: every acknowledged command is final, finished once (`attempts` = 1), and posted
  the entries its type implies (none for holds, voids and anything not applied; a capture's or a
  reversal's derived from the hold or original it names), never more.
- Order. A partition applies commands in the order they were accepted, and a command acknowledged
  before another was first sent was accepted before it. That order is observable, per account, in
  three ways: the `seq` of each entry a command posts (the partition's `@world` shard included,
  which only its partition writes); the `seq` a rejection names as the state it was decided on;
  and for holds and voids, which post nothing, the balance they saw (`available` + `held` in their
  result), which must appear in the account's history between the entries that must precede and
  follow them. Only commands of one partition are compared: credits from others commute.
- Holds: each resolved at most once, its row agreeing with the capture or void that resolved it
  (accepted before `expires_at`), an expired one expired no earlier than `expires_at`, and every
  account's `held` equal to the sum of its pending holds.
- Reversals: what an original's applied reversals took back, in the order they were applied, is
  what each asked for (or all that was left), never more than the original moved in all, and
  equal to the original's `reversed_amount`.
- Every rejection is justified by the state it names and the history around it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

from ledgerq.shared.routing import SYSTEM_PREFIX

REFERENCE_DEPTH_MAX = 3
"""A reversal names a capture which names a hold: the deepest chain of named commands to load."""
INFINITY = float("inf")


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
    held_mismatches: int = 0
    holds_resolved_twice: int = 0
    over_reversed: int = 0
    event_mismatches: int = 0  # a final outcome without exactly one event of its status, or an event too many
    rejected_by: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.out_of_order
            or self.unjustified_rejections
            or self.balance_mismatches
            or self.held_mismatches
            or self.holds_resolved_twice
            or self.over_reversed
            or self.event_mismatches
            or self.failed
            or self.problems
        )

    def line(self) -> str:
        codes = "".join(f" {code}={n}" for code, n in sorted(self.rejected_by.items()))
        types = " ".join(f"{kind}={n}" for kind, n in sorted(self.types.items()))
        return (
            f"acknowledged={self.acknowledged} applied={self.applied} rejected={self.rejected}"
            f"{f' ({codes.strip()})' if codes else ''} "
            f"failed={self.failed} lost={self.lost} duplicated={self.duplicated} "
            f"out_of_order={self.out_of_order} unjustified_rejections={self.unjustified_rejections} "
            f"balance_mismatches={self.balance_mismatches} held_mismatches={self.held_mismatches} "
            f"event_mismatches={self.event_mismatches} "
            f"holds_resolved_twice={self.holds_resolved_twice} over_reversed={self.over_reversed} types=({types})"
        )


@dataclass(frozen=True)
class Timeline:
    """When each command was first sent and when it was acknowledged, on one clock (the workload's
    `time.monotonic()`). A command acknowledged before another was first sent was accepted first."""

    first_sent: dict[str, float]
    acknowledged: dict[str, float]


_COMMANDS = text(
    "SELECT id, type, status, error_code, result, partition, accepted_at, attempts, ref_id, reversed_amount, payload "
    "FROM commands WHERE id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))
_NAMING = text(
    "SELECT id, type, status, error_code, result, partition, accepted_at, attempts, ref_id, reversed_amount, payload "
    "FROM commands WHERE ref_id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))
_HOLDS = text(
    "SELECT id, account_id, amount, status, captured_amount, resolved_by, expires_at, finished_at "
    "FROM holds WHERE account_id = ANY(:accounts) OR id = ANY(:ids)"
).bindparams(bindparam("accounts", type_=ARRAY(TEXT)), bindparam("ids", type_=ARRAY(TEXT)))
_ENTRIES_OF_COMMANDS = text(
    "SELECT account_id, seq, command_id, amount FROM entries WHERE command_id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))
_HISTORIES = text(
    "SELECT account_id, seq, command_id, amount, balance_after FROM entries WHERE account_id = ANY(:ids) "
    "ORDER BY account_id, seq"
).bindparams(bindparam("ids", type_=ARRAY(TEXT)))
_EVENTS = text("SELECT command_id, type FROM events WHERE command_id = ANY(:ids) AND type LIKE 'command.%'").bindparams(
    bindparam("ids", type_=ARRAY(TEXT))
)
_ACCOUNTS = text("SELECT id, balance, held, overdraft_limit FROM accounts WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(TEXT))
)


@dataclass
class Snapshot:
    """What the checker reads, all in one REPEATABLE READ snapshot (the expiry sweep may still run)."""

    acknowledged: dict[str, dict[str, Any]]
    commands: dict[str, Any] = field(default_factory=dict)  # the acknowledged, what they name, what names them
    naming: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # id -> commands naming it
    entries: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))  # command id -> its entries
    history: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))  # account -> entries by seq
    accounts: dict[str, Any] = field(default_factory=dict)
    holds: dict[str, Any] = field(default_factory=dict)
    reversed_by: dict[str, int] = field(default_factory=dict)  # applied reversal -> the amount it took back

    def payload(self, command_id: str) -> dict[str, Any]:
        """What the client sent, or (for a command it did not send) the stored payload."""
        if command_id in self.acknowledged:
            return self.acknowledged[command_id]
        return dict(self.commands[command_id].payload)

    def seq_of(self, command_id: str, account_id: str) -> int | None:
        return next((e.seq for e in self.entries.get(command_id, ()) if e.account_id == account_id), None)

    def balance_at(self, account_id: str, seq: int) -> int | None:
        entries = self.history.get(account_id, [])
        if seq == 0:
            return 0
        return entries[seq - 1].balance_after if 0 < seq <= len(entries) else None


def check(
    engine: Engine,
    acknowledged: dict[str, dict[str, Any]],
    sent_in_order: dict[str, list[str]],
    timeline: Timeline | None = None,
) -> Report:
    """`acknowledged`: id -> payload of every command answered 202/200.
    `sent_in_order`: client (thread) -> ids it sent one after another (each acknowledged before the next).
    `timeline`: when each was first sent and acknowledged; without it, order is checked per client only."""
    report = Report(acknowledged=len(acknowledged), types=Counter(p["type"] for p in acknowledged.values()))
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        snap = _load(conn, acknowledged)
        events = [tuple(r) for r in conn.execute(_EVENTS, {"ids": sorted(acknowledged)})]
    _check_events(report, snap, events)
    _measure_reversals(snap)
    _check_outcomes(report, snap)
    _check_histories(report, snap)
    _check_holds(report, snap)
    _check_reversals(report, snap)
    _check_rejections(report, snap, timeline or _client_timeline([]))
    if timeline is not None:
        _check_order(report, snap, timeline, "")
    else:
        for client, ids in sent_in_order.items():
            _check_order(report, snap, _client_timeline(ids), f"client {client}: ")
    return report


def _check_events(report: Report, snap: Snapshot, events: list[tuple[str, str]]) -> None:
    """No outcome without its event, no event without its outcome: one `command.<status>` each."""
    by_command: dict[str, Counter[str]] = defaultdict(Counter)
    for command_id, kind in events:
        by_command[command_id][kind] += 1
    for command_id in snap.acknowledged:
        row = snap.commands.get(command_id)
        want = Counter({f"command.{row.status}": 1}) if row is not None and row.status != "queued" else Counter()
        have = by_command.get(command_id, Counter())
        if have != want:
            report.event_mismatches += 1
            report.problems.append(f"{command_id}: events {have}, outcome {want}")


def _client_timeline(ids: list[str]) -> Timeline:
    """One client's sends as a timeline: each acknowledged before the next was sent."""
    return Timeline({c: float(n) for n, c in enumerate(ids)}, {c: float(n) for n, c in enumerate(ids)})


# -- reading -------------------------------------------------------------------------------------


def _load(conn: Connection, acknowledged: dict[str, dict[str, Any]]) -> Snapshot:
    snap = Snapshot(acknowledged)
    wanted = set(acknowledged)
    for _ in range(REFERENCE_DEPTH_MAX):
        for row in conn.execute(_COMMANDS, {"ids": sorted(wanted - set(snap.commands))}):
            snap.commands[row.id] = row
        wanted = {r.ref_id for r in snap.commands.values() if r.ref_id} - set(snap.commands)
        if not wanted:
            break
    touched = sorted({a for c in snap.commands for a in _accounts_of(snap.payload(c))})
    hold_ids = sorted(c for c, r in snap.commands.items() if r.type == "hold")
    snap.holds = {r.id: r for r in conn.execute(_HOLDS, {"accounts": touched, "ids": hold_ids})}
    for row in conn.execute(_NAMING, {"ids": sorted(set(snap.commands) | set(snap.holds))}):
        snap.commands.setdefault(row.id, row)
    for row in snap.commands.values():
        if row.ref_id:
            snap.naming[row.ref_id].append(row.id)
    for row in conn.execute(_ENTRIES_OF_COMMANDS, {"ids": sorted(snap.commands)}):
        snap.entries[row.command_id].append(row)
    for row in conn.execute(_HISTORIES, {"ids": touched}):
        snap.history[row.account_id].append(row)
    snap.accounts = {r.id: r for r in conn.execute(_ACCOUNTS, {"ids": touched})}
    return snap


def _accounts_of(payload: dict[str, Any]) -> list[str]:
    named = [payload.get("account_id"), payload.get("to_account_id")]
    named += [leg["account_id"] for leg in payload.get("legs", ())]
    return [a for a in named if a]


def _posted(entries: Iterable[Any]) -> dict[str, int]:
    """A command's legs on client accounts (its `@world` leg left out)."""
    return {e.account_id: e.amount for e in entries if not e.account_id.startswith(SYSTEM_PREFIX)}


def _moved(entries: Iterable[Any]) -> int:
    """What a command moved: the sum of its credits, `@world`'s included."""
    return sum(e.amount for e in entries if e.amount > 0)


def _measure_reversals(snap: Snapshot) -> None:
    for command_id, row in snap.commands.items():
        if row.type == "reversal" and row.status == "applied":
            snap.reversed_by[command_id] = _moved(snap.entries.get(command_id, ()))


# -- exactly once --------------------------------------------------------------------------------


def _check_outcomes(report: Report, snap: Snapshot) -> None:
    for command_id in snap.acknowledged:
        row = snap.commands.get(command_id)
        if row is None or row.status not in ("applied", "rejected", "failed"):
            report.lost += 1
            continue
        setattr(report, row.status, getattr(report, row.status) + 1)
        if row.status == "rejected":
            report.rejected_by[row.error_code] += 1
        if row.attempts != 1:
            report.duplicated += 1
            report.problems.append(f"{command_id}: finished {row.attempts} times")
        entries = snap.entries.get(command_id, [])
        if row.status != "applied":
            report.duplicated += bool(entries)
            continue
        expected = _expected(snap, command_id)
        if expected is None:
            report.problems.append(f"{command_id}: applied, though what it names was never applied")
            continue
        legs, count = expected
        if len(entries) != count or _posted(entries) != legs:
            report.duplicated += len(entries) > count
            report.problems.append(f"{command_id}: applied with entries {_posted(entries)} (count {len(entries)})")


def _expected(snap: Snapshot, command_id: str) -> tuple[dict[str, int], int] | None:
    """The client-account legs an applied command must have posted, and how many entries in all."""
    payload = snap.payload(command_id)
    kind = payload["type"]
    if kind in ("hold", "void"):
        return {}, 0
    if kind == "deposit":
        return {payload["account_id"]: payload["amount"]}, 2
    if kind == "withdraw":
        return {payload["account_id"]: -payload["amount"]}, 2
    if kind == "transfer":
        return {payload["account_id"]: -payload["amount"], payload["to_account_id"]: payload["amount"]}, 2
    if kind == "transaction":
        return {leg["account_id"]: leg["amount"] for leg in payload["legs"]}, len(payload["legs"])
    if kind == "capture":
        hold = snap.payload(payload["hold_id"])
        amount = payload.get("amount", hold["amount"])
        legs = {hold["account_id"]: -amount} | ({hold["to_account_id"]: amount} if hold.get("to_account_id") else {})
        return legs, 2
    return _mirrored(snap, command_id, payload["command_id"])


def _mirrored(snap: Snapshot, command_id: str, original_id: str) -> tuple[dict[str, int], int] | None:
    """A reversal's legs: the original's with the signs turned, for the amount it took back (the
    whole of a transaction)."""
    original = snap.entries.get(original_id)
    if not original:
        return None
    if snap.commands[original_id].type == "transaction":
        return {a: -n for a, n in _posted(original).items()}, len(original)
    amount = snap.reversed_by[command_id]
    return {a: -amount if n > 0 else amount for a, n in _posted(original).items()}, len(original)


# -- balances and holds --------------------------------------------------------------------------


def _check_histories(report: Report, snap: Snapshot) -> None:
    for account, row in snap.accounts.items():
        running = 0
        for n, entry in enumerate(snap.history.get(account, []), start=1):
            running += entry.amount
            if entry.seq != n or entry.balance_after != running or running < -row.overdraft_limit:
                report.problems.append(
                    f"{account} seq {entry.seq}: balance_after {entry.balance_after}, "
                    f"replayed {running}, limit {row.overdraft_limit}"
                )
                break
        if row.balance != running:
            report.balance_mismatches += 1
        if row.held < 0 or row.balance - row.held < -row.overdraft_limit:
            report.problems.append(f"{account}: balance {row.balance}, held {row.held}, limit {row.overdraft_limit}")


def _check_holds(report: Report, snap: Snapshot) -> None:
    pending: Counter[str] = Counter()
    for hold_id, hold in snap.holds.items():
        if hold.status == "pending":
            pending[hold.account_id] += hold.amount
        resolutions = [
            snap.commands[c]
            for c in snap.naming.get(hold_id, ())
            if snap.commands[c].type in ("capture", "void") and snap.commands[c].status == "applied"
        ]
        if len(resolutions) > 1:
            report.holds_resolved_twice += 1
            report.problems.append(f"hold {hold_id}: resolved by {[r.id for r in resolutions]}")
        elif resolutions:
            _check_resolution(report, snap, hold, resolutions[0])
        elif hold.status not in ("pending", "expired") or hold.resolved_by is not None:
            report.problems.append(f"hold {hold_id}: {hold.status} by {hold.resolved_by}, which is not applied")
        if hold.status == "expired" and hold.finished_at < hold.expires_at:
            report.problems.append(f"hold {hold_id}: expired at {hold.finished_at}, before {hold.expires_at}")
    for command_id, payload in snap.acknowledged.items():
        row = snap.commands.get(command_id)
        if payload["type"] == "hold" and row is not None and (row.status == "applied") != (command_id in snap.holds):
            report.problems.append(f"hold {command_id}: {row.status}, hold row {command_id in snap.holds}")
    for account, row in snap.accounts.items():
        if row.held != pending[account]:
            report.held_mismatches += 1
            report.problems.append(f"{account}: held {row.held}, pending holds {pending[account]}")


def _check_resolution(report: Report, snap: Snapshot, hold: Any, resolution: Any) -> None:
    status = "captured" if resolution.type == "capture" else "voided"
    captured = _moved(snap.entries.get(resolution.id, ())) if resolution.type == "capture" else 0
    if (hold.status, hold.resolved_by, hold.captured_amount) != (status, resolution.id, captured):
        report.problems.append(
            f"hold {hold.id}: {hold.status} {hold.captured_amount} by {hold.resolved_by}, "
            f"but {resolution.id} {status} {captured}"
        )
    if resolution.accepted_at >= hold.expires_at:
        report.problems.append(f"hold {hold.id}: {resolution.id} was accepted after the hold expired")


def _check_reversals(report: Report, snap: Snapshot) -> None:
    by_original: dict[str, list[str]] = defaultdict(list)
    for reversal_id in snap.reversed_by:
        by_original[snap.commands[reversal_id].ref_id].append(reversal_id)
    for original_id, reversals in by_original.items():
        original = snap.commands[original_id]
        entries = snap.entries.get(original_id, [])
        moved = _moved(entries)
        total = sum(snap.reversed_by[r] for r in reversals)
        if total > moved:
            report.over_reversed += 1
            report.problems.append(f"{original_id}: {total} reversed of {moved}")
        if original.reversed_amount != total:
            report.problems.append(f"{original_id}: reversed_amount {original.reversed_amount}, reversals {total}")
        # Every reversal of one original is applied by one partition and posts on the original's
        # accounts: their seq on one of them is the order they were applied in.
        account = next(iter(_posted(entries)), None)
        if account is None:
            continue
        running = 0
        for reversal_id in sorted(reversals, key=lambda r: snap.seq_of(r, account) or 0):
            asked = snap.payload(reversal_id).get("amount", moved - running)
            if snap.reversed_by[reversal_id] != asked:
                report.problems.append(f"{reversal_id}: took back {snap.reversed_by[reversal_id]}, not {asked}")
            running += snap.reversed_by[reversal_id]


def _reversed_before(snap: Snapshot, original_id: str, seen: dict[str, Any] | None) -> int:
    """What the original's applied reversals had taken back when a rejection was decided: those whose
    entry on the account the rejection names comes at or before the seq it names; all of them when
    it names no such account (an upper bound, so the checks stay sound)."""
    reversals = [r for r in snap.naming.get(original_id, ()) if r in snap.reversed_by]
    if seen is None or not seen.get("account_id"):
        return sum(snap.reversed_by[r] for r in reversals)
    before = 0
    for reversal_id in reversals:
        seq = snap.seq_of(reversal_id, seen["account_id"])
        if seq is None:
            return sum(snap.reversed_by[r] for r in reversals)
        before += snap.reversed_by[reversal_id] if seq <= seen["seq"] else 0
    return before


# -- rejections ----------------------------------------------------------------------------------

Justify = Callable[[Snapshot, Any, dict[str, Any], Timeline], bool | None]
"""True if the rejection is justified, False if not, None if the ledger cannot tell."""


def _check_rejections(report: Report, snap: Snapshot, timeline: Timeline) -> None:
    for command_id, payload in snap.acknowledged.items():
        row = snap.commands.get(command_id)
        if row is None or row.status != "rejected":
            continue
        seen = row.result
        if seen and not _real(snap, seen):
            report.unjustified_rejections += 1
            report.problems.append(f"{command_id}: rejected on a state the history never had: {seen}")
            continue
        justify = JUSTIFICATIONS.get(row.error_code)
        if justify is None or justify(snap, row, payload, timeline) is False:
            report.unjustified_rejections += 1
            report.problems.append(f"{command_id}: {payload['type']} rejected {row.error_code} unjustified ({seen})")


def _real(snap: Snapshot, seen: dict[str, Any]) -> bool:
    """The balance and seq a rejection names are the account's at that seq (client accounts only)."""
    account = seen.get("account_id", "")
    if account.startswith(SYSTEM_PREFIX) or account not in snap.accounts:
        return True
    return snap.balance_at(account, seen["seq"]) == seen["balance"] and seen.get("held", 0) >= 0


def _short_of_funds(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    seen = row.result
    if not seen or seen["account_id"] not in snap.accounts:
        return None
    debits = _debits(snap, payload, seen)
    need = debits.get(seen["account_id"])
    if need is None:  # the named account is not debited: another (of a transaction, a reversal) was short
        return None if len(debits) > 0 and payload["type"] in ("transaction", "reversal") else False
    floor = -snap.accounts[seen["account_id"]].overdraft_limit
    if seen["balance"] - seen.get("held", 0) - need >= floor:
        return None if len(debits) > 1 else False
    return True


def _debits(snap: Snapshot, payload: dict[str, Any], seen: dict[str, Any]) -> dict[str, int]:
    """What a command takes from each client account it debits (a deposit and a capture, whose hold
    already reserved it, can never be short)."""
    kind = payload["type"]
    if kind in ("withdraw", "transfer", "hold"):
        return {payload["account_id"]: payload["amount"]}
    if kind == "transaction":
        return {leg["account_id"]: -leg["amount"] for leg in payload["legs"] if leg["amount"] < 0}
    if kind != "reversal" or not snap.entries.get(payload["command_id"]):
        return {}
    original_id = payload["command_id"]
    credited = {a: n for a, n in _posted(snap.entries[original_id]).items() if n > 0}
    if snap.commands[original_id].type == "transaction":
        return credited
    left = _moved(snap.entries[original_id]) - _reversed_before(snap, original_id, seen)
    return {a: payload.get("amount", left) for a in credited}


def _hold_not_pending(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    """The hold was never placed, or another capture or void resolved it first."""
    hold_command = snap.commands.get(payload["hold_id"])
    hold = snap.holds.get(payload["hold_id"])
    if hold_command is None or hold_command.status != "applied":
        return True
    if hold is None or hold.resolved_by in (None, row.id):
        return False  # pending, or expired though this was accepted before it expired (else hold_expired)
    seen = row.result
    first = snap.seq_of(hold.resolved_by, hold.account_id)  # a capture's entry; a void posts none
    if first is not None and seen and seen.get("account_id") == hold.account_id:
        return first <= seen["seq"]
    return True


def _hold_expired(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    hold = snap.holds.get(payload["hold_id"])
    return hold is not None and row.accepted_at >= hold.expires_at


def _exceeds_hold(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    return bool(payload.get("amount", 0) > snap.payload(payload["hold_id"])["amount"])


def _not_reversible(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    original = snap.commands.get(payload["command_id"])
    if original is None or original.status != "applied":
        return True
    if original.type not in ("deposit", "withdraw", "transfer", "capture", "transaction"):
        return True
    acknowledged = timeline.acknowledged.get(original.id, INFINITY)
    if original.partition == row.partition and acknowledged < timeline.first_sent.get(row.id, -INFINITY):
        return False  # queued ahead of this reversal on its partition: applied before it
    return None  # applied by another partition, maybe only after this reversal was decided


def _exceeds_reversible(snap: Snapshot, row: Any, payload: dict[str, Any], timeline: Timeline) -> bool | None:
    original_id = payload["command_id"]
    if not snap.entries.get(original_id):
        return False  # never applied: that is not_reversible
    left = _moved(snap.entries[original_id]) - _reversed_before(snap, original_id, row.result)
    asked = payload.get("amount")
    return left == 0 if asked is None else bool(asked > left)


JUSTIFICATIONS: dict[str, Justify] = {
    "insufficient_funds": _short_of_funds,
    "hold_not_pending": _hold_not_pending,
    "hold_expired": _hold_expired,
    "amount_exceeds_hold": _exceeds_hold,
    "not_reversible": _not_reversible,
    "amount_exceeds_reversible": _exceeds_reversible,
}


# -- order ---------------------------------------------------------------------------------------

Key = tuple[int, str]
"""(the partition that applied the command, an account it was observed on)."""


@dataclass
class _Seen:
    """Where commands were observed in each account's history, on a scale with entry seq s at 2s and
    the state after entry s (a rejection's, a hold's or a void's view) at 2s + 1."""

    exact: dict[Key, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    somewhere: list[tuple[Key, list[int], str]] = field(default_factory=list)  # one of these positions


def _check_order(report: Report, snap: Snapshot, timeline: Timeline, scope: str) -> None:
    """No command is observed after one that was first sent after it was acknowledged (on its
    partition, on one account). `scope` names the client when the timeline is one client's."""
    seen = _observe(snap, timeline)
    for key, items in seen.exact.items():
        items.sort()
        latest_sent = -INFINITY  # of the commands observed at earlier positions
        n = 0
        while n < len(items):
            group = [c for pos, c in items[n:] if pos == items[n][0]]
            for command_id in group:
                if timeline.acknowledged.get(command_id, INFINITY) < latest_sent:
                    report.out_of_order += 1
                    report.problems.append(f"{scope}{command_id}: observed on {key} after a command sent later")
            latest_sent = max([latest_sent, *(timeline.first_sent[c] for c in group)])
            n += len(group)
    for key, positions, command_id in seen.somewhere:
        lo, hi = _window(seen.exact.get(key, []), timeline, command_id)
        if not any(lo <= p <= hi for p in positions):
            report.out_of_order += 1
            report.problems.append(f"{scope}{command_id}: saw a balance {key} never had between {lo} and {hi}")


def _observe(snap: Snapshot, timeline: Timeline) -> _Seen:
    seen = _Seen()
    for command_id in timeline.first_sent:
        row = snap.commands.get(command_id)
        if row is None or command_id not in snap.acknowledged:
            continue
        for entry in snap.entries.get(command_id, ()):
            seen.exact[(row.partition, entry.account_id)].append((2 * entry.seq, command_id))
        result = row.result or {}
        account = result.get("account_id")
        if row.status == "rejected" and account:
            seen.exact[(row.partition, account)].append((2 * result["seq"] + 1, command_id))
        elif row.type in ("hold", "void") and row.status == "applied" and account in snap.accounts:
            if "available" not in result or "held" not in result:
                seen.somewhere.append(((row.partition, account), [], command_id))  # no view: nothing fits
                continue
            balance = result["available"] + result["held"]
            positions = [1] if balance == 0 else []
            positions += [2 * e.seq + 1 for e in snap.history.get(account, ()) if e.balance_after == balance]
            seen.somewhere.append(((row.partition, account), positions, command_id))
    return seen


def _window(items: list[tuple[int, str]], timeline: Timeline, command_id: str) -> tuple[float, float]:
    """The positions a command may hold: after everything acknowledged before it was sent, before
    everything first sent after it was acknowledged."""
    sent = timeline.first_sent[command_id]
    acknowledged = timeline.acknowledged.get(command_id, INFINITY)
    lo = max((pos for pos, c in items if timeline.acknowledged.get(c, INFINITY) < sent), default=-INFINITY)
    hi = min((pos for pos, c in items if timeline.first_sent[c] > acknowledged), default=INFINITY)
    return lo, hi
