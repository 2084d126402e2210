"""Redis is not trusted with code or money: jobs pushed straight into Redis never run or move the ledger."""

from __future__ import annotations

import hashlib
import json
import pickle
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ledgerq.api.context import Context
from ledgerq.shared.keys import JOB_FUNC, QUARANTINE_KEY, inflight_key, job_id, job_key, queue_key
from ledgerq.shared.settings import Settings
from ledgerq.shared.signing import sign
from tests.conftest import Workers, uid, wait_final


def push(ctx: Context, partition: int, jid: str, data: bytes) -> None:
    ctx.redis.hset(f"rq:job:{jid}", mapping={"data": data, "status": "queued"})
    ctx.redis.rpush(queue_key(partition), jid)


def test_forged_and_foreign_jobs_are_never_executed_or_applied(
    http: TestClient, ctx: Context, settings: Settings, make_account: Callable[..., str], tmp_path: Path
) -> None:
    account = make_account()
    genuine: dict[str, Any] = {
        "id": uid("g"),
        "type": "deposit",
        "account_id": account,
        "amount": 500,
        "currency": "USD",
    }
    accepted = http.post("/v1/commands", json=genuine)
    assert accepted.status_code in (200, 202)
    partition = accepted.json()["partition"]
    canary = tmp_path / "pwned"
    # 1. A forged copy of the genuine job: same id, the amount raised, signed with the wrong key.
    forged = {**genuine, "amount": 10**12}
    data = [JOB_FUNC, None, [], {"command": forged, "signature": sign(forged, "attacker" * 8)}]
    ctx.redis.hset(job_key(genuine["id"]), "data", zlib.compress(json.dumps(data).encode()))
    # 2. Another function name, JSON-encoded; 3. a pickle payload; 4. a deposit out of thin air with no claim.
    push(ctx, partition, "evil-json", zlib.compress(json.dumps(["os.system", None, [f"touch {canary}"], {}]).encode()))
    push(ctx, partition, "evil-pickle", zlib.compress(pickle.dumps(("os.system", None, (f"touch {canary}",), {}))))
    ghost = {**genuine, "id": uid("ghost"), "amount": 777}
    ghost_data = [JOB_FUNC, None, [], {"command": ghost, "signature": sign(ghost, "attacker" * 8)}]
    push(ctx, partition, job_id(ghost["id"]), zlib.compress(json.dumps(ghost_data).encode()))
    before = ctx.redis.llen(QUARANTINE_KEY)
    running = Workers(settings)
    try:
        assert wait_final(http, genuine["id"])["status"] == "applied"
        deadline = time.monotonic() + 30
        while (
            ctx.redis.llen(queue_key(partition)) + ctx.redis.llen(inflight_key(partition))
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    finally:
        running.close()
    assert not canary.exists()
    body = http.get(f"/v1/accounts/{account}").json()
    assert body["balance"] == 500  # the genuine amount, once; not the forged 10^12, not the ghost's 777
    assert http.get(f"/v1/commands/{ghost['id']}").status_code == 404
    reasons = [
        json.loads(r)["reason"]
        for r in ctx.redis.lrange(QUARANTINE_KEY, 0, ctx.redis.llen(QUARANTINE_KEY) - before - 1)
    ]
    assert "invalid_signature" in reasons and any("os.system" in r or "not a ledgerq job" in r for r in reasons)
    assert len(reasons) >= 4


def audit_rows(http: TestClient, admin: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = http.get(
            "/v1/audit", params={"after_id": after, "limit": 1000}, headers={"Authorization": f"Bearer {admin}"}
        ).json()
        rows += page["entries"]
        after = page["next_after_id"]
    return rows


def test_every_mutating_call_is_audited(http: TestClient, keys: dict[str, str]) -> None:
    """Seed 003: time, key id, client address, request id, method, path, body hash and status, for
    accepted and refused calls alike; readable only with an admin key."""
    body = json.dumps({"id": uid("aud"), "currency": "USD"}).encode()
    made = http.post(
        "/v1/accounts", content=body, headers={"X-Request-Id": "req-audit-1", "content-type": "application/json"}
    )
    assert made.status_code == 201 and made.headers["x-request-id"] == "req-audit-1"
    refused = http.post("/v1/commands", json={"id": "x"}, headers={"Authorization": "", "X-Request-Id": "req-audit-2"})
    assert refused.status_code == 401
    generated = http.post("/v1/commands", content=b"{not json", headers={"content-type": "application/json"})
    assert generated.status_code == 400 and len(generated.headers["x-request-id"]) == 32
    rows = {r["request_id"]: r for r in audit_rows(http, keys["admin"])}
    first = rows["req-audit-1"]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/v1/accounts", 201)
    assert first["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert first["key_id"] == keys["write"].split("_")[1] and first["client_addr"] and first["at"]
    assert rows["req-audit-2"]["status"] == 401 and rows["req-audit-2"]["key_id"] is None
    assert rows[generated.headers["x-request-id"]]["status"] == 400
    assert http.get("/v1/audit").status_code == 403  # the write key
    assert (
        http.get("/v1/audit", params={"limit": 0}, headers={"Authorization": f"Bearer {keys['admin']}"}).status_code
        == 400
    )


def test_a_nul_in_the_path_is_audited_without_failing_the_round(http: TestClient, keys: dict[str, str]) -> None:
    """Audit rows of concurrent requests share one statement: a path Postgres text cannot hold is cleaned,
    so it cannot cost its neighbours their rows."""
    answer = http.post("/v1/commands/%00x", json={}, headers={"X-Request-Id": "req-audit-nul"})
    assert answer.status_code in (401, 404, 405)
    rows = {r["request_id"]: r for r in audit_rows(http, keys["admin"])}
    assert rows["req-audit-nul"]["path"] == "/v1/commands/x"
