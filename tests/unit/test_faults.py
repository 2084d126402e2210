"""Fault-point specs and the dead-holder lease takeover (fakeredis)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import fakeredis
import pytest

from ledgerq.shared.keys import STANDALONE
from ledgerq.worker.faults import _parse
from ledgerq.worker.lease import Lease


def test_fault_specs_parse_and_refuse_unknown_points() -> None:
    faults = _parse("after_take:0.5, before_commit:stop:1")
    assert faults["after_take"].probability == 0.5 and faults["after_take"].signal == signal.SIGKILL
    assert faults["before_commit"].signal == signal.SIGSTOP
    assert _parse("") == {}
    with pytest.raises(ValueError):
        _parse("somewhere:0.1")
    with pytest.raises(ValueError):
        _parse("after_take:2")


def test_a_dead_local_holders_lease_is_taken_at_once_a_live_ones_is_not() -> None:
    redis = fakeredis.FakeRedis()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    redis.set("ledgerq:lease:0", f"{socket.gethostname()}:{dead.pid}:abc", px=60_000)
    lease = Lease(redis, 0, "me:1:x", 5_000, STANDALONE)
    assert not lease.try_acquire()
    assert lease.take_from_dead_holder() and lease.holder() == "me:1:x"
    redis.set("ledgerq:lease:1", f"{socket.gethostname()}:{os.getpid()}:abc", px=60_000)  # alive: us
    assert not Lease(redis, 1, "me:1:y", 5_000, STANDALONE).take_from_dead_holder()
    redis.set("ledgerq:lease:2", f"elsewhere:{dead.pid}:abc", px=60_000)  # another host: cannot know
    assert not Lease(redis, 2, "me:1:z", 5_000, STANDALONE).take_from_dead_holder()


def test_an_owner_takes_its_own_lease_again_at_once_and_no_one_elses() -> None:
    """After a Redis error restarts its loop, an owner must not wait out the lease it still holds."""
    redis = fakeredis.FakeRedis()
    mine = Lease(redis, 0, "me:1:x", 5_000, STANDALONE)
    assert mine.try_acquire()
    redis.pexpire(mine.key, 100)
    assert mine.try_acquire() and redis.pttl(mine.key) > 1_000  # kept, and for a full TTL again
    assert not Lease(redis, 0, "other:2:y", 5_000, STANDALONE).try_acquire()
    assert mine.holder() == "me:1:x"
