"""One classification of "a dependency is away", shared by the worker, the API and the CLI."""

from __future__ import annotations

import psycopg
import pytest
from redis._parsers.base import BaseParser
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from ledgerq.shared.outages import ReplicasBehind, is_transient, outage, refusal_code, refusing


def test_outages_are_told_from_bugs_and_refusals() -> None:
    assert outage(RedisConnectionError()) == outage(RedisTimeoutError()) == "redis"
    assert outage(OperationalError("s", {}, Exception("down"))) == "database"
    assert outage(InterfaceError("s", {}, Exception("closed"))) == "database"
    assert outage(DBAPIError("s", {}, Exception("lost"), connection_invalidated=True)) == "database"
    # The driver's own errors, from the paths that use its cursor directly (key lookups).
    assert outage(psycopg.OperationalError("server closed the connection unexpectedly")) == "database"
    assert outage(SlotNotCoveredError("no node for slot 3")) == "redis"
    for not_an_outage in (ResponseError("WRONGTYPE"), IntegrityError("s", {}, Exception("dup")), ValueError("bug")):
        assert outage(not_an_outage) is None and not is_transient(not_an_outage)


def _reply(text: str, *, in_pipeline: bool = False) -> BaseException:
    """The exception redis-py raises for an error reply, as its parser (and a pipeline) build it."""
    exc = BaseParser.parse_error(text)
    if in_pipeline:
        Pipeline.annotate_exception(None, exc, 1, ("EVALSHA", "f00", "1", "signed-payload"))  # type: ignore[arg-type]
    return exc


@pytest.mark.parametrize("in_pipeline", [False, True], ids=["call", "pipeline"])
@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("MISCONF Errors writing to the AOF file: No space left on device", "MISCONF"),
        ("NOREPLICAS Not enough good replicas to write.", "NOREPLICAS"),
        ("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)", "UNBLOCKED"),
        ("READONLY You can't write against a read only replica.", "READONLY"),
        ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "MASTERDOWN"),
        ("BUSY Redis is busy running a script.", "BUSY"),
        # A Redis Cluster mid-failover or moving a slot (a node written to directly answers MOVED).
        ("CLUSTERDOWN The cluster is down", "CLUSTERDOWN"),
        ("TRYAGAIN Multiple keys request during rehashing of slot", "TRYAGAIN"),
        ("MOVED 3999 127.0.0.1:6381", "MOVED"),
        ("ASK 3999 127.0.0.1:6381", "ASK"),
    ],
)
def test_redis_refusing_writes_for_now_is_an_outage(reply: str, code: str, in_pipeline: bool) -> None:
    """A full disk, a demoted primary, maxmemory or too few replicas: 503 and retry, not 500; the
    code alone is shown (a pipeline's message quotes the command's arguments)."""
    exc = _reply(reply, in_pipeline=in_pipeline)
    assert refusing(exc) and outage(exc) == "redis" and is_transient(exc)
    assert refusal_code(exc) == code


@pytest.mark.parametrize("in_pipeline", [False, True], ids=["call", "pipeline"])
def test_other_redis_errors_are_not_outages(in_pipeline: bool) -> None:
    for reply in ("ERR unknown command 'X'", "WRONGTYPE Operation against a key", "NOSCRIPT No matching script"):
        exc = _reply(reply, in_pipeline=in_pipeline)
        assert not refusing(exc) and outage(exc) is None, reply
    assert outage(ReplicasBehind("0 of 1")) == "redis"


def test_a_cluster_client_that_reaches_no_node_is_an_outage_its_other_complaints_are_bugs() -> None:
    unreachable = RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node")
    assert outage(unreachable) == "redis"
    assert outage(RedisClusterException("All slots are not covered after query all startup_nodes.")) == "redis"
    try:
        raise RedisClusterException("slots unknown") from RedisConnectionError("refused")
    except RedisClusterException as caused:
        assert outage(caused) == "redis"
    assert outage(RedisClusterException("EVALSHA - all keys must map to the same key slot")) is None


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), 503, "database_unavailable"),
        (RedisClusterException("Redis Cluster cannot be connected."), 503, "redis_unavailable"),
        (SlotNotCoveredError("no node serves slot 3"), 503, "redis_unavailable"),
        (RedisClusterException("EVALSHA - all keys must map to the same key slot"), 500, "internal_error"),
        (ValueError("a bug"), 500, "internal_error"),
    ],
    ids=["psycopg", "cluster-unreachable", "slot-not-covered", "cross-slot", "bug"],
)
def test_the_api_answers_outages_outside_redis_and_sqlalchemy_classes_with_503(
    raised: Exception, status: int, code: str
) -> None:
    """The driver's own errors (paths that use its cursor) and the cluster client's are outages too."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ledgerq.api.problems import install

    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> None:
        raise raised

    answer = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert answer.status_code == status and answer.json()["code"] == code, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
