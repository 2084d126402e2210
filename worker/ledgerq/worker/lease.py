"""Partition ownership: a lease in Redis plus a fencing epoch in Postgres.

The lease (SET NX PX with a random token) says who should work a partition;
it can lapse while its holder is paused. The epoch is what makes that safe:
taking the lease bumps `partitions.epoch`, and every apply transaction checks
the epoch it was given, so a stale holder's commit is refused by Postgres.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, text

from ledgerq.shared.keys import Keys
from ledgerq.shared.redis_client import RedisClient

# Taken if free, or kept if already ours (an owner whose loop restarted after a Redis error must not
# wait out its own lease).
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""


def new_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class Lease:
    redis: RedisClient
    partition: int
    token: str
    ttl_ms: int
    keys: Keys

    @property
    def key(self) -> str:
        return self.keys.lease_key(self.partition)

    def try_acquire(self) -> bool:
        return bool(self.redis.eval(_ACQUIRE, 1, self.key, self.token, self.ttl_ms))

    def take_from_dead_holder(self) -> bool:
        """Take the lease at once if its holder was a process on this host that no longer exists.

        Safe because of fencing: even if we were wrong, the old holder could not commit. It turns
        a `kill -9` + restart under a supervisor into a takeover in milliseconds, not a lease TTL.
        """
        holder = self.holder()
        if holder is None or not dead_here(holder):
            return False
        return bool(self.redis.eval(_TAKE_OVER, 1, self.key, holder, self.token, self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> None:
        self.redis.eval(_RELEASE, 1, self.key, self.token)

    def holder(self) -> str | None:
        value = self.redis.get(self.key)
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


def bump_epoch(engine: Engine, partition: int, owner: str) -> int:
    """Start a new epoch for this owner; a stale owner's next apply will see it and stop."""
    with engine.begin() as conn:
        # A stale owner may hold FOR SHARE on the row mid-commit; wait a little, then let the caller retry.
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        epoch = conn.execute(
            text(
                "UPDATE partitions SET epoch = epoch + 1, owner = :owner, acquired_at = now() "
                "WHERE partition = :p RETURNING epoch"
            ),
            {"p": partition, "owner": owner},
        ).scalar_one()
    return int(epoch)


def dead_here(token: str) -> bool:
    """Whether the token names a process on this host that no longer exists."""
    parts = token.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
