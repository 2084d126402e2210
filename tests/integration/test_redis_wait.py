"""An enqueue waits for replicas (Redis WAIT) before its 202; Redis refusing writes answers 503.

The session's Redis has no replica, so waiting for one times out: the client gets 503 and nothing
is half-done that its retry cannot heal (the claim is kept, the job is on the primary, a retry
answers 202 once the replica is there: here, once the API stops asking for one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.shared.keys import STANDALONE, job_id
from ledgerq.shared.settings import Settings
from tests.conftest import uid


@pytest.fixture
def waiting(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    """An API that waits 50 ms for one replica on every enqueue."""
    context = Context.build(settings.model_copy(update={"redis_wait_replicas": 1, "redis_wait_timeout_ms": 50}))
    with TestClient(create_app(context=context), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {keys['write']}"
        yield client
    context.close()


def test_no_replica_acknowledging_answers_503_and_the_retry_heals(
    waiting: TestClient, http: TestClient, make_account: Callable[..., str], settings: Settings
) -> None:
    account = make_account()
    command = {"id": uid("w"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
    refused = waiting.post("/v1/commands", json=command)
    assert refused.status_code == 503, refused.text
    problem = refused.json()
    assert problem["code"] == "redis_unavailable" and "0 of 1 Redis replicas within 50 ms" in problem["detail"]
    assert refused.headers["content-type"] == "application/problem+json" and refused.headers["retry-after"] == "1"
    redis = Redis.from_url(settings.redis_url)
    assert redis.exists(f"rq:job:{job_id(command['id'])}") and redis.exists(STANDALONE.replication_mark_key(0))
    assert waiting.post("/v1/commands", json=command).status_code == 503  # still no replica: still 503
    healed = http.post("/v1/commands", json=command)  # an API that does not wait (or the replica is back)
    assert healed.status_code == 200 and healed.headers["idempotent-replayed"] == "true"
    assert http.get(f"/v1/commands/{command['id']}").json()["status"] in ("queued", "applied")


def test_readiness_shows_too_few_replicas_without_going_unready(waiting: TestClient, http: TestClient) -> None:
    answer = waiting.get("/readyz")
    assert answer.status_code == 200, answer.text  # reads still work; submits say 503 themselves
    redis = answer.json()["checks"]["redis"]
    assert redis["ok"] is True and redis["replicas"] == {"online": 0, "required": 1, "ok": False}
    assert "replicas" not in http.get("/readyz").json()["checks"]["redis"]  # not asked for, not shown


def test_redis_refusing_writes_answers_503_and_nothing_is_queued(
    http: TestClient, make_account: Callable[..., str], settings: Settings
) -> None:
    """NOREPLICAS here (min-replicas-to-write with none); a full disk's MISCONF is the chaos suite's."""
    account = make_account()
    command = {"id": uid("r"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
    redis = Redis.from_url(settings.redis_url)
    redis.config_set("min-replicas-to-write", 1)
    try:
        refused = http.post("/v1/commands", json=command)
    finally:
        redis.config_set("min-replicas-to-write", 0)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "redis_unavailable" and "NOREPLICAS" in refused.json()["detail"]
    assert not redis.exists(f"rq:job:{job_id(command['id'])}")
    # Refused at its first Redis write (the rate-limit count, before the claim): the retry is the first.
    assert http.post("/v1/commands", json=command).status_code == 202
    assert redis.exists(f"rq:job:{job_id(command['id'])}")
