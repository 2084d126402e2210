"""Claims whose job Redis lost are applied from Postgres, in acceptance order, by the partition's owner.

Seen from outside before: with workers stopped, deposits c1..c6 acknowledged in turn, c3's job
deleted from Redis, c7 sent, workers started: all applied, but c3 last (re-queued at the back when
the worker took the partition). Now the batch holding c4..c7 also applies c3, ahead of c4.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.api.inprocess import LedgerClient
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.rq_format import Claim, enqueue_commands
from ledgerq.shared.settings import Settings
from ledgerq.worker.runner import PartitionRunner
from tests.conftest import uid
from tests.integration.test_worker import account_on, deposit, entries_of, runner, statuses

ORPHAN_AFTER_S = 0.3


@pytest.fixture
def client(ctx: Context) -> LedgerClient:
    return LedgerClient(ctx)


@pytest.fixture
def fast(ctx: Context) -> Settings:
    """The service's settings with a short orphan age, so a test need not wait the default 5 s."""
    return ctx.settings.model_copy(update={"orphan_after_s": ORPHAN_AFTER_S, "orphan_scan_s": 0.05})


def lose_jobs(ctx: Context, partition: int, command_ids: list[str]) -> None:
    """What a failover without WAIT, or a restore from an older AOF, leaves: no hash, not in the queue."""
    keys = ctx.settings.redis_keys
    for command_id in command_ids:
        ctx.redis.delete(keys.job_key(command_id, partition))
        ctx.redis.lrem(keys.queue_key(partition), 0, keys.job_id(command_id, partition))


def claimed_payload(ctx: Context, command_id: str) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        payload: dict[str, Any] = conn.execute(
            text("SELECT payload FROM commands WHERE id = :i"), {"i": command_id}
        ).scalar_one()
    return payload


def serve_until_final(r: PartitionRunner, ctx: Context, command_ids: list[str], timeout_s: float = 60) -> None:
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while "queued" in statuses(ctx, command_ids):
            assert time.monotonic() < deadline, f"still queued: {statuses(ctx, command_ids)}"
            time.sleep(0.02)
    finally:
        r.stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_lost_job_is_applied_in_acceptance_order_ahead_of_later_commands(
    ctx: Context, client: LedgerClient, fast: Settings
) -> None:
    partition = 1
    account = account_on(ctx, partition)
    first = [deposit(client, account, n) for n in range(1, 7)]  # c1..c6, each acknowledged before the next
    lose_jobs(ctx, partition, [first[2]])
    last = deposit(client, account, 7)
    r = runner(fast, ctx, partition)  # at once: no age to wait out, the batch itself shows c3 is missing
    serve_until_final(r, ctx, [*first, last])
    assert [e[1] for e in entries_of(ctx, account)] == [*first, last]
    assert r.counts["orphans"] == 1 and r.counts["applied"] == 7


def test_an_owner_already_serving_finds_a_lost_job_in_its_next_batch(ctx: Context, client: LedgerClient) -> None:
    """Continuously, not only when the partition changes hands: the live owner's next batch applies the
    lost claim ahead of the commands accepted after it."""
    partition = 1
    account = account_on(ctx, partition)
    r = runner(ctx.settings, ctx, partition)
    assert r._acquire()
    early = [deposit(client, account, n) for n in (1, 2)]
    r.process(r.queue.take(r.lease.token, 500))
    assert statuses(ctx, early) == ["applied", "applied"]
    later = [deposit(client, account, n) for n in (3, 4, 5, 6)]
    lose_jobs(ctx, partition, [later[1]])
    taken = r.queue.take(r.lease.token, 500)
    assert ctx.settings.redis_keys.job_id(later[1], partition) not in taken.job_ids
    r.process(taken)
    assert [e[1] for e in entries_of(ctx, account)] == early + later
    assert r.counts["orphans"] == 1
    r.lease.release()


def test_a_whole_lost_queue_is_drained_from_the_claims_in_order(
    ctx: Context, client: LedgerClient, fast: Settings
) -> None:
    """Redis lost every job of the partition (nothing queued, nothing in flight): the idle owner finds
    the claims and applies them oldest first, with no job to wake it."""
    partition = 3
    account = account_on(ctx, partition)
    other = account_on(ctx, partition)
    ids = [deposit(client, account if n % 2 else other, n) for n in range(1, 21)]
    lose_jobs(ctx, partition, ids)
    time.sleep(ORPHAN_AFTER_S + 0.2)
    r = runner(fast, ctx, partition)
    serve_until_final(r, ctx, ids)
    assert [e[1] for e in entries_of(ctx, account)] == ids[0::2]
    assert [e[1] for e in entries_of(ctx, other)] == ids[1::2]
    assert r.counts["orphans"] == 20


def test_a_claim_younger_than_the_orphan_age_waits_for_its_job(
    ctx: Context, client: LedgerClient, fast: Settings
) -> None:
    """A claim whose job is merely late (an API between claim and enqueue) is not applied early; when
    its job arrives it is applied from it, once."""
    partition = 0
    account = account_on(ctx, partition)
    redis: RedisClient = ctx.redis
    late = deposit(client, account, 5)
    stored = claimed_payload(ctx, late)
    lose_jobs(ctx, partition, [late])
    slow = fast.model_copy(update={"orphan_after_s": 3600.0})
    r = runner(slow, ctx, partition)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # many idle scans: the claim is younger than the orphan age
        assert statuses(ctx, [late]) == ["queued"]
        enqueue_commands(redis, [Claim(partition, stored)], ctx.settings)  # the late job arrives
        deadline = time.monotonic() + 30
        while statuses(ctx, [late]) == ["queued"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        r.stop.set()
        thread.join(timeout=10)
    assert entries_of(ctx, account) == [(1, late, 5)]
    assert r.counts["orphans"] == 0


def test_an_orphans_job_turning_up_later_is_a_replay(ctx: Context, client: LedgerClient, fast: Settings) -> None:
    partition = 2
    account = account_on(ctx, partition)
    redis: RedisClient = ctx.redis
    lost = deposit(client, account, 9)
    stored = claimed_payload(ctx, lost)
    lose_jobs(ctx, partition, [lost])
    time.sleep(ORPHAN_AFTER_S + 0.2)
    r = runner(fast, ctx, partition)
    serve_until_final(r, ctx, [lost])
    enqueue_commands(redis, [Claim(partition, stored)], ctx.settings)  # the "lost" job was only late
    again = runner(fast, ctx, partition)
    thread = threading.Thread(target=again.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while redis.llen(ctx.settings.redis_keys.queue_key(partition)) or not again.counts["acquired"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    again.stop.set()
    thread.join(timeout=10)
    assert entries_of(ctx, account) == [(1, lost, 9)]
    assert again.counts["applied"] == 0 and again.counts["orphans"] == 0


def test_an_orphan_that_raises_is_failed_and_the_rest_apply_in_order(
    ctx: Context, client: LedgerClient, fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison command can be an orphan: isolated like any other (tried alone, then recorded
    `failed`), with the commands around it applied in acceptance order and the owner still serving."""
    import ledgerq.worker.apply as apply_module

    real_plan = apply_module.plan

    def flaky_plan(command: Any, *args: Any) -> Any:
        if command.id.startswith("poison-"):
            raise ZeroDivisionError("a bug in the rules")
        return real_plan(command, *args)

    monkeypatch.setattr(apply_module, "plan", flaky_plan)
    partition = 1
    account = account_on(ctx, partition)
    before = deposit(client, account, 1)
    poison = deposit(client, account, 2, uid("poison"))
    after = [deposit(client, account, n) for n in (3, 4)]
    lose_jobs(ctx, partition, [poison])
    alone = deposit(client, account, 5, uid("poison"))  # a second one, found by the idle scan
    lose_jobs(ctx, partition, [alone])
    time.sleep(ORPHAN_AFTER_S + 0.2)
    r = runner(fast, ctx, partition)
    serve_until_final(r, ctx, [before, poison, *after, alone])
    assert statuses(ctx, [before, poison, *after, alone]) == ["applied", "failed", "applied", "applied", "failed"]
    assert [e[1] for e in entries_of(ctx, account)] == [before, *after]
    assert r.counts["poison"] == 2
