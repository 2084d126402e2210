"""What is particular to a cluster: each partition's enqueue waits for the replica of its own node,
readiness and durability are those of every primary, and operators' views read every node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from ledgerq.api.context import Context
from ledgerq.ops.embedded import ClusterServers, PostgresServer
from ledgerq.shared.routing import partition_for
from tests.conftest import PARTITIONS, Workers, uid, wait_final


def account_on(http: TestClient, partition: int) -> str:
    while True:
        account = uid(f"c{partition}")
        if partition_for(account, PARTITIONS) == partition:
            assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
            return account


def deposit(account: str) -> dict[str, Any]:
    return {"id": uid("d"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}


def test_a_node_without_its_replica_refuses_only_its_own_partitions(
    http: TestClient, ctx: Context, servers: tuple[PostgresServer, ClusterServers]
) -> None:
    _, cluster = servers
    node_of = {p: ctx.redis.get_node_from_key(ctx.settings.redis_keys.queue_key(p)).port for p in range(PARTITIONS)}
    here = next(p for p in range(PARTITIONS) if node_of[p] != node_of[0])
    accounts = {p: account_on(http, p) for p in (0, here)}
    replica = next(
        n for n in cluster.nodes if Redis(port=n.port).info("replication").get("master_port") == node_of[0]
    )
    replica.kill()
    try:
        refused = http.post("/v1/commands", json=(body := deposit(accounts[0])))
        assert refused.status_code == 503 and refused.json()["code"] == "redis_unavailable", refused.text
        assert "0 of 1 Redis replicas" in refused.json()["detail"]
        assert http.post("/v1/commands", json=deposit(accounts[here])).status_code == 202  # another node
        ready = http.get("/readyz").json()
        assert ready["status"] == "ready" and ready["checks"]["redis"]["replicas"]["ok"] is False, ready
    finally:
        replica.start()
    again = http.post("/v1/commands", json=body)
    while again.status_code == 503:  # until the restarted replica has synced
        again = http.post("/v1/commands", json=body)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true", again.text


def test_readiness_durability_and_partitions_cover_every_primary(http: TestClient, keys: dict[str, str]) -> None:
    ready = http.get("/readyz").json()
    redis = ready["checks"]["redis"]
    assert redis["durable"] is True and redis["detail"].endswith("on all 3 primaries"), redis
    assert redis["replicas"] == {"online": 1, "required": 1, "ok": True}, redis
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    partitions = http.get("/v1/partitions", headers=admin).json()["partitions"]
    assert [p["partition"] for p in partitions] == list(range(PARTITIONS))


def test_ledgerq_status_reads_a_cluster(settings: Any, http: TestClient) -> None:
    assert http.post("/v1/commands", json=(body := deposit(account_on(http, 1)))).status_code == 202  # stays queued
    env = {**os.environ, "LEDGERQ_DATABASE_URL": settings.database_url, "LEDGERQ_REDIS_URL": settings.redis_url}
    env["LEDGERQ_PARTITIONS"] = str(PARTITIONS)
    out = subprocess.run(
        [sys.executable, "-m", "ledgerq.ops.cli", "status", "--json"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["partitions"]
    assert len(rows) == PARTITIONS and rows[1]["queued"] >= 1, rows
    running = Workers(settings)  # leave nothing queued for the next test's owner of partition 1
    try:
        assert wait_final(http, body["id"])["status"] == "applied"
    finally:
        running.close()


def test_a_job_id_outside_the_partitions_slot_is_refused_and_the_partition_goes_on(
    http: TestClient, ctx: Context, settings: Any
) -> None:
    """A forged or foreign id pushed on a partition's queue names a hash in another slot, which no
    script of the partition may touch: it is refused like a job without a hash, and the rest apply."""
    keys = settings.redis_keys
    account = account_on(http, 3)
    first, last = deposit(account), deposit(account)
    assert http.post("/v1/commands", json=first).status_code == 202
    strays = ["lq-" + "0" * 40, keys.job_id("elsewhere", 1)]  # untagged; another partition's tag
    ctx.redis.rpush(keys.queue_key(3), *strays)
    assert http.post("/v1/commands", json=last).status_code == 202
    running = Workers(settings)
    try:
        assert [wait_final(http, c["id"])["status"] for c in (first, last)] == ["applied", "applied"]
    finally:
        running.close()
    assert ctx.redis.llen(keys.queue_key(3)) == 0 and ctx.redis.llen(keys.inflight_key(3)) == 0
    assert ctx.redis.zcard(keys.started_registry_key(3)) == 0
    refused = [json.loads(r)["job_id"] for r in ctx.redis.lrange("ledgerq:quarantine", 0, 20)]
    assert set(strays) <= set(refused), refused
    entries = http.get(f"/v1/accounts/{account}/entries").json()["entries"]
    assert [e["command_id"] for e in entries] == [first["id"], last["id"]]
