"""The `ledgerq` command line (click). `api` and `worker` load lazily by name, so this
module imports neither, keeping dependencies one-way (api → shared ← worker)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from shared.errors import ConfigurationError
from shared.logs import configure_logging
from shared.settings import Settings

LAZY = {"api": "api.cli:api", "worker": "worker.cli:worker"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY:
            module, attr = LAZY[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.option("--log-level", default="INFO", show_default=True, envvar="LEDGERQ_LOG_LEVEL")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    envvar="LEDGERQ_LOG_FORMAT",
    help="auto: text on a terminal, JSON lines otherwise",
)
def cli(log_level: str, log_format: str) -> None:
    """ledgerq: ordered, exactly-once balance commands over a double-entry ledger."""
    configure_logging(log_level, log_format)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from shared.db import make_engine

    return make_engine(settings, pool_size=1)


@cli.command()
@click.option("--partitions", type=int, default=None, help="P on first run [env LEDGERQ_PARTITIONS]")
def init(partitions: int | None) -> None:
    """Create or migrate the schema; fix the partition count P on first run."""
    from shared.db import fix_partitions, migrate

    settings = Settings() if partitions is None else Settings(partitions=partitions)
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
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), required=True)
@click.option("--prefix", default="", help="confine the key to account ids starting with this")
@click.option("--name", default="")
def keys_create(scope: str, prefix: str, name: str) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    from shared.apikeys import create_key

    secret, key = create_key(_engine(Settings()), scope, prefix=prefix, name=name)
    click.echo(secret)
    click.echo(f"id={key.id} scope={key.scope} prefix={key.prefix!r}", err=True)


@keys.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from shared.apikeys import list_keys

    for key in list_keys(_engine(Settings())):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(f"{key.id}  {key.scope:<5}  prefix={key.prefix!r:<12}  {state}  {key.name}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key at once."""
    from shared.apikeys import revoke_key

    if not revoke_key(_engine(Settings()), key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@cli.command()
@click.option("--step-rows", type=click.IntRange(1), default=10_000, show_default=True, help="ids checked per step")
def verify(step_rows: int) -> None:
    """Check gapless seqs, balances = entries, no overdraft, zero trial balance; exit 1 on drift.

    On a terminal a progress bar follows the steps; otherwise one plain line per step."""
    from shared.progress import progress_reporter
    from shared.verify import CHECKS
    from shared.verify import verify as run_verify

    with progress_reporter("verify") as report:
        findings = run_verify(_engine(Settings()), step_rows=step_rows, progress=report)
    for finding in findings:
        click.echo(f"DRIFT {finding.check}: {finding.rows}")
    if findings:
        sys.exit(1)
    click.echo(f"ledgerq verify: ok ({len(CHECKS)} checks)")


@cli.command()
def status() -> None:
    """A table of partitions: owner, queued, in flight, oldest job's age, applied, rejected, failed."""
    from redis import Redis
    from rich.console import Console
    from rich.table import Table

    from shared.observe import applied_counts, partition_states

    settings = Settings()
    counts = applied_counts(_engine(settings))
    states = partition_states(Redis.from_url(settings.redis_url), settings.partitions)
    table = Table(title=f"ledgerq: {settings.partitions} partitions")
    table.add_column("partition", justify="right")
    table.add_column("owner", no_wrap=True)
    for name in ("queued", "in flight", "oldest job", "applied", "rejected", "failed"):
        table.add_column(name, justify="right")
    for s in states:
        table.add_row(
            str(s.partition),
            s.owner or "[red]none[/red]",
            str(s.queued),
            str(s.inflight),
            "-" if s.oldest_age_s is None else f"{s.oldest_age_s:.1f}s",
            *(str(counts.get((s.partition, status), 0)) for status in ("applied", "rejected", "failed")),
        )
    console = Console()
    # Piped output is read by scripts and people alike: wide enough that no column wraps.
    (console if console.is_terminal else Console(width=200)).print(table)


@cli.command()
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="keep the servers' data here (default: a temporary folder removed on exit)",
)
def dev(port: int, host: str, partitions: int, data_dir: Path | None) -> None:
    """Run the whole system on private PostgreSQL and Redis servers."""
    from shared.dev import run_dev

    sys.exit(run_dev(port, partitions, data_dir, host))


def main() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from sqlalchemy.exc import OperationalError

    try:
        cli()
    except OperationalError as exc:
        sys.exit(f"ledgerq: PostgreSQL unreachable ({str(exc.orig).splitlines()[0]}); check LEDGERQ_DATABASE_URL")
    except RedisConnectionError as exc:
        sys.exit(f"ledgerq: Redis unreachable ({exc}); check LEDGERQ_REDIS_URL")


if __name__ == "__main__":
    main()
