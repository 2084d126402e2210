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
RECONCILIATION_BODY_BYTES_MAX = 10 * 1024 * 1024
"""`POST /v1/reconciliations` carries a statement, as JSON or CSV: 10 MiB holds some 100k records."""
CSV_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})

M = TypeVar("M")


def media_type(request: Request) -> str:
    """The body's media type, without parameters, lower case ('' when none is sent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    """Bodies are `application/json` (any parameters, `charset=utf-8` say): a form post or plain text is
    refused, not guessed at, before a byte of it is read."""
    media_type_ = media_type(request)
    if media_type_ != "application/json":
        shown = f"{media_type_!r}" if media_type_ else "no Content-Type"
        raise UnsupportedMediaType(
            f"the body must be application/json, not {shown}; send Content-Type: application/json"
        )


async def bounded_body(request: Request, bytes_max: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass `bytes_max`."""
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
    return b"".join(chunks)


async def csv_body(request: Request, bytes_max: int) -> bytes:
    """A `text/csv` body (UTF-8: no charset, or `charset=utf-8`), bounded as JSON bodies are; anything
    else is a 415 before a byte of it is read. Decoding is the parser's, so an error can name its row."""
    media_type_ = media_type(request)
    charset = _charset(request.headers.get("content-type", ""))
    if media_type_ != "text/csv" or (charset is not None and charset not in CSV_CHARSETS):
        shown = request.headers.get("content-type") or "no Content-Type"
        raise UnsupportedMediaType(f"the body must be UTF-8 text/csv, not {shown!r}")
    return await bounded_body(request, bytes_max)


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def json_object(request: Request, bytes_max: int = BODY_BYTES_MAX) -> dict[str, Any]:
    require_json(request)
    return parse_object(await bounded_body(request, bytes_max))


def parse_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a body (`json_object` without the reading: large bodies parse in a thread)."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
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
