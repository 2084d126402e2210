"""Schemathesis against the live OpenAPI schema: whatever it sends, no 5xx, and every error is problem+json."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from ledgerq.api.app import create_app
from ledgerq.api.context import Context

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


@pytest.fixture
def api_schema(ctx: Context) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(context=ctx))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# LEDGERQ_FUZZ_EXAMPLES raises the budget for a long local run; CI keeps the default.
@settings(
    max_examples=int(os.environ.get("LEDGERQ_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_problem_json_errors(case: Any, keys: dict[str, str]) -> None:
    response = case.call(headers={"Authorization": f"Bearer {keys['admin']}"})
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json"), response.text[:300]
        assert response.json().keys() >= PROBLEM_FIELDS
