"""What a running API holds: settings, a Postgres engine, a Redis client, the currency cache, and the
group-commit rounds that concurrent requests share (submits, audit rows, key lookups)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from ledgerq.api.audit import write_audit_rows
from ledgerq.api.currencies import CurrencyCache
from ledgerq.api.group_commit import GroupCommit
from ledgerq.api.key_checks import KeyChecks
from ledgerq.api.submit import Outcome, QueueDepths, Submission, submit_round
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.db import check_partitions, make_engine
from ledgerq.shared.errors import LedgerError
from ledgerq.shared.redis_client import RedisClient, connect
from ledgerq.shared.settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: Engine
    redis: RedisClient
    metrics_registry: CollectorRegistry | None = None
    currencies: CurrencyCache = field(init=False)
    submits: GroupCommit[Submission, Outcome] = field(init=False)
    audits: GroupCommit[dict[str, Any], None] = field(init=False)
    auths: GroupCommit[str, ApiKey | LedgerError | None] = field(init=False)
    queue_depths: QueueDepths = field(init=False)

    def __post_init__(self) -> None:
        self.currencies = CurrencyCache(self.engine)
        self.queue_depths = QueueDepths()
        self.submits = GroupCommit(partial(submit_round, self), self.settings.claim_batch_max)
        self.audits = GroupCommit(partial(write_audit_rows, self.engine), self.settings.claim_batch_max)
        self.auths = GroupCommit(KeyChecks(self.settings, self.engine), self.settings.claim_batch_max)

    @classmethod
    def build(cls, settings: Settings) -> Context:
        settings.signing_keys()  # refuse to start unsigned
        engine = make_engine(settings)
        check_partitions(engine, settings.partitions)
        # The socket outlasts a WAIT for replicas, so a slow acknowledgement is told from a dead link.
        socket_timeout_s = max(5.0, settings.redis_wait_timeout_ms / 1000 + 2)
        redis = connect(settings.redis_url, socket_timeout=socket_timeout_s, socket_connect_timeout=5)
        return cls(settings, engine, redis)

    def close(self) -> None:
        for rounds in (self.submits, self.audits, self.auths):
            rounds.close()
        self.engine.dispose()
        self.redis.close()
