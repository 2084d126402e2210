"""What a running API holds: settings, a Postgres engine, a Redis client, a cache of immutable facts."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import CollectorRegistry
from redis import Redis
from sqlalchemy import Engine, select

from ledgerq.api.group_commit import GroupCommit
from ledgerq.shared.apikeys import ApiKey, authenticate_many
from ledgerq.shared.db import check_partitions, make_engine
from ledgerq.shared.errors import LedgerError, RateLimited
from ledgerq.shared.schema import accounts
from ledgerq.shared.settings import Settings

if TYPE_CHECKING:
    from ledgerq.api.submit import Outcome, Submission

ACCOUNT_CACHE_MAX = 100_000


@dataclass
class Context:
    settings: Settings
    engine: Engine
    redis: Redis
    # Account id -> currency. Accounts are never deleted and currencies never change, so a hit is final.
    currencies: dict[str, str] = field(default_factory=dict)
    metrics_registry: CollectorRegistry | None = None
    _limiter: tuple[FixedWindowRateLimiter, RateLimitItem] | None = None
    # Group commit for submits, audit rows and key lookups: concurrent requests share one round trip.
    submits: GroupCommit[Submission, Outcome] = field(init=False)
    audits: GroupCommit[dict[str, Any], None] = field(init=False)
    auths: GroupCommit[str, ApiKey | LedgerError | None] = field(init=False)

    def __post_init__(self) -> None:
        from ledgerq.api.audit import write_audit_rows  # imported here: both modules import this one
        from ledgerq.api.submit import submit_round

        self.submits = GroupCommit(partial(submit_round, self), self.settings.claim_batch_max)
        self.audits = GroupCommit(partial(write_audit_rows, self.engine), self.settings.claim_batch_max)
        self.auths = GroupCommit(self.check_keys, self.settings.claim_batch_max)

    def check_keys(self, tokens: list[str]) -> list[ApiKey | LedgerError | None]:
        """The key-lookup round: resolve every token in one query, then count each key's requests of
        the round against its rate limit with one `limits` hit (cost = its requests in the round), so
        a key's requests of one round pass or are refused together."""
        keys: list[ApiKey | LedgerError | None] = list(authenticate_many(self.engine, tokens))
        per_key = Counter(k.id for k in keys if isinstance(k, ApiKey))
        refused: dict[str, RateLimited] = {}
        limiter, item = self._rate_limiter()
        for key_id, cost in per_key.items():
            if not limiter.hit(item, "ledgerq-key", key_id, cost=cost):
                reset_s = limiter.get_window_stats(item, "ledgerq-key", key_id).reset_time - time.time()
                refused[key_id] = RateLimited(
                    f"more than {self.settings.rate_limit} for this key", max(1, math.ceil(reset_s)), key_id
                )
        return [refused.get(k.id, k) if isinstance(k, ApiKey) else k for k in keys]

    def _rate_limiter(self) -> tuple[FixedWindowRateLimiter, RateLimitItem]:
        if self._limiter is None:  # built once, on first use: the limit string is parsed once
            storage = storage_from_string(self.settings.redis_url)
            self._limiter = (FixedWindowRateLimiter(storage), parse(self.settings.rate_limit))
        return self._limiter

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
