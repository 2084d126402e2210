"""Key lookups for the API: resolve bearer tokens to keys and count them against the rate limit."""

from __future__ import annotations

import math
import time
from collections import Counter

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Engine

from ledgerq.shared.apikeys import ApiKey, authenticate_many
from ledgerq.shared.errors import LedgerError, RateLimited
from ledgerq.shared.redis_client import limiter_storage
from ledgerq.shared.settings import Settings


class KeyChecks:
    """One round of key lookups: every token in one query, then each key's requests of the round
    counted against its rate limit with one `limits` hit (cost = its requests in the round), so a
    key's requests of one round pass or are refused together."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._limiter: tuple[FixedWindowRateLimiter, RateLimitItem] | None = None

    def __call__(self, tokens: list[str]) -> list[ApiKey | LedgerError | None]:
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
            uri, options = limiter_storage(self.settings.redis_url)
            storage = storage_from_string(uri, **options)
            self._limiter = (FixedWindowRateLimiter(storage), parse(self.settings.rate_limit))
        return self._limiter
