"""`ledgerq api`: serve HTTP with uvicorn."""

from __future__ import annotations

import click
import uvicorn

from ledgerq.shared.errors import ConfigurationError


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="LEDGERQ_API_HOST",
    show_envvar=True,
    help="the address to listen on",
)
@click.option(
    "--port", type=int, default=8000, show_default=True, envvar="LEDGERQ_API_PORT", show_envvar=True, help="the port"
)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="uvicorn worker processes")
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API."""
    from ledgerq.api.app import create_app

    try:
        if workers == 1:
            uvicorn.run(create_app(), host=host, port=port, log_config=None, access_log=False)
        else:
            uvicorn.run(
                "ledgerq.api.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                access_log=False,
            )
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
