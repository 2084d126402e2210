"""The core scenarios again, on a Redis Cluster: 3 primaries with a replica each (real servers, AOF
always), every enqueue WAITing for its node's replica. The session fixtures the core tests use are
registered again here (imported into this conftest, they get caches of their own), on top of the
cluster's `servers` and `settings`, so nothing is shared with the single-Redis session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledgerq.ops.embedded import ClusterServers, PostgresServer
from ledgerq.shared.settings import Settings
from tests.conftest import ctx, engine, http, keys, service_settings  # noqa: F401 - registered here


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
