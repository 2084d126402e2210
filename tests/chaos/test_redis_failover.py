"""Redis with a replica and three sentinels: the primary SIGKILLed under load, the replica promoted.

API and workers are given the Sentinel URL only; an enqueue is acknowledged (202) after the replica
has it (WAIT 1). What a failover can lose is what was not replicated: leases, take moves, finished
jobs' deletions — never an acknowledged job; the epoch in Postgres keeps a stale owner out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ledgerq.ops.embedded import RedisServer
from ledgerq.shared.keys import lease_key
from ledgerq.shared.redis_client import connect
from tests.chaos.cluster import REPLICATION, Cluster
from tests.chaos.test_faults import all_workers, freeze_then_wake, http_for, wait_until
from tests.chaos.workload import line, run

# Sentinel marks a silent primary down after 1 s and fails over within a few; the bound is generous.
FAILOVER_S_MAX = 60


@pytest.fixture(params=[1], ids=lambda n: f"wait{n}")
def replicated(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """`request.param`: the replicas an enqueue waits for before its 202 (LEDGERQ_REDIS_WAIT_REPLICAS)."""
    running = Cluster(tmp_path, sentinels=True)
    running.env["LEDGERQ_REDIS_WAIT_REPLICAS"] = str(request.param)
    running.start_api()
    wait_until(lambda: _replicas(running.redis) == 1, timeout_s=60)
    with http_for(running) as http:
        replicas = http.get("/readyz").json()["checks"]["redis"].get("replicas")
    assert replicas == ({"online": 1, "required": 1, "ok": True} if request.param else None), replicas
    yield running
    running.close()


def _replicas(server: RedisServer) -> int:
    with Redis.from_url(server.url, socket_timeout=2) as client:
        return int(client.info("replication").get("connected_slaves", 0))


def fail_over(cluster: Cluster) -> float:
    """SIGKILL the primary; once the sentinels name the replica, restart the old primary as a replica
    of the new one (as its supervisor would; the sentinels would also reconfigure it). Returns the
    seconds from the kill to the promotion."""
    old, new = cluster.redis, cluster.replica
    assert new is not None
    killed = time.monotonic()
    old.kill()
    wait_until(lambda: cluster.sentinels[0].primary() == ("127.0.0.1", new.port), timeout_s=FAILOVER_S_MAX)
    promoted = time.monotonic() - killed
    old.options = (*REPLICATION, "--replicaof", "127.0.0.1", str(new.port))
    old.start()
    cluster.redis, cluster.replica = new, old
    wait_until(lambda: _replicas(new) == 1, timeout_s=FAILOVER_S_MAX)
    return promoted


@pytest.mark.parametrize("replicated", [1, 0], ids=["wait1", "wait0"], indirect=True)
def test_primary_sigkill_under_load_with_sentinel_failover(replicated: Cluster) -> None:
    """Twice: the primary killed mid-load, the replica promoted, the old primary back as a replica.
    With WAIT 1, clients see 503s (Redis away, then too few replicas until the old primary has
    rejoined) and retry with the same id. Without WAIT, a failover loses the last acknowledged jobs:
    their claims are applied from Postgres in acceptance order (the orphan rule). Either way nothing
    acknowledged is lost, doubled or reordered."""
    all_workers(replicated)
    failovers: list[float] = []

    def chaos(stop: threading.Event) -> None:
        for _ in range(2):
            if stop.wait(2.5):
                return
            failovers.append(fail_over(replicated))

    history, report = run(
        replicated, commands_min=1000, commands_max=8000, chaos=chaos, enough=lambda: len(failovers) == 2
    )
    print(
        line(
            f"redis failover (sentinel, WAIT {replicated.env['LEDGERQ_REDIS_WAIT_REPLICAS']})",
            history,
            report,
            replicated,
            failovers=len(failovers),
            promoted_s=" ".join(f"{s:.1f}" for s in failovers),
        )
    )
    assert len(failovers) == 2 and history.unavailable["redis_unavailable"] > 0
    assert set(history.unavailable) <= {"redis_unavailable", "no_answer"}, history.unavailable  # never a 500
    assert report.ok(), report.problems[:5]


def test_a_lease_lost_in_a_failover_cannot_let_a_stale_owner_commit(replicated: Cluster) -> None:
    """The owner is frozen mid-transaction; the primary dies and the promoted replica has no lease
    for the partition (as when the lease's last renewal was not replicated). A second worker takes
    the lease at once; its epoch bump waits for the frozen transaction, which Postgres ends after
    10 s idle; the woken owner's retry meets the new epoch (or its refused renewal) and stops."""

    def lose_the_lease_in_a_failover() -> None:
        fail_over(replicated)
        with connect(replicated.settings.redis_url, socket_timeout=5) as redis:
            redis.delete(lease_key(0))  # whatever was replicated of it, the new primary has none now

    _, report = freeze_then_wake(
        replicated, 0, "before_commit", "lease lost in a failover", meanwhile=lose_the_lease_in_a_failover
    )
    # The frozen transaction had written the first 3 deposits' entries and outcomes; the checker
    # counts any entry doubled, moved or lost whichever of the two owners' writes survived.
    assert report.ok() and report.applied == 8, report.problems[:5]
