"""One way to reach Redis from a `LEDGERQ_REDIS_URL`: a plain `redis://` URL, or a Sentinel URL
whose clients follow a failover to whichever server the sentinels name the primary.

    redis+sentinel://[:password@]host:port[,host:port...]/service_name[?db=N]

The form is the one the `limits` library reads (the rate limiter shares the URL); the password is
used for the sentinels and the Redis servers alike, and `db` defaults to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    nodes: list[tuple[str, int]]
    service_name: str
    password: str | None
    db: int

    @property
    def limiter_uri(self) -> str:
        """The URL without its query, which `limits` would otherwise take as the service's name."""
        auth = f":{self.password}@" if self.password else ""
        return f"{SENTINEL_SCHEME}://{auth}{','.join(f'{h}:{p}' for h, p in self.nodes)}/{self.service_name}"


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError naming what is wrong (read at start-up, so a bad URL stops the process)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    auth, _, hosts = parts.netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) or None if auth else None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {node!r} is not host:port")
        nodes.append((host, int(port)))
    service_name = parts.path.strip("/")
    if not service_name or "/" in service_name:
        raise ValueError("a Sentinel URL names one service: redis+sentinel://host:port,.../service_name")
    db = parse_qs(parts.query).get("db", ["0"])[0]
    if not db.isdigit():
        raise ValueError(f"db={db!r} is not a database number")
    return SentinelUrl(nodes, service_name, password, int(db))


def connect(url: str, **options: Any) -> Redis:
    """A client for `url`; `options` are redis-py connection options (timeouts, health checks)."""
    if not is_sentinel(url):
        return Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    auth = {"password": parsed.password} if parsed.password else {}
    sentinel_options: dict[str, Any] = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout", "socket_keepalive")
    }
    # A sentinel that does not answer is passed over for the next one, not retried with backoff
    # (redis-py's default would hold each request seconds per dead sentinel).
    sentinel_options["retry"] = Retry(NoBackoff(), 0)
    sentinel = Sentinel(parsed.nodes, sentinel_kwargs={**auth, **sentinel_options}, **auth)  # type: ignore[no-untyped-call]
    # The primary's address is asked of the sentinels on every new connection, and a connection
    # to a demoted primary (READONLY) is dropped: clients follow a failover by reconnecting.
    client: Redis = sentinel.master_for(parsed.service_name, redis_class=Redis, db=parsed.db, **options)  # type: ignore[no-untyped-call]
    return client


def limiter_storage(url: str) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options for the rate limiter's counters (always on the primary)."""
    if not is_sentinel(url):
        return url, {}
    parsed = parse_sentinel_url(url)
    return parsed.limiter_uri, {"db": parsed.db, "use_replicas": False}
