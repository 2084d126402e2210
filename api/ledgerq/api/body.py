"""Reading request bodies ourselves: a size bound, a JSON object, and pydantic errors as 422s.

FastAPI's own body parsing would accept any size and answer every failure with
one shape; money needs precise refusals (`invalid_json`, `body_too_large`,
`validation_failed`) before anything is claimed or enqueued.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from ledgerq.api.problems import validation_problems
from ledgerq.shared.errors import BodyTooLarge, InvalidJson, UnsupportedMediaType, ValidationFailed

BODY_BYTES_MAX = 64 * 1024
BATCH_BODY_BYTES_MAX = 1024 * 1024
"""`POST /v1/commands/batch` carries up to 1,000 commands; every other body is at most 64 KiB."""

M = TypeVar("M")


def require_json(request: Request) -> None:
    """Bodies are `application/json` (any parameters, `charset=utf-8` say): a form post or plain text is
    refused, not guessed at, before a byte of it is read."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        shown = f"{media_type!r}" if media_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"the body must be application/json, not {shown}; send Content-Type: application/json"
        )


async def json_object(request: Request, bytes_max: int = BODY_BYTES_MAX) -> dict[str, Any]:
    require_json(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > bytes_max:
        raise BodyTooLarge(f"the body must be at most {bytes_max} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise BodyTooLarge(f"the body must be at most {bytes_max} bytes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidJson("the body must be a JSON object")
    return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def validate(adapter: TypeAdapter[M], data: dict[str, Any]) -> M:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        found = validation_problems(exc.errors())
        first = found[0]
        where = ".".join(first["loc"]) or "body"
        raise ValidationFailed(f"{where}: {first['msg']}", found) from exc
