"""What a running API holds: settings, a Postgres engine, a Redis client, a cache of immutable facts."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from prometheus_client import CollectorRegistry
from redis import Redis
from sqlalchemy import Engine, select

from shared.apikeys import ApiKey, authenticate_many
from shared.db import check_partitions, make_engine
from shared.errors import RateLimited
from shared.group_commit import GroupCommit
from shared.schema import accounts
from shared.settings import Settings

if TYPE_CHECKING:
    from api.submit import AnyCommand, Outcome

ACCOUNT_CACHE_MAX = 100_000


@dataclass
class Context:
    settings: Settings
    engine: Engine
    redis: Redis
    # Account id -> currency. Accounts are never deleted and currencies never change, so a hit is final.
    currencies: dict[str, str] = field(default_factory=dict)
    metrics_registry: CollectorRegistry | None = None
    _limiter: tuple[asyncio.AbstractEventLoop, FixedWindowRateLimiter, RateLimitItem] | None = None
    # Group commit for submits, audit rows and key lookups: concurrent requests share one round trip.
    submits: GroupCommit[AnyCommand, Outcome] = field(init=False)
    audits: GroupCommit[dict[str, Any], None] = field(init=False)
    auths: GroupCommit[str, ApiKey | None] = field(init=False)

    def __post_init__(self) -> None:
        from api.audit import write_audit_rows  # imported here: both modules import this one
        from api.submit import submit_round

        self.submits = GroupCommit(partial(submit_round, self), self.settings.claim_batch_max)
        self.audits = GroupCommit(partial(write_audit_rows, self.engine), self.settings.claim_batch_max)
        self.auths = GroupCommit(partial(authenticate_many, self.engine), self.settings.claim_batch_max)

    async def rate_limit(self, key_id: str) -> None:
        """Count one request against the key's window (shared by every API process, in Redis)."""
        limiter, item = self._limiter_for_loop()
        if not await limiter.hit(item, "ledgerq-key", key_id):
            reset_s = (await limiter.get_window_stats(item, "ledgerq-key", key_id)).reset_time - time.time()
            raise RateLimited(f"more than {self.settings.rate_limit} for this key", max(1, math.ceil(reset_s)))

    def _limiter_for_loop(self) -> tuple[FixedWindowRateLimiter, RateLimitItem]:
        # An asyncio Redis client belongs to the loop that made it: one limiter per running loop.
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter[0] is not loop:
            storage = RedisStorage(f"async+{self.settings.redis_url}", implementation="redispy")
            self._limiter = (loop, FixedWindowRateLimiter(storage), parse(self.settings.rate_limit))
        return self._limiter[1], self._limiter[2]

    @classmethod
    def build(cls, settings: Settings) -> Context:
        settings.signing_keys()  # refuse to start unsigned
        engine = make_engine(settings)
        check_partitions(engine, settings.partitions)
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        return cls(settings, engine, redis)

    def close(self) -> None:
        for rounds in (self.submits, self.audits, self.auths):
            rounds.close()
        self.engine.dispose()
        self.redis.close()

    def currencies_of(self, account_ids: tuple[str, ...]) -> dict[str, str]:
        """Currencies of the given accounts that exist (one query for the ones not cached)."""
        missing = [a for a in account_ids if a not in self.currencies]
        if missing:
            with self.engine.connect() as conn:
                rows = conn.execute(select(accounts.c.id, accounts.c.currency).where(accounts.c.id.in_(missing))).all()
            if len(self.currencies) > ACCOUNT_CACHE_MAX:
                self.currencies.clear()
            self.currencies.update({r.id: r.currency for r in rows})
        return {a: self.currencies[a] for a in account_ids if a in self.currencies}
