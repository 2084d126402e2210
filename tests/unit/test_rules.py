"""The pure apply rules, worked like accounting examples (no I/O)."""

from __future__ import annotations

import pytest

from ledgerq.shared.commands import AMOUNT_MAX, Deposit, Transfer, Withdraw
from ledgerq.shared.errors import InvariantViolation
from ledgerq.worker.rules import AccountState, Applied, Leg, Rejected, apply_legs, plan

WORLD = "@world:USD:0"


def book(**balances: int) -> dict[str, AccountState]:
    states = {WORLD: AccountState(WORLD, "USD", 0, 0, 0, is_system=True)}
    for name, balance in balances.items():
        states[name] = AccountState(name, "USD", balance, 0, 0)
    return states


def test_deposit_credits_account_against_world() -> None:
    """A deposit is a transfer from the system account, which may go negative."""
    out = plan(Deposit(id="c1", type="deposit", account_id="a", amount=500, currency="USD"), book(a=0), WORLD)
    assert out == Applied((Leg(WORLD, -500, "a"), Leg("a", 500, WORLD)))


def test_withdraw_within_balance_applies_and_beyond_is_rejected() -> None:
    """Seed 002: a withdrawal larger than the balance is refused, not applied."""
    ok = plan(Withdraw(id="w", type="withdraw", account_id="a", amount=100, currency="USD"), book(a=100), WORLD)
    assert isinstance(ok, Applied)
    no = plan(Withdraw(id="w", type="withdraw", account_id="a", amount=101, currency="USD"), book(a=100), WORLD)
    assert isinstance(no, Rejected) and no.code == "insufficient_funds"


def test_overdraft_limit_is_honoured_exactly() -> None:
    """The limit is the floor: -limit is allowed, one below is not."""
    states = {WORLD: book()[WORLD], "a": AccountState("a", "USD", 10, 50, 0)}
    w = Withdraw(id="w", type="withdraw", account_id="a", amount=60, currency="USD")
    assert isinstance(plan(w, states, WORLD), Applied)
    w2 = Withdraw(id="w", type="withdraw", account_id="a", amount=61, currency="USD")
    assert plan(w2, states, WORLD) == Rejected(
        "insufficient_funds", "balance 10 with overdraft limit 50 cannot cover 61"
    )


def test_two_withdrawals_of_80_from_100_only_one_applies() -> None:
    """Seed 002's race, serialised: the second sees the first's debit."""
    states = book(a=10_000)
    results = []
    for n in range(2):
        out = plan(Withdraw(id=f"w{n}", type="withdraw", account_id="a", amount=8_000, currency="USD"), states, WORLD)
        if isinstance(out, Applied):
            apply_legs(states, out)
        results.append(type(out).__name__)
    assert results == ["Applied", "Rejected"] and states["a"].balance == 2_000


def test_transfer_moves_between_accounts() -> None:
    states = book(a=300, b=0)
    out = plan(
        Transfer(id="t", type="transfer", account_id="a", to_account_id="b", amount=200, currency="USD"), states, WORLD
    )
    assert isinstance(out, Applied)
    after = apply_legs(states, out)
    assert [(leg.account_id, s.balance, s.entry_count) for leg, s in after] == [("a", 100, 1), ("b", 200, 1)]


@pytest.mark.parametrize(
    ("states", "command", "code"),
    [
        (
            book(a=10),
            Transfer(id="t", type="transfer", account_id="a", to_account_id="zz", amount=1, currency="USD"),
            "unknown_account",
        ),
        (
            {**book(a=10), "e": AccountState("e", "EUR", 0, 0, 0)},
            Transfer(id="t", type="transfer", account_id="a", to_account_id="e", amount=1, currency="USD"),
            "currency_mismatch",
        ),
        (
            book(a=1),
            Deposit(id="d", type="deposit", account_id="a", amount=AMOUNT_MAX, currency="USD"),
            "amount_out_of_range",
        ),
        (book(), Withdraw(id="w", type="withdraw", account_id="ghost", amount=1, currency="USD"), "unknown_account"),
    ],
)
def test_business_refusals_are_outcomes_not_exceptions(
    states: dict[str, AccountState], command: Deposit | Withdraw | Transfer, code: str
) -> None:
    """Rejections come back as values with a stable code; nothing raises."""
    out = plan(command, states, WORLD)
    assert isinstance(out, Rejected) and out.code == code


def test_unbalanced_legs_are_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation):
        apply_legs(book(a=0), Applied((Leg("a", 5, WORLD), Leg(WORLD, -4, "a"))))
