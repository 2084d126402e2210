"""One way to reach Redis from a `LEDGERQ_REDIS_URL`: a plain `redis://` URL, a Sentinel URL
whose clients follow a failover to whichever server the sentinels name the primary, or a Redis
Cluster URL naming some of its nodes (the client learns the rest and follows slot moves):

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[?db=N]
    redis+cluster://[[user]:password@]host:port[,host:port...]

The forms are the ones the `limits` library reads (the rate limiter shares the URL); the user and
password are used for the sentinels and the Redis servers alike, `db` defaults to 0 (a cluster has
only 0), and an IPv6 address is written in brackets (`[::1]:26379`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from ledgerq.shared.keys import CLUSTER, STANDALONE, Keys

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"

RedisClient = Redis | RedisCluster
"""What `connect` gives: every command ledgerq sends names its keys, so a cluster routes it by slot."""


@dataclass(frozen=True, slots=True)
class NodesUrl:
    """A Sentinel or cluster URL: the nodes to ask first, credentials, and (Sentinel) the service."""

    nodes: list[tuple[str, int]]
    service_name: str
    password: str | None
    db: int
    username: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        """Connection options for the sentinels and the servers."""
        found = {"username": self.username, "password": self.password}
        return {k: v for k, v in found.items() if v}

    @property
    def limiter_uri(self) -> str:
        """For `limits`: no query (it would take it as part of the service's name) and no credentials
        (it would not unquote them; they go as options)."""
        nodes = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        return f"{SENTINEL_SCHEME}://{nodes}/{self.service_name}"


def is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def is_cluster(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://")


def key_layout(url: str) -> Keys:
    """A cluster's keys carry their partition's hash tag; one Redis keeps RQ's own names."""
    return CLUSTER if is_cluster(url) else STANDALONE


def _nodes_and_auth(netloc: str, what: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    auth, _, hosts = netloc.rpartition("@")
    user, _, password = auth.partition(":")
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit():
            raise ValueError(f"{what} address {node!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes, unquote(user) or None, unquote(password) or None


def parse_sentinel_url(url: str) -> NodesUrl:
    """Raises ValueError naming what is wrong (read at start-up, so a bad URL stops the process)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    nodes, user, password = _nodes_and_auth(parts.netloc, "sentinel")
    service_name = parts.path.strip("/")
    if not service_name or "/" in service_name:
        raise ValueError("a Sentinel URL names one service: redis+sentinel://host:port,.../service_name")
    db = parse_qs(parts.query).get("db", ["0"])[0]
    if not db.isdigit():
        raise ValueError(f"db={db!r} is not a database number")
    return NodesUrl(nodes, service_name, password, int(db), user)


def parse_cluster_url(url: str) -> NodesUrl:
    """The cluster's seed nodes and credentials (`service_name` empty, `db` 0). Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        raise ValueError(f"a Redis Cluster URL starts with {CLUSTER_SCHEME}://")
    if parts.path.strip("/") not in ("", "0") or parts.query:
        raise ValueError("a Redis Cluster URL names only its nodes: redis+cluster://host:port,host:port")
    nodes, user, password = _nodes_and_auth(parts.netloc, "cluster node")
    return NodesUrl(nodes, "", password, 0, user)


def connect(url: str, **options: Any) -> RedisClient:
    """A client for `url`; `options` are redis-py connection options (timeouts, health checks)."""
    if is_cluster(url):
        seeds = parse_cluster_url(url)
        nodes = [ClusterNode(host, port) for host, port in seeds.nodes]  # type: ignore[no-untyped-call]
        # Slot moves and failovers are followed by the client (it refreshes the slot map on MOVED
        # or a dead node); each command is tried on the new owner a few times before it fails.
        return RedisCluster(startup_nodes=nodes, **{**seeds.auth, **options})
    if not is_sentinel(url):
        return Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    auth = parsed.auth
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
    if is_cluster(url):
        seeds = parse_cluster_url(url)
        return f"{CLUSTER_SCHEME}://" + ",".join(f"{h}:{p}" for h, p in seeds.nodes), dict(seeds.auth)
    if not is_sentinel(url):
        return url, {}
    parsed = parse_sentinel_url(url)
    return parsed.limiter_uri, {"db": parsed.db, "use_replicas": False, **parsed.auth}
