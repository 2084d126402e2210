"""Accounts: create (idempotent on the same body), list by id prefix, read, and page through entries."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ledgerq.api import accounts as store
from ledgerq.api.body import json_object, validate
from ledgerq.api.deps import ContextDep, ReadKey, WriteKey
from ledgerq.api.holds import holds_page
from ledgerq.api.models import AccountOut, AccountsOut, BalanceOut, EntriesOut, HoldsOut
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX, NewAccount
from ledgerq.shared.errors import InvalidRequest, NotFound
from ledgerq.shared.schema import HoldStatus

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

PREFIX_PATTERN = r"^@?[A-Za-z0-9._:-]{0,128}$"
"""What an id may start with: the id charset, up to an id's length (`@` first: a system account's)."""
ACCOUNT_ID_CHARS_MAX = 160
"""The `accounts.id` column's width (system ids such as `@world:USD:3` are longer than a client's)."""


@router.post(
    "",
    status_code=201,
    response_model=AccountOut,
    responses={200: {"model": AccountOut, "description": "the same account already exists"}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": NewAccount.model_json_schema()}}}
    },
)
async def create_account(request: Request, response: Response, ctx: ContextDep, key: WriteKey) -> dict[str, Any]:
    new = validate(store.NEW_ACCOUNT, await json_object(request))
    _check_prefix(key, new.id)
    created, row = await run_in_threadpool(store.create_account, ctx, new)
    if not created:
        response.status_code = 200
    return row


@router.get("", response_model=AccountsOut)
async def list_accounts(
    ctx: ContextDep,
    key: ReadKey,
    prefix: Annotated[str, Query(pattern=PREFIX_PATTERN, description="ids that start with this")] = "",
    after_id: Annotated[
        str,
        Query(pattern=r"^[A-Za-z0-9._:@-]*$", max_length=ACCOUNT_ID_CHARS_MAX, description="the page after this id"),
    ] = "",
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
    kind: Annotated[Literal["user", "system"], Query(description="`system`: the `@world` accounts")] = "user",
) -> dict[str, Any]:
    """Accounts by id whose id starts with `prefix`; a key confined to a prefix sees only its own
    (and so never the system accounts, whose ids start with `@`)."""
    return await run_in_threadpool(store.accounts_page, ctx, prefix, after_id, limit, kind, key.prefix)


def _check_prefix(key: ApiKey, account_id: str) -> None:
    # Outside the key's prefix looks exactly like a missing account.
    if not key.covers(account_id):
        raise NotFound(f"account {account_id!r} not found")


@router.get("/{account_id}", response_model=AccountOut)
async def get_account(account_id: str, ctx: ContextDep, key: ReadKey) -> dict[str, Any]:
    _check_prefix(key, account_id)
    return await run_in_threadpool(store.get_account, ctx, account_id)


@router.get("/{account_id}/entries", response_model=EntriesOut)
async def list_entries(
    account_id: str,
    ctx: ContextDep,
    key: ReadKey,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    _check_prefix(key, account_id)
    page = await run_in_threadpool(store.entries_page, ctx, account_id, after_seq, limit, key.prefix)
    if page is None:
        raise NotFound(f"account {account_id!r} not found")
    return page


@router.get("/{account_id}/balance", response_model=BalanceOut)
async def get_balance(
    account_id: str,
    ctx: ContextDep,
    key: ReadKey,
    seq: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="after this entry")] = None,
    at: Annotated[datetime | None, Query(description="after the last entry at or before this RFC 3339 time")] = None,
) -> dict[str, Any]:
    """The balance as of an entry or a time, from that entry's `balance_after`."""
    _check_prefix(key, account_id)
    if (seq is None) == (at is None):
        raise InvalidRequest("give exactly one of seq and at")
    if at is not None and at.tzinfo is None:
        raise InvalidRequest("at must carry a time zone (RFC 3339: 2026-12-01T12:00:00Z)")
    return await run_in_threadpool(partial(store.balance_as_of, ctx, account_id, seq=seq, at=at))


@router.get("/{account_id}/holds", response_model=HoldsOut)
async def list_holds(
    account_id: str,
    ctx: ContextDep,
    key: ReadKey,
    status: Annotated[HoldStatus | None, Query()] = None,
    after_id: Annotated[str, Query(max_length=300)] = "",
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
) -> dict[str, Any]:
    """The account's holds by id, optionally of one status."""
    _check_prefix(key, account_id)
    return await run_in_threadpool(holds_page, ctx, account_id, status, after_id, limit, key.prefix)
