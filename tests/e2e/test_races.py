"""Races over real servers: `ledgerq api` as its own process (two uvicorn worker processes), Postgres,
Redis and the partition workers, with httpx clients in threads released together at a barrier.

Each race runs twice: with the workers live while the requests land, and with every racer queued
while no worker runs and then applied in one batch (the in-batch path of the apply rules). Proved:
racing holds never reserve beyond `balance + overdraft_limit` and have a serial explanation; of a
capture and a void racing for one hold exactly one wins; reversals racing past an original's
amount never take back more than it posted; identical submits of one command id are one 202 and replays,
applied once, and a rival payload for that id is a 409; refunds queued right behind what they
refund are applied in the same batch, whole. `ledgerq verify` is clean after each.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from ledgerq.ops.embedded import free_port
from ledgerq.ops.verify import verify
from ledgerq.shared.routing import partition_for
from ledgerq.shared.settings import Settings
from tests.conftest import PARTITIONS, SIGNING_KEY, Workers, uid

START_S_MAX = 180  # a bound on the API coming up, far beyond any healthy start on a loaded machine
WAIT_S = 30  # ?wait= per poll for a final status
PHASES = ["live", "queued"]


@pytest.fixture(scope="module")
def api_url(settings: Settings, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ledgerq api --workers 2` on the session's Postgres and Redis: racing requests meet in two processes."""
    port = free_port()
    env = {
        **os.environ,
        "LEDGERQ_DATABASE_URL": settings.database_url,
        "LEDGERQ_REDIS_URL": settings.redis_url,
        "LEDGERQ_PARTITIONS": str(settings.partitions),
        "LEDGERQ_SIGNING_KEY": SIGNING_KEY,
    }
    log = Path(tmp_path_factory.mktemp("api")) / "api.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledgerq.ops.cli", "api", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S_MAX
        while not _healthy(url):
            assert process.poll() is None, f"ledgerq api exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"ledgerq api not up in {START_S_MAX} s: {log.read_text()[-2000:]}"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def client(api_url: str, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {keys['write']}"}, timeout=60) as c:
        yield c


class Pool:
    """This module's partition workers: running, except while a queued race is sent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.running: Workers | None = None

    def start(self) -> None:
        if self.running is None:
            self.running = Workers(self.settings)

    def stop(self) -> None:
        if self.running is not None:
            self.running.close()
            self.running = None


@pytest.fixture(scope="module")
def module_pool(settings: Settings) -> Iterator[Pool]:
    running = Pool(settings)
    yield running
    running.stop()


@pytest.fixture
def pool(module_pool: Pool) -> Pool:
    """The workers, running as each test begins (for its set-up)."""
    module_pool.start()
    return module_pool


def race(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST every body at once, one thread and one warm keep-alive connection each."""
    gate = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60) as mine:
            assert mine.get("/healthz").status_code == 200  # connected before the gate opens
            gate.wait(timeout=60)
            return mine.post("/v1/commands", json=body)

    with ThreadPoolExecutor(len(bodies)) as threads:
        return list(threads.map(one, bodies))


def final(client: httpx.Client, command_id: str) -> dict[str, Any]:
    for _ in range(10):  # 10 polls of up to WAIT_S each: a bound, never reached by a healthy run
        body: dict[str, Any] = client.get(f"/v1/commands/{command_id}", params={"wait": WAIT_S}).json()
        if body["status"] in ("applied", "rejected", "failed"):
            return body
    raise AssertionError(f"{command_id} is still {body['status']}")


def applied(client: httpx.Client, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit every body (set-up, not a race), then wait for each to be applied."""
    ids = []
    for body in bodies:
        body = {"id": uid(body["type"]), **body}
        answer = client.post("/v1/commands", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(body["id"])
    done = [final(client, i) for i in ids]
    assert {d["status"] for d in done} == {"applied"}, done
    return done


def opened(client: httpx.Client, *balances: int, overdraft_limit: int = 0) -> list[str]:
    """Accounts funded with `balances` (0: none), the deposits applied."""
    accounts = []
    for _ in balances:
        account = uid("race")
        body = {"id": account, "currency": "USD", "overdraft_limit": overdraft_limit}
        created = client.post("/v1/accounts", json=body)
        assert created.status_code == 201, created.text
        accounts.append(account)
    deposits = [
        {"type": "deposit", "account_id": a, "amount": n, "currency": "USD"}
        for a, n in zip(accounts, balances, strict=True)
        if n
    ]
    if deposits:
        applied(client, *deposits)
    return accounts


def state(client: httpx.Client, account: str) -> tuple[int, int, int]:
    body = client.get(f"/v1/accounts/{account}").json()
    assert body["available"] == body["balance"] - body["held"]
    return body["balance"], body["held"], body["available"]


def run_race(
    client: httpx.Client, pool: Pool, phase: str, bodies: list[dict[str, Any]]
) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    """Race `bodies` with the workers live, or with none running and then all applied together.
    Returns the answers and each distinct id's final status, in first-sent order."""
    ids = list(dict.fromkeys(b["id"] for b in bodies))
    if phase == "queued":
        pool.stop()
        answers = race(client, bodies)
        # Nothing runs the partitions: all still queued, so the workers meet them together.
        assert {client.get(f"/v1/commands/{i}").json()["status"] for i in ids} == {"queued"}
        pool.start()
    else:
        answers = race(client, bodies)
    return answers, [final(client, i) for i in ids]


def outcome(done: dict[str, Any]) -> tuple[str, str | None]:
    return done["status"], (done.get("error") or {}).get("code")


# -- holds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("balance", "overdraft_limit", "amount"), [(1000, 0, 70), (500, 250, 100)])
def test_racing_equal_holds_reserve_exactly_what_is_there(
    client: httpx.Client,
    pool: Pool,
    engine: Engine,
    phase: str,
    balance: int,
    overdraft_limit: int,
    amount: int,
) -> None:
    """20 holds of one amount from 20 threads: exactly floor((balance + limit) / amount) are placed."""
    (wallet,) = opened(client, balance, overdraft_limit=overdraft_limit)
    bodies = [
        {"id": uid("hold"), "type": "hold", "account_id": wallet, "amount": amount, "currency": "USD"}
        for _ in range(20)
    ]
    answers, done = run_race(client, pool, phase, bodies)
    assert [a.status_code for a in answers] == [202] * 20
    placed = (balance + overdraft_limit) // amount
    assert Counter(outcome(d) for d in done) == {
        ("applied", None): placed,
        ("rejected", "insufficient_funds"): 20 - placed,
    }
    posted, held, available = state(client, wallet)
    assert (posted, held) == (balance, placed * amount) and available >= -overdraft_limit
    assert_serial(bodies, done, balance, overdraft_limit)
    assert verify(engine) == []


@pytest.mark.parametrize("phase", PHASES)
def test_racing_unequal_holds_never_over_reserve_and_have_a_serial_order(
    client: httpx.Client, pool: Pool, engine: Engine, phase: str
) -> None:
    """20 holds of different amounts: held never passes balance + limit, and each hold's outcome is
    what some one-at-a-time order of them would give."""
    balance, overdraft_limit = 1500, 300
    (wallet,) = opened(client, balance, overdraft_limit=overdraft_limit)
    bodies: list[dict[str, Any]] = [
        {"id": uid("hold"), "type": "hold", "account_id": wallet, "amount": 37 * n + 11, "currency": "USD"}
        for n in range(1, 21)
    ]
    answers, done = run_race(client, pool, phase, bodies)
    assert [a.status_code for a in answers] == [202] * 20
    assert {outcome(d) for d in done} == {("applied", None), ("rejected", "insufficient_funds")}
    reserved = sum(b["amount"] for b, d in zip(bodies, done, strict=True) if d["status"] == "applied")
    posted, held, _ = state(client, wallet)
    assert (posted, held) == (balance, reserved) and held <= balance + overdraft_limit
    assert_serial(bodies, done, balance, overdraft_limit)
    assert verify(engine) == []


def assert_serial(bodies: list[dict[str, Any]], done: list[dict[str, Any]], balance: int, overdraft_limit: int) -> None:
    """A one-at-a-time order explains the race: ordered by the held amount each applied hold reports
    after itself, every step adds exactly that hold's amount to the one before, from 0; and every
    refusal saw the balance and one of those held amounts, on top of which its hold could not fit."""
    amount = {b["id"]: b["amount"] for b in bodies}
    chain = sorted((d["result"]["held"], amount[d["id"]]) for d in done if d["status"] == "applied")
    before = 0
    for after, added in chain:
        assert after == before + added and after <= balance + overdraft_limit, chain
        before = after
    seen_held = {0, *(after for after, _ in chain)}
    for d in done:
        if d["status"] == "rejected":
            seen = d["result"]
            assert seen["balance"] == balance and seen.get("held", 0) in seen_held, seen
            assert seen.get("held", 0) + amount[d["id"]] > balance + overdraft_limit, seen


@pytest.mark.parametrize("phase", PHASES)
def test_a_capture_and_a_void_racing_for_one_hold_exactly_one_wins(
    client: httpx.Client, pool: Pool, engine: Engine, phase: str
) -> None:
    """Eight holds, a capture of 60 and a void of each racing (16 threads): one wins, the other is
    `hold_not_pending`, and the hold, the balances and held say which."""
    accounts = opened(client, *[300, 0] * 8)
    wallets, shops = accounts[::2], accounts[1::2]
    holds = applied(
        client,
        *[
            {"type": "hold", "account_id": w, "to_account_id": s, "amount": 100, "currency": "USD"}
            for w, s in zip(wallets, shops, strict=True)
        ],
    )
    pairs = [(w, s, h["id"]) for w, s, h in zip(wallets, shops, holds, strict=True)]
    bodies = []
    for _, _, hold_id in pairs:
        bodies += [
            {"id": uid("capture"), "type": "capture", "hold_id": hold_id, "amount": 60},
            {"id": uid("void"), "type": "void", "hold_id": hold_id},
        ]
    answers, done = run_race(client, pool, phase, bodies)
    assert [a.status_code for a in answers] == [202] * 16
    winners: Counter[str] = Counter()
    for (wallet, shop, hold_id), capture, void in zip(pairs, done[::2], done[1::2], strict=True):
        outcomes = {outcome(capture), outcome(void)}
        assert outcomes == {("applied", None), ("rejected", "hold_not_pending")}, (capture, void)
        won = "capture" if capture["status"] == "applied" else "void"
        winners[won] += 1
        view = client.get(f"/v1/holds/{hold_id}").json()
        if won == "capture":
            assert (view["status"], view["captured_amount"]) == ("captured", 60)
            assert state(client, wallet) == (240, 0, 240) and state(client, shop)[0] == 60
        else:
            assert (view["status"], view["captured_amount"]) == ("voided", 0)
            assert state(client, wallet) == (300, 0, 300) and state(client, shop)[0] == 0
    print(f"\ncapture/void race ({phase}): winners {dict(winners)}")
    assert verify(engine) == []


# -- reversals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
def test_reversals_racing_past_the_cap_never_take_back_more_than_was_posted(
    client: httpx.Client, pool: Pool, engine: Engine, phase: str
) -> None:
    """Six transfers of 80, each with two reversals of 60 racing: exactly one of each pair is
    `amount_exceeds_reversible`. And five reversals of 30 racing for one 80: exactly two apply."""
    accounts = opened(client, *[100, 0] * 7)
    buyers, shops = accounts[::2], accounts[1::2]
    transfers = applied(
        client,
        *[
            {"type": "transfer", "account_id": b, "to_account_id": s, "amount": 80, "currency": "USD"}
            for b, s in zip(buyers, shops, strict=True)
        ],
    )
    sales = [(b, s, t["id"]) for b, s, t in zip(buyers, shops, transfers, strict=True)]
    bodies = [
        {"id": uid("refund"), "type": "reversal", "command_id": sale, "amount": 60}
        for _, _, sale in sales[:6]
        for _ in (1, 2)
    ]
    bodies += [{"id": uid("refund"), "type": "reversal", "command_id": sales[6][2], "amount": 30} for _ in range(5)]
    answers, done = run_race(client, pool, phase, bodies)
    assert [a.status_code for a in answers] == [202] * 17
    for n, (buyer, shop, sale) in enumerate(sales[:6]):
        pair = done[2 * n : 2 * n + 2]
        assert Counter(outcome(d) for d in pair) == {
            ("applied", None): 1,
            ("rejected", "amount_exceeds_reversible"): 1,
        }, pair
        assert client.get(f"/v1/commands/{sale}").json()["reversed_amount"] == 60
        assert state(client, buyer)[0] == 80 and state(client, shop)[0] == 20
    buyer, shop, sale = sales[6]
    assert Counter(outcome(d) for d in done[12:]) == {
        ("applied", None): 2,
        ("rejected", "amount_exceeds_reversible"): 3,
    }
    assert client.get(f"/v1/commands/{sale}").json()["reversed_amount"] == 60
    assert state(client, buyer)[0] == 80 and state(client, shop)[0] == 20
    assert verify(engine) == []


def test_refunds_queued_behind_their_originals_apply_in_one_batch(
    client: httpx.Client, pool: Pool, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A deposit, a transfer, a capture and a transaction, each with its reversals queued right behind
    it on one partition and applied in one batch: outcomes as if one at a time, and the batch applied
    whole — the worker raises nothing and does not fall back to applying it one by one."""
    (wallet,) = opened(client, 1000)
    shop, fee = (neighbour(client, wallet) for _ in range(2))
    deposit: dict[str, Any] = {
        "id": uid("deposit"),
        "type": "deposit",
        "account_id": wallet,
        "amount": 200,
        "currency": "USD",
    }
    sale: dict[str, Any] = {
        "id": uid("sale"),
        "type": "transfer",
        "account_id": wallet,
        "to_account_id": shop,
        "amount": 80,
        "currency": "USD",
    }
    hold: dict[str, Any] = {
        "id": uid("hold"),
        "type": "hold",
        "account_id": wallet,
        "to_account_id": shop,
        "amount": 100,
        "currency": "USD",
    }
    capture: dict[str, Any] = {"id": uid("capture"), "type": "capture", "hold_id": hold["id"], "amount": 60}
    split: dict[str, Any] = {
        "id": uid("split"),
        "type": "transaction",
        "currency": "USD",
        "legs": [
            {"account_id": wallet, "amount": -90},
            {"account_id": shop, "amount": 60},
            {"account_id": fee, "amount": 30},
        ],
    }
    refunds: list[dict[str, Any]] = [
        {"type": "reversal", "command_id": deposit["id"], "amount": 50},
        {"type": "reversal", "command_id": sale["id"], "amount": 30},
        {"type": "reversal", "command_id": sale["id"]},  # the other 50
        {"type": "reversal", "command_id": capture["id"]},
        {"type": "reversal", "command_id": split["id"]},
    ]
    pool.stop()
    sent = [deposit, sale, hold, capture, split]
    sent += [{"id": uid("refund"), **r} for r in refunds]
    for body in sent:  # one after another, so the queue holds them in this order
        answer = client.post("/v1/commands", json=body)
        assert answer.status_code == 202 and answer.json()["partition"] == partition_for(wallet, PARTITIONS), (
            answer.text
        )
    with caplog.at_level(logging.ERROR, logger="ledgerq.worker"):
        pool.start()
        done = [final(client, b["id"]) for b in sent]
    assert [outcome(d) for d in done] == [("applied", None)] * len(sent), done
    reversed_amounts = [
        client.get(f"/v1/commands/{b['id']}").json()["reversed_amount"] for b in (deposit, sale, capture, split)
    ]
    assert reversed_amounts == [50, 80, 60, 90]
    assert [state(client, a) for a in (wallet, shop, fee)] == [(1150, 0, 1150), (0, 0, 0), (0, 0, 0)]
    assert verify(engine) == []
    raised = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not raised, f"the worker raised applying the batch and fell back to one by one: {raised}"


def neighbour(client: httpx.Client, account: str) -> str:
    """A new empty account on `account`'s partition."""
    for _ in range(1000):  # each id lands on it with probability 1/PARTITIONS
        other = uid("race")
        if partition_for(other, PARTITIONS) == partition_for(account, PARTITIONS):
            assert client.post("/v1/accounts", json={"id": other, "currency": "USD"}).status_code == 201
            return other
    raise AssertionError("no id found on the partition")


# -- idempotency -------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
def test_identical_submits_of_one_capture_are_one_202_and_replays_applied_once(
    client: httpx.Client, pool: Pool, engine: Engine, phase: str
) -> None:
    """20 threads send one capture (same id, same body) at once: one 202, nineteen 200 replays, one
    capture's entries, the hold captured once."""
    wallet, shop = opened(client, 500, 0)
    (hold,) = applied(
        client, {"type": "hold", "account_id": wallet, "to_account_id": shop, "amount": 200, "currency": "USD"}
    )
    body = {"id": uid("capture"), "type": "capture", "hold_id": hold["id"], "amount": 150}
    answers, (done,) = run_race(client, pool, phase, [body] * 20)
    assert sorted(a.status_code for a in answers) == [200] * 19 + [202]
    for a in answers:
        assert a.json()["id"] == body["id"] and a.json()["partition"] == answers[0].json()["partition"]
        assert (a.headers.get("Idempotent-Replayed") == "true") == (a.status_code == 200)
    assert outcome(done) == ("applied", None)
    assert_applied_once(engine, body["id"], 2)
    assert state(client, wallet) == (350, 0, 350) and state(client, shop)[0] == 150
    view = client.get(f"/v1/holds/{hold['id']}").json()
    assert (view["status"], view["captured_amount"]) == ("captured", 150)
    assert verify(engine) == []


@pytest.mark.parametrize("phase", PHASES)
def test_rival_payloads_for_one_id_are_one_202_replays_of_it_and_409s(
    client: httpx.Client, pool: Pool, engine: Engine, phase: str
) -> None:
    """Ten threads send a capture of 40 and ten a capture of 50 under one id: whichever is claimed
    first is the command; its twins are replays, the rivals 409, and it is applied once."""
    (wallet,) = opened(client, 500)
    (hold,) = applied(client, {"type": "hold", "account_id": wallet, "amount": 200, "currency": "USD"})
    command_id = uid("capture")
    bodies = [
        {"id": command_id, "type": "capture", "hold_id": hold["id"], "amount": 40 if n % 2 else 50} for n in range(20)
    ]
    answers, (done,) = run_race(client, pool, phase, bodies)
    (winner,) = [b["amount"] for b, a in zip(bodies, answers, strict=True) if a.status_code == 202]
    for b, a in zip(bodies, answers, strict=True):
        if a.status_code != 202:
            assert a.status_code == (200 if b["amount"] == winner else 409), a.text
    conflicts = [a.json() for a in answers if a.status_code == 409]
    assert len(conflicts) == 10 and {c["code"] for c in conflicts} == {"idempotency_conflict"}
    assert outcome(done) == ("applied", None) and done["result"]["captured_amount"] == winner
    assert_applied_once(engine, command_id, 2)
    assert state(client, wallet) == (500 - winner, 0, 500 - winner)
    assert verify(engine) == []


def assert_applied_once(engine: Engine, command_id: str, legs: int) -> None:
    """Read past the API: one finish of the command, one entry per leg."""
    with engine.connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM entries WHERE command_id = :i"), {"i": command_id}).scalar()
        row = conn.execute(text("SELECT status, attempts FROM commands WHERE id = :i"), {"i": command_id}).one()
    assert (entries, row.status, row.attempts) == (legs, "applied", 1), (entries, row)
