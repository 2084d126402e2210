"""The FastAPI application, built by a factory from settings (nothing happens at import time)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.routing import Route

from ledgerq.api import problems
from ledgerq.api.audit import AuditMiddleware
from ledgerq.api.context import Context
from ledgerq.api.routes import accounts, admin, commands, events, holds, ops, reconciliations, ui, webhooks
from ledgerq.shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, context: Context | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context or Context.build(settings or get_settings())
        app.state.ctx = ctx
        try:
            yield
        finally:
            if context is None:
                ctx.close()

    app = FastAPI(
        title="ledgerq",
        version="1",
        summary="Ordered, exactly-once balance commands over a double-entry ledger",
        lifespan=lifespan,
        telemetry=_telemetry(),
    )
    if context is not None:  # usable without running the lifespan (tests, embedding)
        app.state.ctx = context
    problems.install(app)
    app.add_middleware(AuditMiddleware)
    # The hottest route is served by a plain Starlette route ahead of FastAPI's router (same
    # function, same exception handlers; FastAPI's routing and dependency layers were a fifth of a
    # submit's CPU). The FastAPI route of the same function stays: it is what OpenAPI documents.
    app.router.routes.insert(0, Route("/v1/commands", commands.submit_command, methods=["POST"]))
    app.include_router(accounts.router)
    app.include_router(commands.router)
    app.include_router(holds.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(reconciliations.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(ui.router)
    app.include_router(ui.root)
    return app


def _telemetry() -> TelemetryConfig:
    """FastAPI's OpenTelemetry spans, metrics and logs: on where the process configured a provider
    before building the app, off otherwise. Decided once here: FastAPI's default asks the three
    global providers on every request (a twentieth of the event loop's time on the submit path).
    With FASTAPI_OTEL_AUTO_CONFIGURE=true FastAPI makes the providers itself, at startup: its defaults."""
    from fastapi.telemetry._api import _unconfigured  # FastAPI's own test, so both agree
    from opentelemetry import _logs, metrics, trace

    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    return {
        "tracing": not _unconfigured(trace.get_tracer_provider()),
        "metrics": not _unconfigured(metrics.get_meter_provider()),
        "logs": not _unconfigured(_logs.get_logger_provider()),
    }
