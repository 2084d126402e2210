"""RQ's job format as ledgerq writes it (the API, and a worker for a refused job's claim) and reads it (the worker).

Writing: claimed commands go on their partitions' RQ queues, exactly once, many per round trip.
Reading: the job data is decoded as JSON (never pickle), only ledgerq's own function name is
accepted, the signature is checked, and just the command id is taken: the payload to apply is
the one Postgres stored when the API claimed the id.

Each job is an RQ job in RQ's own format (the hash `rq:job:<id>` with
JSON data naming `ledgerq.worker.jobs.apply_command`, status
`queued`, pushed on `rq:queue:ledgerq-p<N>`), so `rq info` and RQ's Job API
read it. Instead of RQ's one-Lua-call-per-job unique enqueue we run one Lua
script for a whole submit round with the same rule: a job whose hash exists
is left alone. The hash lives until the command is final (then it is
deleted, or kept `result_ttl`), so for a command still `queued` in Postgres
"no hash" means "never enqueued" (or lost by a Redis without durable AOF),
and enqueueing again is safe: a replay racing the outcome at most queues a
job whose command is already final, which the worker skips. The API does it on accept and on a replay; a worker does it
for a claim whose job it refused as forged. (A claim whose job Redis lost is applied from Postgres in
acceptance order: `ledgerq.worker.apply`.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from ledgerq.shared.commands import canonical_json
from ledgerq.shared.keys import JOB_FUNC, JOB_FUNCS_ACCEPTED, JOB_KEY_PREFIX, QUEUES_KEY, Keys
from ledgerq.shared.outages import ReplicasBehind
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.settings import Settings
from ledgerq.shared.signing import sign, verify_canonical

# RQ's default job timeout; the field is informative here (ledgerq jobs never run under RQ).
RQ_TIMEOUT_S = 180
FIELDS = (
    "data",
    "origin",
    "description",
    "status",
    "created_at",
    "enqueued_at",
    "result_ttl",
    "failure_ttl",
    "timeout",
)

# One partition's jobs. KEYS: the queue, then each job's hash. ARGV: len(FIELDS), the field names,
# then per job: its id, "1" if its claim was made in this round (no job can exist: the EXISTS check
# is skipped), one value per field. Pushes keep argument order. Every key is declared, and on a
# cluster all are in the partition's slot (`keys.Keys`), so the script runs on one node, atomically.
_ENQUEUE = """
local nf = tonumber(ARGV[1])
local names = {}
for f = 1, nf do names[f] = ARGV[1 + f] end
local pushed = {}
local i = 2 + nf
for k = 2, #KEYS do
  local id, fresh = ARGV[i], ARGV[i + 1]
  if fresh == '1' or redis.call('EXISTS', KEYS[k]) == 0 then
    local args = {}
    for f = 1, nf do
      args[2 * f - 1] = names[f]
      args[2 * f] = ARGV[i + 1 + f]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    pushed[#pushed + 1] = id
  end
  i = i + 2 + nf
end
for from = 1, #pushed, 500 do
  redis.call('RPUSH', KEYS[1], unpack(pushed, from, math.min(from + 499, #pushed)))
end
return pushed
"""


class Claim(NamedTuple):
    """A claimed command to enqueue; the request id rides along (unsigned) for the worker's log lines.
    `fresh`: claimed in this very round, so no job of it can exist yet (one Redis call saved)."""

    partition: int
    payload: dict[str, Any]
    request_id: str | None = None
    fresh: bool = False


def job_fields(claim: Claim, settings: Settings, now: str) -> list[str | bytes | int]:
    """The RQ job hash for one command, values in `FIELDS` order."""
    payload = claim.payload
    kwargs = {"command": payload, "signature": sign(payload, settings.signing_keys()[0])}
    if claim.request_id:
        kwargs["request_id"] = claim.request_id
    # Not compressed: zlib's set-up alone cost ~10 µs per job on these small payloads; RQ reads
    # uncompressed job data too (`Job.restore` falls back to the raw bytes), and so does the worker.
    data = json.dumps([JOB_FUNC, None, [], kwargs]).encode()
    return [
        data,
        settings.redis_keys.queue_name(claim.partition),
        f"{payload['type']} {payload['id']}",
        "queued",
        now,
        now,
        settings.result_ttl_s,
        settings.failure_ttl_s,
        RQ_TIMEOUT_S,
    ]


def enqueue_commands(
    redis: RedisClient, claims: Sequence[Claim], settings: Settings, *, wait_replicas: int | None = None
) -> set[str]:
    """Enqueue each (partition, payload) unless its job exists; one round trip per Redis node (one on
    a single Redis). Returns the job ids queued. With replicas to wait for (`settings.wait_replicas`
    unless told), only once they have it."""
    if not claims:
        return set()
    keys = settings.redis_keys
    now = rq_now()
    by_partition: dict[int, list[Claim]] = {}
    for claim in claims:
        by_partition.setdefault(claim.partition, []).append(claim)
    script = redis.register_script(_ENQUEUE)  # EVALSHA, loading the script on first use
    replicas = settings.wait_replicas if wait_replicas is None else wait_replicas
    pushed: set[str] = set()
    for node, partitions in _nodes(redis, keys, sorted(by_partition)):
        with node.pipeline(transaction=False) as pipe:
            for partition in partitions:
                job_keys, args = _script_input(keys, by_partition[partition], settings, now)
                script(keys=[keys.queue_key(partition), *job_keys], args=args, client=pipe)
            if replicas:
                _wait_for_replicas(pipe, keys.replication_mark_key(partitions[0]), replicas, settings)
            try:
                answers = pipe.execute()
            except (RedisError, OSError):
                _refresh_slots(redis)
                raise
        if replicas:
            _check_replicas(int(answers[-1]), replicas, settings.redis_wait_timeout_ms)
        for ids in answers[: len(partitions)]:
            pushed.update(p.decode() if isinstance(p, bytes) else p for p in ids)
    unlisted = {keys.queue_key(p) for p in by_partition} - _LISTED
    if unlisted:
        redis.sadd(QUEUES_KEY, *unlisted)
        _LISTED.update(unlisted)
    return pushed


def _script_input(
    keys: Keys, claims: list[Claim], settings: Settings, now: str
) -> tuple[list[str], list[str | bytes | int]]:
    job_keys: list[str] = []
    args: list[str | bytes | int] = [len(FIELDS), *FIELDS]
    for claim in claims:
        jid = keys.job_id(claim.payload["id"], claim.partition)
        job_keys.append(JOB_KEY_PREFIX + jid)
        args += [jid, "1" if claim.fresh else "0", *job_fields(claim, settings, now)]
    return job_keys, args


def _nodes(redis: RedisClient, keys: Keys, partitions: list[int]) -> list[tuple[Redis, list[int]]]:
    """The partitions grouped by the Redis server that holds them: on a cluster, by the node that
    owns each partition's slot (a round's writes and its WAIT must reach the same primary)."""
    if not isinstance(redis, RedisCluster):
        return [(redis, partitions)]
    grouped: dict[str, tuple[Redis, list[int]]] = {}
    for partition in partitions:
        node = redis.get_node_from_key(keys.queue_key(partition))  # type: ignore[no-untyped-call]
        client = redis.get_redis_connection(node)
        grouped.setdefault(node.name, (client, []))[1].append(partition)
    return list(grouped.values())


def _refresh_slots(redis: RedisClient) -> None:
    """After a node failed or answered MOVED, learn the cluster's slots again for the next round (the
    client does this itself for the commands it routes; these pipelines went to a node directly)."""
    if isinstance(redis, RedisCluster):
        # Best effort: if no node answers, the original error says so (and the next round tries again).
        with contextlib.suppress(Exception):
            redis.nodes_manager.initialize()


def _wait_for_replicas(pipe: Pipeline, mark_key: str, replicas: int, settings: Settings) -> None:
    """WAIT waits for this connection's last write. A round whose jobs all exist already (a retry after
    a 503) writes nothing, and another connection may have written those jobs: the mark written just
    before WAIT moves this connection's offset past every write the server has made, so an OK
    covers the jobs whoever wrote them."""
    pipe.set(mark_key, rq_now())
    pipe.wait(replicas, settings.redis_wait_timeout_ms)


def _check_replicas(acknowledged: int, replicas: int, timeout_ms: int) -> None:
    if acknowledged < replicas:
        raise ReplicasBehind(
            f"the enqueue reached {acknowledged} of {replicas} Redis replicas within {timeout_ms} ms; "
            "retry with the same id"
        )


_LISTED: set[str] = set()
"""Queues this process has listed in rq:queues (a set member, so listing again is harmless)."""


def rq_now() -> str:
    """RQ's own timestamp format (rq.utils.utcformat)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


# Reading: what the worker takes back out of a job hash.


@dataclass(frozen=True, slots=True)
class DecodedJob:
    job_id: str
    command_id: str | None  # set only for a genuine, signed ledgerq job
    problem: str | None = None  # why the job cannot be applied
    payload_hash: str | None = None  # of the signed payload; must equal the claim's in Postgres
    named_command_id: str | None = None  # what a rejected job claimed to be, for re-queueing the genuine one
    request_id: str | None = None  # of the HTTP request that submitted it; for log lines only (not signed)


def decode_jobs(
    job_ids: list[str], data: list[bytes | None], keys: list[str], layout: Keys, partition: int
) -> list[DecodedJob]:
    """Decode a partition's taken jobs from their RQ `data` fields (read by the take script)."""
    return [decode_job(jid, raw, keys, layout, partition) for jid, raw in zip(job_ids, data, strict=True)]


def decode_job(jid: str, data: bytes | None, keys: list[str], layout: Keys, partition: int) -> DecodedJob:
    """`keys`: the signing keys accepted. The job id must be the one its command id has in this
    partition and key layout."""
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
    if named is None or layout.job_id(named, partition) != jid:
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
