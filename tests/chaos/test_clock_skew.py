"""A worker whose clock is ten minutes off (libfaketime, preloaded into that process only).

Nothing that decides ownership or a hold's fate reads the worker's clock: the lease's TTL is kept
by Redis, the fence is the epoch in Postgres, `accepted_at`, `expires_at` and the expiry sweep use
Postgres' clock, and the in-flight bookkeeping uses Redis' (TIME). So the skewed worker waits for a
live lease like any other, is fenced like any other when it wakes up stale, and expires holds at
the time DESIGN.md says.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis

from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import Cluster, WorkerProcess
from tests.chaos.test_faults import account_on, deposits, http_for, status, wait_until
from tests.chaos.workload import History, line, settle

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def skewed(offset: str) -> dict[str, str]:
    """The environment that sets a process' wall clock `offset` off (e.g. "+10m")."""
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} is missing: install Debian's faketime package (.ci/run does)")
    # Monotonic time is left alone: only the wall clock is wrong, as on a host whose NTP failed.
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def holds(redis: Redis, worker: WorkerProcess) -> bool:
    assert worker.process is not None
    return f":{worker.process.pid}:".encode() in (redis.get(lease_key(0)) or b"")


def hold(cluster: Cluster, account: str, expires_in_s: int) -> str:
    command = {
        "id": f"ho-{uuid.uuid4().hex[:12]}",
        "type": "hold",
        "account_id": account,
        "amount": 1,
        "currency": "USD",
        "expires_in_s": expires_in_s,
    }
    with http_for(cluster) as http:
        assert http.post("/v1/commands", json=command).status_code == 202
    return command["id"]


def hold_status(cluster: Cluster, hold_id: str) -> str:
    with http_for(cluster) as http:
        return str(http.get(f"/v1/holds/{hold_id}").json()["status"])


@pytest.mark.parametrize("offset", ["+10m", "-10m"])
def test_a_worker_with_a_skewed_clock_neither_steals_nor_commits_stale(cluster: Cluster, offset: str) -> None:
    redis = Redis.from_url(cluster.redis.url)
    account = account_on(cluster, 0)
    history = History()
    deposits(cluster, history, account, 2)  # 1 + 2: something to hold against
    owner = cluster.add_worker([0])
    wait_until(lambda: holds(redis, owner))
    skew = cluster.add_worker([0], **skewed(offset))
    time.sleep(2 * cluster.settings.lease_ttl_ms / 1000)  # two lease lifetimes by its clock and ours
    first = deposits(cluster, history, account, 3)
    assert status(cluster, first[-1]) == "applied"
    assert holds(redis, owner), "the skewed worker took a live lease"
    assert "is owned by" in skew.log.read_text()

    owner.stop()  # hands the lease over at once (SIGTERM)
    wait_until(lambda: holds(redis, skew))
    long_hold, short_hold = hold(cluster, account, 60), hold(cluster, account, 2)
    assert status(cluster, long_hold) == status(cluster, short_hold) == "applied"
    # By the skewed clock the short hold would be ten minutes from or past its expiry; by Postgres'
    # it expires 2 s after acceptance and the sweep releases it within 5 s.
    wait_until(lambda: hold_status(cluster, short_hold) == "expired", timeout_s=60)
    assert hold_status(cluster, long_hold) == "pending"
    with http_for(cluster) as http:
        capture = {"id": f"ca-{uuid.uuid4().hex[:12]}", "type": "capture", "hold_id": long_hold}
        assert http.post("/v1/commands", json=capture).status_code == 202
    assert status(cluster, capture["id"]) == "applied" and hold_status(cluster, long_hold) == "captured"

    more = deposits(cluster, history, account, 3)
    assert skew.process is not None
    skew.restart = False
    skew.process.send_signal(signal.SIGSTOP)  # frozen owner: its lease lapses (Redis' clock)
    successor = cluster.add_worker([0])
    assert status(cluster, more[-1]) == "applied"
    wait_until(lambda: holds(redis, successor))
    skew.process.send_signal(signal.SIGCONT)
    last = deposits(cluster, history, account, 3)
    assert status(cluster, last[-1]) == "applied"
    wait_until(lambda: "lease lost" in skew.log.read_text(), timeout_s=60)  # woken stale: fenced
    skew.stop()
    successor.stop()
    report = settle(cluster, history)
    print(line(f"clock skew {offset}", history, report, cluster))
    assert report.ok() and report.applied == 11, report.problems[:5]
