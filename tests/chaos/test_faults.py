"""Pauses, duplicate workers, server crashes, network stalls, poison: each against real processes,
each ending with the same check (nothing acknowledged lost, doubled or reordered; `ledgerq verify` ok)."""

from __future__ import annotations

import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry, clean_registries
from rq.serializers import JSONSerializer
from sqlalchemy import text

from ledgerq.shared.keys import inflight_key, lease_key, queue_name
from ledgerq.shared.routing import partition_for
from tests.chaos.cluster import PARTITIONS, Cluster, WorkerProcess
from tests.chaos.proxy import Proxy
from tests.chaos.workload import History, line, record, run, settle, submit
from tests.checker import Report, check


def http_for(cluster: Cluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)


def account_on(cluster: Cluster, partition: int, balance: int = 0) -> str:
    with http_for(cluster) as http:
        while True:
            account = f"p{partition}-{uuid.uuid4().hex[:10]}"
            if partition_for(account, PARTITIONS) == partition:
                assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
                return account


def deposits(cluster: Cluster, history: History, account: str, count: int, client: str = "probe") -> list[str]:
    ids = []
    with http_for(cluster) as http:
        for n in range(count):
            command = {
                "id": f"d-{uuid.uuid4().hex[:12]}",
                "type": "deposit",
                "account_id": account,
                "amount": n + 1,
                "currency": "USD",
            }
            history.sent_in_order.setdefault(client, []).append(command["id"])
            submit(http, history, client, command)
            ids.append(command["id"])
    return ids


def status(cluster: Cluster, command_id: str, wait_s: int = 30) -> str:
    with http_for(cluster) as http:
        return str(http.get(f"/v1/commands/{command_id}", params={"wait": wait_s}).json()["status"])


def is_stopped(worker: WorkerProcess) -> bool:
    assert worker.process is not None
    text = Path(f"/proc/{worker.process.pid}/status").read_text()
    return "T (stopped)" in text


def wait_until(predicate: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def all_workers(cluster: Cluster, **env: str) -> None:
    for partition in range(PARTITIONS):
        cluster.add_worker([partition], **env)


def freeze_then_wake(
    cluster: Cluster, partition: int, point: str, name: str, meanwhile: Callable[[], None] | None = None
) -> tuple[str, Report]:
    """Freeze the owner at `point` past its lease, let a successor take over, then wake the old owner;
    `meanwhile` runs while it is frozen, before the successor starts. Returns the old owner's log
    and the end-of-run check."""
    account = account_on(cluster, partition)
    history = History()
    frozen = cluster.add_worker([partition], LEDGERQ_FAULT_POINTS=f"{point}:stop:1")
    first = deposits(cluster, history, account, 3)
    wait_until(lambda: is_stopped(frozen))
    if meanwhile is not None:
        meanwhile()
    successor = cluster.add_worker([partition])
    assert status(cluster, first[-1], 30) == "applied"  # after the lease lapsed (and any frozen tx was ended)
    frozen.restart = False
    assert frozen.process is not None
    frozen.process.send_signal(signal.SIGCONT)
    more = deposits(cluster, history, account, 5)
    assert status(cluster, more[-1]) == "applied"
    frozen.stop()
    successor.stop()
    report = settle(cluster, history)
    print(line(name, history, report, cluster))
    return frozen.log.read_text(), report


def test_sigstop_past_the_lease_cannot_commit(cluster: Cluster) -> None:
    """An owner frozen mid-transaction (entries written, not committed) past its lease: a new owner takes
    over, and when the old one wakes its commit is refused; every command is applied exactly once."""
    fenced_log, report = freeze_then_wake(cluster, 0, "before_commit", "SIGSTOP past lease")
    assert "lease lost" in fenced_log or "epoch" in fenced_log
    assert report.ok(), report.problems[:5]


def test_sigstop_between_take_and_apply(cluster: Cluster) -> None:
    """An owner frozen after taking jobs: the successor applies them first; the woken owner is fenced."""
    fenced_log, report = freeze_then_wake(cluster, 1, "after_take", "SIGSTOP after take")
    assert "lease lost" in fenced_log
    assert report.ok(), report.problems[:5]


def test_a_duplicate_worker_waits_and_takes_over_when_the_owner_dies(cluster: Cluster) -> None:
    all_workers(cluster)
    owner = cluster.workers[1]
    redis = Redis.from_url(cluster.redis.url)
    assert owner.process is not None
    wait_until(lambda: f":{owner.process.pid}:".encode() in (redis.get(lease_key(1)) or b""))
    duplicate = cluster.add_worker([1])

    def kill_owner(stop: threading.Event) -> None:
        if not stop.wait(3):
            owner.restart = False
            assert owner.process is not None
            owner.process.kill()

    history, report = run(cluster, commands_min=1500, commands_max=1500, chaos=kill_owner)
    print(line("duplicate worker", history, report, cluster))
    log = duplicate.log.read_text()
    assert "is owned by" in log and "partition 1: owned by" in log  # waited, then took over
    assert report.ok(), report.problems[:5]
    assert_the_checker_sees_lies(cluster, history)


def assert_the_checker_sees_lies(cluster: Cluster, history: History) -> None:
    """A checker that cannot fail proves nothing: told the run's record with one lie in it at a time
    (a command moved in time, a capture's or reversal's amount, a command that never arrived), it
    must object to each."""
    with cluster.engine.connect() as conn:
        earlier, later = conn.execute(
            text(
                "SELECT e1.command_id, e2.command_id FROM entries e1"
                " JOIN entries e2 ON e2.account_id = e1.account_id AND e2.seq = e1.seq + 1"
                " JOIN commands c1 ON c1.id = e1.command_id JOIN commands c2 ON c2.id = e2.command_id"
                " WHERE c1.partition = c2.partition AND e1.account_id NOT LIKE '@%' AND e1.command_id = ANY(:ids)"
                " AND e2.command_id = ANY(:ids) LIMIT 1"
            ),
            {"ids": list(history.acknowledged_s)},
        ).one()
        applied = dict(
            conn.execute(
                text(
                    "SELECT DISTINCT ON (type) type, id FROM commands WHERE status = 'applied'"
                    " AND type IN ('capture', 'reversal') AND payload ? 'amount' ORDER BY type, id"
                )
            ).all()
        )
    timeline = history.timeline()
    timeline.acknowledged[later] = timeline.first_sent[earlier] - 1.0  # done before `earlier` was sent
    timeline.first_sent[later] = timeline.acknowledged[later] - 1.0
    reordered = check(cluster.engine, history.acknowledged, history.sent_in_order, timeline)
    assert reordered.out_of_order > 0, reordered.line()
    for kind in ("capture", "reversal"):
        told = dict(history.acknowledged)
        told[applied[kind]] = {**told[applied[kind]], "amount": told[applied[kind]]["amount"] + 1}
        lied = check(cluster.engine, told, history.sent_in_order, history.timeline())
        assert not lied.ok() and applied[kind] in " ".join(lied.problems), (kind, lied.problems[:3])
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    told = {**history.acknowledged, ghost: {"id": ghost, "type": "deposit", "account_id": "x", "amount": 1}}
    lost = check(cluster.engine, told, history.sent_in_order)
    assert lost.lost == 1, lost.line()


def crash_twice_under_load(cluster: Cluster, name: str, crash: Callable[[], None], restart: Callable[[], None]) -> None:
    """Crash a server twice while clients submit; the API must answer 503s that clients retry."""
    all_workers(cluster)
    crashes = []

    def chaos(stop: threading.Event) -> None:
        for _ in range(2):
            if stop.wait(2.5):
                return
            crash()
            crashes.append(time.monotonic())
            time.sleep(1.0)
            restart()

    history, report = run(cluster, commands_min=2000, commands_max=8000, chaos=chaos, enough=lambda: len(crashes) == 2)
    print(line(name, history, report, cluster, crashes=len(crashes)))
    assert len(crashes) == 2 and history.retries > 0
    assert report.ok(), report.problems[:5]


def test_redis_kill_minus_9_and_restart(cluster: Cluster) -> None:
    """AOF appendfsync always: every acknowledged enqueue survives; the API answers 503 meanwhile."""
    crash_twice_under_load(cluster, "redis kill -9", cluster.redis.kill, cluster.redis.start)


def test_postgres_crash_and_restart(cluster: Cluster) -> None:
    crash_twice_under_load(
        cluster, "postgres crash", lambda: cluster.postgres.stop("immediate"), cluster.postgres.start
    )


def test_network_stalls_and_resets_between_workers_and_servers(cluster: Cluster) -> None:
    """Workers reach Postgres and Redis through a proxy that stalls (blackholes) and resets connections."""
    pg_proxy, redis_proxy = Proxy(cluster.postgres.port), Proxy(cluster.redis.port)
    env = {
        "LEDGERQ_DATABASE_URL": cluster.postgres.url.replace(str(cluster.postgres.port), str(pg_proxy.port)),
        "LEDGERQ_REDIS_URL": cluster.redis.url.replace(str(cluster.redis.port), str(redis_proxy.port)),
    }
    all_workers(cluster, **env)
    faults = []

    def stalls(stop: threading.Event) -> None:
        for proxy in (pg_proxy, redis_proxy):
            if stop.wait(1.5):
                return
            proxy.blackhole()
            time.sleep(3.0)
            proxy.heal()
            faults.append("stall")
            if stop.wait(1.0):
                return
            proxy.reset()
            faults.append("reset")

    try:
        history, report = run(
            cluster, commands_min=2000, commands_max=8000, chaos=stalls, enough=lambda: len(faults) == 4
        )
    finally:
        pg_proxy.close()
        redis_proxy.close()
    print(line("network stall", history, report, cluster, faults=len(faults)))
    assert faults == ["stall", "reset", "stall", "reset"]
    assert report.ok(), report.problems[:5]


def test_32_concurrent_duplicate_submits_with_workers_dying(cluster: Cluster) -> None:
    all_workers(cluster, LEDGERQ_FAULT_POINTS="after_commit:0.3")
    account = account_on(cluster, 2)
    outcomes: dict[int, int] = {}
    for _ in range(5):
        command = {
            "id": f"dup-{uuid.uuid4().hex[:10]}",
            "type": "deposit",
            "account_id": account,
            "amount": 10,
            "currency": "USD",
        }
        with ThreadPoolExecutor(32) as pool, http_for(cluster) as http:
            codes = list(pool.map(lambda _, c=command: http.post("/v1/commands", json=c).status_code, range(32)))
        for code in codes:
            outcomes[code] = outcomes.get(code, 0) + 1
        assert sorted(codes) == [200] * 31 + [202]
        assert status(cluster, command["id"]) == "applied"
    with http_for(cluster) as http:
        entries = http.get(f"/v1/accounts/{account}/entries").json()["entries"]
    print(record(f"\nchaos 32 duplicates x5: answers={outcomes} entries={len(entries)} kills={cluster.kills()}"))
    assert len(entries) == 5 and sum(e["amount"] for e in entries) == 50


def test_a_poison_command_is_failed_and_counted_and_the_partition_goes_on(cluster: Cluster) -> None:
    all_workers(cluster, LEDGERQ_FAULT_POISON_PREFIX="poison-")
    account = account_on(cluster, 3)
    history = History()
    before = deposits(cluster, history, account, 3)
    with http_for(cluster) as http:
        poison = {
            "id": f"poison-{uuid.uuid4().hex[:8]}",
            "type": "deposit",
            "account_id": account,
            "amount": 5,
            "currency": "USD",
        }
        assert http.post("/v1/commands", json=poison).status_code == 202
    after = deposits(cluster, history, account, 3)
    assert status(cluster, after[-1]) == "applied"
    with http_for(cluster) as http:
        failed = http.get(f"/v1/commands/{poison['id']}").json()
        metrics = http.get("/metrics").text
    assert failed["status"] == "failed" and "injected fault" in failed["error"]["detail"]
    assert 'ledgerq_commands{partition="3",status="failed"} 1.0' in metrics
    report = settle(cluster, history)
    print(line("poison", history, report, cluster, poison_failed=1))
    assert report.ok() and report.applied == len(before + after)


def test_rq_maintenance_never_touches_jobs_in_flight(cluster: Cluster) -> None:
    """RQ's abandoned-job sweep would fail or re-queue at the back; our in-flight jobs are not in its
    registries, so its maintenance leaves them where the next owner will find them first."""
    account = account_on(cluster, 0)
    history = History()
    doomed = cluster.add_worker([0], LEDGERQ_FAULT_POINTS="after_take:1")
    doomed.restart = False
    ids = deposits(cluster, history, account, 4)
    wait_until(lambda: doomed.process is not None and doomed.process.poll() is not None)
    redis = Redis.from_url(cluster.redis.url)
    in_flight = redis.lrange(inflight_key(0), 0, -1)
    assert in_flight
    queue = Queue(queue_name(0), connection=redis, serializer=JSONSerializer)
    clean_registries(queue)
    StartedJobRegistry(queue=queue).cleanup()
    assert redis.lrange(inflight_key(0), 0, -1) == in_flight
    assert FailedJobRegistry(queue=queue).get_job_ids() == []
    cluster.add_worker([0])
    assert status(cluster, ids[-1]) == "applied"
    report = settle(cluster, history)
    print(line("rq maintenance", history, report, cluster, in_flight=len(in_flight)))
    assert report.ok()


def test_recovery_time_after_kill_minus_9(cluster: Cluster) -> None:
    """Measured, not asserted on a clock: from a replacement's start to the partition applying again."""
    account = account_on(cluster, 0)
    history = History()
    samples = []
    for _ in range(5):
        owner = cluster.add_worker([0])
        owner.restart = False
        deposits(cluster, history, account, 1)  # the owner is up and applying
        assert owner.process is not None
        owner.process.kill()
        owner.process.wait()
        probe = deposits(cluster, history, account, 1)[0]
        started = time.monotonic()
        replacement = cluster.add_worker([0])
        replacement.restart = False
        assert status(cluster, probe) == "applied"
        samples.append(time.monotonic() - started)
        replacement.stop(signal.SIGKILL)
    report = settle(cluster, history)
    print(
        record(
            f"\nchaos recovery after kill -9: seconds from replacement start to applied: "
            f"{' '.join(f'{s:.2f}' for s in samples)} median={statistics.median(samples):.2f} max={max(samples):.2f}"
        )
    )
    assert report.ok()
