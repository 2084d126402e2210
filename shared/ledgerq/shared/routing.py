"""Account → partition. Stable across processes, hosts and Python versions (not `hash()`)."""

from __future__ import annotations

import hashlib

SYSTEM_PREFIX = "@world:"


def stable_hash(account_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(account_id.encode(), digest_size=8).digest(), "big")


def partition_for(account_id: str, partitions: int) -> int:
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return stable_hash(account_id) % partitions


def world_account(currency: str, partition: int) -> str:
    """The system account that deposits and withdrawals post against.

    One row per (currency, partition) so no row is locked by two partitions; reports sum them.
    `@` is outside the id charset, so no client account can collide with it.
    """
    return f"{SYSTEM_PREFIX}{currency}:{partition}"
