"""The worker against real servers: fencing, single ownership, recovery in order, poison, outages."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.api.inprocess import LedgerClient
from ledgerq.ops.embedded import PostgresServer
from ledgerq.shared.db import fix_partitions, make_engine, migrate
from ledgerq.shared.errors import ConfigurationError, Fenced
from ledgerq.shared.keys import inflight_key, queue_key
from ledgerq.shared.redis_client import connect
from ledgerq.shared.routing import partition_for
from ledgerq.shared.settings import Settings
from ledgerq.worker.apply import apply_batch
from ledgerq.worker.lease import Lease, bump_epoch
from ledgerq.worker.runner import PartitionRunner
from tests.conftest import SIGNING_KEY, uid


def account_on(ctx: Context, partition: int, currency: str = "USD") -> str:
    """A new account that routes to `partition`."""
    while True:
        account = uid("acct")
        if partition_for(account, ctx.settings.partitions) == partition:
            with ctx.engine.begin() as conn:
                conn.execute(text("INSERT INTO accounts (id, currency) VALUES (:a, :c)"), {"a": account, "c": currency})
            return account


def deposit(client: LedgerClient, account: str, amount: int, command_id: str | None = None) -> str:
    command_id = command_id or uid("dep")
    client.submit({"id": command_id, "type": "deposit", "account_id": account, "amount": amount, "currency": "USD"})
    return command_id


def statuses(ctx: Context, ids: list[str]) -> list[str]:
    with ctx.engine.connect() as conn:
        found = dict(conn.execute(text("SELECT id, status FROM commands WHERE id = ANY(:ids)"), {"ids": ids}).all())
    return [found[i] for i in ids]


def entries_of(ctx: Context, account: str) -> list[tuple[int, str, int]]:
    with ctx.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(  # type: ignore[misc]
                text("SELECT seq, command_id, amount FROM entries WHERE account_id = :a ORDER BY seq"), {"a": account}
            )
        ]


def runner(settings: Settings, ctx: Context, partition: int, stop: threading.Event | None = None) -> PartitionRunner:
    return PartitionRunner(
        partition, settings, ctx.engine, connect(settings.redis_url), stop or threading.Event()
    )


def run_until_idle(r: PartitionRunner, partition: int, timeout_s: float = 120) -> None:
    """Serve the partition in a thread until its queue and in-flight list are empty, then stop."""
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            r.counts["acquired"]
            and not r.redis.llen(r.keys.queue_key(partition))
            and not r.redis.llen(r.keys.inflight_key(partition))
        ):
            break
        time.sleep(0.02)
    r.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def client(ctx: Context) -> LedgerClient:
    return LedgerClient(ctx)


def test_stale_epoch_cannot_commit(ctx: Context, client: LedgerClient) -> None:
    """Invariant 7: after a new owner bumps the epoch, the old owner's apply writes nothing."""
    partition = 3
    account = account_on(ctx, partition)
    command_id = deposit(client, account, 100)
    old = bump_epoch(ctx.engine, partition, "old-owner")
    bump_epoch(ctx.engine, partition, "new-owner")
    with pytest.raises(Fenced):
        apply_batch(ctx.engine, partition, old, [command_id])
    assert statuses(ctx, [command_id]) == ["queued"] and entries_of(ctx, account) == []
    # Drain it properly so the queue is clean for other tests.
    run_until_idle(runner(ctx.settings, ctx, partition), partition)
    assert statuses(ctx, [command_id]) == ["applied"]


def test_replaying_an_applied_command_is_a_noop(ctx: Context, client: LedgerClient) -> None:
    """Exactly once: applying the same id again reports the stored outcome and writes nothing."""
    partition = 2
    account = account_on(ctx, partition)
    command_id = deposit(client, account, 250)
    run_until_idle(runner(ctx.settings, ctx, partition), partition)
    epoch = bump_epoch(ctx.engine, partition, "test")
    again = apply_batch(ctx.engine, partition, epoch, [command_id, command_id])
    assert [(f.status, f.replayed) for f in again] == [("applied", True)]
    assert entries_of(ctx, account) == [(1, command_id, 250)]


def test_a_second_worker_waits_while_the_first_owns_the_partition(ctx: Context) -> None:
    """Single consumer: the lease is held by one runner; the other takes over only after release."""
    partition = 1
    first, second = runner(ctx.settings, ctx, partition), runner(ctx.settings, ctx, partition)
    t1 = threading.Thread(target=first.run, daemon=True)
    t1.start()
    deadline = time.monotonic() + 60
    while not first.counts["acquired"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.counts["acquired"] == 1
    t2 = threading.Thread(target=second.run, daemon=True)
    t2.start()
    while not second.counts["waits"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.counts["waits"] >= 1  # it asked for the lease and was refused
    time.sleep(ctx.settings.lease_ttl_ms / 1000 * 1.5)  # longer than a lease: the first keeps renewing
    assert second.counts["acquired"] == 0
    first.stop.set()
    t1.join(timeout=10)
    deadline = time.monotonic() + 60
    while not second.counts["acquired"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.counts["acquired"] == 1 and second.epoch > first.epoch
    second.stop.set()
    t2.join(timeout=10)


def test_a_dead_owners_inflight_batch_is_applied_first_and_in_order(ctx: Context, client: LedgerClient) -> None:
    """Recovery: jobs taken by an owner that died are re-applied before newer ones, in queue order."""
    partition = 0
    run_until_idle(runner(ctx.settings, ctx, partition), partition)  # other tests may have left jobs queued
    account = account_on(ctx, partition)
    ids = [deposit(client, account, n) for n in range(1, 7)]
    redis = ctx.redis
    keys = ctx.settings.redis_keys
    # A worker takes three jobs and dies before applying them (its lease lapses).
    dead = Lease(redis, partition, "dead-owner", 200, keys)
    assert dead.try_acquire()
    from ledgerq.worker.partition_queue import PartitionQueue

    taken = PartitionQueue(redis, partition, keys=keys, result_ttl_s=60, failure_ttl_s=60).take("dead-owner", 3)
    assert taken.job_ids == [keys.job_id(i, partition) for i in ids[:3]]
    time.sleep(0.3)
    assert redis.get(keys.lease_key(partition)) is None
    r = runner(ctx.settings, ctx, partition)
    run_until_idle(r, partition)
    assert r.counts["recovered"] == 3
    assert [e[1] for e in entries_of(ctx, account)] == ids


def test_a_command_that_raises_is_failed_after_bounded_attempts(
    ctx: Context, client: LedgerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poison: the bad command is recorded `failed`; the ones around it apply, in order."""
    import ledgerq.worker.apply as apply_module

    partition = 1
    account = account_on(ctx, partition)
    before, poison, after = uid("ok"), uid("poison"), uid("ok")
    real_plan = apply_module.plan

    def flaky_plan(command: Any, *args: Any) -> Any:
        if command.id.startswith("poison-"):
            raise ZeroDivisionError("a bug in the rules")
        return real_plan(command, *args)

    monkeypatch.setattr(apply_module, "plan", flaky_plan)
    # Alone in its batch first (the worker is idle), then in the middle of a batch.
    alone = uid("poison")
    deposit(client, account, 2, alone)
    r = runner(ctx.settings, ctx, partition)
    run_until_idle(r, partition)
    assert statuses(ctx, [alone]) == ["failed"] and r.counts["poison"] == 1
    for command_id, amount in ((before, 1), (poison, 2), (after, 3)):
        deposit(client, account, amount, command_id)
    r = runner(ctx.settings, ctx, partition)
    run_until_idle(r, partition)
    assert statuses(ctx, [before, poison, after]) == ["applied", "failed", "applied"]
    assert r.counts["poison"] == 1
    row = client.status(poison)
    assert row is not None and row["error_code"] == "apply_failed" and "ZeroDivisionError" in row["error_detail"]
    assert [e[1] for e in entries_of(ctx, account)] == [before, after]


def test_partition_count_cannot_change(servers: Any) -> None:
    """P is fixed at init: another P is refused, so no account silently moves partition."""
    postgres, redis = servers
    url = postgres.create_database(uid("pdb").replace("-", "_"))
    settings = Settings(database_url=url, redis_url=redis.url, partitions=4)
    migrate(settings)
    engine = make_engine(settings, pool_size=1)
    assert fix_partitions(engine, 4) == 4
    assert fix_partitions(engine, 4) == 4
    with pytest.raises(ConfigurationError, match="initialised with 4 partitions"):
        fix_partitions(engine, 8)
    engine.dispose()


def test_postgres_outage_pauses_the_partition_without_skipping(tmp_path: Path, servers: Any) -> None:
    """A Postgres stop mid-stream: the worker backs off, then applies everything once, in order."""
    _, redis_server = servers
    postgres = PostgresServer(tmp_path / "pg").start()
    try:
        settings = Settings(
            database_url=postgres.url,
            redis_url=redis_server.url.replace("/0", "/3"),
            partitions=1,
            lease_ttl_ms=2000,
            backoff_s_max=0.3,
            signing_key=SIGNING_KEY,
        )
        Redis.from_url(settings.redis_url).flushdb()
        migrate(settings)
        fix_partitions(make_engine(settings, pool_size=1), 1)
        ctx = Context.build(settings)
        client = LedgerClient(ctx)
        account = account_on(ctx, 0)
        first = [deposit(client, account, n) for n in range(1, 4)]
        run_until_idle(runner(settings, ctx, 0), 0)
        assert statuses(ctx, first) == ["applied"] * 3
        # Commands wait in the queue; Postgres goes away before any worker can apply them.
        more = [deposit(client, account, n) for n in range(4, 8)]
        postgres.stop()
        redis = Redis.from_url(settings.redis_url)
        stop = threading.Event()
        r = runner(settings, ctx, 0, stop)
        thread = threading.Thread(target=r.run, daemon=True)
        thread.start()
        time.sleep(2.0)
        assert thread.is_alive()
        assert redis.llen(queue_key(0)) + redis.llen(inflight_key(0)) == 4  # held, none skipped or dropped
        postgres.start()
        assert client.wait(more[-1], 30)["status"] == "applied"  # type: ignore[index]
        stop.set()
        thread.join(timeout=10)
        assert [e[1] for e in entries_of(ctx, account)] == first + more
        assert redis.llen(inflight_key(0)) == 0
        ctx.close()
    finally:
        postgres.stop()
