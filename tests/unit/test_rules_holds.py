"""The pure rules for holds, captures, voids and reversals, worked like accounting examples (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledgerq.shared.commands import Capture, Deposit, Hold, Reversal, Transaction, Transfer, Void, Withdraw
from ledgerq.shared.schema import HoldStatus
from ledgerq.worker.rules import (
    AccountState,
    Applied,
    HoldState,
    Leg,
    Original,
    References,
    Rejected,
    plan,
    settle,
)

WORLD = "@world:USD:0"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def book(**balances: int) -> dict[str, AccountState]:
    states = {WORLD: AccountState(WORLD, "USD", 0, 0, 0, is_system=True)}
    states |= {name: AccountState(name, "USD", balance, 0, 0) for name, balance in balances.items()}
    return states


def run(states: dict[str, AccountState], refs: References, command: object, at: datetime = T0) -> Applied | Rejected:
    out = plan(command, states, WORLD, refs, at)  # type: ignore[arg-type]
    if isinstance(out, Applied):
        currency = getattr(command, "currency", None) or "USD"
        settle(states, refs, command, out, currency)  # type: ignore[arg-type]
    return out


def test_a_hold_reserves_available_and_a_partial_capture_releases_the_rest() -> None:
    states, refs = book(a=100, b=0), References()
    placed = run(states, refs, Hold(id="h", type="hold", account_id="a", to_account_id="b", amount=80, currency="USD"))
    assert isinstance(placed, Applied) and placed.legs == () and placed.held == (("a", 80),)
    assert placed.hold is not None and placed.hold.expires_at == T0 + timedelta(days=7)
    assert (states["a"].balance, states["a"].held, states["a"].available) == (100, 80, 20)
    # Only the available 20 can be debited or held now.
    assert run(states, refs, Withdraw(id="w", type="withdraw", account_id="a", amount=21, currency="USD")) == Rejected(
        "insufficient_funds", "balance 100 (80 of it held) with overdraft limit 0 cannot cover 21"
    )
    out = run(states, refs, Capture(id="c", type="capture", hold_id="h", amount=50))
    assert isinstance(out, Applied) and out.legs == (Leg("a", -50, "b"), Leg("b", 50, "a"))
    assert (states["a"].balance, states["a"].held, states["b"].balance) == (50, 0, 50)
    assert refs.holds["h"].status == HoldStatus.CAPTURED and refs.holds["h"].captured_amount == 50


def test_a_hold_is_resolved_once() -> None:
    states, refs = book(a=100), References()
    run(states, refs, Hold(id="h", type="hold", account_id="a", amount=10, currency="USD"))
    assert isinstance(run(states, refs, Void(id="v", type="void", hold_id="h")), Applied)
    for second in (Void(id="v2", type="void", hold_id="h"), Capture(id="c", type="capture", hold_id="h")):
        out = run(states, refs, second)
        assert isinstance(out, Rejected) and out.code == "hold_not_pending"
    assert states["a"].held == 0


def test_expiry_is_decided_by_acceptance_time() -> None:
    states, refs = book(a=100), References()
    run(states, refs, Hold(id="h", type="hold", account_id="a", amount=10, currency="USD", expires_in_s=60))
    late = run(states, refs, Capture(id="c", type="capture", hold_id="h"), at=T0 + timedelta(seconds=60))
    assert isinstance(late, Rejected) and late.code == "hold_expired"
    just_in_time = run(states, refs, Capture(id="c2", type="capture", hold_id="h"), at=T0 + timedelta(seconds=59.99))
    assert isinstance(just_in_time, Applied) and states["a"].balance == 90


def test_capture_limits_and_unplaced_holds() -> None:
    states = book(a=100)
    refs = References(holds={"h": HoldState("h", "a", None, 10, "USD", HoldStatus.PENDING, T0 + timedelta(hours=1))})
    states["a"] = states["a"].holding(10)
    over = run(states, refs, Capture(id="c", type="capture", hold_id="h", amount=11))
    assert isinstance(over, Rejected) and over.code == "amount_exceeds_hold"
    never = run(states, refs, Capture(id="c", type="capture", hold_id="rejected-hold"))
    assert isinstance(never, Rejected) and never.code == "hold_not_pending"
    expired = References(holds={"h": HoldState("h", "a", None, 10, "USD", HoldStatus.EXPIRED, T0 + timedelta(hours=1))})
    out = plan(Void(id="v", type="void", hold_id="h"), states, WORLD, expired, T0)
    assert isinstance(out, Rejected) and out.code == "hold_not_pending"
    whole = run(states, refs, Capture(id="c", type="capture", hold_id="h"))  # to @world
    assert isinstance(whole, Applied) and whole.legs == (Leg("a", -10, WORLD), Leg(WORLD, 10, "a"))


def test_reversals_mirror_legs_up_to_the_original() -> None:
    states, refs = book(a=100, b=0), References()
    run(states, refs, Transfer(id="t", type="transfer", account_id="a", to_account_id="b", amount=60, currency="USD"))
    part = run(states, refs, Reversal(id="r1", type="reversal", command_id="t", amount=25))
    assert isinstance(part, Applied) and part.legs == (Leg("a", 25, "b"), Leg("b", -25, "a"))
    assert refs.originals["t"].reversed_amount == 25
    over = run(states, refs, Reversal(id="r2", type="reversal", command_id="t", amount=36))
    assert isinstance(over, Rejected) and over.code == "amount_exceeds_reversible"
    rest = run(states, refs, Reversal(id="r3", type="reversal", command_id="t"))
    assert isinstance(rest, Applied) and (states["a"].balance, states["b"].balance) == (100, 0)
    done = run(states, refs, Reversal(id="r4", type="reversal", command_id="t"))
    assert isinstance(done, Rejected) and done.code == "amount_exceeds_reversible"


def test_deposits_withdrawals_and_transactions_reverse_against_this_partitions_world() -> None:
    states, refs = book(a=0, b=0, c=0), References()
    run(states, refs, Deposit(id="d", type="deposit", account_id="a", amount=100, currency="USD"))
    # The original posted against another partition's @world shard: the mirror uses this one's.
    refs.originals["d"] = Original("d", "deposit", "applied", "USD", (("@world:USD:3", -100), ("a", 100)), 100)
    out = run(states, refs, Reversal(id="r", type="reversal", command_id="d", amount=40))
    assert isinstance(out, Applied) and out.legs == (Leg(WORLD, 40, "a"), Leg("a", -40, WORLD))
    split = Transaction(
        id="x",
        type="transaction",
        currency="USD",
        legs=[{"account_id": "a", "amount": -60}, {"account_id": "b", "amount": 50}, {"account_id": "c", "amount": 10}],  # type: ignore[list-item]
    )
    assert isinstance(run(states, refs, split), Applied)
    undone = run(states, refs, Reversal(id="rx", type="reversal", command_id="x"))
    assert isinstance(undone, Applied) and sorted(leg.amount for leg in undone.legs) == [-50, -10, 60]
    assert [states[n].balance for n in "abc"] == [60, 0, 0]
    partial = run(states, refs, Reversal(id="ry", type="reversal", command_id="x", amount=1))
    assert isinstance(partial, Rejected) and partial.code in {"not_reversible", "amount_exceeds_reversible"}


def test_what_is_not_applied_or_not_reversible_is_refused() -> None:
    states = book(a=100)
    refs = References(
        originals={
            "h": Original("h", "hold", "applied", "USD"),
            "q": Original("q", "deposit", "queued", "USD"),
            "r": Original("r", "reversal", "applied", "USD"),
        }
    )
    for original in ("h", "q", "r", "missing"):
        out = plan(Reversal(id="x", type="reversal", command_id=original), states, WORLD, refs, T0)
        assert isinstance(out, Rejected) and out.code == "not_reversible", original
