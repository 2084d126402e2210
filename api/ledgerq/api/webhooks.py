"""Webhook endpoints as the API manages them: create (the secret shown once), list, delete, and the
deliveries with every attempt. The webhook process (ledgerq.webhooks) does the delivering."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.errors import NotFound, WebhookTargetRefused
from ledgerq.shared.schema import EVENT_TYPES
from ledgerq.shared.webhook_targets import AllowList, TargetRefused, check_target

EventType = Literal["command.applied", "command.rejected", "command.failed", "hold.expired"]
ALL_EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
assert ALL_EVENT_TYPES == EVENT_TYPES  # one list of types: the table's CHECK is built from EVENT_TYPES


class NewWebhook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    url: Annotated[str, Field(min_length=1, max_length=2_048)]
    # Omitted: every type.
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(ALL_EVENT_TYPES))] = Field(
        default_factory=lambda: list(ALL_EVENT_TYPES)
    )


_COLUMNS = "id, url, events, created_at, deleted_at"

# The cursor starts below the first id any transaction still running can write: the endpoint gets
# every event that becomes visible from now on, and none from before.
_CREATE = text(
    f"""
    INSERT INTO webhooks (id, url, events, secret, prefix, created_by, fanout_cursor)
    VALUES (:id, :url, :events, :secret, :prefix, :key_id,
            (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16) - 1)
    RETURNING {_COLUMNS}
    """
)
_LIST = text(
    f"SELECT {_COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND starts_with(prefix, :prefix) ORDER BY created_at, id"
)
_GET = text(f"SELECT {_COLUMNS} FROM webhooks WHERE id = :id AND starts_with(prefix, :prefix)")
_DELETE = text(
    f"UPDATE webhooks SET deleted_at = now() WHERE id = :id AND starts_with(prefix, :prefix) AND deleted_at IS NULL"
    f" RETURNING {_COLUMNS}"
)
# Waits for a fan-out or claim holding these rows, so no delivery made before the delete stays pending.
_CANCEL = text(
    "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now()"
    " WHERE webhook_id = :id AND status = 'pending'"
)
_DELIVERIES = text(
    """
    SELECT d.id, d.event_id, e.type AS event_type, d.status, d.next_attempt_at, d.created_at, d.finished_at,
           coalesce((SELECT json_agg(json_build_object(
                        'n', a.n, 'made_by', a.made_by, 'started_at', a.started_at, 'finished_at', a.finished_at,
                        'status_code', a.status_code, 'error', a.error, 'duration_ms', a.duration_ms)
                        ORDER BY a.n)
                       FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS attempts
      FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
     WHERE d.webhook_id = :id AND d.id > :after {status}
     ORDER BY d.id LIMIT :n
    """
)


def create_webhook(ctx: Context, key: ApiKey, new: NewWebhook) -> dict[str, Any]:
    try:
        check_target(new.url, AllowList.parse(ctx.settings.webhook_allow_hosts))
    except TargetRefused as exc:
        raise WebhookTargetRefused(str(exc)) from exc
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    params = {
        "id": f"wh_{secrets.token_hex(12)}",
        "url": new.url,
        "events": list(dict.fromkeys(new.events)),
        "secret": secret,
        "prefix": key.prefix,
        "key_id": key.id,
    }
    with ctx.engine.begin() as conn:
        row = dict(conn.execute(_CREATE, params).one()._mapping)
    return {**row, "secret": secret}


def list_webhooks(ctx: Context, key: ApiKey) -> list[dict[str, Any]]:
    with ctx.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(_LIST, {"prefix": key.prefix})]


def get_webhook(ctx: Context, key: ApiKey, webhook_id: str) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        row = conn.execute(_GET, {"id": webhook_id, "prefix": key.prefix}).one_or_none()
    if row is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return dict(row._mapping)


def delete_webhook(ctx: Context, key: ApiKey, webhook_id: str) -> None:
    with ctx.engine.begin() as conn:
        if conn.execute(_DELETE, {"id": webhook_id, "prefix": key.prefix}).one_or_none() is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        conn.execute(_CANCEL, {"id": webhook_id})


DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


def deliveries_page(
    ctx: Context, key: ApiKey, webhook_id: str, after_id: int, limit: int, status: DeliveryStatus | None
) -> dict[str, Any]:
    get_webhook(ctx, key, webhook_id)  # 404 for another prefix's or an unknown endpoint
    query = text(_DELIVERIES.text.format(status="AND d.status = :status" if status else ""))
    with ctx.engine.connect() as conn:
        rows = conn.execute(query, {"id": webhook_id, "after": after_id, "n": limit, "status": status}).all()
    found = [dict(r._mapping) for r in rows]
    return {"deliveries": found, "next_after_id": found[-1]["id"] if len(found) == limit else None}
