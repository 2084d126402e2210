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
