"""An owner that cannot reach Postgres lets its lease go, so a worker that can takes the partition."""

from __future__ import annotations

import pytest
from redis import Redis

from ledgerq.api.context import Context
from ledgerq.ops.embedded import free_port
from ledgerq.shared.db import make_engine
from ledgerq.shared.errors import LeaseLost
from ledgerq.shared.keys import lease_key
from ledgerq.shared.settings import Settings
from tests.integration.test_worker import runner


def test_an_owner_cut_off_from_postgres_hands_its_lease_back(settings: Settings, ctx: Context) -> None:
    partition = 3
    owner = runner(settings, ctx, partition)
    assert owner._acquire(), "another worker holds the lease"
    redis = Redis.from_url(settings.redis_url)
    assert redis.get(lease_key(partition)) == owner.lease.token.encode()
    # Postgres refuses at once from here on (nothing listens on the port), as a host whose route to
    # Postgres is rejected would see; Redis is still there, so the lease could be renewed for ever.
    port = settings.database_url.rsplit(":", 1)[1].split("/")[0]
    nowhere = settings.database_url.replace(f":{port}/", f":{free_port()}/")
    owner.engine = make_engine(settings.model_copy(update={"database_url": nowhere}), pool_size=1)
    try:
        with pytest.raises(LeaseLost, match=r"Postgres unreachable for .* lease handed back"):
            owner._apply([])
        assert redis.get(lease_key(partition)) is None  # released, not left to lapse
        assert not owner._acquire()  # and not taken again while Postgres cannot be reached
        assert redis.get(lease_key(partition)) is None
    finally:
        owner.engine.dispose()
