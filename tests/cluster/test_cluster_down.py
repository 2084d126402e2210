"""A cluster none of whose nodes answers: the API says 503 (submits, readiness), never 500, and
serves again once the nodes are back, with one claim for the retried id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.ops.embedded import ClusterServers
from ledgerq.shared.schema import commands
from tests.conftest import service_settings, uid


def test_every_node_down_answers_503_and_the_retry_heals(tmp_path: Path, servers: Any, keys: dict[str, str]) -> None:
    postgres, _ = servers
    cluster = ClusterServers(tmp_path / "down-cluster").start()
    context = Context.build(service_settings(postgres.url, cluster.url))
    try:
        with TestClient(create_app(context=context), raise_server_exceptions=False) as http:
            http.headers["Authorization"] = f"Bearer {keys['write']}"
            account = uid("down")
            assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
            body = {"id": uid("d"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
            for node in cluster.nodes:
                node.kill()
            refused = http.post("/v1/commands", json=body)
            assert refused.status_code == 503 and refused.json()["code"] == "redis_unavailable", refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False, ready.text
            for node in cluster.nodes:
                node.start()
            healed = http.post("/v1/commands", json=body)
            while healed.status_code == 503:  # until the restarted nodes agree on the slots again
                healed = http.post("/v1/commands", json=body)
            assert healed.status_code in (200, 202), healed.text
            with context.engine.connect() as conn:
                claims = conn.execute(select(func.count()).where(commands.c.id == body["id"])).scalar_one()
            assert claims == 1
    finally:
        context.close()
        cluster.stop()
