"""`ledgerq webhooks`: a process of its own (several may run; they share the work out)."""

from __future__ import annotations

import signal
from types import FrameType

import click

from ledgerq.shared.settings import Settings


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 256), default=None, help="attempts in flight at once")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="LEDGERQ_METRICS_PORT",
    show_envvar=True,
    help="serve this process's Prometheus metrics on this port (host: LEDGERQ_METRICS_HOST)",
)
def webhooks(concurrency: int | None, metrics_port: int | None) -> None:
    """Deliver events to webhook endpoints, signed, at least once."""
    from prometheus_client import start_http_server

    from ledgerq.shared.db import make_engine
    from ledgerq.shared.webhook_targets import AllowList
    from ledgerq.webhooks.metrics import WebhookMetrics
    from ledgerq.webhooks.process import WebhookProcess
    from ledgerq.webhooks.send import Sender

    settings = Settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"webhook_concurrency": concurrency})
    engine = make_engine(settings, pool_size=settings.webhook_concurrency + 1)
    sender = Sender(AllowList.parse(settings.webhook_allow_hosts), settings.webhook_timeout_s)
    metrics = WebhookMetrics()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.metrics_host, registry=metrics.registry)
    process = WebhookProcess(settings, engine, sender, metrics)

    def stop(signum: int, _frame: FrameType | None) -> None:
        process.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"ledgerq webhooks: delivering, {settings.webhook_concurrency} at a time", err=True)
    process.run()
    engine.dispose()
