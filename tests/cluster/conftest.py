"""The core scenarios again, on a Redis Cluster: 3 primaries with a replica each (real servers, AOF
always), every enqueue WAITing for its node's replica. The session fixtures the core tests use are
defined again here, on the cluster, so nothing is shared with the single-Redis session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.ops.embedded import ClusterServers, PostgresServer
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.settings import Settings
from tests.conftest import service_settings


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, ClusterServers]]:
    root = tmp_path_factory.mktemp("cluster-servers")
    postgres = PostgresServer(root / "pgdata").start()
    redis = ClusterServers(root / "redis-cluster").start()
    yield postgres, redis
    redis.stop()
    postgres.stop()


@pytest.fixture(scope="session")
def settings(servers: tuple[PostgresServer, ClusterServers]) -> Settings:
    postgres, redis = servers
    s = service_settings(postgres.url, redis.url)
    assert s.redis_keys.tagged and s.wait_replicas == 1
    return s


@pytest.fixture(scope="session")
def ctx(settings: Settings) -> Iterator[Context]:
    context = Context.build(settings)
    yield context
    context.close()


@pytest.fixture(scope="session")
def engine(ctx: Context) -> Any:
    return ctx.engine


@pytest.fixture(scope="session")
def keys(engine: Any) -> dict[str, str]:
    return {scope: create_key(engine, scope, name=f"test {scope}")[0] for scope in ("read", "write", "admin")}


@pytest.fixture(scope="session")
def http(ctx: Context, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(context=ctx), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {keys['write']}"
        yield client
