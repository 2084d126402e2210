"""`ledgerq worker`: own and apply partitions."""

from __future__ import annotations

import threading

import click

from shared.errors import ConfigurationError
from shared.settings import Settings


@click.command()
@click.option(
    "--partition",
    "partitions",
    type=int,
    multiple=True,
    help="a partition to own (repeatable); none: contend for every partition",
)
def worker(partitions: tuple[int, ...]) -> None:
    """Own partitions by lease and apply their commands in order."""
    from worker.main import install_signal_handlers, run_worker

    settings = Settings()
    stop = threading.Event()
    install_signal_handlers(stop)
    chosen = list(partitions) or list(range(settings.partitions))
    try:
        run_worker(settings, chosen, stop)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
