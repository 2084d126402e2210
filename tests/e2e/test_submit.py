"""Submitting over HTTP: idempotency, conflicts, refusals of bad input, auth. Nothing bad is enqueued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key, revoke_key
from ledgerq.shared.schema import commands
from tests.conftest import PARTITIONS, uid, wait_final

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def queued_jobs(ctx: Context) -> int:
    return sum(int(ctx.redis.llen(ctx.settings.redis_keys.queue_key(p))) for p in range(PARTITIONS))


def job_key_of(ctx: Context, command_id: str) -> str:
    with ctx.engine.connect() as conn:
        partition = conn.execute(select(commands.c.partition).where(commands.c.id == command_id)).scalar_one()
    return ctx.settings.redis_keys.job_key(command_id, partition)


def command_rows(ctx: Context) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(commands)).scalar_one())


@pytest.fixture
def account(http: TestClient) -> str:
    """An account with no worker running in this module: submits stay queued, so counts are exact."""
    account_id = uid("sub")
    assert http.post("/v1/accounts", json={"id": account_id, "currency": "USD"}).status_code == 201
    return account_id


def deposit(account: str, **change: Any) -> dict[str, Any]:
    return {"id": uid("c"), "type": "deposit", "account_id": account, "amount": 100, "currency": "USD", **change}


def test_32_racing_identical_submits_enqueue_once(http: TestClient, ctx: Context, account: str) -> None:
    """Invariant 8: of 32 identical submits at once, one 202 and 31 replays; exactly one job queued."""
    body = deposit(account)
    before = queued_jobs(ctx)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: http.post("/v1/commands", json=body), range(32)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 31 + [202]
    assert all(a.headers.get("Idempotent-Replayed") == "true" for a in answers if a.status_code == 200)
    assert {a.json()["id"] for a in answers} == {body["id"]}
    assert queued_jobs(ctx) == before + 1


def test_same_id_other_payload_is_a_conflict(http: TestClient, ctx: Context, account: str) -> None:
    body = deposit(account)
    assert http.post("/v1/commands", json=body).status_code == 202
    before = queued_jobs(ctx)
    answer = http.post("/v1/commands", json={**body, "amount": 101})
    assert answer.status_code == 409 and answer.json()["code"] == "idempotency_conflict"
    assert answer.headers["content-type"] == "application/problem+json"
    assert queued_jobs(ctx) == before


def test_key_order_does_not_change_the_payload(http: TestClient, account: str) -> None:
    body = deposit(account, metadata={"a": 1, "b": 2})
    assert http.post("/v1/commands", json=body).status_code == 202
    reordered = json.dumps(dict(reversed(list({**body, "metadata": {"b": 2, "a": 1}}.items()))))
    again = http.post("/v1/commands", content=reordered, headers={"content-type": "application/json"})
    assert again.status_code == 200


def test_idempotency_key_header_supplies_or_must_match_the_id(http: TestClient, account: str) -> None:
    body = deposit(account)
    command_id = body.pop("id")
    first = http.post("/v1/commands", json=body, headers={"Idempotency-Key": command_id})
    assert first.status_code == 202 and first.json()["id"] == command_id
    assert first.headers["Location"] == f"/v1/commands/{command_id}"
    clash = http.post("/v1/commands", json={**body, "id": "other"}, headers={"Idempotency-Key": command_id})
    assert clash.status_code == 400 and clash.json()["code"] == "invalid_request"


def test_replay_after_rq_job_expired_does_not_enqueue_again(
    http: TestClient, ctx: Context, account: str, settings: Any
) -> None:
    """Postgres, not RQ's job hash, is the idempotency record: a final command stays final."""
    from tests.conftest import Workers

    body = deposit(account)
    assert http.post("/v1/commands", json=body).status_code == 202
    running = Workers(settings)
    try:
        assert wait_final(http, body["id"])["status"] == "applied"
    finally:
        running.close()
    job_key = job_key_of(ctx, body["id"])
    ctx.redis.delete(job_key)  # as if result_ttl passed
    before = queued_jobs(ctx)
    again = http.post("/v1/commands", json=body)
    assert again.status_code == 200 and again.json()["status"] == "applied"
    assert queued_jobs(ctx) == before and not ctx.redis.exists(job_key)


def test_a_claim_without_a_job_heals_on_retry(http: TestClient, ctx: Context, account: str) -> None:
    """A crash between claim and enqueue: the client's retry enqueues the job (once)."""
    body = deposit(account)
    assert http.post("/v1/commands", json=body).status_code == 202
    job_key = job_key_of(ctx, body["id"])
    ctx.redis.delete(job_key)
    partition = http.get(f"/v1/commands/{body['id']}").json()["partition"]
    ctx.redis.lrem(ctx.settings.redis_keys.queue_key(partition), 0, job_key.removeprefix("rq:job:"))
    before = queued_jobs(ctx)
    assert http.post("/v1/commands", json=body).status_code == 200
    assert http.post("/v1/commands", json=body).status_code == 200
    assert queued_jobs(ctx) == before + 1 and ctx.redis.exists(job_key)


BIG = 2**63


def bad_inputs(account: str, eur: str) -> Iterator[tuple[str, Any, int, str]]:
    """(name, body or raw bytes, status, code)."""
    good = deposit(account)
    yield "amount zero", {**good, "amount": 0}, 422, "validation_failed"
    yield "amount negative", {**good, "amount": -100}, 422, "validation_failed"
    yield "amount float", {**good, "amount": 100.5}, 422, "validation_failed"
    yield "amount float integral", {**good, "amount": 100.0}, 422, "validation_failed"
    yield "amount string", {**good, "amount": "100"}, 422, "validation_failed"
    yield "amount bool", {**good, "amount": True}, 422, "validation_failed"
    yield "amount 2^63", {**good, "amount": BIG}, 422, "validation_failed"
    yield "amount huge", {**good, "amount": 10**40}, 422, "validation_failed"
    yield "amount null", {**good, "amount": None}, 422, "validation_failed"
    yield "missing amount", {k: v for k, v in good.items() if k != "amount"}, 422, "validation_failed"
    yield "missing type", {k: v for k, v in good.items() if k != "type"}, 422, "validation_failed"
    yield "missing id", {k: v for k, v in good.items() if k != "id"}, 422, "validation_failed"
    yield "missing currency", {k: v for k, v in good.items() if k != "currency"}, 422, "validation_failed"
    yield "unknown type", {**good, "type": "refund"}, 422, "validation_failed"
    yield "unknown field", {**good, "note": "x"}, 422, "validation_failed"
    yield "lowercase currency", {**good, "currency": "usd"}, 422, "validation_failed"
    yield "unknown account", {**good, "account_id": uid("ghost")}, 422, "unknown_account"
    yield "currency mismatch", {**good, "currency": "EUR"}, 422, "currency_mismatch"
    yield "transfer to self", {**good, "type": "transfer", "to_account_id": account}, 422, "validation_failed"
    yield "transfer without target", {**good, "type": "transfer"}, 422, "validation_failed"
    yield "transfer across currencies", {**good, "type": "transfer", "to_account_id": eur}, 422, "currency_mismatch"
    yield "id with space", {**good, "id": "a b"}, 422, "validation_failed"
    yield "id with slash", {**good, "id": "a/b"}, 422, "validation_failed"
    yield "id too long", {**good, "id": "x" * 129}, 422, "validation_failed"
    yield "metadata too big", {**good, "metadata": {"k": "v" * 4100}}, 422, "validation_failed"
    yield "metadata not object", {**good, "metadata": [1, 2]}, 422, "validation_failed"
    yield "reference too long", {**good, "reference": "r" * 257}, 422, "validation_failed"
    yield "body too large", {**good, "reference": "r" * 70_000}, 413, "body_too_large"
    yield "invalid json", b'{"id": "x", "amount": ', 400, "invalid_json"
    yield "json array", b"[1, 2]", 400, "invalid_json"
    yield "json NaN", b'{"amount": NaN}', 400, "invalid_json"
    yield "empty body", b"", 400, "invalid_json"


def test_bad_inputs_are_refused_with_problem_json_and_nothing_enqueued(
    http: TestClient, ctx: Context, account: str
) -> None:
    """Invariant 9: every malformed submit is a 4xx problem+json; no claim, no job."""
    eur = uid("eur")
    assert http.post("/v1/accounts", json={"id": eur, "currency": "EUR"}).status_code == 201
    cases = list(bad_inputs(account, eur))
    assert len(cases) >= 25
    jobs, rows = queued_jobs(ctx), command_rows(ctx)
    for name, body, status, code in cases:
        if isinstance(body, bytes):
            answer = http.post("/v1/commands", content=body, headers={"content-type": "application/json"})
        else:
            answer = http.post("/v1/commands", json=body)
        assert answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", name
        problem = answer.json()
        assert problem.keys() >= PROBLEM_FIELDS and problem["code"] == code and problem["status"] == status, name
    assert (queued_jobs(ctx), command_rows(ctx)) == (jobs, rows)


@pytest.mark.parametrize(
    ("wait", "status"), [("-1", 400), ("31", 400), ("abc", 400), ("nan", 400), ("1e3", 400), ("0", 200), ("0.2", 200)]
)
def test_wait_is_bounded(http: TestClient, account: str, wait: str, status: int) -> None:
    body = deposit(account)
    assert http.post("/v1/commands", json=body).status_code == 202
    answer = http.get(f"/v1/commands/{body['id']}", params={"wait": wait})
    assert answer.status_code == status
    if status == 200:
        assert answer.json()["status"] == "queued"  # no worker in this module
    else:
        assert answer.json()["code"] == "invalid_request"


def test_reads_of_missing_things_are_404_problems(http: TestClient) -> None:
    for path in (f"/v1/commands/{uid()}", f"/v1/accounts/{uid()}", f"/v1/accounts/{uid()}/entries", "/v1/nowhere"):
        answer = http.get(path)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
        assert answer.json().keys() >= PROBLEM_FIELDS


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"after_seq": -1}, {"limit": "x"}])
def test_entry_paging_is_bounded(http: TestClient, account: str, query: dict[str, Any]) -> None:
    answer = http.get(f"/v1/accounts/{account}/entries", params=query)
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_request"


def test_accounts_create_is_idempotent_and_conflicts_on_change(http: TestClient) -> None:
    body = {"id": uid("acc"), "currency": "EUR", "overdraft_limit": 500, "metadata": {"tier": "gold"}}
    assert http.post("/v1/accounts", json=body).status_code == 201
    assert http.post("/v1/accounts", json=body).status_code == 200
    clash = http.post("/v1/accounts", json={**body, "currency": "USD"})
    assert clash.status_code == 409 and clash.json()["code"] == "conflict"
    got = http.get(f"/v1/accounts/{body['id']}").json()
    assert got | {"updated_at": None} == {
        **body,
        "balance": 0,
        "held": 0,
        "available": 0,
        "entry_count": 0,
        "updated_at": None,
    }
    for bad in (
        {**body, "id": "no spaces"},
        {**body, "overdraft_limit": -1},
        {**body, "currency": "euro"},
        {"id": uid()},
    ):
        answer = http.post("/v1/accounts", json=bad)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_failed"


def test_auth_missing_bad_revoked_and_scopes(
    http: TestClient, ctx: Context, keys: dict[str, str], account: str
) -> None:
    """401 without a valid key (revoked included, at once); 403 when the scope is too small."""
    body = deposit(account)
    no_auth = {"Authorization": ""}
    cases = [
        (no_auth, 401, "unauthorized"),
        ({"Authorization": "Bearer nonsense"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {keys['write']}x"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {keys['read']}"}, 403, "forbidden"),
    ]
    for headers, status, code in cases:
        answer = http.post("/v1/commands", json=body, headers=headers)
        assert answer.status_code == status and answer.json()["code"] == code, headers
        assert answer.json().keys() >= PROBLEM_FIELDS
    assert http.get(f"/v1/accounts/{account}", headers={"Authorization": f"Bearer {keys['read']}"}).status_code == 200
    secret, key = create_key(ctx.engine, "write", name="to revoke")
    assert http.get(f"/v1/accounts/{account}", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert revoke_key(ctx.engine, key.id)
    assert http.get(f"/v1/accounts/{account}", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    with ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM commands WHERE id = :c"), {"c": body["id"]}).scalar() == 0


def test_prefix_key_sees_only_its_accounts(http: TestClient, ctx: Context) -> None:
    """A key confined to `shop1:` gets the same 404 for `shop2:` accounts as for missing ones."""
    mine, theirs = f"shop1:{uid()}", f"shop2:{uid()}"
    for account_id in (mine, theirs):
        assert http.post("/v1/accounts", json={"id": account_id, "currency": "USD"}).status_code == 201
    secret, _ = create_key(ctx.engine, "write", prefix="shop1:")
    auth = {"Authorization": f"Bearer {secret}"}
    assert http.get(f"/v1/accounts/{mine}", headers=auth).status_code == 200
    assert http.get(f"/v1/accounts/{theirs}", headers=auth).json()["code"] == "not_found"
    moved = http.post("/v1/commands", headers=auth, json=deposit(theirs))
    assert moved.status_code == 404
    steal = http.post(
        "/v1/commands",
        headers=auth,
        json={**deposit(mine), "type": "transfer", "account_id": theirs, "to_account_id": mine},
    )
    assert steal.status_code == 404


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(ctx: Context, settings: Any, account: str) -> None:
    from ledgerq.api.app import create_app

    limited = Context(settings.model_copy(update={"rate_limit": "3/minute"}), ctx.engine, ctx.redis)
    secret, _ = create_key(ctx.engine, "read", name="rate-limited")
    with TestClient(create_app(context=limited)) as client:
        answers = [
            client.get(f"/v1/accounts/{account}", headers={"Authorization": f"Bearer {secret}"}) for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].json()["code"] == "rate_limited" and 1 <= int(answers[-1].headers["Retry-After"]) <= 60


def test_a_full_partition_queue_pushes_back_with_503(
    ctx: Context, settings: Any, http: TestClient, account: str
) -> None:
    """Back-pressure instead of unbounded Redis growth: nothing is claimed or enqueued."""
    from ledgerq.api.app import create_app

    assert http.post("/v1/commands", json=deposit(account)).status_code == 202  # no worker: it waits
    bounded = Context(settings.model_copy(update={"queue_depth_max": 1}), ctx.engine, ctx.redis)
    body = deposit(account)
    jobs, rows = queued_jobs(ctx), command_rows(ctx)
    with TestClient(create_app(context=bounded)) as client:
        client.headers["Authorization"] = http.headers["Authorization"]
        answer = client.post("/v1/commands", json=body)
    assert answer.status_code == 503 and answer.json()["code"] == "queue_full" and answer.headers["Retry-After"]
    assert (queued_jobs(ctx), command_rows(ctx)) == (jobs, rows)


def test_metadata_nesting_is_bounded(http: TestClient, account: str) -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(9):
        inner["k"] = {}
        inner = inner["k"]
    answer = http.post("/v1/commands", json=deposit(account, metadata=nested))
    assert answer.status_code == 422 and "nest" in answer.json()["detail"]


def test_command_ids_are_scoped_per_key_prefix(http: TestClient, ctx: Context) -> None:
    """Two confined clients using the same id neither collide nor see each other's command."""
    client_command = uid("order")
    answers = {}
    for shop in ("shopA", "shopB"):
        account = f"{shop}:{uid()}"
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
        secret, _ = create_key(ctx.engine, "write", prefix=f"{shop}:")
        auth = {"Authorization": f"Bearer {secret}"}
        sent = http.post("/v1/commands", headers=auth, json={**deposit(account), "id": client_command})
        assert sent.status_code == 202 and sent.json()["id"] == client_command
        assert sent.headers["Location"] == f"/v1/commands/{client_command}"
        read = http.get(f"/v1/commands/{client_command}", headers=auth)
        assert read.status_code == 200 and read.json()["id"] == client_command
        answers[shop] = auth
    # The plain id names neither; both are stored under their scopes.
    assert http.get(f"/v1/commands/{client_command}").status_code == 404
    with ctx.engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM commands WHERE id LIKE :p"), {"p": f"%/{client_command}"}).scalars()
        assert sorted(stored) == [f"shopA:/{client_command}", f"shopB:/{client_command}"]


def test_nul_characters_are_refused_not_a_500(http: TestClient, account: str) -> None:
    """Found by schemathesis: PostgreSQL's jsonb cannot store NUL; refuse it at the door."""
    for change in ({"metadata": {"\x00": None}}, {"metadata": {"k": "a\x00b"}}, {"reference": "a\x00"}):
        answer = http.post("/v1/commands", json=deposit(account, **change))
        assert answer.status_code == 422 and answer.json()["code"] == "validation_failed", change
    answer = http.post("/v1/accounts", json={"id": uid("nul"), "currency": "USD", "metadata": {"\x00": 1}})
    assert answer.status_code == 422
