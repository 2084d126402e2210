"""The one place where errors become HTTP: RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledgerq.shared import errors
from ledgerq.shared.outages import ReplicasBehind, outage, refusal_code, refusing

log = logging.getLogger("ledgerq.api")

PROBLEM_TYPE_BASE = "https://ledgerq.dev/problems/"

STATUS_BY_ERROR: list[tuple[type[errors.LedgerError], int]] = [
    (errors.InvalidJson, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.BodyTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.RateLimited, 429),
    (errors.UnknownAccount, 422),
    (errors.CurrencyMismatch, 422),
    (errors.LegsSpanPartitions, 422),
    (errors.UnknownHold, 422),
    (errors.UnknownCommand, 422),
    (errors.WebhookTargetRefused, 422),
    (errors.ValidationFailed, 422),
    (errors.InvalidRequest, 400),
    (errors.TransientFault, 503),
    (errors.ConfigurationError, 503),
]

UNAVAILABLE_CODES = {"redis": "redis_unavailable", "database": "database_unavailable"}

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    429: "Too Many Requests",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_for(exc: errors.LedgerError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The RFC 9457 document: alone as an answer, or one result's `error` in a batch."""
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def error_body(exc: errors.LedgerError) -> dict[str, Any]:
    extra = {"errors": exc.errors} if isinstance(exc, errors.ValidationFailed) else {}
    return problem_body(status_for(exc), exc.code, exc.detail, **extra)


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = problem_body(status, code, detail, **extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def validation_problems(raw: list[Any]) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in raw
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.LedgerError)
    async def _ledger(_: Request, exc: errors.LedgerError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, errors.RateLimited):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif status == 503:
            headers = {"Retry-After": "1"}
        return JSONResponse(error_body(exc), status_code=status, media_type="application/problem+json", headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = validation_problems(list(exc.errors()))
        first = found[0] if found else {"loc": [], "msg": "invalid request"}
        return problem(400, "invalid_request", f"{'.'.join(first['loc'])}: {first['msg']}", errors=found)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    @app.exception_handler(ResponseError)
    @app.exception_handler(DBAPIError)
    async def _dependency_down(_: Request, exc: Exception) -> JSONResponse:
        if outage(exc) is None:  # a bug, not an outage: logged with its traceback like any other
            log.error("unexpected %s", type(exc).__name__, exc_info=exc)
            return problem(500, "internal_error", "unexpected error; nothing was acknowledged")
        return dependency_problem(exc)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        if outage(exc):  # an outage outside the classes above (the driver's own, a cluster client's)
            return dependency_problem(exc)
        return problem(500, "internal_error", "unexpected error; nothing was acknowledged")


def dependency_problem(exc: Exception) -> JSONResponse:
    """503 for an outage (`outage(exc)` is set): which dependency, and whether it refuses or is away."""
    away = outage(exc) or "redis"
    if isinstance(exc, ReplicasBehind):
        detail = str(exc)
    elif refusing(exc):
        detail = f"the queue (Redis) refuses writes for now ({refusal_code(exc)}); retry with the same id"
    elif away == "redis":
        detail = "the queue (Redis) is unreachable; retry with the same id"
    else:
        detail = "the ledger (PostgreSQL) is unreachable; retry with the same id"
    return problem(503, UNAVAILABLE_CODES[away], detail, {"Retry-After": "1"})
