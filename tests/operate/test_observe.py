"""Metrics parsed with prometheus-client's own parser, and JSON log lines that carry the API's request
id into the worker, from real `ledgerq api` and `ledgerq worker` processes."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from ledgerq.ops.embedded import free_port
from tests.chaos.cluster import PARTITIONS, Cluster
from tests.conftest import uid


def scrape(url: str) -> dict[str, list[Any]]:
    """Metric family name -> its samples."""
    families = text_string_to_metric_families(httpx.get(url, timeout=5).text)
    return {family.name: family.samples for family in families}


def wait_final(http: httpx.Client, command_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()
    assert body["status"] in ("applied", "rejected"), body
    return body


def test_worker_and_api_metrics_and_request_ids_in_worker_logs(cluster: Cluster) -> None:
    port = free_port()
    worker = cluster.add_worker(
        [], LEDGERQ_LOG_FORMAT="json", LEDGERQ_LOG_LEVEL="DEBUG", LEDGERQ_METRICS_PORT=str(port)
    )
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)
    accounts = [uid("obs") for _ in range(8)]
    for account in accounts:
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    deposits = [
        http.post(
            "/v1/commands",
            json={"id": uid("dep"), "type": "deposit", "account_id": a, "amount": 100, "currency": "USD"},
            headers={"X-Request-Id": f"req-dep-{n}"},
        )
        for n, a in enumerate(accounts)
    ]
    assert all(d.status_code == 202 for d in deposits)
    overdraft_id = uid("wd")
    sent = http.post(
        "/v1/commands",
        json={"id": overdraft_id, "type": "withdraw", "account_id": accounts[0], "amount": 101, "currency": "USD"},
        headers={"X-Request-Id": "req-overdraft-1"},
    )
    assert sent.status_code == 202 and sent.headers["x-request-id"] == "req-overdraft-1"
    assert wait_final(http, overdraft_id)["error"]["code"] == "insufficient_funds"
    for d in deposits:
        assert wait_final(http, d.json()["id"])["status"] == "applied"

    with cluster.engine.connect() as conn:
        by_status = dict(conn.execute(text("SELECT status, count(*) FROM commands GROUP BY status")).all())
    worker_metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    outcomes: dict[str, float] = {}
    for sample in worker_metrics["ledgerq_worker_commands"]:
        if sample.name == "ledgerq_worker_commands_total":
            outcomes[sample.labels["outcome"]] = outcomes.get(sample.labels["outcome"], 0) + sample.value
    assert (
        outcomes
        == {"applied": by_status["applied"], "rejected": by_status["rejected"]}
        == {
            "applied": 8,
            "rejected": 1,
        }
    )
    jobs = sum(s.value for s in worker_metrics["ledgerq_worker_batch_size"] if s.name.endswith("_sum"))
    batches = sum(s.value for s in worker_metrics["ledgerq_worker_batch_size"] if s.name.endswith("_count"))
    applies = sum(s.value for s in worker_metrics["ledgerq_worker_apply_seconds"] if s.name.endswith("_count"))
    assert jobs == 9 and 1 <= batches <= 9 and applies == batches
    held = {s.labels["partition"]: s.value for s in worker_metrics["ledgerq_worker_lease_held"]}
    assert held == {str(p): 1.0 for p in range(PARTITIONS)}

    api_metrics = scrape(f"{cluster.url}/metrics")
    assert {s.labels["partition"]: s.value for s in api_metrics["ledgerq_queue_depth"]} == {
        str(p): 0.0 for p in range(PARTITIONS)
    }
    assert all(s.value == 0.0 for s in api_metrics["ledgerq_queue_lag_seconds"])
    assert worker.process is not None
    owners = {s.labels["partition"]: s.labels["owner"] for s in api_metrics["ledgerq_partition_owner"]}
    assert sorted(owners) == [str(p) for p in range(PARTITIONS)]
    assert all(f":{worker.process.pid}:" in owner for owner in owners.values())

    lines = [json.loads(line) for line in worker_log_lines(cluster, worker.log, "req-overdraft-1")]
    assert lines, "no worker log line carries the overdraft's request id"
    assert lines[0]["command_id"] == overdraft_id
    assert lines[0]["status"] == "rejected" and lines[0]["code"] == "insufficient_funds"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "ledgerq.worker"
    applied = [json.loads(line) for line in worker_log_lines(cluster, worker.log, "req-dep-3")]
    assert [line["status"] for line in applied] == ["applied"]


def worker_log_lines(cluster: Cluster, path: Any, request_id: str) -> list[str]:
    deadline = time.monotonic() + 60  # the line is written after the outcome is committed
    while time.monotonic() < deadline:
        found = [line for line in path.read_text().splitlines() if f'"request_id": "{request_id}"' in line]
        if found:
            return found
        time.sleep(0.1)
    return []


def test_metrics_for_a_partition_with_jobs_waiting_and_no_worker(cluster: Cluster) -> None:
    """With no worker, depth and the oldest job's age grow, and no partition has an owner."""
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=10)
    account = uid("idle")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    for _ in range(3):
        command = {"id": uid("q"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
        partition = http.post("/v1/commands", json=command).json()["partition"]
    time.sleep(0.2)  # so the oldest job's age is measurably above zero
    metrics = scrape(f"{cluster.url}/metrics")
    depth = {s.labels["partition"]: s.value for s in metrics["ledgerq_queue_depth"]}
    lag = {s.labels["partition"]: s.value for s in metrics["ledgerq_queue_lag_seconds"]}
    assert depth[str(partition)] == 3.0 and sum(depth.values()) == 3.0
    assert lag[str(partition)] >= 0.2
    assert "ledgerq_partition_owner" not in metrics or not metrics["ledgerq_partition_owner"]
    assert all(s.value == 0.0 for s in metrics["ledgerq_partition_owned"])


def test_lease_held_follows_a_lost_and_retaken_lease(cluster: Cluster) -> None:
    from redis import Redis

    from ledgerq.shared.keys import lease_key

    port = free_port()
    cluster.add_worker([0], LEDGERQ_METRICS_PORT=str(port))
    redis = Redis.from_url(cluster.settings.redis_url)

    def held() -> float | None:
        try:
            samples = scrape(f"http://127.0.0.1:{port}/metrics").get("ledgerq_worker_lease_held", [])
        except httpx.HTTPError:
            return None
        return next((s.value for s in samples if s.labels["partition"] == "0"), None)

    def wait_for(value: float) -> None:
        deadline = time.monotonic() + 30
        while held() != value:
            assert time.monotonic() < deadline, f"lease_held never became {value}"
            time.sleep(0.1)

    wait_for(1.0)
    redis.set(lease_key(0), "another-host:1:thief", px=60_000)  # someone else holds it now
    wait_for(0.0)
    redis.delete(lease_key(0))
    wait_for(1.0)
