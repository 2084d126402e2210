"""Reading ledgerq jobs out of Redis without running anything they name.

RQ would import whatever `func_name` a job carries; the worker never does.
It decodes the job data as JSON (never pickle), accepts only ledgerq's own
function name, and takes just the command id from it: the payload to apply
is the one Postgres stored when the API claimed the id.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from redis import Redis

from shared.keys import JOB_FUNC, job_id


def apply_command(command: dict[str, Any]) -> None:
    """The function ledgerq jobs name, so RQ tools can show them. It refuses to run under RQ:
    an RQ worker would apply out of order and outside the fenced transaction."""
    raise RuntimeError("ledgerq jobs are applied by `ledgerq worker`, never by an RQ worker")


@dataclass(frozen=True, slots=True)
class DecodedJob:
    job_id: str
    command_id: str | None
    problem: str | None = None  # why the job cannot be applied


def decode_jobs(redis: Redis, job_ids: list[str]) -> list[DecodedJob]:
    with redis.pipeline(transaction=False) as pipe:
        for jid in job_ids:
            pipe.hget(f"rq:job:{jid}", "data")
        raw = pipe.execute()
    return [_decode(jid, data) for jid, data in zip(job_ids, raw, strict=True)]


def _decode(jid: str, data: bytes | None) -> DecodedJob:
    if data is None:
        return DecodedJob(jid, None, "job hash is missing")
    try:
        func_name, _instance, _args, kwargs = json.loads(zlib.decompress(data))
        command_id = kwargs["command"]["id"]
    except (zlib.error, ValueError, TypeError, KeyError) as exc:
        return DecodedJob(jid, None, f"job data is not a ledgerq job: {type(exc).__name__}")
    if func_name != JOB_FUNC:
        return DecodedJob(jid, None, f"job names {func_name!r}, not {JOB_FUNC}")
    if not isinstance(command_id, str) or job_id(command_id) != jid:
        return DecodedJob(jid, None, "job id does not match its command id")
    return DecodedJob(jid, command_id)
