"""Reads: entry pages with a cursor, status fields, metrics, the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PARTITIONS, uid, wait_final

pytestmark = pytest.mark.usefixtures("workers")


def test_entries_page_with_a_cursor(http: TestClient, make_account: Callable[..., str]) -> None:
    account = make_account()
    ids = []
    for n in range(1, 8):
        command_id = uid("p")
        assert (
            http.post(
                "/v1/commands",
                json={"id": command_id, "type": "deposit", "account_id": account, "amount": n, "currency": "USD"},
            ).status_code
            == 202
        )
        ids.append(command_id)
    assert wait_final(http, ids[-1])["status"] == "applied"
    seen, after, pages = [], 0, 0
    while after is not None:
        page = http.get(f"/v1/accounts/{account}/entries", params={"after_seq": after, "limit": 3}).json()
        seen += page["entries"]
        after = page["next_after_seq"]
        pages += 1
    assert [e["command_id"] for e in seen] == ids and pages == 3
    assert [e["balance_after"] for e in seen] == [1, 3, 6, 10, 15, 21, 28]
    account_body = http.get(f"/v1/accounts/{account}").json()
    assert (account_body["balance"], account_body["entry_count"]) == (28, 7)


def test_status_carries_times_and_result(http: TestClient, make_account: Callable[..., str]) -> None:
    account = make_account()
    command_id = uid("s")
    http.post(
        "/v1/commands",
        json={"id": command_id, "type": "deposit", "account_id": account, "amount": 9, "currency": "USD"},
    )
    body = wait_final(http, command_id)
    assert body["status"] == "applied" and body["type"] == "deposit"
    assert body["accepted_at"] <= body["finished_at"] and "error" not in body
    assert [leg["amount"] for leg in body["result"]["entries"]] == [-9, 9]


def test_metrics_expose_queue_depth_and_lag_per_partition(http: TestClient) -> None:
    text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("ledgerq_queue_depth", "ledgerq_queue_lag_seconds", "ledgerq_inflight", "ledgerq_partition_owned"):
        labels = sorted(int(s.labels["partition"]) for s in families[name].samples)
        assert labels == list(range(PARTITIONS)), name
    assert all(s.value == 1 for s in families["ledgerq_partition_owned"].samples)  # the workers fixture runs


def test_openapi_schema_lists_every_endpoint(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    assert {
        "/v1/accounts",
        "/v1/accounts/{account_id}",
        "/v1/accounts/{account_id}/entries",
        "/v1/commands",
        "/v1/commands/{command_id}",
        "/v1/trial-balance",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= schema["paths"].keys()
    body = schema["paths"]["/v1/commands"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "oneOf" in body or "anyOf" in body or "discriminator" in body
    assert http.get("/docs").status_code == 200
