"""Hold expiry against real PostgreSQL and Redis: DESIGN's rule that a capture or void *accepted* before
`expires_at` is honoured even when it is applied later, the sweep racing a claim still in flight, and
an idle partition releasing an expired hold by itself."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from ledgerq.api import submit as submitting
from ledgerq.api.context import Context
from ledgerq.api.inprocess import LedgerClient
from ledgerq.api.references import route
from ledgerq.ops.verify import verify
from ledgerq.shared.commands import Capture, payload_hash
from ledgerq.worker.apply import apply_batch
from ledgerq.worker.expiry import expire_holds
from ledgerq.worker.lease import bump_epoch
from tests.conftest import uid
from tests.integration.test_worker import account_on, run_until_idle, runner

PARTITION = 1


@pytest.fixture
def client(ctx: Context) -> LedgerClient:
    return LedgerClient(ctx)


def db_now(ctx: Context) -> datetime:
    with ctx.engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()  # type: ignore[no-any-return]


def hold_row(ctx: Context, hold_id: str) -> tuple[str, int, datetime]:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, captured_amount, expires_at FROM holds WHERE id = :h"), {"h": hold_id}
        ).one()
    return row.status, row.captured_amount, row.expires_at


def held(ctx: Context, account: str) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(text("SELECT held FROM accounts WHERE id = :a"), {"a": account}).scalar_one())


def outcome(ctx: Context, command_id: str) -> tuple[str, str | None, datetime]:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, error_code, accepted_at FROM commands WHERE id = :c"), {"c": command_id}
        ).one()
    return row.status, row.error_code, row.accepted_at


def funded_hold(ctx: Context, client: LedgerClient, epoch: int, expires_in_s: int = 1) -> tuple[str, str]:
    account = account_on(ctx, PARTITION)
    funding = uid("dep")
    client.submit({"id": funding, "type": "deposit", "account_id": account, "amount": 1_000, "currency": "USD"})
    hold_id = uid("hold")
    client.submit(
        {
            "id": hold_id,
            "type": "hold",
            "account_id": account,
            "amount": 300,
            "currency": "USD",
            "expires_in_s": expires_in_s,
        }
    )
    assert [f.status for f in apply_batch(ctx.engine, PARTITION, epoch, [funding, hold_id])] == ["applied"] * 2
    return account, hold_id


def swept_ids(ctx: Context, epoch: int) -> list[str]:
    return [e.hold_id for e in expire_holds(ctx.engine, PARTITION, epoch)]


def sleep_until(ctx: Context, moment: datetime) -> None:
    """Sleep until the database's clock (the one `accepted_at` and `expires_at` are read from) reaches it."""
    while (left := (moment - db_now(ctx)).total_seconds()) > 0:
        time.sleep(min(left, 0.05))


def test_a_capture_accepted_just_before_expiry_is_honoured_behind_a_slow_batch(
    ctx: Context, client: LedgerClient
) -> None:
    """The capture is accepted ~10 ms before `expires_at`, then waits in the queue (behind a batch that
    is slow: nothing is applied) until well after it; the sweeps run meanwhile and must leave the hold."""
    epoch = bump_epoch(ctx.engine, PARTITION, "expiry-test")
    for _attempt in range(5):  # a slow submit may land after expiry: that run proves nothing, try again
        account, hold_id = funded_hold(ctx, client, epoch)
        expires_at = hold_row(ctx, hold_id)[2]
        sleep_until(ctx, expires_at - _ms(10))
        capture_id = uid("cap")
        client.submit({"id": capture_id, "type": "capture", "hold_id": hold_id, "amount": 200})
        if outcome(ctx, capture_id)[2] < expires_at:
            break
    else:
        pytest.fail("no capture could be accepted before its hold's expiry in 5 tries")
    sleep_until(ctx, expires_at + _ms(500))
    # Other holds on this partition may be due (an earlier try's, say): this one must not be among them.
    assert hold_id not in swept_ids(ctx, epoch)  # the queued capture keeps it pending
    assert hold_row(ctx, hold_id)[0] == "pending" and held(ctx, account) == 300
    (done,) = apply_batch(ctx.engine, PARTITION, epoch, [capture_id])
    assert done.status == "applied", done
    assert hold_row(ctx, hold_id)[:2] == ("captured", 200) and held(ctx, account) == 0
    run_until_idle(runner(ctx.settings, ctx, PARTITION), PARTITION)  # drain the jobs applied above
    assert verify(ctx.engine) == []


def test_after_expiry_a_capture_or_void_is_refused_and_the_sweep_releases_the_hold(
    ctx: Context, client: LedgerClient
) -> None:
    epoch = bump_epoch(ctx.engine, PARTITION, "expiry-test")
    account, hold_id = funded_hold(ctx, client, epoch)
    sleep_until(ctx, hold_row(ctx, hold_id)[2] + _ms(5))
    late_capture, late_void = uid("cap"), uid("void")
    client.submit({"id": late_capture, "type": "capture", "hold_id": hold_id})
    client.submit({"id": late_void, "type": "void", "hold_id": hold_id})
    # Still pending (no sweep yet), but accepted after expiry: both refused.
    assert [(f.status, f.error_code) for f in apply_batch(ctx.engine, PARTITION, epoch, [late_capture, late_void])] == [
        ("rejected", "hold_expired")
    ] * 2
    assert hold_id in swept_ids(ctx, epoch)
    assert hold_row(ctx, hold_id)[0] == "expired" and held(ctx, account) == 0
    assert hold_id not in swept_ids(ctx, epoch)  # once
    run_until_idle(runner(ctx.settings, ctx, PARTITION), PARTITION)
    assert verify(ctx.engine) == []


def test_the_sweep_waits_for_a_claim_in_flight_and_then_honours_it(ctx: Context, client: LedgerClient) -> None:
    """A claim round that named the hold before expiry and commits after it: the sweep, started after
    expiry, waits on the claim's lock and then sees the capture queued, so it leaves the hold."""
    epoch = bump_epoch(ctx.engine, PARTITION, "expiry-test")
    account, hold_id = funded_hold(ctx, client, epoch, expires_in_s=2)
    expires_at = hold_row(ctx, hold_id)[2]
    capture = Capture(id=uid("cap"), type="capture", hold_id=hold_id)
    (found,) = route(ctx.engine, ctx.settings.partitions, [capture], [""])
    assert not isinstance(found, Exception)
    swept: list[object] = []
    with ctx.engine.begin() as conn:
        payload = capture.payload()  # the claim round's own steps, its transaction held open
        claimed, _ = submitting._claim(conn, [capture], [0], {0: payload_hash(payload)}, {0: payload}, [found])
        assert claimed[capture.id] < expires_at  # accepted before expiry, not yet committed
        sleep_until(ctx, expires_at + _ms(100))
        sweeper = threading.Thread(target=lambda: swept.append(expire_holds(ctx.engine, PARTITION, epoch)))
        sweeper.start()
        _wait_for_lock_wait(ctx)
        assert not swept  # it waits for this claim
    sweeper.join(timeout=30)
    assert len(swept) == 1 and hold_id not in [e.hold_id for e in swept[0]]  # type: ignore[attr-defined]
    assert hold_row(ctx, hold_id)[0] == "pending"
    (done,) = apply_batch(ctx.engine, PARTITION, epoch, [capture.id])
    assert done.status == "applied" and hold_row(ctx, hold_id)[:2] == ("captured", 300)
    assert held(ctx, account) == 0
    # The claim's job was never enqueued (this test made the claim by hand): nothing left to drain.
    assert verify(ctx.engine) == []


def test_an_idle_partition_releases_an_expired_hold_by_itself(ctx: Context, client: LedgerClient) -> None:
    account = account_on(ctx, PARTITION)
    funding, hold_id = uid("dep"), uid("hold")
    client.submit({"id": funding, "type": "deposit", "account_id": account, "amount": 50, "currency": "USD"})
    client.submit(
        {"id": hold_id, "type": "hold", "account_id": account, "amount": 50, "currency": "USD", "expires_in_s": 1}
    )
    worker = runner(ctx.settings, ctx, PARTITION)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            outcome(ctx, hold_id)[0] == "queued" or _status(ctx, hold_id) != "expired"
        ):
            time.sleep(0.05)
    finally:
        worker.stop.set()
        thread.join(timeout=10)
    assert _status(ctx, hold_id) == "expired" and held(ctx, account) == 0
    assert worker.counts["expired_holds"] >= 1
    assert verify(ctx.engine) == []


def _status(ctx: Context, hold_id: str) -> str | None:
    with ctx.engine.connect() as conn:
        return conn.execute(text("SELECT status FROM holds WHERE id = :h"), {"h": hold_id}).scalar_one_or_none()


def _ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def _wait_for_lock_wait(ctx: Context) -> None:
    """Until some backend waits on a row lock (the sweep, behind the open claim)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ctx.engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the sweep never waited for the claim")
