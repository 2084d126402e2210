"""Submitting in rounds against real servers: RQ-format jobs, one outcome per command, one job per id."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.api.inprocess import LedgerClient
from ledgerq.api.submit import Submitted
from ledgerq.shared.errors import CurrencyMismatch, IdempotencyConflict, UnknownAccount
from ledgerq.shared.keys import JOB_FUNC, job_id, queue_key, queue_name
from tests.conftest import uid


def new_account(ctx: Context, currency: str = "USD") -> str:
    account = uid("round")
    with ctx.engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, currency) VALUES (:a, :c)"), {"a": account, "c": currency})
    return account


def deposit(account: str, amount: int, command_id: str | None = None, currency: str = "USD") -> dict[str, Any]:
    return {
        "id": command_id or uid("dep"),
        "type": "deposit",
        "account_id": account,
        "amount": amount,
        "currency": currency,
    }


def test_queued_jobs_are_rq_jobs_that_rq_reads(ctx: Context) -> None:
    """One Lua call writes RQ's own job format: RQ's Job API and queue listing see ledgerq's jobs."""
    client = LedgerClient(ctx)
    command = deposit(new_account(ctx), 42)
    done = client.submit(command)
    job = Job.fetch(job_id(command["id"]), connection=ctx.redis, serializer=JSONSerializer)
    assert job.func_name == JOB_FUNC and job.get_status() == "queued"
    assert job.origin == queue_name(done.partition) and job.kwargs["command"] == command
    assert job.enqueued_at is not None and job.description == f"deposit {command['id']}"
    queue = Queue(queue_name(done.partition), connection=ctx.redis, serializer=JSONSerializer)
    assert job.id in queue.get_job_ids() or job.get_status(refresh=True) != "queued"  # a worker may have it
    assert ctx.redis.sismember("rq:queues", queue_key(done.partition))


def test_submit_many_gives_one_outcome_per_command(ctx: Context) -> None:
    client = LedgerClient(ctx)
    usd, eur = new_account(ctx), new_account(ctx, "EUR")
    same = deposit(usd, 5)
    taken = deposit(usd, 6)
    batch = [
        same,
        deposit("no-such-account-" + uid(), 1),
        same,  # the same id and payload twice in one call: one claim, the second is a replay
        taken,
        {**taken, "amount": 7},  # the same id with another payload
        deposit(eur, 1),  # USD into a EUR account
    ]
    outcomes = client.submit_many(batch)
    assert isinstance(outcomes[0], Submitted) and not outcomes[0].replayed
    assert isinstance(outcomes[1], UnknownAccount)
    assert isinstance(outcomes[2], Submitted) and outcomes[2].replayed
    assert isinstance(outcomes[3], Submitted) and not outcomes[3].replayed
    assert isinstance(outcomes[4], IdempotencyConflict)
    assert isinstance(outcomes[5], CurrencyMismatch)
    with ctx.engine.connect() as conn:
        claimed = conn.execute(
            text("SELECT id, payload->>'amount' FROM commands WHERE id = ANY(:ids) ORDER BY id"),
            {"ids": [same["id"], taken["id"]]},
        ).all()
    assert sorted(claimed) == sorted([(same["id"], "5"), (taken["id"], "6")])


def test_racing_rounds_queue_each_id_once(ctx: Context, settings: Any) -> None:
    """Two processes' worth of clients (two contexts) submitting the same ids at once: one claim and
    one job per id, every caller told the same partition."""
    account = new_account(ctx)
    commands = [deposit(account, n + 1, uid(f"race{n}")) for n in range(50)]
    other = Context.build(settings)
    try:
        clients = [LedgerClient(ctx), LedgerClient(other)]
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda n: clients[n % 2].submit_many(commands), range(8)))
    finally:
        other.close()
    for run in runs:
        assert all(isinstance(o, Submitted) for o in run)
    fresh = [sum(not o.replayed for o in (run[i] for run in runs)) for i in range(50)]  # type: ignore[union-attr]
    assert fresh == [1] * 50
    redis: Redis = ctx.redis
    partition = runs[0][0].partition  # type: ignore[union-attr]
    queued = [i.decode() for i in redis.lrange(queue_key(partition), 0, -1)]
    inflight = [i.decode() for i in redis.lrange(f"ledgerq:inflight:{partition}", 0, -1)]
    for command in commands:
        jid = job_id(command["id"])
        assert queued.count(jid) + inflight.count(jid) <= 1  # never twice (a worker may have applied it)
        assert redis.exists(f"rq:job:{jid}")
