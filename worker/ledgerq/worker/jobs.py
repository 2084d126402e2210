"""Reading ledgerq jobs out of Redis without running anything they name.

RQ would import whatever `func_name` a job carries; the worker never does.
It decodes the job data as JSON (never pickle), accepts only ledgerq's own
function name, and takes just the command id from it: the payload to apply
is the one Postgres stored when the API claimed the id.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from redis import Redis

from ledgerq.shared.commands import canonical_json
from ledgerq.shared.keys import JOB_FUNC, JOB_FUNCS_ACCEPTED, job_id
from ledgerq.shared.signing import verify_canonical


def apply_command(command: dict[str, Any]) -> None:
    """The function ledgerq jobs name, so RQ tools can show them. It refuses to run under RQ:
    an RQ worker would apply out of order and outside the fenced transaction."""
    raise RuntimeError("ledgerq jobs are applied by `ledgerq worker`, never by an RQ worker")


@dataclass(frozen=True, slots=True)
class DecodedJob:
    job_id: str
    command_id: str | None  # set only for a genuine, signed ledgerq job
    problem: str | None = None  # why the job cannot be applied
    payload_hash: str | None = None  # of the signed payload; must equal the claim's in Postgres
    named_command_id: str | None = None  # what a rejected job claimed to be, for re-queueing the genuine one
    request_id: str | None = None  # of the HTTP request that submitted it; for log lines only (not signed)


def decode_jobs(job_ids: list[str], data: list[bytes | None], keys: list[str]) -> list[DecodedJob]:
    """Decode taken jobs from their RQ `data` fields (read by the take script)."""
    return [decode_job(jid, raw, keys) for jid, raw in zip(job_ids, data, strict=True)]


def decode_job(jid: str, data: bytes | None, keys: list[str]) -> DecodedJob:
    if data is None:
        return DecodedJob(jid, None, "job hash is missing")
    try:
        func_name, _instance, _args, kwargs = json.loads(_uncompressed(data))
        payload = kwargs["command"]
        command_id = payload["id"]
        signature = kwargs.get("signature")
        request_id = kwargs.get("request_id")
    except (ValueError, TypeError, KeyError) as exc:
        return DecodedJob(jid, None, f"job data is not a ledgerq job: {type(exc).__name__}")
    named = command_id if isinstance(command_id, str) else None
    if func_name not in JOB_FUNCS_ACCEPTED:
        return DecodedJob(jid, None, f"job names {func_name!r}, not {JOB_FUNC}", named_command_id=named)
    if named is None or job_id(named) != jid:
        return DecodedJob(jid, None, "job id does not match its command id")
    if not isinstance(payload, dict):
        return DecodedJob(jid, None, "invalid_signature", named_command_id=named)
    canonical = canonical_json(payload).encode()  # signed and hashed: built once
    if not verify_canonical(canonical, signature, keys):
        return DecodedJob(jid, None, "invalid_signature", named_command_id=named)
    return DecodedJob(
        jid,
        named,
        payload_hash=hashlib.sha256(canonical).hexdigest(),
        request_id=request_id[:64] if isinstance(request_id, str) else None,
    )


def _uncompressed(data: bytes) -> bytes:
    """RQ's rule (`Job.restore`): zlib-compressed job data, or else the raw bytes."""
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


QUARANTINE_KEY = "ledgerq:quarantine"
QUARANTINE_MAX = 10_000


def quarantine(redis: Redis, partition: int, jobs: list[tuple[DecodedJob, str]]) -> None:
    """Keep a bounded record of refused jobs for operators (`LRANGE ledgerq:quarantine 0 -1`)."""
    with redis.pipeline(transaction=False) as pipe:
        for job, reason in jobs:
            pipe.lpush(
                QUARANTINE_KEY,
                json.dumps(
                    {
                        "job_id": job.job_id,
                        "partition": partition,
                        "reason": reason,
                        "names": job.named_command_id or job.command_id,
                    }
                ),
            )
        pipe.ltrim(QUARANTINE_KEY, 0, QUARANTINE_MAX - 1)
        pipe.execute()
