"""The apply rules: pure functions from a command and balances to an outcome.

No SQLAlchemy, no Redis: `plan` sees only the accounts the command names (and,
for captures, voids and reversals, the hold or original it names) and answers
with the legs to write, the hold and held-balance changes, or the reason to
refuse. The apply transaction locks the rows, calls `plan` per command in queue
order, folds each outcome into the batch's state with `settle`, and writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ledgerq.shared.commands import (
    AMOUNT_MAX,
    INT64_MAX,
    REVERSIBLE_TYPES,
    AnyCommand,
    Capture,
    Deposit,
    Hold,
    Reversal,
    Transaction,
    Transfer,
    Void,
    Withdraw,
)
from ledgerq.shared.errors import CurrencyMismatch, InsufficientFunds, InvariantViolation, Rejection, UnknownAccount
from ledgerq.shared.routing import SYSTEM_PREFIX
from ledgerq.shared.schema import CommandStatus, HoldStatus

BALANCE_MIN = -INT64_MAX - 1  # bigint's least value


@dataclass(frozen=True, slots=True)
class AccountState:
    id: str
    currency: str
    balance: int
    overdraft_limit: int
    entry_count: int
    is_system: bool = False
    held: int = 0  # the sum of pending holds

    @property
    def available(self) -> int:
        return self.balance - self.held

    def credited(self, amount: int) -> AccountState:
        # The constructor, not dataclasses.replace: this runs twice per applied command.
        return AccountState(
            self.id,
            self.currency,
            self.balance + amount,
            self.overdraft_limit,
            self.entry_count + 1,
            self.is_system,
            self.held,
        )

    def holding(self, delta: int) -> AccountState:
        return AccountState(
            self.id,
            self.currency,
            self.balance,
            self.overdraft_limit,
            self.entry_count,
            self.is_system,
            self.held + delta,
        )


@dataclass(frozen=True, slots=True)
class HoldState:
    id: str
    account_id: str
    to_account_id: str | None
    amount: int
    currency: str
    status: HoldStatus
    expires_at: datetime
    captured_amount: int = 0
    resolved_by: str | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """A command a reversal names: its type, status, the legs it posted and what is reversed of it."""

    id: str
    type: str
    status: str
    currency: str | None
    legs: tuple[tuple[str, int], ...] = ()  # (account_id, signed amount) as posted
    reversible_amount: int = 0
    reversed_amount: int = 0


@dataclass(slots=True)
class References:
    """The holds and originals a batch's captures, voids and reversals name, kept current as it applies."""

    holds: dict[str, HoldState] = field(default_factory=dict)
    originals: dict[str, Original] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Leg:
    account_id: str
    amount: int
    counterparty: str


@dataclass(frozen=True, slots=True)
class Applied:
    legs: tuple[Leg, ...]
    hold: HoldState | None = None  # a hold placed, captured or voided: its state after
    held: tuple[tuple[str, int], ...] = ()  # (account_id, change of `held`)
    reversed: tuple[str, int] | None = None  # (original's id, amount reversed now)
    reversible_amount: int | None = None  # what a reversal of this command may take back, in all


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    detail: str
    account_id: str | None = field(default=None, compare=False)  # whose state decided it, if one did


Outcome = Applied | Rejected


def plan(
    command: AnyCommand,
    accounts: dict[str, AccountState],
    world_id: str,
    refs: References | None = None,
    accepted_at: datetime | None = None,
) -> Outcome:
    """Decide one command against current balances (and the holds and originals it names, and when
    it was accepted: a capture or void accepted before its hold's expiry is honoured). Never raises
    for a business reason."""
    refs = refs or References()
    try:
        if isinstance(command, Transaction):
            return _plan_transaction(command, accounts)
        if isinstance(command, Hold):
            return _plan_hold(command, accounts, accepted_at)
        if isinstance(command, Capture | Void):
            return _plan_release(command, accounts, world_id, refs, accepted_at)
        if isinstance(command, Reversal):
            return _plan_reversal(command, accounts, world_id, refs)
        source, target = _source_and_target(command, world_id)
        legs = _two_legs(accounts, source, target, command.amount, command.currency)
    except Rejection as refusal:
        return Rejected(refusal.code, refusal.detail, refusal.account_id)
    return Applied(legs, reversible_amount=command.amount)


def rfc3339(moment: datetime) -> str:
    """A time as the API shows times: UTC, `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _two_legs(
    accounts: dict[str, AccountState], source: str, target: str, amount: int, currency: str
) -> tuple[Leg, ...]:
    debit = _require(accounts, source, currency)
    credit = _require(accounts, target, currency)
    _check_debit(debit, amount)
    _check_range(debit, -amount)
    _check_range(credit, amount)
    return (Leg(source, -amount, target), Leg(target, amount, source))


def _plan_hold(command: Hold, accounts: dict[str, AccountState], accepted_at: datetime | None) -> Outcome:
    if accepted_at is None:
        raise InvariantViolation("a hold is planned with its acceptance time")
    state = _require(accounts, command.account_id, command.currency)
    if command.to_account_id is not None:
        _require(accounts, command.to_account_id, command.currency)
    _check_debit(state, command.amount)
    if state.held + command.amount > AMOUNT_MAX:
        raise Rejection("the held balance would leave the int64 range", code="amount_out_of_range", account_id=state.id)
    hold = HoldState(
        command.id,
        command.account_id,
        command.to_account_id,
        command.amount,
        command.currency,
        HoldStatus.PENDING,
        accepted_at + timedelta(seconds=command.expires_in_s),
    )
    return Applied((), hold=hold, held=((command.account_id, command.amount),))


def _plan_release(
    command: Capture | Void,
    accounts: dict[str, AccountState],
    world_id: str,
    refs: References,
    accepted_at: datetime | None,
) -> Outcome:
    """A capture posts from the hold's account and releases the hold whole; a void only releases it."""
    hold = refs.holds.get(command.hold_id)
    if hold is None:
        raise Rejection(f"hold {command.hold_id!r} was never placed (it was rejected)", code="hold_not_pending")
    if hold.status in (HoldStatus.CAPTURED, HoldStatus.VOIDED):
        raise Rejection(f"hold {command.hold_id!r} is already {hold.status}", code="hold_not_pending")
    if accepted_at is None or accepted_at >= hold.expires_at:
        raise Rejection(
            f"hold {command.hold_id!r} expired at {rfc3339(hold.expires_at)}, before this {command.type} was accepted",
            code="hold_expired",
        )
    if hold.status != HoldStatus.PENDING:  # expired by the sweep: it never is while this was queued
        raise Rejection(f"hold {command.hold_id!r} is {hold.status}", code="hold_not_pending")
    released = ((hold.account_id, -hold.amount),)
    if isinstance(command, Void):
        return Applied((), hold=_resolved(hold, HoldStatus.VOIDED, 0, command.id), held=released)
    amount = hold.amount if command.amount is None else command.amount
    if amount > hold.amount:
        raise Rejection(
            f"capture of {amount} exceeds the hold's {hold.amount}",
            code="amount_exceeds_hold",
        )
    source = hold.account_id
    target = hold.to_account_id or world_id
    # The hold's own reservation covers the capture: it is released in the same step.
    releasing = dict(accounts)
    releasing[source] = _require(accounts, source, hold.currency).holding(-hold.amount)
    legs = _two_legs(releasing, source, target, amount, hold.currency)
    return Applied(
        legs,
        hold=_resolved(hold, HoldStatus.CAPTURED, amount, command.id),
        held=released,
        reversible_amount=amount,
    )


def _resolved(hold: HoldState, status: HoldStatus, captured: int, by: str) -> HoldState:
    return HoldState(
        hold.id, hold.account_id, hold.to_account_id, hold.amount, hold.currency, status, hold.expires_at, captured, by
    )


def _plan_reversal(command: Reversal, accounts: dict[str, AccountState], world_id: str, refs: References) -> Outcome:
    """Mirror the original's legs: what was credited is debited and the other way round, for `amount`
    (default: all that is left) of a two-leg original, or the whole of a transaction."""
    original = refs.originals.get(command.command_id)
    if original is None or original.type not in REVERSIBLE_TYPES:
        kind = "unknown" if original is None else f"a {original.type}"
        raise Rejection(f"command {command.command_id!r} is {kind}; it cannot be reversed", code="not_reversible")
    if original.status != CommandStatus.APPLIED or original.currency is None:
        raise Rejection(
            f"command {command.command_id!r} is {original.status}; only an applied command can be reversed",
            code="not_reversible",
        )
    left = original.reversible_amount - original.reversed_amount
    whole = original.type == "transaction"
    if whole and command.amount is not None:
        raise Rejection("a transaction is reversed whole: leave out amount", code="not_reversible")
    amount = left if command.amount is None else command.amount
    if amount > left or amount == 0:
        raise Rejection(
            f"reversing {amount} of {command.command_id!r} exceeds what is left to reverse ({left} of "
            f"{original.reversible_amount})",
            code="amount_exceeds_reversible",
        )

    def mirrored(account_id: str) -> str:
        # Deposits and withdrawals moved a `@world` shard: the reversal moves this partition's.
        return world_id if account_id.startswith(SYSTEM_PREFIX) else account_id

    if whole:
        signed = [(mirrored(a), -n) for a, n in original.legs]
    else:
        signed = [(mirrored(a), -amount if n > 0 else amount) for a, n in original.legs]
    debits = [a for a, n in signed if n < 0]
    credits = [a for a, n in signed if n > 0]
    legs = []
    for account_id, n in signed:
        state = _require(accounts, account_id, original.currency)
        if n < 0:
            _check_debit(state, -n)
        _check_range(state, n)
        other = credits if n < 0 else debits
        legs.append(Leg(account_id, n, other[0] if len(other) == 1 else MANY))
    return Applied(tuple(legs), reversed=(original.id, amount))


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
    return Applied(tuple(legs), reversible_amount=sum(leg.amount for leg in command.legs if leg.amount > 0))


def _check_debit(debit: AccountState, amount: int) -> None:
    """Every debit and every new hold needs `available - amount >= -overdraft_limit`."""
    if not debit.is_system and debit.available - amount < -debit.overdraft_limit:
        held = f" ({debit.held} of it held)" if debit.held else ""
        raise InsufficientFunds(
            f"balance {debit.balance}{held} with overdraft limit {debit.overdraft_limit} cannot cover {amount}",
            account_id=debit.id,
        )


def _check_range(state: AccountState, amount: int) -> None:
    if not BALANCE_MIN <= state.balance + amount <= AMOUNT_MAX:
        raise Rejection("the balance would leave the int64 range", code="amount_out_of_range", account_id=state.id)


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


def settle(
    accounts: dict[str, AccountState],
    refs: References,
    command: AnyCommand,
    outcome: Applied,
    currency: str,
) -> list[tuple[Leg, AccountState]]:
    """Fold an applied outcome into the batch's state, so the next command in the batch sees it:
    balances, held balances, the hold's state, what is reversed of an original, and this command as
    an original a later reversal in the batch may name."""
    after = apply_legs(accounts, outcome)
    for account_id, delta in outcome.held:
        accounts[account_id] = accounts[account_id].holding(delta)
        if accounts[account_id].held < 0:
            raise InvariantViolation(f"held of {account_id!r} would go below zero")
    if outcome.hold is not None:
        refs.holds[outcome.hold.id] = outcome.hold
    if outcome.reversed is not None:
        original_id, amount = outcome.reversed
        was = refs.originals[original_id]
        refs.originals[original_id] = Original(
            was.id, was.type, was.status, was.currency, was.legs, was.reversible_amount, was.reversed_amount + amount
        )
    if outcome.reversible_amount is not None:
        refs.originals[command.id] = Original(
            command.id,
            command.type,
            CommandStatus.APPLIED,
            currency,
            tuple((leg.account_id, leg.amount) for leg in outcome.legs),
            outcome.reversible_amount,
        )
    return after
