"""Which exceptions mean "a dependency is away" (retry in place, never reorder): one definition for the
worker's backoff, the API's 503s and the command line's one-line errors."""

from __future__ import annotations

from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

Dependency = Literal["database", "redis"]
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError)
DATABASE_OUTAGES = (OperationalError, InterfaceError)


def outage(exc: BaseException) -> Dependency | None:
    """The dependency `exc` says is unreachable, or None for any other error (a bug, a refusal)."""
    if isinstance(exc, REDIS_OUTAGES):
        return "redis"
    if isinstance(exc, DATABASE_OUTAGES) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "database"
    return None


def is_transient(exc: BaseException) -> bool:
    return outage(exc) is not None
