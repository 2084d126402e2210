"""FastAPI's OpenTelemetry hooks: off unless the process configured a provider before the app was built."""

from __future__ import annotations

import subprocess
import sys

from ledgerq.api.app import create_app


def test_no_provider_no_per_request_telemetry() -> None:
    app = create_app()
    assert app._native_telemetry.enabled() is False


def test_a_provider_configured_first_turns_it_on() -> None:
    script = (
        "from opentelemetry import trace\n"
        "trace.set_tracer_provider(trace.NoOpTracerProvider())\n"
        "from ledgerq.api.app import create_app\n"
        "app = create_app()\n"
        "print(app._telemetry['tracing'], app._telemetry['metrics'], app._native_telemetry.enabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "True"]


def test_fastapi_auto_configure_keeps_its_defaults() -> None:
    script = "from ledgerq.api.app import create_app\nprint(create_app()._telemetry['tracing'])\n"
    env = {"FASTAPI_OTEL_AUTO_CONFIGURE": "true", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "True"
