"""The pure apply rules, worked like accounting examples (no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ledgerq.shared.commands import AMOUNT_MAX, Deposit, Transaction, Transfer, Withdraw
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
    assert out == Applied((Leg(WORLD, -500, "a"), Leg("a", 500, WORLD)), reversible_amount=500)


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


def split(*legs: tuple[str, int], currency: str = "USD") -> Transaction:
    return Transaction.model_validate(
        {
            "id": "t",
            "type": "transaction",
            "currency": currency,
            "legs": [{"account_id": a, "amount": n} for a, n in legs],
        }
    )


def test_a_marketplace_split_posts_every_leg_with_its_counterparty() -> None:
    """A buyer pays a seller, a fee and a tax at once: each credit's counterparty is the buyer, the
    buyer's is `*` (several)."""
    states = book(buyer=100, seller=0, fee=0, tax=0)
    out = plan(split(("buyer", -100), ("seller", 85), ("fee", 10), ("tax", 5)), states, WORLD)
    assert out == Applied(
        (Leg("buyer", -100, "*"), Leg("seller", 85, "buyer"), Leg("fee", 10, "buyer"), Leg("tax", 5, "buyer")),
        reversible_amount=100,
    )
    apply_legs(states, out)
    assert [states[a].balance for a in ("buyer", "seller", "fee", "tax")] == [0, 85, 10, 5]


def test_a_transaction_is_all_or_nothing() -> None:
    """One debit it cannot cover refuses the lot; so does one account in another currency or unknown."""
    states = book(a=50, b=100, c=0)
    short = plan(split(("a", -60), ("b", -10), ("c", 70)), states, WORLD)
    assert short == Rejected("insufficient_funds", "balance 50 with overdraft limit 0 cannot cover 60")
    states["eur"] = AccountState("eur", "EUR", 0, 0, 0)
    assert isinstance(plan(split(("a", -10), ("eur", 10)), states, WORLD), Rejected)
    assert plan(split(("a", -10), ("ghost", 10)), states, WORLD).code == "unknown_account"  # type: ignore[union-attr]
    assert states["a"].balance == 50 and states["c"].balance == 0  # nothing moved


@pytest.mark.parametrize(
    "legs",
    [
        [("a", -10)],  # one leg
        [("a", -10), ("b", 9)],  # not zero
        [("a", -10), ("a", 10)],  # an account twice
        [("a", 0), ("b", 0)],  # zero legs
        [(f"x{i}", 1) for i in range(32)] + [("y", -32)],  # 33 legs
    ],
)
def test_malformed_transactions_are_refused_by_the_model(legs: list[tuple[str, int]]) -> None:
    with pytest.raises(ValidationError):
        split(*legs)
