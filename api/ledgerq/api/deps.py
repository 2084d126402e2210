"""FastAPI dependencies: the context, and keys with a required scope (as `Annotated` aliases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import ApiKey
from ledgerq.shared.errors import Forbidden, RateLimited, Unauthorized

_bearer = HTTPBearer(auto_error=False)


async def get_context(request: Request) -> Context:  # async: a plain def would cost a thread hop
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


async def authorize(request: Request, ctx: Context, scope: str) -> ApiKey:
    """The live key of `Authorization: Bearer <key>` with at least `scope`, or the 401/403/429 error.

    The key lookup (and its rate-limit count) shares one query with concurrent requests."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send `Authorization: Bearer <key>`")
    (key,) = await ctx.auths.run_async([token])
    if isinstance(key, RateLimited):
        request.state.key_id = key.key_id  # the audit row names the key of a refused call too
    if isinstance(key, BaseException):
        raise key
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    request.state.key_id = key.id
    if not key.allows(scope):
        raise Forbidden(f"this key has scope {key.scope!r}; {scope!r} is needed")
    return key


def _require(scope: str):  # type: ignore[no-untyped-def]
    async def dependency(
        request: Request,
        ctx: ContextDep,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # documents the scheme
    ) -> ApiKey:
        return await authorize(request, ctx, scope)

    return dependency


ReadKey = Annotated[ApiKey, Depends(_require("read"))]
WriteKey = Annotated[ApiKey, Depends(_require("write"))]
AdminKey = Annotated[ApiKey, Depends(_require("admin"))]
