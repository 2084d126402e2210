"""Logging for every ledgerq process: JSON lines for machines, plain text for people.

`LEDGERQ_LOG_FORMAT=json|text|auto` (auto: text on a terminal, JSON otherwise, so a
supervisor or container gets one JSON object per line). Context such as
`request_id`, `command_id` or `partition` goes in `extra=` and becomes a field
of its own; the API's current request id is added to every record by a filter.
"""

from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("ledgerq_request_id", default=None)
"""The id of the HTTP request being served, set by the API's audit middleware."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)  # uvicorn's copy of the message with terminal colours
        if not hasattr(record, "request_id"):
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty at INFO: a line per alembic plugin on every run, a line per HTTP request made by httpx.
    for name in ("alembic.runtime.plugins", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own loggers would print plain lines of their own; send them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
