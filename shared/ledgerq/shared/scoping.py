"""Command ids as a key with an account prefix sees them, and as the ledger stores them.

A key confined to `shop1:` that sends id `order-7` owns `shop1:/order-7` in the ledger; `/` is
outside the id charset, so no unconfined id can look like a scoped one and two tenants never
collide. Such a key also reads commands it did not send that touch its accounts (an admin's
deposit on `shop1:a1`, say): it sees those under their stored id behind `~` (`~dep-9`,
`~shop:/x`), also outside the charset, so a foreign id can never be mistaken for one of its own.

The stored id is not in the client-facing charset, so the worker cannot validate a stored payload
as a client's command: `parse_stored` undoes the scoping, validates the client's command, and
puts the stored id back. What the API stores is exactly what the worker accepts.
"""

from __future__ import annotations

from typing import Any

from ledgerq.shared.commands import ID_RE, AnyCommand, parse_command

SEPARATOR = "/"
FOREIGN = "~"


def stored_id(prefix: str, shown_id: str) -> str:
    """The ledger's id for the id a key with `prefix` sends or asks for."""
    if not prefix:
        return shown_id
    if shown_id.startswith(FOREIGN):
        return shown_id[len(FOREIGN) :]
    return f"{prefix}{SEPARATOR}{shown_id}"


def shown_id(prefix: str, stored: str) -> str:
    """The id a key with `prefix` sees for a stored id (the inverse of `stored_id`)."""
    if not prefix:
        return stored
    own = f"{prefix}{SEPARATOR}"
    return stored[len(own) :] if stored.startswith(own) else f"{FOREIGN}{stored}"


def is_own(prefix: str, stored: str) -> bool:
    """Whether a key with `prefix` sent the command stored under `stored` (or any key, unconfined)."""
    return not prefix or stored.startswith(f"{prefix}{SEPARATOR}")


REFERENCE_FIELDS = ("hold_id", "command_id")
"""The fields that name another command (captures and voids name a hold, reversals their original)."""


def scope_command(prefix: str, command: AnyCommand) -> AnyCommand:
    """The command as the ledger stores it for a key with `prefix`: its id and the ids it refers to."""
    if not prefix:
        return command
    update = {"id": stored_id(prefix, command.id)}
    for name in REFERENCE_FIELDS:
        value = getattr(command, name, None)
        if isinstance(value, str):
            update[name] = stored_id(prefix, value)
    return command.model_copy(update=update)


def _unscoped(stored: object) -> tuple[str, object]:
    """(prefix, bare id) of a stored command id; an unscoped id has prefix ''."""
    if not isinstance(stored, str) or SEPARATOR not in stored:
        return "", stored
    prefix, _, bare = stored.rpartition(SEPARATOR)
    if not prefix or not ID_RE.fullmatch(prefix):
        raise ValueError(f"stored id {stored!r} has no valid scope")
    return prefix, bare


def parse_stored(payload: dict[str, Any]) -> AnyCommand:
    """Validate a payload the API stored (possibly under a scoped id); raises ValueError.

    Metadata is carried, not re-checked: the API checked its size on the JSON the client sent, and
    jsonb gives numbers back in another spelling (`1e300` as 301 digits), so a second check could
    refuse what was acknowledged. Nothing the worker applies depends on it. pydantic's
    ValidationError is a ValueError, so one `except ValueError` covers both.
    """
    metadata = payload.get("metadata")
    checked = {**payload, "metadata": None}
    prefix, checked["id"] = _unscoped(payload.get("id"))
    command = parse_command(checked)  # a reference is stored as it names the command (`CommandRef`)
    if prefix:
        command = command.model_copy(update={"id": stored_id(prefix, command.id)})
    if metadata is None:
        return command
    if not isinstance(metadata, dict):
        raise ValueError("stored metadata is not a JSON object")
    return command.model_copy(update={"metadata": metadata})
