"""Command ids scoped by the key's account prefix, so one client can neither read nor collide with
another's ids. A key confined to `shop1:` that sends id `order-7` owns `shop1:/order-7` in the
ledger; `/` is outside the id charset, so no unconfined id can look like a scoped one."""

from __future__ import annotations

SEPARATOR = "/"


def scoped_id(prefix: str, client_id: str) -> str:
    return f"{prefix}{SEPARATOR}{client_id}" if prefix else client_id


def client_id(prefix: str, stored_id: str) -> str:
    scope = f"{prefix}{SEPARATOR}"
    return stored_id[len(scope) :] if prefix and stored_id.startswith(scope) else stored_id
