"""The `ledgerq` command line (click). `api` and `worker` load lazily by name, so this
module imports neither, keeping dependencies one-way (api → shared ← worker)."""

from __future__ import annotations

import contextlib
import importlib
import json
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ledgerq.shared.errors import ConfigurationError
from ledgerq.shared.logs import configure_logging
from ledgerq.shared.settings import Settings

if TYPE_CHECKING:
    from rich.table import Table

    from ledgerq.shared.apikeys import ApiKey
    from ledgerq.shared.observe import PartitionState

LAZY = {
    "api": "ledgerq.api.cli:api",
    "worker": "ledgerq.worker.cli:worker",
    "webhooks": "ledgerq.webhooks.cli:webhooks",
}
PARTITIONS = click.IntRange(1, 1024)  # as Settings.partitions allows
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print one JSON document instead")


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY:
            module, attr = LAZY[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


def show(key: str, records: list[dict[str, Any]], table: Table, lines: Iterable[str], as_json: bool) -> None:
    """The one output policy for listings: JSON `{key: records}` if asked, a rich table on a terminal,
    else plain lines for scripts (no box drawing, no colour)."""
    from ledgerq.ops.progress import is_terminal

    if as_json:
        click.echo(json.dumps({key: records}))
    elif is_terminal():
        from rich.console import Console

        Console().print(table)
    else:
        for line in lines:
            click.echo(line)


@click.group(cls=LazyGroup)
@click.version_option(package_name="ledgerq", prog_name="ledgerq", message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="LEDGERQ_LOG_LEVEL",
    show_envvar=True,
    help="DEBUG, INFO, WARNING or ERROR",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    envvar="LEDGERQ_LOG_FORMAT",
    show_envvar=True,
    help="auto: text on a terminal, JSON lines otherwise",
)
def cli(log_level: str, log_format: str) -> None:
    """ledgerq: ordered, exactly-once balance commands over a double-entry ledger."""
    configure_logging(log_level, log_format)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from ledgerq.shared.db import make_engine

    return make_engine(settings, pool_size=1)


@cli.command()
@click.option(
    "--partitions",
    type=PARTITIONS,
    default=Settings.model_fields["partitions"].default,
    show_default=True,
    envvar="LEDGERQ_PARTITIONS",
    show_envvar=True,
    help="P, fixed on first run; later runs must give the same",
)
def init(partitions: int) -> None:
    """Create or migrate the schema; fix the partition count P on first run."""
    from ledgerq.shared.db import fix_partitions, migrate

    settings = Settings(partitions=partitions)
    migrate(settings)
    try:
        stored = fix_partitions(_engine(settings), settings.partitions)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ledgerq init: schema is current, {stored} partitions")


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option(
    "--scope", type=click.Choice(["read", "write", "admin"]), required=True, help="what it may do: read < write < admin"
)
@click.option("--prefix", default="", help="confine the key to account ids starting with this")
@click.option("--name", default="", help="a label for people, shown by `keys list`")
def keys_create(scope: str, prefix: str, name: str) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    from ledgerq.shared.apikeys import create_key

    secret, key = create_key(_engine(Settings()), scope, prefix=prefix, name=name)
    click.echo(secret)
    click.echo(f"id={key.id} scope={key.scope} prefix={key.prefix!r}", err=True)


@keys.command("list")
@JSON_OPTION
def keys_list(as_json: bool) -> None:
    """List keys (never their secrets): one line per key, starting with its id."""
    from ledgerq.shared.apikeys import list_keys

    found = list_keys(_engine(Settings()))
    records = [
        {
            "id": k.id,
            "scope": k.scope,
            "prefix": k.prefix,
            "name": k.name,
            "created_at": k.created_at.isoformat(),
            "revoked_at": None if k.revoked_at is None else k.revoked_at.isoformat(),
        }
        for k in found
    ]
    show("keys", records, _keys_table(found), map(_key_line, found), as_json)


def _key_state(key: ApiKey) -> str:
    return f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"


def _key_line(key: ApiKey) -> str:
    return f"{key.id}  {key.scope:<5}  prefix={key.prefix!r:<12}  {_key_state(key)}  {key.name}"


def _keys_table(found: list[ApiKey]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"ledgerq: {len(found)} API key{'' if len(found) == 1 else 's'}")
    table.add_column("id", no_wrap=True)  # what `keys revoke` takes: never broken across lines
    for name in ("scope", "prefix", "state", "name", "created"):
        table.add_column(name)
    for k in found:
        # Text, not str: a name like "[b]x" or ":100:" is shown as typed, not as markup or an emoji.
        table.add_row(
            k.id, k.scope, Text(repr(k.prefix)), _key_state(k), Text(k.name), f"{k.created_at:%Y-%m-%d %H:%M}"
        )
    return table


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key at once."""
    from ledgerq.shared.apikeys import revoke_key

    if not revoke_key(_engine(Settings()), key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@cli.command()
@click.option("--step-rows", type=click.IntRange(1), default=10_000, show_default=True, help="ids checked per step")
def verify(step_rows: int) -> None:
    """Check gapless seqs, balances = entries, no overdraft, zero trial balance; exit 1 on drift.

    On a terminal a progress bar follows the steps; otherwise one plain line per step."""
    from ledgerq.ops.progress import progress_reporter
    from ledgerq.ops.verify import CHECKS
    from ledgerq.ops.verify import verify as run_verify

    with progress_reporter("verify") as report:
        findings = run_verify(_engine(Settings()), step_rows=step_rows, progress=report)
    for finding in findings:
        click.echo(f"DRIFT {finding.check}: {finding.rows}")
    if findings:
        sys.exit(1)
    click.echo(f"ledgerq verify: ok ({len(CHECKS)} checks)")


def _timestamp(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An RFC 3339 time with its zone (`2024-03-01T00:00:00Z`), or a bare date meaning 00:00 UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time (2024-03-01T00:00:00Z) or a date") from None
    if len(value) == 10:  # a bare date: the day's start in UTC
        return moment.replace(tzinfo=UTC)
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone: add Z or +00:00")
    return moment


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--account", default=None, help="match only legs on this account (its amount: the leg's)")
@click.option("--since", callback=_timestamp, help="window start on finished_at (inclusive): RFC 3339 or a date")
@click.option("--until", callback=_timestamp, help="window end on finished_at (exclusive): RFC 3339 or a date")
@click.option("--columns", default="", help="read an export's own column names: ours=theirs,...")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["auto", "csv", "json"]),
    default="auto",
    show_default=True,
    help="auto: JSON for a .json file, CSV otherwise",
)
@JSON_OPTION
def reconcile(
    file: Path,
    account: str | None,
    since: datetime | None,
    until: datetime | None,
    columns: str,
    file_format: str,
    as_json: bool,
) -> None:
    """Match FILE's records (CSV with a header row, or JSON) against the ledger and keep the run.

    Prints each discrepancy and the summary; exits 1 on any discrepancy (mismatched, unmatched_external,
    unmatched_ledger), 0 when every record matched and no command in the window was left. A progress
    bar follows a large file on a terminal."""
    from ledgerq.shared import reconciliation as rec
    from ledgerq.shared.errors import NotFound, ValidationFailed

    try:
        mapping = rec.parse_columns(columns)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--columns") from exc
    records = _read_records(file, file_format, mapping)
    try:
        scope = rec.Scope(account, since, until).checked("options")
        with _reconcile_progress(len(records), as_json) as report:
            run = rec.run_reconciliation(_engine(Settings()), records, scope, source="cli", progress=report)
    except NotFound as exc:
        raise click.BadParameter(exc.detail, param_hint="--account") from exc
    except ValidationFailed as exc:
        raise click.UsageError(exc.detail) from exc
    _show_run(run, as_json)
    if rec.discrepancies(run["summary"]):
        sys.exit(1)


def _read_records(file: Path, file_format: str, columns: dict[str, str]) -> list[Any]:
    """FILE's records, or click's usage error (exit 2) naming the malformed row."""
    from ledgerq.shared import reconciliation as rec
    from ledgerq.shared.errors import ValidationFailed

    as_json = file_format == "json" or (file_format == "auto" and file.suffix.lower() == ".json")
    data = file.read_bytes()
    try:
        if not as_json:
            return rec.parse_csv(data, columns)
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise click.BadParameter(f"{file} is not valid JSON: {exc}", param_hint="FILE") from exc
        if isinstance(document, dict) and set(document) == {"records"}:
            document = document["records"]  # the API's body shape; the window comes from the options
        return rec.parse_json_records(document, columns)
    except ValidationFailed as exc:
        raise click.BadParameter(f"{file}: {exc.detail}", param_hint="FILE") from exc


@contextlib.contextmanager
def _reconcile_progress(records: int, as_json: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar on a terminal for a file of more than one lookup step; nothing otherwise (no lines that a
    script reading the summary or the JSON would have to skip)."""
    from ledgerq.ops.progress import is_terminal, progress_reporter
    from ledgerq.shared.reconciliation import CHUNK_REFERENCES

    if as_json or records <= CHUNK_REFERENCES or not is_terminal():
        yield None
        return
    with progress_reporter("reconcile") as report:
        yield report


def _show_run(run: dict[str, Any], as_json: bool) -> None:
    """JSON if asked; else a line per discrepancy, then the summary last, where a terminal leaves it in view."""
    from ledgerq.shared.reconciliation import discrepancies

    if as_json:
        click.echo(json.dumps(run, default=_iso))
        return
    for item in run["items"]:
        if item["status"] != "matched":
            click.echo(_item_line(item))
    summary = run["summary"]
    found = discrepancies(summary)
    counts = " ".join(f"{k}={v}" for k, v in summary.items())
    verdict = f"{found} discrepanc{'y' if found == 1 else 'ies'}" if found else "ok"
    click.echo(f"ledgerq reconcile: {run['id']} {counts} ({verdict})")


def _item_line(item: dict[str, Any]) -> str:
    """`MISMATCHED n=2 external_id=po_2 reference=r-2 command_id=dep-2 external=2500 USD ledger=2000 USD`."""
    fields = [f"n={item['n']}"]
    for name in ("external_id", "reference", "command_id", "date"):
        if item[name] is not None:
            fields.append(f"{name}={shlex.quote(str(item[name]))}")
    for side in ("external", "ledger"):
        if item[f"{side}_amount"] is not None:
            fields.append(f"{side}={item[f'{side}_amount']} {item[f'{side}_currency']}")
    return " ".join([item["status"].upper(), *fields])


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


@cli.command()
@JSON_OPTION
def status(as_json: bool) -> None:
    """One line per partition: owner, queued, in flight, oldest job's age, applied, rejected, failed.

    A table on a terminal; otherwise `N key=value ...` lines (`-` for none), or JSON with --json."""
    from ledgerq.shared.observe import applied_counts, partition_states
    from ledgerq.shared.redis_client import connect

    settings = Settings()
    counts = applied_counts(_engine(settings))
    states = partition_states(connect(settings.redis_url), settings.redis_keys, settings.partitions)
    records = [_partition_record(s, counts) for s in states]
    show("partitions", records, status_table(records), map(_partition_line, records), as_json)


OUTCOME_COLUMNS = ("applied", "rejected", "failed")  # the final statuses, in the order people read them


def _partition_record(state: PartitionState, counts: dict[tuple[int, str], int]) -> dict[str, Any]:
    age = state.oldest_age_s
    return {
        "partition": state.partition,
        "owner": state.owner,
        "queued": state.queued,
        "inflight": state.inflight,
        "oldest_job_age_s": None if age is None else round(age, 1),
        **{outcome: counts.get((state.partition, outcome), 0) for outcome in OUTCOME_COLUMNS},
    }


def _partition_line(record: dict[str, Any]) -> str:
    """`0 owner=host:pid:token queued=3 ... failed=0`: the number first, then the JSON fields as key=value."""
    fields = (f"{k}={'-' if v is None else v}" for k, v in record.items() if k != "partition")
    return " ".join([str(record["partition"]), *fields])


def status_table(records: list[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"ledgerq: {len(records)} partitions")
    table.add_column("partition", justify="right")
    table.add_column("owner", no_wrap=True)
    for name in ("queued", "in flight", "oldest job", "applied", "rejected", "failed"):
        table.add_column(name, justify="right")
    for r in records:
        age = r["oldest_job_age_s"]
        table.add_row(
            str(r["partition"]),
            Text(r["owner"]) if r["owner"] else Text("none", style="red"),  # host:100:… is no emoji
            *(str(r[k]) for k in ("queued", "inflight")),
            "-" if age is None else f"{age:.1f}s",
            *(str(r[k]) for k in OUTCOME_COLUMNS),
        )
    return table


@cli.command()
@click.option("--port", type=int, default=8000, show_default=True, help="the API's port")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address the API listens on")
@click.option("--partitions", type=PARTITIONS, default=4, show_default=True, help="P for the private ledger")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="keep the servers' data here (default: a temporary folder removed on exit)",
)
def dev(port: int, host: str, partitions: int, data_dir: Path | None) -> None:
    """Run the whole system on private PostgreSQL and Redis servers."""
    from ledgerq.ops.dev import run_dev

    sys.exit(run_dev(port, partitions, data_dir, host))


def main() -> None:
    from ledgerq.shared.outages import outage

    try:
        cli()
    except Exception as exc:
        away = outage(exc)
        if away == "database":
            first = (str(getattr(exc, "orig", exc)).splitlines() or [type(exc).__name__])[0]
            sys.exit(f"ledgerq: PostgreSQL unreachable ({first}); check LEDGERQ_DATABASE_URL")
        if away == "redis":
            sys.exit(f"ledgerq: Redis unreachable ({exc}); check LEDGERQ_REDIS_URL")
        raise


if __name__ == "__main__":
    main()
