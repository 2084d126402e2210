"""Property tests (hypothesis) on the domain: any sequence of commands keeps the invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledgerq.shared.commands import AMOUNT_MAX, ID_RE, Deposit, Transfer, Withdraw, parse_command
from ledgerq.worker.rules import AccountState, Applied, apply_legs, plan

WORLD = "@world:USD:0"
ACCOUNTS = ["a", "b", "c"]

amounts = st.integers(min_value=1, max_value=AMOUNT_MAX)
small = st.integers(min_value=1, max_value=10_000)
command = st.one_of(
    st.builds(
        lambda a, n: Deposit(id="x", type="deposit", account_id=a, amount=n, currency="USD"),
        st.sampled_from(ACCOUNTS),
        small,
    ),
    st.builds(
        lambda a, n: Withdraw(id="x", type="withdraw", account_id=a, amount=n, currency="USD"),
        st.sampled_from(ACCOUNTS),
        small,
    ),
    st.builds(
        lambda p, n: Transfer(id="x", type="transfer", account_id=p[0], to_account_id=p[1], amount=n, currency="USD"),
        st.permutations(ACCOUNTS).map(lambda p: (p[0], p[1])),
        small,
    ),
)


@settings(max_examples=300)
@given(st.lists(command, max_size=60), st.lists(st.integers(0, 5_000), min_size=3, max_size=3))
def test_any_sequence_keeps_balances_legal_and_books_balanced(commands: list[Any], limits: list[int]) -> None:
    states = {WORLD: AccountState(WORLD, "USD", 0, 0, 0, is_system=True)}
    states |= {a: AccountState(a, "USD", 0, limit, 0) for a, limit in zip(ACCOUNTS, limits, strict=True)}
    applied = 0
    for c in commands:
        outcome = plan(c, states, WORLD)
        if isinstance(outcome, Applied):
            apply_legs(states, outcome)
            applied += 1
        for a in ACCOUNTS:  # invariant 3 after every command
            assert states[a].balance >= -states[a].overdraft_limit
    assert sum(s.balance for s in states.values()) == 0  # invariant 4: the trial balance
    assert sum(s.entry_count for s in states.values()) == 2 * applied  # two legs per applied command


@given(amounts)
def test_every_int64_amount_in_range_is_accepted_and_kept_exactly(amount: int) -> None:
    parsed = parse_command({"id": "i", "type": "deposit", "account_id": "a", "amount": amount, "currency": "USD"})
    assert parsed.amount == amount and parsed.payload()["amount"] == amount


@given(
    st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=AMOUNT_MAX + 1),
        st.floats(),
        st.text(),
        st.booleans(),
        st.none(),
    )
)
def test_amounts_outside_the_contract_are_refused(amount: Any) -> None:
    try:
        parse_command({"id": "i", "type": "deposit", "account_id": "a", "amount": amount, "currency": "USD"})
    except ValidationError:
        return
    raise AssertionError(f"accepted {amount!r}")


@given(st.text(max_size=200))
def test_ids_are_accepted_exactly_when_they_match_the_charset(candidate: str) -> None:
    body = {"id": candidate, "type": "deposit", "account_id": "a", "amount": 1, "currency": "USD"}
    try:
        parse_command(body)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(ID_RE.fullmatch(candidate)) and (not accepted or "/" not in candidate)
