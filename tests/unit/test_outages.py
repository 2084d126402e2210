"""One classification of "a dependency is away", shared by the worker, the API and the CLI."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from ledgerq.shared.outages import is_transient, outage


def test_outages_are_told_from_bugs_and_refusals() -> None:
    assert outage(RedisConnectionError()) == outage(RedisTimeoutError()) == "redis"
    assert outage(OperationalError("s", {}, Exception("down"))) == "database"
    assert outage(InterfaceError("s", {}, Exception("closed"))) == "database"
    assert outage(DBAPIError("s", {}, Exception("lost"), connection_invalidated=True)) == "database"
    for not_an_outage in (ResponseError("WRONGTYPE"), IntegrityError("s", {}, Exception("dup")), ValueError("bug")):
        assert outage(not_an_outage) is None and not is_transient(not_an_outage)


def test_redis_refusing_writes_for_now_is_an_outage() -> None:
    """A full disk, a demoted primary, maxmemory or too few replicas: 503 and retry, not 500."""
    from redis.exceptions import OutOfMemoryError, ReadOnlyError

    from ledgerq.shared.outages import ReplicasBehind, refusing

    for reply in ("MISCONF Errors writing to the AOF file: No space left on device", "NOREPLICAS Not enough"):
        assert refusing(ResponseError(reply)) and outage(ResponseError(reply)) == "redis"
    for exc in (ReadOnlyError("You can't write against a read only replica."), OutOfMemoryError("OOM")):
        assert outage(exc) == "redis" and is_transient(exc)
    assert outage(ReplicasBehind("0 of 1")) == "redis"
    assert not refusing(ResponseError("ERR unknown command")) and not refusing(ResponseError("WRONGTYPE"))
