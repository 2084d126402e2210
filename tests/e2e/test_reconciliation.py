"""Reconciliation end to end over real PostgreSQL, Redis and workers: the four statuses on JSON and on
CSV, the amount rule, the window on finished_at, deterministic pairing of shared references, malformed
input refused with its row and nothing kept, 415s, and keys confined to an account prefix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from ledgerq.api.context import Context
from ledgerq.shared import reconciliation
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.reconciliation import LedgerCommand, Record, pair
from tests.conftest import Workers, uid

PATH = "/v1/reconciliations"
CSV = {"Content-Type": "text/csv"}


def applied(http: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = {"id": uid(body["type"]), **body}
    sent = http.post("/v1/commands", json=body, headers=headers)
    assert sent.status_code == 202, sent.text
    done = http.get(f"/v1/commands/{body['id']}", params={"wait": 30}, headers=headers).json()
    assert done["status"] == "applied", done
    return done


def deposit(http: TestClient, account: str, amount: int, reference: str | None, **extra: Any) -> dict[str, Any]:
    body = {"type": "deposit", "account_id": account, "amount": amount, "currency": "USD", **extra}
    return applied(http, body if reference is None else {**body, "reference": reference})


def record(external_id: str, amount: int, reference: str, currency: str = "USD", **extra: Any) -> dict[str, Any]:
    return {"external_id": external_id, "amount": amount, "currency": currency, "reference": reference, **extra}


def posted(http: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer = http.post(PATH, json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    run: dict[str, Any] = answer.json()
    return run


def by_status(run: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in run["items"]:
        found.setdefault(item["status"], []).append(item)
    return found


def kept(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT (SELECT count(*) FROM reconciliations), (SELECT count(*) FROM reconciliation_items)")
        ).one()
    return row[0], row[1]


@pytest.fixture
def statement(http: TestClient, make_account: Callable[..., str], workers: Workers) -> dict[str, Any]:
    """A fresh account with three referenced deposits (a 1000, b 2000, d 400; no command for c) and one
    without a reference; the references are unique to this test."""
    account = make_account()
    refs = {name: uid(f"ref-{name}") for name in ("a", "b", "c", "d")}
    commands = {
        "a": deposit(http, account, 1_000, refs["a"]),
        "b": deposit(http, account, 2_000, refs["b"]),
        "d": deposit(http, account, 400, refs["d"]),
        "none": deposit(http, account, 70, None),
    }
    return {"account": account, "refs": refs, "commands": commands}


def check_four_statuses(run: dict[str, Any], statement: dict[str, Any]) -> None:
    refs, commands = statement["refs"], statement["commands"]
    assert run["summary"] == {
        "records": 3,
        "matched": 1,
        "mismatched": 1,
        "unmatched_external": 1,
        "unmatched_ledger": 1,
    }
    assert run["account_id"] == statement["account"]
    assert run["items"] == [
        {
            "n": 1,
            "status": "matched",
            "external_id": "po_a",
            "reference": refs["a"],
            "command_id": commands["a"]["id"],
            "external_amount": 1_000,
            "external_currency": "USD",
            "ledger_amount": 1_000,
            "ledger_currency": "USD",
            "date": "2024-03-04",
        },
        {
            "n": 2,
            "status": "mismatched",
            "external_id": "po_b",
            "reference": refs["b"],
            "command_id": commands["b"]["id"],
            "external_amount": 2_500,
            "external_currency": "USD",
            "ledger_amount": 2_000,
            "ledger_currency": "USD",
            "date": None,
        },
        {
            "n": 3,
            "status": "unmatched_external",
            "external_id": "po_c",
            "reference": refs["c"],
            "command_id": None,
            "external_amount": 300,
            "external_currency": "USD",
            "ledger_amount": None,
            "ledger_currency": None,
            "date": None,
        },
        {
            "n": 4,
            "status": "unmatched_ledger",
            "external_id": None,
            "reference": refs["d"],
            "command_id": commands["d"]["id"],
            "external_amount": None,
            "external_currency": None,
            "ledger_amount": 400,
            "ledger_currency": "USD",
            "date": None,
        },
    ]


def test_json_records_are_matched_mismatched_or_unmatched_and_the_run_is_kept(
    http: TestClient, statement: dict[str, Any]
) -> None:
    """The four statuses from a JSON body on one account; GET answers the same run, the list names it."""
    refs = statement["refs"]
    records = [
        record("po_a", 1_000, refs["a"], date="2024-03-04"),
        record("po_b", 2_500, refs["b"]),
        record("po_c", 300, refs["c"]),
    ]
    run = posted(http, {"records": records, "account_id": statement["account"]})
    check_four_statuses(run, statement)
    assert run["id"].startswith("rec_") and run["source"] == "api"
    assert (run["since"], run["until"]) == (None, None)
    again = http.get(f"{PATH}/{run['id']}")
    assert again.status_code == 200 and again.json() == run
    listed = http.get(PATH, params={"limit": 1000}).json()["reconciliations"]
    assert {k: v for k, v in run.items() if k != "items"} in listed


def test_csv_records_give_the_same_four_statuses(http: TestClient, statement: dict[str, Any], engine: Engine) -> None:
    """The same statement as CSV: lower-case currencies, extra columns ignored, quoted cells, a blank line."""
    refs = statement["refs"]
    body = (
        "external_id,amount,currency,reference,date,description\n"
        f'po_a,1000,usd,{refs["a"]},2024-03-04,"first, with a comma"\n'
        "\n"
        f"po_b,2500,USD,{refs['b']},,second\n"
        f"po_c,300,Usd,{refs['c']},,\n"
    )
    answer = http.post(PATH, content=body, headers=CSV, params={"account_id": statement["account"]})
    assert answer.status_code == 201, answer.text
    run = answer.json()
    check_four_statuses(run, statement)
    assert http.get(f"{PATH}/{run['id']}").json() == run
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT source, key_id, summary FROM reconciliations WHERE id = :id"), run).one()
    assert stored.source == "api" and stored.key_id and stored.summary == run["summary"]


def test_csv_columns_may_come_in_any_order_and_case_with_a_bom_and_crlf(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """Columns in any order, names in any case, a UTF-8 BOM, CRLF line ends: all matched."""
    account = make_account()
    ref = uid("ref")
    command = deposit(http, account, 1_234, ref)
    body = f"\ufeffReference,Currency,Amount,External_ID\r\n{ref},usd,1234,po_1\r\n".encode()
    answer = http.post(
        PATH, content=body, headers={"Content-Type": "text/csv; charset=utf-8"}, params={"account_id": account}
    )
    assert answer.status_code == 201, answer.text
    (item,) = answer.json()["items"]
    assert (item["status"], item["command_id"], item["date"]) == ("matched", command["id"], None)


def test_a_commands_amount_is_what_it_moves_or_its_leg_on_the_account(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """Unconfined: a transfer's amount, all a transaction moves, a withdrawal's; with an account, its leg."""
    payer, payee, fee = make_account(balance=10_000), make_account(), make_account()
    refs = [uid("ref") for _ in range(3)]
    transfer = applied(
        http,
        {
            "type": "transfer",
            "account_id": payer,
            "to_account_id": payee,
            "amount": 700,
            "currency": "USD",
            "reference": refs[0],
        },
    )
    split = applied(
        http,
        {
            "type": "transaction",
            "currency": "USD",
            "reference": refs[1],
            "legs": [
                {"account_id": payer, "amount": -1_000},
                {"account_id": payee, "amount": 900},
                {"account_id": fee, "amount": 100},
            ],
        },
    )
    withdrawal = applied(
        http, {"type": "withdraw", "account_id": payer, "amount": 250, "currency": "USD", "reference": refs[2]}
    )
    records = [record("x1", 700, refs[0]), record("x2", 1_000, refs[1]), record("x3", 250, refs[2])]
    window = {"since": transfer["finished_at"], "until": _after(withdrawal["finished_at"])}
    run = posted(http, {"records": records, **window})
    assert [(i["status"], i["ledger_amount"]) for i in run["items"]] == [
        ("matched", 700),
        ("matched", 1_000),
        ("matched", 250),
    ]
    assert run["summary"]["unmatched_ledger"] == 0  # only these three finished in the window
    # On the payee's account the transaction is its 900 leg; the withdrawal is not there at all.
    on_payee = posted(http, {"records": records, "account_id": payee})
    assert [(i["status"], i["command_id"], i["ledger_amount"]) for i in on_payee["items"]] == [
        ("matched", transfer["id"], 700),
        ("mismatched", split["id"], 900),
        ("unmatched_external", None, None),
    ]


def _after(moment: str) -> str:
    return (datetime.fromisoformat(moment) + timedelta(microseconds=1)).isoformat()


def test_the_window_is_on_finished_at_and_bounds_only_the_unmatched_ledger_side(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """`since` is inclusive and `until` exclusive; a record of a command outside the window still matches."""
    account = make_account()
    _before, first, last, after = (deposit(http, account, 100 + i, uid("ref")) for i in range(4))
    window = {"account_id": account, "since": first["finished_at"], "until": after["finished_at"]}
    run = posted(http, {"records": [], **window})
    assert [(i["status"], i["command_id"]) for i in run["items"]] == [
        ("unmatched_ledger", first["id"]),
        ("unmatched_ledger", last["id"]),
    ]
    shown = [datetime.fromisoformat(run[k]) for k in ("since", "until")]
    assert shown == [datetime.fromisoformat(first["finished_at"]), datetime.fromisoformat(after["finished_at"])]


def test_a_record_of_a_command_outside_the_window_still_matches(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """Matching ignores the window: a payout reported after it closed still finds its command."""
    account = make_account()
    ref = uid("ref")
    early = deposit(http, account, 500, ref)
    later = deposit(http, account, 600, uid("ref"))
    run = posted(
        http,
        {"records": [record("po_early", 500, ref)], "account_id": account, "since": _after(early["finished_at"])},
    )
    assert [(i["status"], i["command_id"]) for i in run["items"]] == [
        ("matched", early["id"]),
        ("unmatched_ledger", later["id"]),
    ]


def test_commands_and_records_sharing_a_reference_pair_exact_amounts_first(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """Three deposits and four records of one reference: exact pairs, then the rest in order, deterministically."""
    account = make_account()
    ref = uid("ref")
    c100, c200, c300 = (deposit(http, account, amount, ref) for amount in (100, 200, 300))
    records = [record("r1", 300, ref), record("r2", 999, ref), record("r3", 100, ref), record("r4", 5, ref)]
    runs = [posted(http, {"records": records, "account_id": account}) for _ in range(2)]
    expected = [
        ("matched", "r1", c300["id"]),
        ("mismatched", "r2", c200["id"]),
        ("matched", "r3", c100["id"]),
        ("unmatched_external", "r4", None),
    ]
    for run in runs:
        assert [(i["status"], i["external_id"], i["command_id"]) for i in run["items"]] == expected


def test_holds_are_not_on_the_ledger_side_their_captures_are(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    """A hold posts no entries, so only its capture (which moved the money) answers the reference."""
    wallet = make_account(balance=1_000)
    ref = uid("ref")
    hold = applied(http, {"type": "hold", "account_id": wallet, "amount": 300, "currency": "USD", "reference": ref})
    capture = applied(http, {"type": "capture", "hold_id": hold["id"], "amount": 200, "reference": ref})
    run = posted(http, {"records": [record("po", 200, ref)], "account_id": wallet})
    assert [(i["status"], i["command_id"]) for i in run["items"]] == [("matched", capture["id"])]
    assert run["summary"]["unmatched_ledger"] == 0


def test_a_currency_difference_is_a_mismatch(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    account = make_account()
    ref = uid("ref")
    command = deposit(http, account, 800, ref)
    run = posted(http, {"records": [record("po", 800, ref, currency="eur")], "account_id": account})
    (item,) = run["items"]
    assert (item["status"], item["command_id"], item["external_currency"], item["ledger_currency"]) == (
        "mismatched",
        command["id"],
        "EUR",
        "USD",
    )


MALFORMED_CSV: list[tuple[str, str, int]] = [
    # (body, what the detail says, the row it names)
    ("external_id,amount,currency,reference\npo_1,100,USD,r1\npo_2,12.50,USD,r2\n", "1250 for 12.50", 3),
    ("external_id,amount,currency,reference\npo_1,100,USD,r1\n\n\npo_2,-5,USD,r2\n", "positive integer", 5),
    ("external_id,amount,currency,reference\npo_1,100,dollars,r1\n", "three letters", 2),
    ("external_id,amount,currency,reference\npo_1,100,USD\n", "has 3 fields", 2),
    ("external_id,amount,currency,reference\npo_1,100,USD,\n", "reference: is required", 2),
    ("external_id,amount,currency\npo_1,100,USD\n", "no column 'reference'", 1),
    ("external_id,amount,amount,currency,reference\n", "appears twice", 1),
    ('external_id,amount,currency,reference\npo_1,100,USD,"two\nlines"\npo_2,x,USD,r2\n', "not 'x'", 4),
    ('external_id,amount,currency,reference\npo_1,100,USD,r1\npo_2,100,USD,"r2\n', "not valid CSV", 3),
    ("external_id,amount,currency,reference\npo_1,100,USD,r1\npo_2,100,USD,r\xe92\n", "not UTF-8", 3),
    ("", "empty", 1),
]


@pytest.mark.parametrize(("body", "says", "row"), MALFORMED_CSV)
def test_a_malformed_csv_row_is_a_422_naming_its_row_and_nothing_is_kept(
    http: TestClient, engine: Engine, body: str, says: str, row: int
) -> None:
    """Rows are named by the line they start on, as a person counts (header = 1); no run is kept."""
    data = body.encode("latin-1") if "\xe9" in body else body.encode()
    before = kept(engine)
    answer = http.post(PATH, content=data, headers=CSV)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_failed" and answer.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert problem["detail"].startswith(f"row {row}") and says in problem["detail"], problem
    assert problem["errors"][0]["loc"][:2] == ["body", f"row {row}"]
    assert kept(engine) == before


def test_every_malformed_row_is_listed_up_to_a_bound(http: TestClient, engine: Engine) -> None:
    """The detail names the first; `errors` lists each (at most ERRORS_MAX), so a file is fixed in one pass."""
    rows = "".join(f"po_{i},{'x' if i % 2 else i + 1},USD,r{i}\n" for i in range(100))
    before = kept(engine)
    answer = http.post(PATH, content=f"external_id,amount,currency,reference\n{rows}", headers=CSV)
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["detail"].startswith("row 3, amount:")
    assert [e["loc"][1] for e in problem["errors"]] == [f"row {i + 2}" for i in range(1, 100, 2)][
        : reconciliation.ERRORS_MAX
    ]
    assert kept(engine) == before


@pytest.mark.parametrize(
    ("records", "where"),
    [
        ([{"external_id": "a", "amount": 1, "currency": "USD", "reference": "r"}, {"amount": 1}], "records[1]"),
        ([{"external_id": "a", "amount": "100", "currency": "USD", "reference": "r"}], "records[0], amount"),
        ([{"external_id": "a", "amount": True, "currency": "USD", "reference": "r"}], "records[0], amount"),
        ([{"external_id": "a", "amount": 1.5, "currency": "USD", "reference": "r"}], "records[0], amount"),
        ([{"external_id": "a", "amount": 1, "currency": "USD", "reference": "r\x00"}], "records[0], reference"),
        ([{"external_id": "a", "amount": 1, "currency": "USD", "reference": "r" * 257}], "records[0], reference"),
        (["po_1"], "records[0]: must be an object"),
    ],
)
def test_a_malformed_json_record_is_a_422_naming_its_index_and_nothing_is_kept(
    http: TestClient, engine: Engine, records: list[Any], where: str
) -> None:
    before = kept(engine)
    answer = http.post(PATH, json={"records": records})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_failed" and answer.json()["detail"].startswith(where)
    assert kept(engine) == before


@pytest.mark.parametrize(
    "body",
    [
        {"records": [], "since": "2024-03-01T00:00:00"},  # no time zone
        {"records": [], "since": "2024-03-02T00:00:00Z", "until": "2024-03-01T00:00:00Z"},
        {"records": [], "account_id": "no spaces allowed"},
        {"records": [], "unknown": 1},
        {"records": {}},
    ],
)
def test_a_bad_scope_is_a_422_and_nothing_is_kept(http: TestClient, engine: Engine, body: dict[str, Any]) -> None:
    before = kept(engine)
    answer = http.post(PATH, json=body)
    assert answer.status_code == 422 and answer.json()["code"] == "validation_failed", answer.text
    assert kept(engine) == before


def test_csv_scope_comes_from_the_query_and_json_scope_from_the_body(http: TestClient, engine: Engine) -> None:
    before = kept(engine)
    header = "external_id,amount,currency,reference\n"
    assert http.post(PATH, content=header, headers=CSV, params={"since": "yesterday"}).status_code == 400
    after_until = {"since": "2024-03-02T00:00:00Z", "until": "2024-03-01T00:00:00Z"}
    assert http.post(PATH, content=header, headers=CSV, params=after_until).status_code == 422
    assert http.post(PATH, content=header, headers=CSV, params={"columns": "nope=x"}).status_code == 422
    mixed = http.post(PATH, json={"records": []}, params={"account_id": "a"})
    assert mixed.status_code == 400 and mixed.json()["code"] == "invalid_request"
    assert kept(engine) == before


def test_csv_columns_map_an_exports_names_to_ours(
    http: TestClient, make_account: Callable[..., str], workers: Workers
) -> None:
    account = make_account()
    ref = uid("ref")
    command = deposit(http, account, 2_500, ref)
    body = f"id,Amount,Currency,arrival_date,ledger_ref (metadata)\npo_9,2500,usd,1709510400,{ref}\n"
    columns = "external_id=id,reference=ledger_ref (metadata),date=arrival_date"
    answer = http.post(PATH, content=body, headers=CSV, params={"account_id": account, "columns": columns})
    assert answer.status_code == 201, answer.text
    (item,) = answer.json()["items"]
    assert (item["status"], item["external_id"], item["command_id"], item["date"]) == (
        "matched",
        "po_9",
        command["id"],
        "1709510400",
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "text/csv; charset=latin-1"]
)
def test_other_content_types_are_a_415_and_nothing_is_kept(http: TestClient, engine: Engine, content_type: str) -> None:
    before = kept(engine)
    headers = {"Content-Type": content_type} if content_type else {}
    answer = http.post(PATH, content=b"external_id,amount,currency,reference\n", headers=headers)
    assert answer.status_code == 415 and answer.json()["code"] == "unsupported_media_type", answer.text
    assert kept(engine) == before


def test_a_body_over_the_bound_is_a_413_and_nothing_is_kept(http: TestClient, engine: Engine) -> None:
    from ledgerq.api.body import RECONCILIATION_BODY_BYTES_MAX

    before = kept(engine)
    header = b"external_id,amount,currency,reference\n"
    body = header + b"x" * (RECONCILIATION_BODY_BYTES_MAX - len(header) + 1)
    answer = http.post(PATH, content=body, headers=CSV)
    assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"
    assert kept(engine) == before


def test_too_many_unmatched_ledger_commands_refuse_the_run(
    http: TestClient, engine: Engine, statement: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LEDGER_ITEMS_MAX the run is a 422 asking for a narrower window; nothing is kept."""
    monkeypatch.setattr(reconciliation, "LEDGER_ITEMS_MAX", 2)
    before = kept(engine)
    answer = http.post(PATH, json={"records": [], "account_id": statement["account"]})
    assert answer.status_code == 422 and "narrow it" in answer.json()["detail"], answer.text
    assert kept(engine) == before
    monkeypatch.setattr(reconciliation, "LEDGER_ITEMS_MAX", 3)
    assert posted(http, {"records": [], "account_id": statement["account"]})["summary"]["unmatched_ledger"] == 3


def test_scopes_read_for_gets_write_for_posts_and_unknown_runs_404(
    http: TestClient, keys: dict[str, str], statement: dict[str, Any]
) -> None:
    reader = {"Authorization": f"Bearer {keys['read']}"}
    body = {"records": [], "account_id": statement["account"]}
    assert http.post(PATH, json=body, headers=reader).status_code == 403
    run = posted(http, body)
    assert http.get(f"{PATH}/{run['id']}", headers=reader).json() == run
    assert http.get(PATH, headers=reader).status_code == 200
    assert http.get(f"{PATH}/rec_unknown").status_code == 404
    assert http.post(PATH, json={"records": [], "account_id": uid("missing")}).status_code == 404
    assert http.get(PATH, params={"after_id": "rec_unknown"}).status_code == 400


def tenant(ctx: Context, prefix: str, scope: str = "write") -> dict[str, str]:
    secret, _ = create_key(ctx.engine, scope, prefix=prefix, name=f"tenant {prefix}")
    return {"Authorization": f"Bearer {secret}"}


def test_a_confined_key_sees_its_accounts_commands_and_its_own_runs_only(
    http: TestClient, ctx: Context, workers: Workers
) -> None:
    """Commands touching its accounts (ids as it sees them), never another tenant's; its runs only; an
    account outside its prefix is the same 404 as a missing one."""
    shop, other = f"shop{uid()}:", f"shop{uid()}:"
    mine, theirs = f"{shop}a1", f"{other}a1"
    for account in (mine, theirs):
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    auth = tenant(ctx, shop)
    ref_own, ref_admin, ref_theirs = uid("ref"), uid("ref"), uid("ref")
    own = applied(
        http,
        {"id": "dep-1", "type": "deposit", "account_id": mine, "amount": 100, "currency": "USD", "reference": ref_own},
        headers=auth,
    )
    by_admin = deposit(http, mine, 200, ref_admin)
    deposit(http, theirs, 300, ref_theirs)
    records = [record("x1", 100, ref_own), record("x2", 200, ref_admin), record("x3", 300, ref_theirs)]
    run = posted(http, {"records": records}, headers=auth)
    assert [(i["status"], i["command_id"]) for i in run["items"][:3]] == [
        ("matched", own["id"]),  # its own id, as it sent it
        ("matched", f"~{by_admin['id']}"),  # another key's command on its account
        ("unmatched_external", None),  # another tenant's command is not there at all
    ]
    assert own["id"] == "dep-1"
    assert {i["command_id"] for i in run["items"][3:]} <= {"dep-1", f"~{by_admin['id']}"}
    assert http.get(f"{PATH}/{run['id']}", headers=auth).json() == run
    # An unconfined key reads the tenant's run with the stored ids.
    unconfined = http.get(f"{PATH}/{run['id']}").json()
    assert unconfined["items"][0]["command_id"] == f"{shop}/dep-1"
    # Another tenant sees neither the run nor the account.
    stranger = tenant(ctx, other)
    assert http.get(f"{PATH}/{run['id']}", headers=stranger).status_code == 404
    assert http.get(PATH, headers=stranger).json() == {"reconciliations": [], "next_after_id": None}
    for account in (theirs, uid("missing")):
        answer = http.post(PATH, json={"records": [], "account_id": account}, headers=auth)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    # Its own list: its run only, newest first, in pages.
    later = posted(http, {"records": [], "account_id": mine}, headers=auth)
    first_page = http.get(PATH, params={"limit": 1}, headers=auth).json()
    assert [r["id"] for r in first_page["reconciliations"]] == [later["id"]]
    assert first_page["next_after_id"] == later["id"]
    second = http.get(PATH, params={"limit": 1, "after_id": later["id"]}, headers=auth).json()
    assert [r["id"] for r in second["reconciliations"]] == [run["id"]]
    third = http.get(PATH, params={"limit": 1, "after_id": run["id"]}, headers=auth).json()
    assert third == {"reconciliations": [], "next_after_id": None}


def test_a_confined_keys_amount_counts_only_its_legs(http: TestClient, ctx: Context, workers: Workers) -> None:
    """A transaction paying a tenant and a platform fee: the tenant sees what it was paid, not the fee."""
    shop = f"shop{uid()}:"
    seller, platform = f"{shop}seller", uid("platform")
    buyer = uid("buyer")
    for account in (seller, platform, buyer):
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    deposit(http, buyer, 1_000, None)
    ref = uid("ref")
    split = applied(
        http,
        {
            "type": "transaction",
            "currency": "USD",
            "reference": ref,
            "legs": [
                {"account_id": buyer, "amount": -1_000},
                {"account_id": seller, "amount": 900},
                {"account_id": platform, "amount": 100},
            ],
        },
    )
    run = posted(http, {"records": [record("x", 900, ref)]}, headers=tenant(ctx, shop))
    assert [(i["status"], i["command_id"], i["ledger_amount"]) for i in run["items"]] == [
        ("matched", f"~{split['id']}", 900)
    ]
    assert run["summary"]["unmatched_ledger"] == 0


def _command(cid: str, amount: int, currency: str = "USD") -> LedgerCommand:
    return LedgerCommand(cid, "r", amount, currency, datetime(2024, 1, 1))


def test_pairing_is_exact_first_then_in_order() -> None:
    """The pure pairing rule, without I/O: exact pairs first, then order, leftovers reported."""
    commands = [_command("c1", 100), _command("c2", 100), _command("c3", 7, "EUR")]
    records = [(1, Record("a", 7, "USD", "r")), (2, Record("b", 100, "USD", "r"))]
    items, left = pair(records, commands)
    assert [(i.status, i.command.id if i.command else None) for i in items] == [
        ("mismatched", "c2"),
        ("matched", "c1"),
    ]
    assert left == [2]
    items, left = pair([(1, Record("a", 1, "USD", "r"))], [])
    assert [(i.status, i.command) for i in items] == [("unmatched_external", None)] and left == []
