"""LEDGERQ_REDIS_URL: plain or Sentinel, read once and refused at start-up when malformed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from ledgerq.shared.redis_client import connect, limiter_storage, parse_sentinel_url
from ledgerq.shared.settings import Settings


def test_a_sentinel_url_names_its_sentinels_service_password_and_db() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@h1:26379,h2:26380,10.0.0.3:26381/ledgerq?db=2")
    assert parsed.nodes == [("h1", 26379), ("h2", 26380), ("10.0.0.3", 26381)]
    assert (parsed.service_name, parsed.password, parsed.db) == ("ledgerq", "s@cret", 2)
    assert parse_sentinel_url("redis+sentinel://h1:26379/main").db == 0
    ipv6 = parse_sentinel_url("redis+sentinel://ledgerq:p%3Aw@[::1]:26379,[fd00::2]:26380/main")
    assert ipv6.nodes == [("::1", 26379), ("fd00::2", 26380)]
    assert ipv6.auth == {"username": "ledgerq", "password": "p:w"}
    assert ipv6.limiter_uri == "redis+sentinel://[::1]:26379,[fd00::2]:26380/main"
    uri, options = limiter_storage("redis+sentinel://:pw@h1:26379,h2:26380/ledgerq?db=2")
    assert uri == "redis+sentinel://h1:26379,h2:26380/ledgerq"
    assert options == {"db": 2, "use_replicas": False, "password": "pw"}
    assert limiter_storage("redis://127.0.0.1:6379/0") == ("redis://127.0.0.1:6379/0", {})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379", "names one service"),
        ("redis+sentinel://h1:26379/a/b", "names one service"),
        ("redis+sentinel://h1/ledgerq", "is not host:port"),
        ("redis+sentinel://h1:26379,:1/ledgerq", "is not host:port"),
        ("redis+sentinel://h1:26379/ledgerq?db=x", "not a database number"),
        ("http://127.0.0.1:6379/0", "must be a redis://"),
    ],
)
def test_a_malformed_redis_url_is_refused_at_start_up(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(redis_url=url)


def test_waiting_for_a_replica_is_on_with_sentinel_unless_told() -> None:
    sentinel = "redis+sentinel://127.0.0.1:26379/ledgerq"
    assert Settings(redis_url=sentinel).wait_replicas == 1
    assert Settings(redis_url=sentinel, redis_wait_replicas=0).wait_replicas == 0
    assert Settings(redis_url="redis://127.0.0.1:6379/0").wait_replicas == 0
    assert Settings(redis_url="redis://127.0.0.1:6379/0", redis_wait_replicas=2).wait_replicas == 2


def test_a_sentinel_client_asks_the_sentinels_for_the_primary() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/ledgerq?db=3"
    client = connect(url, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    pool = client.connection_pool
    assert pool.service_name == "ledgerq" and pool.connection_kwargs["db"] == 3  # type: ignore[attr-defined]
    assert pool.connection_kwargs["password"] == "pw"
    with pytest.raises(MasterNotFoundError):  # a ConnectionError: the API answers 503 redis_unavailable
        client.ping()  # no sentinel listens on ports 1 and 2
