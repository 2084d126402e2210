"""What a running API holds: settings, a Postgres engine, a Redis client, a cache of immutable facts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import CollectorRegistry
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine, select

from shared.db import check_partitions, make_engine
from shared.errors import RateLimited
from shared.keys import queue_name
from shared.schema import accounts
from shared.settings import Settings

ACCOUNT_CACHE_MAX = 100_000


@dataclass
class Context:
    settings: Settings
    engine: Engine
    redis: Redis
    # Account id -> currency. Accounts are never deleted and currencies never change, so a hit is final.
    currencies: dict[str, str] = field(default_factory=dict)
    _queues: dict[int, Queue] = field(default_factory=dict)
    metrics_registry: CollectorRegistry | None = None
    _limiter: tuple[FixedWindowRateLimiter, RateLimitItem] | None = None

    def rate_limit(self, key_id: str) -> None:
        """Count one request against the key's window (shared by every API process, in Redis)."""
        if self._limiter is None:  # built once, on first use: the limit string is parsed once
            storage = storage_from_string(self.settings.redis_url)
            self._limiter = (FixedWindowRateLimiter(storage), parse(self.settings.rate_limit))
        limiter, item = self._limiter
        if not limiter.hit(item, "ledgerq-key", key_id):
            reset_s = limiter.get_window_stats(item, "ledgerq-key", key_id).reset_time - time.time()
            raise RateLimited(f"more than {self.settings.rate_limit} for this key", max(1, math.ceil(reset_s)))

    def queue(self, partition: int) -> Queue:
        if partition not in self._queues:
            self._queues[partition] = Queue(queue_name(partition), connection=self.redis, serializer=JSONSerializer)
        return self._queues[partition]

    @classmethod
    def build(cls, settings: Settings) -> Context:
        settings.signing_keys()  # refuse to start unsigned
        engine = make_engine(settings)
        check_partitions(engine, settings.partitions)
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        return cls(settings, engine, redis)

    def close(self) -> None:
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
