"""The apply rules: pure functions from a command and balances to an outcome.

No SQLAlchemy, no Redis: `plan` sees only the accounts the command names and
answers with the legs to write or the reason to refuse. The apply transaction
locks the rows, calls `plan` per command in queue order, and writes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgerq.shared.commands import AMOUNT_MAX, INT64_MAX, AnyCommand, Deposit, Transaction, Transfer, Withdraw
from ledgerq.shared.errors import CurrencyMismatch, InsufficientFunds, InvariantViolation, Rejection, UnknownAccount

BALANCE_MIN = -INT64_MAX - 1  # bigint's least value


@dataclass(frozen=True, slots=True)
class AccountState:
    id: str
    currency: str
    balance: int
    overdraft_limit: int
    entry_count: int
    is_system: bool = False

    def credited(self, amount: int) -> AccountState:
        # The constructor, not dataclasses.replace: this runs twice per applied command.
        return AccountState(
            self.id, self.currency, self.balance + amount, self.overdraft_limit, self.entry_count + 1, self.is_system
        )


@dataclass(frozen=True, slots=True)
class Leg:
    account_id: str
    amount: int
    counterparty: str


@dataclass(frozen=True, slots=True)
class Applied:
    legs: tuple[Leg, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    detail: str


Outcome = Applied | Rejected


def plan(command: AnyCommand, accounts: dict[str, AccountState], world_id: str) -> Outcome:
    """Decide one command against current balances. Never raises for a business reason."""
    try:
        if isinstance(command, Transaction):
            return _plan_transaction(command, accounts)
        source, target = _source_and_target(command, world_id)
        debit = _require(accounts, source, command.currency)
        credit = _require(accounts, target, command.currency)
        _check_debit(debit, command.amount)
        _check_range(debit, -command.amount)
        _check_range(credit, command.amount)
    except Rejection as refusal:
        return Rejected(refusal.code, refusal.detail)
    return Applied((Leg(source, -command.amount, target), Leg(target, command.amount, source)))


MANY = "*"
"""A multi-leg entry's counterparty when the other side has several accounts."""


def _plan_transaction(command: Transaction, accounts: dict[str, AccountState]) -> Outcome:
    """All legs or none: every account known and in the currency, every debit covered, no overflow.

    Each entry's counterparty is the one account on the other side of the transaction when there is
    exactly one (a buyer paying a seller, a fee and a tax: each credit's counterparty is the buyer),
    else `*`."""
    debits = [leg.account_id for leg in command.legs if leg.amount < 0]
    credits = [leg.account_id for leg in command.legs if leg.amount > 0]
    for leg in command.legs:
        state = _require(accounts, leg.account_id, command.currency)
        if leg.amount < 0:
            _check_debit(state, -leg.amount)
        _check_range(state, leg.amount)
    legs = []
    for leg in command.legs:
        other = credits if leg.amount < 0 else debits
        legs.append(Leg(leg.account_id, leg.amount, other[0] if len(other) == 1 else MANY))
    return Applied(tuple(legs))


def _check_debit(debit: AccountState, amount: int) -> None:
    if not debit.is_system and debit.balance - amount < -debit.overdraft_limit:
        raise InsufficientFunds(
            f"balance {debit.balance} with overdraft limit {debit.overdraft_limit} cannot cover {amount}"
        )


def _check_range(state: AccountState, amount: int) -> None:
    if not BALANCE_MIN <= state.balance + amount <= AMOUNT_MAX:
        raise Rejection("the balance would leave the int64 range", code="amount_out_of_range")


def _source_and_target(command: Deposit | Withdraw | Transfer, world_id: str) -> tuple[str, str]:
    if isinstance(command, Deposit):
        return world_id, command.account_id
    if isinstance(command, Withdraw):
        return command.account_id, world_id
    return command.account_id, command.to_account_id


def _require(accounts: dict[str, AccountState], account_id: str, currency: str) -> AccountState:
    state = accounts.get(account_id)
    if state is None:
        raise UnknownAccount(f"account {account_id!r} does not exist")
    if state.currency != currency:
        raise CurrencyMismatch(f"account {account_id!r} holds {state.currency}, not {currency}")
    return state


def apply_legs(accounts: dict[str, AccountState], outcome: Applied) -> list[tuple[Leg, AccountState]]:
    """Move the balances in `accounts` by the legs; returns each leg with its account after it."""
    after: list[tuple[Leg, AccountState]] = []
    for leg in outcome.legs:
        state = accounts[leg.account_id].credited(leg.amount)
        accounts[leg.account_id] = state
        after.append((leg, state))
    total = sum(leg.amount for leg in outcome.legs)
    if total != 0:  # survives `python -O`, unlike assert
        raise InvariantViolation(f"legs sum to {total}, not zero")
    return after
