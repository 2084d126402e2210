"""Which exceptions mean "a dependency is away" (retry in place, never reorder): one definition for the
worker's backoff, the API's 503s and the command line's one-line errors."""

from __future__ import annotations

import re
from typing import Literal

import psycopg
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

Dependency = Literal["database", "redis"]


class ReplicasBehind(RedisTimeoutError):
    """The primary has the write but not enough replicas acknowledged it in time (Redis WAIT)."""


# A cluster whose slot map has a hole, or whose client gave up following moves ("TTL exhausted"),
# is a cluster mid-failover.
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError, SlotNotCoveredError, ClusterError)
# psycopg's own classes too: a few hot paths (key lookups) use the driver's cursor directly, so its
# errors are not wrapped in SQLAlchemy's.
DATABASE_OUTAGES = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# Error replies that mean "not now": a full disk (MISCONF), too few replicas (NOREPLICAS), a client
# blocked in BLMOVE or WAIT when its primary is demoted (UNBLOCKED), a busy script (BUSY), a cluster
# mid-failover or moving a slot (CLUSTERDOWN, TRYAGAIN, MOVED, ASK to a node written to directly). Matched at
# the start of the message or, from a pipeline, after redis-py's "Command # n (...) of pipeline
# caused error: ".
_REFUSING = re.compile(
    r"(?:^|caused error: )(MISCONF|NOREPLICAS|UNBLOCKED|BUSY|MASTERDOWN|READONLY|OOM|CLUSTERDOWN|TRYAGAIN|MOVED|ASK)\b"
)
# The ones redis-py turns into classes of their own (stripping the code from the message).
_REFUSING_CLASSES = (ReadOnlyError, OutOfMemoryError, MasterDownError, ClusterDownError, TryAgainError, AskError)


def refusing(exc: BaseException) -> bool:
    """A Redis error reply that means "not now" rather than "never": a full disk, a demoted or not
    yet promoted primary (READONLY, MASTERDOWN, UNBLOCKED), maxmemory (OOM), too few replicas."""
    if isinstance(exc, _REFUSING_CLASSES):
        return True
    return isinstance(exc, ResponseError) and _REFUSING.search(str(exc)) is not None


def refusal_code(exc: BaseException) -> str:
    """The error code alone (never the rest of the message, which may quote a command's arguments)."""
    if code := getattr(exc, "status_code", None):  # set by redis-py on the classes it maps
        return str(code)
    found = _REFUSING.search(str(exc))
    return found.group(1) if found else type(exc).__name__


# What redis-py's cluster client raises when no node answers while it relearns the slots (its own
# class, not a RedisError); its other uses of the class are bugs (a key-less command, cross-slot keys).
_CLUSTER_UNREACHABLE = re.compile(r"cannot be connected|All slots are not covered|could not agree on a valid slots")


def cluster_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, RedisClusterException) and (
        isinstance(exc.__cause__ or exc.__context__, REDIS_OUTAGES) or _CLUSTER_UNREACHABLE.search(str(exc)) is not None
    )


def outage(exc: BaseException) -> Dependency | None:
    """The dependency `exc` says is unreachable or refusing for now (`refusing`), or None for any
    other error (a bug, a refusal for good such as a constraint violation or WRONGTYPE)."""
    if isinstance(exc, REDIS_OUTAGES) or refusing(exc) or cluster_unreachable(exc):
        return "redis"
    if isinstance(exc, DATABASE_OUTAGES) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "database"
    return None


def is_transient(exc: BaseException) -> bool:
    return outage(exc) is not None
