"""`ledgerq worker`: own and apply partitions."""

from __future__ import annotations

import threading

import click

from ledgerq.shared.errors import ConfigurationError
from ledgerq.shared.settings import Settings


@click.command()
@click.option(
    "--partition",
    "partitions",
    type=int,
    multiple=True,
    help="a partition to own (repeatable); none: claim a share of the partitions with the other live workers",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="LEDGERQ_METRICS_PORT",
    show_envvar=True,
    help="serve this worker's Prometheus metrics on this port (host: LEDGERQ_METRICS_HOST)",
)
def worker(partitions: tuple[int, ...], metrics_port: int | None) -> None:
    """Own partitions by lease and apply their commands in order."""
    from ledgerq.worker.main import install_signal_handlers, run_worker

    settings = Settings()
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        run_worker(settings, list(partitions) or None, stop, metrics_port)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
