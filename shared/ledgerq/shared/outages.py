"""Which exceptions mean "a dependency is away" (retry in place, never reorder): one definition for the
worker's backoff, the API's 503s and the command line's one-line errors."""

from __future__ import annotations

from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

Dependency = Literal["database", "redis"]


class ReplicasBehind(RedisTimeoutError):
    """The primary has the write but not enough replicas acknowledged it in time (Redis WAIT)."""


REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError)
DATABASE_OUTAGES = (OperationalError, InterfaceError)
# Error codes redis-py leaves in a plain ResponseError's message.
_REFUSING_CODES = ("MISCONF", "NOREPLICAS", "MASTERDOWN", "READONLY", "OOM")


def refusing(exc: BaseException) -> bool:
    """A Redis error reply that means "not now" rather than "never": a full disk (MISCONF), a demoted
    or not yet promoted primary (READONLY, MASTERDOWN), maxmemory (OOM), too few replicas (NOREPLICAS)."""
    if isinstance(exc, ReadOnlyError | OutOfMemoryError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_REFUSING_CODES)


def outage(exc: BaseException) -> Dependency | None:
    """The dependency `exc` says is unreachable, or None for any other error (a bug, a refusal)."""
    if isinstance(exc, REDIS_OUTAGES) or refusing(exc):
        return "redis"
    if isinstance(exc, DATABASE_OUTAGES) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "database"
    return None


def is_transient(exc: BaseException) -> bool:
    return outage(exc) is not None
