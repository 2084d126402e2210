"""The API when Postgres or Redis is unreachable: 503 problem+json, nothing half-done, healed by a retry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import text

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.ops.embedded import free_port
from ledgerq.shared.db import make_engine
from ledgerq.shared.keys import job_key
from ledgerq.shared.settings import Settings
from tests.conftest import redis_major_version, uid


def client_for(ctx: Context, key: str) -> TestClient:
    client = TestClient(create_app(context=ctx), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {key}"
    return client


@pytest.fixture
def account(http: TestClient) -> str:
    account_id = uid("dn")
    assert http.post("/v1/accounts", json={"id": account_id, "currency": "USD"}).status_code == 201
    return account_id


@pytest.fixture
def no_redis(ctx: Context) -> Iterator[Context]:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    yield Context(ctx.settings, ctx.engine, dead)


@pytest.fixture
def no_postgres(ctx: Context, settings: Settings) -> Iterator[Context]:
    dead = settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/ledgerq"})
    engine = make_engine(dead, pool_size=1)
    yield Context(dead, engine, ctx.redis)
    engine.dispose()


def test_redis_down_is_a_503_and_the_retry_enqueues(
    no_redis: Context, http: TestClient, ctx: Context, keys: dict[str, str], account: str
) -> None:
    """Nothing half-done: the queue-depth check meets the dead Redis before anything is claimed, so
    the client's retry (same id) is the first acceptance, and it enqueues once."""
    body: dict[str, Any] = {"id": uid("c"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
    down = client_for(no_redis, keys["write"])
    answer = down.post("/v1/commands", json=body)
    assert answer.status_code == 503 and answer.json()["code"] == "redis_unavailable"
    assert answer.headers["content-type"] == "application/problem+json" and answer.headers["Retry-After"]
    ready = down.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
    assert not ctx.redis.exists(job_key(body["id"]))
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM commands WHERE id = :c"), {"c": body["id"]}).scalar() == 0
    retried = http.post("/v1/commands", json=body)
    assert retried.status_code == 202 and ctx.redis.exists(job_key(body["id"]))
    assert http.post("/v1/commands", json=body).status_code == 200


def test_postgres_down_is_a_503_and_nothing_is_enqueued(
    no_postgres: Context, ctx: Context, keys: dict[str, str]
) -> None:
    """Without Postgres nothing can be claimed, so nothing may be queued."""
    down = client_for(no_postgres, keys["write"])
    # The key lookup itself needs Postgres: the answer is 503, never a 401 that would send clients away.
    answer = down.post(
        "/v1/commands", json={"id": uid("c"), "type": "deposit", "account_id": "x", "amount": 5, "currency": "USD"}
    )
    assert answer.status_code == 503 and answer.json()["code"] == "database_unavailable"
    ready = down.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
    assert ready.json()["checks"]["redis"]["durable"] is (redis_major_version() >= 7)
