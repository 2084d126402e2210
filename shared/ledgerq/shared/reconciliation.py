"""Reconciliation: outside records (a payout report, a bank statement) against the ledger's applied commands.

Design overview (DESIGN.md, "Reconciliation"):

- Records come as JSON objects or as CSV rows under a header row, with the fields `external_id`,
  `amount` (an integer of minor units: the amount moved, positive), `currency` (three letters; lower
  case is accepted and kept upper), `reference` and an optional `date` (kept as text, not
  interpreted). Other columns or keys are ignored; `columns` renames an export's own column names to
  these. A malformed record refuses the whole input (a ValidationFailed, `malformed_records`) and
  names its row: a CSV row by the line it starts on, as a person counts lines in the file (the header
  is row 1), a JSON record by its index in `records`.
- The ledger side is the applied commands with a `reference` that posted entries (holds and voids
  post none, so they are not part of it; their captures are), seen through their legs: every leg for
  an unconfined key, the legs on accounts under a confined key's prefix, or with `account_id` the
  one leg on that account. A command none of whose legs is seen is not there at all.
- A command's amount is the larger of what its seen legs credit and what they debit. Unconfined,
  that is the sum of its positive legs (double entry makes both sides equal: a deposit's, withdrawal's
  or transfer's amount, all a transaction moves); with `account_id` it is the absolute amount of its
  leg on that account (one leg per account per command). Its currency is the one its legs post in.
- A record matches a command with the same reference: equal amount and currency is `matched`,
  anything else `mismatched`; a record with no command left is `unmatched_external`. Records and
  commands sharing a reference are paired deterministically: records in file order, commands in
  (finished_at, id) order; first each record takes the first free command of exactly its amount and
  currency, then the rest pair up in order.
- The window is on `commands.finished_at`, the time the command was applied (`since` inclusive,
  `until` exclusive): applied commands with a reference that finished in it and were paired with no
  record are `unmatched_ledger`. Matching itself ignores the window, so a payout reported just after
  the window's end still matches its command.
- Items are numbered: the records' in input order (1..records), then the unmatched ledger commands
  in (finished_at, id) order. One REPEATABLE READ transaction reads one snapshot, and stores the run
  with its items, so what is kept is exactly what was matched, and nothing is kept on any error.
- Command ids are stored as the ledger stores them and shown to each reader through `shown_id`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

from ledgerq.shared.commands import INT64_MAX, REFERENCE_CHARS_MAX
from ledgerq.shared.errors import InvalidRequest, NotFound, ValidationFailed
from ledgerq.shared.schema import RECONCILIATION_STATUSES, reconciliation_items, reconciliations
from ledgerq.shared.scoping import shown_id

FIELDS = ("external_id", "amount", "currency", "reference", "date")
REQUIRED_FIELDS = ("external_id", "amount", "currency", "reference")
RECORDS_MAX = 1_000_000
"""The most records one run takes (an API body is bounded by its size well before this)."""
LEDGER_ITEMS_MAX = 200_000
"""The most `unmatched_ledger` items one run reports: past it the run is refused (narrow the window
or name an account) rather than answered with a document too large to read."""
TEXT_CHARS_MAX = REFERENCE_CHARS_MAX
"""The longest `external_id`, `reference` or `date` (a command's reference is at most this long)."""
ERRORS_MAX = 20
"""The most malformed rows one refusal lists; the first is named in its detail."""
CHUNK_REFERENCES = 1_000
"""References looked up in one query: the step of the progress a large file shows."""
STORE_CHUNK_ITEMS = 5_000
"""Items inserted per statement."""

RUN_ID_PATTERN = r"^rec_[0-9a-f]{24}$"
RUN_ID_RE = re.compile(RUN_ID_PATTERN)
AMOUNT_DIGITS = re.compile(r"[0-9]{1,19}")
DECIMAL = re.compile(r"[+-]?[0-9]*[.,][0-9]+")
CURRENCY = re.compile(r"[A-Za-z]{3}")

Progress = Callable[[str, int, int], None]
"""`report(step, done, total)`, as `ledgerq.ops.progress` draws it."""


@dataclass(frozen=True, slots=True)
class Record:
    """One outside record, validated."""

    external_id: str
    amount: int
    currency: str
    reference: str
    date: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerCommand:
    """An applied command with a reference, as the run's scope sees it (`id` as stored)."""

    id: str
    reference: str
    amount: int
    currency: str
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class Item:
    n: int
    status: str
    record: Record | None
    command: LedgerCommand | None

    def __post_init__(self) -> None:
        if self.status not in RECONCILIATION_STATUSES:
            raise AssertionError(f"unknown reconciliation status {self.status!r}")
        if (self.record is None) != (self.status == "unmatched_ledger"):
            raise AssertionError("only an unmatched_ledger item has no record")
        if (self.command is None) != (self.status == "unmatched_external"):
            raise AssertionError("only an unmatched_external item has no command")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a run looks at: the window on `finished_at`, an account, and the key's account prefix."""

    account_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    prefix: str = ""

    def checked(self, where: str = "body") -> Scope:
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is not None and moment.tzinfo is None:
                raise ValidationFailed(f"{name}: give a time zone", [_error((where, name), "give a time zone")])
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValidationFailed("since must be before until", [_error((where, "until"), "must be after since")])
        return self


# -- parsing ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # "row 3" or "records[2]"
    field: str | None
    msg: str
    loc: tuple[str, ...]


def malformed_records(problems: Sequence[Problem]) -> ValidationFailed:
    """The refusal of input that cannot be read as records: a 422 `validation_failed` whose detail names
    the first malformed row and whose `errors` list each (up to ERRORS_MAX); nothing is kept. A plain
    ValidationFailed rather than a subclass: `ledgerq_client` mirrors every server error class by name."""
    first = problems[0]
    more = f" ({len(problems) - 1} more in `errors`)" if len(problems) > 1 else ""
    named = f"{first.where}, {first.field}" if first.field else first.where
    return ValidationFailed(f"{named}: {first.msg}{more}", [_error(p.loc, p.msg) for p in problems])


def _error(loc: Sequence[str], msg: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": "malformed_record"}


class _Bad(ValueError):
    def __init__(self, field: str | None, msg: str) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg


def parse_columns(spec: str) -> dict[str, str]:
    """`ours=theirs,...` (`external_id=id,date=arrival_date`) as {ours: theirs}; raises ValueError."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        ours, sep, theirs = (s.strip() for s in part.partition("="))
        if not sep or not theirs:
            raise ValueError(f"{part!r} is not ours=theirs")
        if ours not in FIELDS:
            raise ValueError(f"{ours!r} is none of {', '.join(FIELDS)}")
        if ours in mapping:
            raise ValueError(f"{ours!r} is mapped twice")
        mapping[ours] = theirs
    return mapping


def parse_json_records(records: object, columns: Mapping[str, str] | None = None) -> list[Record]:
    """Records from a decoded JSON list of objects; raises ValidationFailed naming `records[i]`."""
    if not isinstance(records, list):
        raise malformed_records([Problem("records", None, "must be a list of objects", ("body", "records"))])
    if len(records) > RECORDS_MAX:
        raise malformed_records([Problem("records", None, f"at most {RECORDS_MAX} records", ("body", "records"))])
    names = {ours: (columns or {}).get(ours, ours) for ours in FIELDS}
    found: list[Record] = []
    problems: list[Problem] = []
    for i, raw in enumerate(records):
        try:
            if not isinstance(raw, dict):
                raise _Bad(None, "must be an object")
            found.append(_record({ours: raw.get(theirs) for ours, theirs in names.items()}, from_text=False))
        except _Bad as bad:
            loc = ("body", "records", str(i)) + ((bad.field,) if bad.field else ())
            problems.append(Problem(f"records[{i}]", bad.field, bad.msg, loc))
            if len(problems) == ERRORS_MAX:
                break
    if problems:
        raise malformed_records(problems)
    return found


def parse_csv(data: bytes | str, columns: Mapping[str, str] | None = None) -> list[Record]:
    """Records from CSV text with a header row; raises ValidationFailed naming each row by its line."""
    text_ = _decoded(data) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    rows = _csv_rows(text_)
    first = next(rows, None)
    if first is None:
        raise _malformed(1, None, "the file is empty: a header row is needed")
    header_line, header = first
    sources = _sources(header_line, header, columns or {})
    found: list[Record] = []
    problems: list[Problem] = []
    for line, cells in rows:
        try:
            found.append(_record(_cells(cells, sources, len(header)), from_text=True))
        except _Bad as bad:
            problems.append(_row_problem(line, bad.field, bad.msg))
            if len(problems) == ERRORS_MAX:
                break
        if len(found) > RECORDS_MAX:
            raise _malformed(line, None, f"at most {RECORDS_MAX} records per run")
    if problems:
        raise malformed_records(problems)
    return found


def _decoded(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _malformed(data[: exc.start].count(b"\n") + 1, None, "is not UTF-8 text") from exc


def _csv_rows(text_: str) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, cells) for each non-blank row; a broken quote is malformed at its row."""
    reader = csv.reader(io.StringIO(text_, newline=""), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _malformed(line, None, f"is not valid CSV ({exc})") from exc
        if any(cell.strip() for cell in cells):
            yield line, [cell.strip() for cell in cells]


def _sources(line: int, header: list[str], columns: Mapping[str, str]) -> dict[str, int]:
    """Each of our fields' column index, found by name (case-insensitive) in the header row."""
    positions: dict[str, int] = {}
    for i, name in enumerate(header):
        key = name.casefold()
        if key in positions:
            raise _malformed(line, None, f"column {name!r} appears twice in the header")
        positions[key] = i
    sources: dict[str, int] = {}
    for ours in FIELDS:
        theirs = columns.get(ours, ours)
        if theirs.casefold() in positions:
            sources[ours] = positions[theirs.casefold()]
        elif ours in REQUIRED_FIELDS:
            shown = ", ".join(header)
            raise _malformed(line, None, f"no column {theirs!r} for {ours} (the header has: {shown})")
    return sources


def _cells(cells: list[str], sources: Mapping[str, int], width: int) -> dict[str, object]:
    # Empty cells past the header's width are tolerated: spreadsheets pad rows with trailing commas.
    if len(cells) < width or any(cells[width:]):
        raise _Bad(None, f"has {len(cells)} fields, the header has {width}")
    return {ours: cells[i] for ours, i in sources.items()}


def _record(values: Mapping[str, object], *, from_text: bool) -> Record:
    date = values.get("date")
    if isinstance(date, int) and not isinstance(date, bool):
        date = str(date)  # a JSON export's unix time
    return Record(
        external_id=_required(values.get("external_id"), "external_id"),
        amount=_amount(values.get("amount"), from_text),
        currency=_currency(values.get("currency")),
        reference=_required(values.get("reference"), "reference"),
        date=None if date is None or date == "" else _required(date, "date"),
    )


def _required(value: object, field: str) -> str:
    if value is None or value == "":
        raise _Bad(field, "is required")
    if not isinstance(value, str):
        raise _Bad(field, "must be a string")
    if len(value) > TEXT_CHARS_MAX:
        raise _Bad(field, f"must be at most {TEXT_CHARS_MAX} characters")
    if "\x00" in value:
        raise _Bad(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from JSON's \ud800
        raise _Bad(field, "is not valid Unicode text") from exc
    return value


def _amount(value: object, from_text: bool) -> int:
    if from_text and isinstance(value, str):
        if DECIMAL.fullmatch(value):
            raise _Bad("amount", f"must be an integer of minor units (1250 for 12.50), not {value!r}")
        if not AMOUNT_DIGITS.fullmatch(value):
            raise _Bad("amount", f"must be a positive integer of minor units, not {value!r}")
        value = int(value)
    if value is None or value == "":
        raise _Bad("amount", "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("amount", "must be an integer of minor units")
    if not 1 <= value <= INT64_MAX:
        raise _Bad("amount", f"must be 1..{INT64_MAX} (the amount moved, without a sign)")
    return value


def _currency(value: object) -> str:
    if value is None or value == "":
        raise _Bad("currency", "is required")
    if not isinstance(value, str) or not CURRENCY.fullmatch(value):
        raise _Bad("currency", f"must be three letters, not {value!r}")
    return value.upper()


def _row_problem(line: int, field: str | None, msg: str) -> Problem:
    return Problem(f"row {line}", field, msg, ("body", f"row {line}") + ((field,) if field else ()))


def _malformed(line: int, field: str | None, msg: str) -> ValidationFailed:
    return malformed_records([_row_problem(line, field, msg)])


# -- matching (pure) -------------------------------------------------------------------------------


def pair(records: Sequence[tuple[int, Record]], commands: Sequence[LedgerCommand]) -> tuple[list[Item], list[int]]:
    """Pair the records (`(n, record)`, in input order) and commands (in (finished_at, id) order) of
    one reference: exact amount-and-currency pairs first, then the rest in order. Returns each record's
    item, in the order given, and the indexes of the commands left over."""
    if not commands:  # the common case of a statement full of unknown references: skip the bookkeeping
        return [Item(n, "unmatched_external", record, None) for n, record in records], []
    free: dict[tuple[int, str], deque[int]] = {}
    for i, command in enumerate(commands):
        free.setdefault((command.amount, command.currency), deque()).append(i)
    taken = [False] * len(commands)
    exact: dict[int, int] = {}  # record position -> command index
    for pos, (_, record) in enumerate(records):
        candidates = free.get((record.amount, record.currency))
        if candidates:
            exact[pos] = candidates.popleft()
            taken[exact[pos]] = True
    rest = iter([i for i in range(len(commands)) if not taken[i]])
    items: list[Item] = []
    for pos, (n, record) in enumerate(records):
        if pos in exact:
            items.append(Item(n, "matched", record, commands[exact[pos]]))
        elif (other := next(rest, None)) is not None:
            taken[other] = True
            items.append(Item(n, "mismatched", record, commands[other]))
        else:
            items.append(Item(n, "unmatched_external", record, None))
    return items, [i for i in range(len(commands)) if not taken[i]]


def summarize(records: int, items: Sequence[Item]) -> dict[str, int]:
    summary = {"records": records, **dict.fromkeys(RECONCILIATION_STATUSES, 0)}
    for item in items:
        summary[item.status] += 1
    return summary


def discrepancies(summary: Mapping[str, int]) -> int:
    return sum(summary[s] for s in RECONCILIATION_STATUSES if s != "matched")


# -- the ledger side --------------------------------------------------------------------------------

# The larger of what the seen legs credit and what they debit (see the module's overview).
_AMOUNT = """greatest(coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0),
                      coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0))"""
# `payload ? 'reference'` lets the planner use the partial index `commands_reference`.
_LEDGER = f"""
SELECT c.id, c.payload ->> 'reference' AS reference, {_AMOUNT} AS amount,
       coalesce(c.currency, c.payload ->> 'currency') AS currency, c.finished_at
  FROM commands c JOIN entries e ON e.command_id = c.id
 WHERE c.payload ? 'reference' AND c.status = 'applied' {{where}}
 GROUP BY c.id
 ORDER BY c.finished_at, c.id
"""


def _legs_seen(scope: Scope) -> tuple[str, dict[str, Any]]:
    if scope.account_id is not None:
        return " AND e.account_id = :account_id", {"account_id": scope.account_id}
    if scope.prefix:
        return " AND starts_with(e.account_id, :prefix)", {"prefix": scope.prefix}
    return "", {}


def _command(row: Row[Any]) -> LedgerCommand:
    return LedgerCommand(row.id, row.reference, int(row.amount), row.currency, row.finished_at)


def _by_reference(conn: Connection, references: Sequence[str], scope: Scope) -> dict[str, list[LedgerCommand]]:
    where, params = _legs_seen(scope)
    query = text(_LEDGER.format(where=f" AND c.payload ->> 'reference' = ANY(:references){where}"))
    found: dict[str, list[LedgerCommand]] = {}
    for row in conn.execute(query, {"references": list(references), **params}):
        found.setdefault(row.reference, []).append(_command(row))
    return found


def _in_window(conn: Connection, scope: Scope) -> Iterator[LedgerCommand]:
    where, params = _legs_seen(scope)
    if scope.since is not None:
        where += " AND c.finished_at >= :since"
        params["since"] = scope.since
    if scope.until is not None:
        where += " AND c.finished_at < :until"
        params["until"] = scope.until
    # A server-side cursor: the window may hold far more commands than are worth holding at once.
    query = text(_LEDGER.format(where=where)).execution_options(yield_per=10_000)
    for row in conn.execute(query, params):
        yield _command(row)


def reconcile(
    conn: Connection, records: Sequence[Record], scope: Scope, progress: Progress | None = None
) -> list[Item]:
    """Every record's item (in input order), then the unmatched ledger commands'."""
    report = progress or _silent
    positions: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        positions.setdefault(record.reference, []).append(i)
    references = list(positions)
    items: list[Item | None] = [None] * len(records)
    paired: set[str] = set()
    done = 0
    report("match", 0, len(records))
    for start in range(0, len(references), CHUNK_REFERENCES):
        chunk = references[start : start + CHUNK_REFERENCES]
        found = _by_reference(conn, chunk, scope)
        for reference in chunk:
            at = positions[reference]
            paired_items, _ = pair([(i + 1, records[i]) for i in at], found.get(reference, []))
            for i, item in zip(at, paired_items, strict=True):
                items[i] = item
                if item.command is not None:
                    paired.add(item.command.id)
            done += len(at)
        report("match", done, len(records))
    kept = [item for item in items if item is not None]
    if len(kept) != len(records):
        raise AssertionError("a record was left without an item")
    n = len(records)
    for command in _in_window(conn, scope):
        if command.id in paired:
            continue
        if n - len(records) == LEDGER_ITEMS_MAX:
            raise ValidationFailed(
                f"more than {LEDGER_ITEMS_MAX} applied commands with a reference in the window have no record:"
                " narrow it with since and until, or name an account_id",
                [_error(("body", "since"), "the window holds too many unmatched commands")],
            )
        n += 1
        kept.append(Item(n, "unmatched_ledger", None, command))
    return kept


def _silent(_step: str, _done: int, _total: int) -> None:
    return None


# -- runs: kept, listed, read back ------------------------------------------------------------------


def run_reconciliation(
    engine: Engine,
    records: Sequence[Record],
    scope: Scope,
    *,
    source: str,
    key_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Match and keep a run in one transaction; the run as `GET /v1/reconciliations/{id}` shows it.

    Raises NotFound for an account that does not exist or lies outside the scope's prefix."""
    if source not in ("api", "cli"):
        raise ValueError(f"unknown source {source!r}")
    with engine.begin() as conn:
        # One snapshot for the matching and the window: a command applied meanwhile is in neither.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        _check_account(conn, scope)
        items = reconcile(conn, records, scope, progress)
        summary = summarize(len(records), items)
        run_id = f"rec_{secrets.token_hex(12)}"  # RUN_ID_PATTERN
        created_at = conn.execute(
            reconciliations.insert()
            .values(
                id=run_id,
                key_id=key_id,
                prefix=scope.prefix,
                account_id=scope.account_id,
                since=scope.since,
                until=scope.until,
                source=source,
                summary=summary,
            )
            .returning(reconciliations.c.created_at)
        ).scalar_one()
        rows = [_item_row(item) for item in items]
        report = progress or _silent
        for start in range(0, len(rows), STORE_CHUNK_ITEMS):
            chunk = json.dumps(rows[start : start + STORE_CHUNK_ITEMS], separators=(",", ":"))
            conn.execute(_INSERT_ITEMS, {"id": run_id, "rows": chunk})
            report("store", min(start + STORE_CHUNK_ITEMS, len(rows)), len(rows))
    run = {
        "id": run_id,
        "created_at": created_at,
        "source": source,
        "account_id": scope.account_id,
        "since": scope.since,
        "until": scope.until,
        "summary": summary,
    }
    return {**run, "items": [_shown_item(row, scope.prefix) for row in rows]}


def _check_account(conn: Connection, scope: Scope) -> None:
    if scope.account_id is None:
        return
    known = conn.execute(text("SELECT 1 FROM accounts WHERE id = :id"), {"id": scope.account_id}).first()
    if known is None or not scope.account_id.startswith(scope.prefix):
        raise NotFound(f"account {scope.account_id!r} not found")


# One statement per chunk with one JSON parameter: a row-per-statement executemany is ten times slower.
_INSERT_ITEMS = text(
    """
    INSERT INTO reconciliation_items (reconciliation_id, n, status, external_id, reference, command_id,
                                      external_amount, external_currency, ledger_amount, ledger_currency, date)
    SELECT :id, n, status, external_id, reference, command_id,
           external_amount, external_currency, ledger_amount, ledger_currency, date
      FROM json_to_recordset(CAST(:rows AS json)) AS v(
           n int, status text, external_id text, reference text, command_id text, external_amount bigint,
           external_currency text, ledger_amount bigint, ledger_currency text, date text)
    """
)


def _item_row(item: Item) -> dict[str, Any]:
    record, command = item.record, item.command
    return {
        "n": item.n,
        "status": item.status,
        "external_id": record.external_id if record else None,
        "reference": record.reference if record else command.reference if command else None,
        "command_id": command.id if command else None,
        "external_amount": record.amount if record else None,
        "external_currency": record.currency if record else None,
        "ledger_amount": command.amount if command else None,
        "ledger_currency": command.currency if command else None,
        "date": record.date if record else None,
    }


ITEM_FIELDS = (
    "n",
    "status",
    "external_id",
    "reference",
    "command_id",
    "external_amount",
    "external_currency",
    "ledger_amount",
    "ledger_currency",
    "date",
)


def _shown_item(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    shown = {name: row[name] for name in ITEM_FIELDS}
    if shown["command_id"] is not None:
        shown["command_id"] = shown_id(prefix, shown["command_id"])
    return shown


_RUN_COLUMNS = "id, created_at, source, account_id, since, until, summary"
# A key sees the runs made under its prefix or a narrower one: whatever such a run shows, it may see.
_VISIBLE = "starts_with(prefix, :prefix)"


def get_run(engine: Engine, run_id: str, prefix: str = "") -> dict[str, Any]:
    """A kept run with its items, as a key with `prefix` sees it; NotFound if unknown or not its own."""
    if not RUN_ID_RE.fullmatch(run_id):  # not one of ours (a NUL would not even reach the database)
        raise NotFound(f"reconciliation {run_id!r} not found")
    with engine.connect() as conn:
        run = conn.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM reconciliations WHERE id = :id AND {_VISIBLE}"),
            {"id": run_id, "prefix": prefix},
        ).one_or_none()
        if run is None:
            raise NotFound(f"reconciliation {run_id!r} not found")
        items = conn.execute(
            reconciliation_items.select()
            .where(reconciliation_items.c.reconciliation_id == run_id)
            .order_by(reconciliation_items.c.n)
        )
        shown = [_shown_item(dict(row._mapping), prefix) for row in items]
    return {**run._mapping, "items": shown}


def list_runs(engine: Engine, prefix: str, after_id: str | None, limit: int) -> dict[str, Any]:
    """Runs newest first (created_at, then id); resume from `next_after_id` (None on the last page)."""
    after = ""
    params: dict[str, Any] = {"prefix": prefix, "n": limit}
    with engine.connect() as conn:
        if after_id is not None:
            cursor = conn.execute(
                text(f"SELECT created_at, id FROM reconciliations WHERE id = :id AND {_VISIBLE}"),
                {"id": after_id, "prefix": prefix},
            ).one_or_none()
            if cursor is None:
                raise InvalidRequest(f"after_id {after_id!r} names no reconciliation this key can see")
            after = " AND (created_at, id) < (:at, :after_id)"
            params |= {"at": cursor.created_at, "after_id": cursor.id}
        rows = conn.execute(
            text(
                f"SELECT {_RUN_COLUMNS} FROM reconciliations WHERE {_VISIBLE}{after}"
                " ORDER BY created_at DESC, id DESC LIMIT :n"
            ),
            params,
        ).all()
    found = [dict(r._mapping) for r in rows]
    return {"reconciliations": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}
