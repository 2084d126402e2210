"""Jobs as the worker reads them, and the partition queue's Lua scripts (fakeredis, fast)."""

from __future__ import annotations

import json
import pickle
import zlib

import fakeredis
import pytest

from ledgerq.shared.errors import Fenced
from ledgerq.shared.keys import JOB_FUNC, STANDALONE, inflight_key, job_id, lease_key, queue_key
from ledgerq.shared.rq_format import decode_jobs
from ledgerq.shared.signing import sign
from ledgerq.worker.jobs import apply_command
from ledgerq.worker.partition_queue import PartitionQueue


def put_job(redis: fakeredis.FakeRedis, jid: str, data: bytes) -> None:
    redis.hset(f"rq:job:{jid}", mapping={"data": data, "status": "queued"})


KEY = "k" * 32


def json_job(func: str, command_id: str, key: str = KEY, amount: int = 1) -> bytes:
    payload = {"id": command_id, "type": "deposit", "account_id": "a", "amount": amount, "currency": "USD"}
    signature = sign(payload, key)
    return zlib.compress(json.dumps([func, None, [], {"command": payload, "signature": signature}]).encode())


def stored_data(redis: fakeredis.FakeRedis, ids: list[str]) -> list[bytes | None]:
    """What the take script reads for each taken id."""
    return [redis.hget(f"rq:job:{i}", "data") for i in ids]


def test_only_ledgerq_jobs_with_matching_ids_are_accepted() -> None:
    """Another function name, a pickle payload, a mismatched id, a missing hash, a wrong key or an
    altered payload yield no command id."""
    redis = fakeredis.FakeRedis()
    good, other, pickled, mismatched = job_id("c1"), job_id("c2"), job_id("c3"), job_id("c4")
    forged, old_key = job_id("c5"), job_id("c6")
    put_job(redis, good, json_job(JOB_FUNC, "c1"))
    put_job(redis, other, json_job("os.system", "c2"))
    put_job(redis, pickled, zlib.compress(pickle.dumps(("os.system", None, ("echo",), {}))))
    put_job(redis, mismatched, json_job(JOB_FUNC, "c1"))
    put_job(redis, forged, json_job(JOB_FUNC, "c5", key="attacker-key-" + "x" * 20))
    put_job(redis, old_key, json_job(JOB_FUNC, "c6", key="previous-key-" + "y" * 20))
    ids = [good, other, pickled, mismatched, job_id("missing"), forged, old_key]
    decoded = decode_jobs(ids, stored_data(redis, ids), [KEY, "previous-key-" + "y" * 20], STANDALONE, 0)
    assert [d.command_id for d in decoded] == ["c1", None, None, None, None, None, "c6"]
    assert all(d.problem for d in decoded[1:6])
    assert decoded[5].problem == "invalid_signature" and decoded[5].named_command_id == "c5"
    # An altered amount under a valid signature of another payload is refused too.
    tampered = json.loads(zlib.decompress(json_job(JOB_FUNC, "c7")))
    tampered[3]["command"]["amount"] = 10**9
    put_job(redis, job_id("c7"), zlib.compress(json.dumps(tampered).encode()))
    decoded = decode_jobs([job_id("c7")], stored_data(redis, [job_id("c7")]), [KEY], STANDALONE, 0)
    assert decoded[0].problem == "invalid_signature"


def test_a_job_queued_before_the_namespace_move_is_still_accepted() -> None:
    """Jobs in Redis during an upgrade name `worker.jobs.apply_command`; they are ours and apply."""
    redis = fakeredis.FakeRedis()
    put_job(redis, job_id("old"), json_job("worker.jobs.apply_command", "old"))
    put_job(redis, job_id("near"), json_job("worker.jobs.apply_commands", "near"))
    ids = [job_id("old"), job_id("near")]
    decoded = decode_jobs(ids, stored_data(redis, ids), [KEY], STANDALONE, 0)
    assert [d.command_id for d in decoded] == ["old", None]


def test_the_job_function_refuses_to_run_under_rq() -> None:
    with pytest.raises(RuntimeError):
        apply_command({"id": "x"})


def test_take_moves_in_order_and_recovers_inflight_first() -> None:
    """A new owner sees the previous owner's in-flight jobs first, then the queue, in order."""
    redis = fakeredis.FakeRedis()
    redis.rpush(queue_key(0), *[f"j{n}" for n in range(5)])
    redis.set(lease_key(0), "old")
    q = PartitionQueue(redis, 0, keys=STANDALONE, result_ttl_s=10, failure_ttl_s=10)
    assert q.take("old", 2).job_ids == ["j0", "j1"]
    # The old owner dies here; a new owner takes the lease.
    redis.set(lease_key(0), "new")
    taken = q.take("new", 3)
    assert taken.job_ids == ["j0", "j1", "j2"] and taken.recovered == 2
    q.complete("new", [("j0", "finished"), ("j1", "finished"), ("j2", "failed")], 3)
    assert redis.lrange(inflight_key(0), 0, -1) == []
    assert q.take("new", 10).job_ids == ["j3", "j4"]


def test_a_stale_owner_can_neither_take_nor_complete() -> None:
    """Both scripts check the lease token: a lapsed owner's trim would drop the new owner's work."""
    redis = fakeredis.FakeRedis()
    redis.rpush(queue_key(1), "a", "b")
    redis.set(lease_key(1), "new")
    q = PartitionQueue(redis, 1, keys=STANDALONE, result_ttl_s=10, failure_ttl_s=10)
    assert q.take("new", 1).job_ids == ["a"]
    with pytest.raises(Fenced):
        q.take("old", 5)
    with pytest.raises(Fenced):
        q.complete("old", [("a", "finished")], 1)
    assert redis.lrange(inflight_key(1), 0, -1) == [b"a"]
    assert redis.lrange(queue_key(1), 0, -1) == [b"b"]


def test_what_the_codec_writes_it_reads_back() -> None:
    """One codec: the job data `rq_format` writes is the data it accepts, signature and all."""
    from ledgerq.shared.rq_format import Claim, decode_job, job_fields
    from ledgerq.shared.settings import Settings

    settings = Settings(signing_key=KEY)
    payload = {"id": "shop1:/c9", "type": "deposit", "account_id": "shop1:a", "amount": 3, "currency": "USD"}
    data = job_fields(Claim(2, payload, "req-1"), settings, "2026-01-01T00:00:00.000000Z")[0]
    assert isinstance(data, bytes)
    decoded = decode_job(job_id("shop1:/c9"), data, settings.signing_keys(), STANDALONE, 0)
    assert (decoded.command_id, decoded.problem, decoded.request_id) == ("shop1:/c9", None, "req-1")
