"""Webhook endpoints (admin): create, list, read, delete, and their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from ledgerq.api import webhooks as store
from ledgerq.api.body import json_object, validate
from ledgerq.api.deps import AdminKey, ContextDep
from ledgerq.api.models import DeliveriesOut, WebhookCreatedOut, WebhookOut, WebhooksOut
from ledgerq.shared.commands import INT64_MAX, PAGE_LIMIT_MAX

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
NEW_WEBHOOK = TypeAdapter(store.NewWebhook)


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreatedOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": store.NewWebhook.model_json_schema()}},
        }
    },
)
async def create_webhook(request: Request, ctx: ContextDep, key: AdminKey) -> dict[str, Any]:
    """A new endpoint; the answer holds its signing secret, shown this once."""
    new = validate(NEW_WEBHOOK, await json_object(request))
    return await run_in_threadpool(store.create_webhook, ctx, key, new)


@router.get("", response_model=WebhooksOut)
async def list_webhooks(ctx: ContextDep, key: AdminKey) -> dict[str, Any]:
    return {"webhooks": await run_in_threadpool(store.list_webhooks, ctx, key)}


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: str, ctx: ContextDep, key: AdminKey) -> dict[str, Any]:
    return await run_in_threadpool(store.get_webhook, ctx, key, webhook_id)


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
async def delete_webhook(webhook_id: str, ctx: ContextDep, key: AdminKey) -> Response:
    """Stop delivering: deliveries still pending are cancelled; the endpoint's history stays readable."""
    await run_in_threadpool(store.delete_webhook, ctx, key, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveriesOut)
async def list_deliveries(
    webhook_id: str,
    ctx: ContextDep,
    key: AdminKey,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = 100,
    status: store.DeliveryStatus | None = None,
) -> dict[str, Any]:
    """Deliveries in the order they were made, each with every attempt (status code or error)."""
    return await run_in_threadpool(store.deliveries_page, ctx, key, webhook_id, after_id, limit, status)
