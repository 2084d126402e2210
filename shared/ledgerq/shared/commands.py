"""Balance commands: the frozen, validated shape every door accepts.

Amounts are integers in minor units; pydantic's strict mode refuses `100.0`,
`"100"` and `true`. "Same payload" means the same canonical JSON, so the
payload hash ignores key order.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ID_RE = re.compile(ID_PATTERN)
INT64_MAX = 2**63 - 1
"""The largest amount, balance, seq or id: PostgreSQL's bigint."""
AMOUNT_MAX = INT64_MAX
PAGE_LIMIT_MAX = 1000
"""The most rows one page of a listing (entries, audit) returns."""
METADATA_BYTES_MAX = 4096
REFERENCE_CHARS_MAX = 256

EntityId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
CommandRef = Annotated[str, StringConstraints(pattern=r"^~?[A-Za-z0-9._:-]{1,128}(/[A-Za-z0-9._:-]{1,128})?$")]
"""An id naming another command: a plain id, a confined key's `~`-form of a command it did not send,
or (for an unconfined key) a confined key's stored `prefix/id` (see `ledgerq.shared.scoping`)."""
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[int, Field(ge=1, le=AMOUNT_MAX, strict=True)]
Metadata = dict[str, Any]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


METADATA_DEPTH_MAX = 8


def check_metadata(value: Metadata | None) -> Metadata | None:
    if value is None:
        return value
    if _depth(value) > METADATA_DEPTH_MAX:
        raise ValueError(f"metadata must nest at most {METADATA_DEPTH_MAX} levels")
    text = canonical_json(value)
    if len(text.encode()) > METADATA_BYTES_MAX:
        raise ValueError(f"metadata must be at most {METADATA_BYTES_MAX} bytes of JSON")
    if _has_nul(value):  # PostgreSQL's jsonb cannot hold NUL characters
        raise ValueError("metadata must not contain NUL characters")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


Reference = Annotated[str, StringConstraints(max_length=REFERENCE_CHARS_MAX, pattern=r"^[^\x00]*$")]


class _Base(BaseModel):
    """What every command has: its id (the idempotency key), an optional reference and metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: EntityId
    reference: Reference | None = None
    metadata: Metadata | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: Metadata | None) -> Metadata | None:
        return check_metadata(value)

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def payload_hash(self) -> str:
        return payload_hash(self.payload())


class _Command(_Base):
    account_id: EntityId
    amount: Amount
    currency: Currency

    @property
    def routing_account(self) -> str:
        """The account whose balance goes down (or the credited one for a deposit)."""
        return self.account_id

    def account_ids(self) -> tuple[str, ...]:
        return (self.account_id,)

    def debited_ids(self) -> tuple[str, ...]:
        """The accounts whose balance goes down (a deposit debits only `@world`)."""
        return (self.account_id,)


class Deposit(_Command):
    type: Literal["deposit"]

    def debited_ids(self) -> tuple[str, ...]:
        return ()


class Withdraw(_Command):
    type: Literal["withdraw"]


class Transfer(_Command):
    type: Literal["transfer"]
    to_account_id: EntityId

    @model_validator(mode="after")
    def _not_to_self(self) -> Transfer:
        if self.to_account_id == self.account_id:
            raise ValueError("a transfer needs two different accounts")
        return self

    def account_ids(self) -> tuple[str, ...]:
        return (self.account_id, self.to_account_id)


LEGS_MIN, LEGS_MAX = 2, 32


class TransactionLeg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    account_id: EntityId
    amount: Annotated[int, Field(ge=-AMOUNT_MAX, le=AMOUNT_MAX, strict=True)]  # signed: negative debits

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("a leg's amount is a non-zero integer")
        return value


class Transaction(_Base):
    """Many legs in one currency, summing to zero, posted all or nothing (a marketplace split, say)."""

    type: Literal["transaction"]
    currency: Currency
    legs: Annotated[list[TransactionLeg], Field(min_length=LEGS_MIN, max_length=LEGS_MAX)]

    @model_validator(mode="after")
    def _balanced_and_distinct(self) -> Transaction:
        if sum(leg.amount for leg in self.legs) != 0:
            raise ValueError("the legs must sum to zero")
        if len({leg.account_id for leg in self.legs}) != len(self.legs):
            raise ValueError("each account may appear in one leg only")
        if sum(leg.amount for leg in self.legs if leg.amount > 0) > AMOUNT_MAX:
            raise ValueError(f"the legs may move at most {AMOUNT_MAX} in all")
        return self

    @property
    def routing_account(self) -> str:
        """The first debited account: every debited account routes to the same partition (checked at submit)."""
        return min(self.debited_ids())

    def account_ids(self) -> tuple[str, ...]:
        return tuple(leg.account_id for leg in self.legs)

    def debited_ids(self) -> tuple[str, ...]:
        return tuple(leg.account_id for leg in self.legs if leg.amount < 0)


HOLD_EXPIRES_IN_S_MAX = 2_592_000  # 30 days
HOLD_EXPIRES_IN_S_DEFAULT = 604_800  # 7 days


class Hold(_Command):
    """Reserve `amount` of the account's available balance until captured, voided or expired."""

    type: Literal["hold"]
    to_account_id: EntityId | None = None
    expires_in_s: Annotated[int, Field(ge=1, le=HOLD_EXPIRES_IN_S_MAX, strict=True)] = HOLD_EXPIRES_IN_S_DEFAULT

    @model_validator(mode="after")
    def _not_to_self(self) -> Hold:
        if self.to_account_id == self.account_id:
            raise ValueError("a hold's to_account_id must be another account")
        return self

    def account_ids(self) -> tuple[str, ...]:
        return (self.account_id,) if self.to_account_id is None else (self.account_id, self.to_account_id)


class _Reference(_Base):
    """A command that acts on an earlier one: its accounts, currency and partition are the earlier
    command's, looked up at submit (`ledgerq.api.references`), not named in the body."""

    @property
    def ref_id(self) -> str:
        raise NotImplementedError

    def account_ids(self) -> tuple[str, ...]:
        return ()

    def debited_ids(self) -> tuple[str, ...]:
        return ()


class Capture(_Reference):
    """Post `amount` (default: all) of a pending hold to its `to_account_id` (or `@world`); release the rest."""

    type: Literal["capture"]
    hold_id: CommandRef
    amount: Amount | None = None

    @property
    def ref_id(self) -> str:
        return self.hold_id


class Void(_Reference):
    """Release a pending hold whole."""

    type: Literal["void"]
    hold_id: CommandRef

    @property
    def ref_id(self) -> str:
        return self.hold_id


class Reversal(_Reference):
    """Mirror an applied command's legs for `amount` (default: all that is left to reverse)."""

    type: Literal["reversal"]
    command_id: CommandRef
    amount: Amount | None = None

    @property
    def ref_id(self) -> str:
        return self.command_id


REVERSIBLE_TYPES = frozenset({"deposit", "withdraw", "transfer", "capture", "transaction"})
FundsCommand = Deposit | Withdraw | Transfer | Transaction | Hold
"""The commands that name their accounts and currency."""
ReferenceCommand = Capture | Void | Reversal
AnyCommand = Deposit | Withdraw | Transfer | Transaction | Hold | Capture | Void | Reversal
Command = Annotated[AnyCommand, Field(discriminator="type")]
COMMAND_ADAPTER: TypeAdapter[AnyCommand] = TypeAdapter(Command)


def parse_command(data: dict[str, Any]) -> AnyCommand:
    """Validate a decoded JSON object; raises pydantic.ValidationError."""
    # Strict python-mode validation of JSON-decoded data: ints stay ints, floats and strings are refused.
    return COMMAND_ADAPTER.validate_python(data)


class NewAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: EntityId
    currency: Currency
    overdraft_limit: Annotated[int, Field(ge=0, le=AMOUNT_MAX, strict=True)] = 0
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: Metadata) -> Metadata:
        check_metadata(value)
        return value
