"""Settings from the environment (LEDGERQ_*), built by a factory so tests can override them."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledgerq.shared.errors import ConfigurationError
from ledgerq.shared.keys import Keys
from ledgerq.shared.redis_client import is_cluster, is_sentinel, key_layout, parse_cluster_url, parse_sentinel_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGERQ_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/ledgerq"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Replicas that must have an enqueue before its 202 (Redis WAIT); None: 1 with a Sentinel or cluster
    # URL, else 0.
    redis_wait_replicas: int | None = Field(default=None, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1_000, ge=1, le=60_000)
    # Fixed by `ledgerq init` on first run and stored in the database.
    partitions: int = Field(default=4, ge=1, le=1024)

    batch_max: int = Field(default=500, ge=1, le=10_000)
    # After a batch smaller than `linger_batch_below`, a worker waits this long before taking the
    # next (a trickle then shares one transaction and one fsync); 0 (the default) takes at once:
    # 2 ms measured no gain on 2 cores (README, Performance), only latency.
    apply_linger_ms: float = Field(default=0.0, ge=0, le=100)
    linger_batch_below: int = Field(default=16, ge=1, le=10_000)
    # Most submits (or audit rows) one API process claims in one transaction.
    claim_batch_max: int = Field(default=1_000, ge=1, le=10_000)
    lease_ttl_ms: int = Field(default=5_000, ge=500, le=600_000)
    # How long a finished job's hash stays in Redis. 0 (the default): deleted when its outcome is
    # recorded; outcomes live in Postgres, so Redis holds only queued and in-flight jobs, bounded by
    # `queue_depth_max` per partition. More: RQ dashboards show finished jobs, at ~1 KB each.
    result_ttl_s: int = Field(default=0, ge=0)
    failure_ttl_s: int = Field(default=7 * 86_400, ge=1)
    # Attempts of one command whose apply raises before it is recorded `failed`.
    poison_attempts_max: int = Field(default=3, ge=1, le=100)
    # Orphans: claims still `queued` whose job Redis no longer has (a failover that lost the last
    # writes, a restore from an older AOF, an API that died between claim and enqueue). Each batch
    # applies those accepted before its newest command, ahead of the later ones (acceptance order);
    # an idle owner, every `orphan_scan_s`, those accepted at least `orphan_after_s` ago (longer
    # than an API's claim-to-enqueue step takes; a job that turns up after all is a replay).
    orphan_after_s: float = Field(default=5.0, gt=0, le=3_600)
    orphan_scan_s: float = Field(default=1.0, gt=0, le=60)
    # How often an idle partition's owner releases expired holds (DESIGN: within 5 s).
    hold_sweep_s: float = Field(default=1.0, gt=0, le=5)
    # Backoff while Postgres or Redis is unreachable.
    backoff_s_max: float = Field(default=2.0, gt=0, le=60)
    wait_s_max: int = Field(default=30, ge=0, le=300)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # HMAC key shared by API and workers (required by both; at least 32 characters).
    signing_key: SecretStr | None = None
    signing_keys_previous: str = ""
    # Back-pressure: a submit to a partition with this many jobs waiting gets a 503. With it, Redis
    # holds at most P x queue_depth_max jobs of ~1 KB (the default: 100 MB per partition).
    queue_depth_max: int = Field(default=100_000, ge=1)
    # Per API key, in the `limits` notation ("N/second", "N/minute").
    rate_limit: str = "5000/second"
    # Where a worker's `--metrics-port` listens; 0.0.0.0 in a container so Prometheus can reach it.
    metrics_host: str = "127.0.0.1"

    # Audit: the most bytes of a request or response body kept per call (0: keep none).
    audit_body_bytes: int = Field(default=8_192, ge=0, le=1_048_576)

    # Webhooks. Which targets deliveries may go to: `*` is any public address; a private, loopback
    # or link-local one only if its name, address or network (CIDR) is listed ("*,localhost,10.0.0.0/8").
    webhook_allow_hosts: str = "*"
    # One attempt's whole budget (connect, send, answer); an answer body is read up to 64 KiB.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Retries: exponential from `webhook_backoff_s` (doubling, capped, jittered) until one of the bounds.
    webhook_max_attempts: int = Field(default=12, ge=1, le=100)
    webhook_max_age_s: float = Field(default=3 * 86_400, gt=0)
    webhook_backoff_s: float = Field(default=2.0, gt=0, le=3_600)
    webhook_backoff_s_max: float = Field(default=3_600.0, gt=0)
    webhook_poll_s: float = Field(default=0.25, gt=0, le=60)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)

    @field_validator("signing_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("LEDGERQ_SIGNING_KEY must be at least 32 characters")
        return value

    def signing_keys(self) -> list[str]:
        """The key to sign with first, then the previous ones still accepted."""
        if self.signing_key is None:
            raise ConfigurationError("set LEDGERQ_SIGNING_KEY (32+ random characters), the same for API and workers")
        return [self.signing_key.get_secret_value(), *filter(None, self.signing_keys_previous.split(","))]

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("LEDGERQ_DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if is_sentinel(value):
            parse_sentinel_url(value)  # a ValueError names what is wrong
        elif is_cluster(value):
            parse_cluster_url(value)
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "LEDGERQ_REDIS_URL must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"
            )
        return value

    @property
    def redis_keys(self) -> Keys:
        """The key layout of the Redis in use (hash-tagged per partition on a cluster)."""
        return key_layout(self.redis_url)

    @property
    def wait_replicas(self) -> int:
        """How many replicas acknowledge each enqueue before the API answers 202."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if is_sentinel(self.redis_url) or is_cluster(self.redis_url) else 0

    @property
    def lease_renew_s(self) -> float:
        """How often an owner renews its lease (and a claiming worker beats): a third of the lease, so
        two renewals can fail before it lapses."""
        return self.lease_ttl_ms / 3000

    @property
    def sqlalchemy_url(self) -> str:
        """The same URL with the psycopg 3 driver chosen, whatever the operator wrote."""
        _, rest = self.database_url.split("://", 1)
        return f"postgresql+psycopg://{rest}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
