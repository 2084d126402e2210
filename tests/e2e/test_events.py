"""The events outbox over real servers: one event per final outcome (and per expired hold), written by
the transaction that decided it; readers resuming from `next_after_id` miss none and see none twice
while partitions commit concurrently; a confined key sees only its accounts' events."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.context import Context
from ledgerq.api.events import events_page
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.routing import partition_for
from ledgerq.worker.apply import INSERT_EVENTS
from tests.conftest import PARTITIONS, Workers, uid, wait_final


def head(http: TestClient) -> int:
    """The id a reader starting now resumes after."""
    after = 0
    while True:
        page = http.get("/v1/events", params={"after_id": after, "limit": 1000}).json()
        if not page["events"]:
            return int(page["next_after_id"])
        after = page["next_after_id"]


def fake_event(conn: Any, command_id: str) -> None:
    row = {"n": 0, "type": "command.applied", "command_id": command_id, "accounts": [], "data": {}}
    conn.exec_driver_sql(INSERT_EVENTS, {"rows": json.dumps([row])})


def test_an_event_is_withheld_until_every_older_writer_is_done(ctx: Context) -> None:
    """The race a plain sequence loses: an older transaction still open when a younger one commits.
    The reader sees neither until the older one ends, then both, in id order."""
    start = events_page(ctx, 0, 1000)
    while start["events"]:
        start = events_page(ctx, start["next_after_id"], 1000)
    after = start["next_after_id"]
    older, younger = uid("older"), uid("younger")
    with ctx.engine.connect() as slow:
        slow.begin()
        fake_event(slow, older)  # takes its xid first
        with ctx.engine.begin() as fast:
            fake_event(fast, younger)  # committed first
        assert events_page(ctx, after, 1000)["events"] == []
        slow.commit()
    seen = [e["command_id"] for e in events_page(ctx, after, 1000)["events"]]
    assert seen[:2] == [older, younger]


def test_a_tailing_reader_sees_every_outcome_once_while_four_partitions_commit(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    by_partition: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    while any(len(a) < 3 for a in by_partition.values()):
        account = uid("ev")
        if len(by_partition[partition_for(account, PARTITIONS)]) < 3:
            assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
            by_partition[partition_for(account, PARTITIONS)].append(account)
    accounts = [a for group in by_partition.values() for a in group]
    after = head(http)
    seen: list[dict[str, Any]] = []
    pages: list[list[int]] = []
    stop = threading.Event()

    def tail() -> None:
        cursor = after
        while not stop.is_set():
            page = http.get("/v1/events", params={"after_id": cursor, "limit": 37, "wait": 1}).json()
            pages.append([e["id"] for e in page["events"]])
            seen.extend(page["events"])
            cursor = page["next_after_id"]

    reader = threading.Thread(target=tail)
    reader.start()

    def send(n: int) -> str:
        account = accounts[n % len(accounts)]
        kind = "deposit" if n % 3 else "withdraw"  # some withdrawals are refused: command.rejected
        body = {"id": uid(kind), "type": kind, "account_id": account, "amount": 10 + n % 7, "currency": "USD"}
        assert http.post("/v1/commands", json=body).status_code == 202
        return str(body["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(send, range(600)))
    finals = {i: wait_final(http, i)["status"] for i in ids}
    try:
        with ctx.engine.connect() as conn:
            expected = {
                r.id
                for r in conn.execute(
                    text("SELECT id FROM commands WHERE id = ANY(:ids) AND status <> 'queued'"), {"ids": ids}
                )
            }
        assert expected == set(ids)
        deadline_pages = 0
        while {e["command_id"] for e in seen} < set(ids) and deadline_pages < 600:
            threading.Event().wait(0.05)
            deadline_pages += 1
    finally:
        stop.set()
        reader.join(timeout=30)
    got = [e["id"] for e in seen]
    assert got == sorted(got) and len(got) == len(set(got))  # in order, none twice
    mine = [e for e in seen if e["command_id"] in finals]
    assert sorted(e["command_id"] for e in mine) == sorted(ids)  # every outcome, once
    for event in mine:
        assert event["type"] == f"command.{finals[event['command_id']]}"
        assert event["data"]["status"] == finals[event["command_id"]]
    assert {e["data"]["partition"] for e in mine} == set(range(PARTITIONS))
    assert {"command.applied", "command.rejected"} <= {e["type"] for e in mine}


def test_expired_holds_are_events_and_a_confined_key_sees_its_own(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    shop = f"shop{uid()}:"
    mine, other = f"{shop}w", uid("other")
    for account in (mine, other):
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    after = head(http)
    secret, _ = create_key(ctx.engine, "read", prefix=shop)
    deposits = [
        {"id": uid("d"), "type": "deposit", "account_id": a, "amount": 50, "currency": "USD"} for a in (mine, other)
    ]
    hold = {"id": uid("h"), "type": "hold", "account_id": mine, "amount": 20, "currency": "USD", "expires_in_s": 1}
    for body in (*deposits, hold):
        assert http.post("/v1/commands", json=body).status_code == 202
        assert wait_final(http, body["id"])["status"] == "applied"
    expired: list[dict[str, Any]] = []
    cursor = after
    for _ in range(30):
        page = http.get("/v1/events", params={"after_id": cursor, "wait": 1}).json()
        cursor = page["next_after_id"]
        expired += [e for e in page["events"] if e["type"] == "hold.expired" and e["command_id"] == hold["id"]]
        if expired:
            break
    assert len(expired) == 1 and expired[0]["accounts"] == [mine] and expired[0]["data"]["amount"] == 20
    confined = http.get("/v1/events", params={"after_id": after}, headers={"Authorization": f"Bearer {secret}"})
    events = confined.json()["events"]
    assert events and all(e["accounts"] == [mine] for e in events)
    assert f"~{deposits[0]['id']}" in {e["command_id"] for e in events}
    assert deposits[1]["id"] not in {e["command_id"] for e in events}
    for bad in ({"after_id": -1}, {"limit": 0}, {"limit": 1001}, {"wait": 31}):
        answer = http.get("/v1/events", params=bad)
        assert answer.status_code in (400, 422) and "code" in answer.json(), answer.text
