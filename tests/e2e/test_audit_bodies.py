"""The audit log keeps what was asked and answered, capped, and never a secret."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.audit import REDACTED, kept_body
from tests.conftest import uid


def _row(http: TestClient, keys: dict[str, str], request_id: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    page = http.get("/v1/audit", params={"limit": 1000, "after_id": 0}, headers=admin).json()
    after = 0
    while True:
        page = http.get("/v1/audit", params={"limit": 1000, "after_id": after}, headers=admin).json()
        for entry in page["entries"]:
            if entry["request_id"] == request_id:
                one = http.get(f"/v1/audit/{entry['id']}", headers=admin)
                assert one.status_code == 200 and one.json() == entry
                return dict(entry)
        assert page["next_after_id"], f"no audit row for {request_id}"
        after = page["next_after_id"]


def test_a_submit_keeps_its_request_and_response(http: TestClient, keys: dict[str, str], make_account: Any) -> None:
    account = make_account()
    request_id = uid("req")
    body = {"id": uid("dep"), "type": "deposit", "account_id": account, "amount": 5, "currency": "USD"}
    sent = http.post("/v1/commands", json=body, headers={"X-Request-Id": request_id})
    assert sent.status_code == 202
    row = _row(http, keys, request_id)
    assert json.loads(row["request_body"]) == body
    assert json.loads(row["response_body"]) == sent.json()
    assert row["status"] == 202 and row["method"] == "POST" and row["path"] == "/v1/commands"


def test_refusals_keep_the_problem_they_answered(http: TestClient, keys: dict[str, str]) -> None:
    request_id = uid("req")
    refused = http.post(
        "/v1/commands",
        content=b'{"id": "x", "amount": 1.5}',
        headers={"X-Request-Id": request_id, "Content-Type": "application/json"},
    )
    assert refused.status_code == 422
    row = _row(http, keys, request_id)
    assert row["request_body"] == '{"id": "x", "amount": 1.5}'
    assert json.loads(row["response_body"])["code"] == refused.json()["code"]


def test_no_secret_is_kept_anywhere(http: TestClient, keys: dict[str, str], engine: Any) -> None:
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    request_id = uid("req")
    made = http.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/ledger"}, headers={**admin, "X-Request-Id": request_id}
    )
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    row = _row(http, keys, request_id)
    assert json.loads(row["response_body"])["secret"] == REDACTED
    assert json.loads(row["response_body"])["id"] == made.json()["id"]
    # A caller that puts its own key in a body (a pasted key in metadata) does not get it kept either.
    leak_id = uid("req")
    http.post(
        "/v1/accounts",
        json={"id": uid("acct"), "currency": "USD", "metadata": {"note": keys["admin"]}},
        headers={**admin, "X-Request-Id": leak_id},
    )
    assert REDACTED in _row(http, keys, leak_id)["request_body"]
    http.delete(f"/v1/webhooks/{made.json()['id']}", headers=admin)
    with engine.connect() as conn:
        for needle in (secret, *keys.values()):
            hits = conn.execute(
                text("SELECT count(*) FROM audit_log a WHERE strpos(a::text, :needle) > 0"), {"needle": needle}
            ).scalar()
            assert hits == 0, "a secret reached the audit log"


def test_bodies_are_capped(http: TestClient, keys: dict[str, str], ctx: Any, make_account: Any) -> None:
    account = make_account()
    cap = ctx.settings.audit_body_bytes
    commands = [
        {"id": uid("dep"), "type": "deposit", "account_id": account, "amount": 1, "currency": "USD"} for _ in range(200)
    ]
    request_id = uid("req")
    sent = http.post("/v1/commands/batch", json={"commands": commands}, headers={"X-Request-Id": request_id})
    assert sent.status_code == 200
    row = _row(http, keys, request_id)
    for kept in (row["request_body"], row["response_body"]):
        head, _, tail = kept.partition("…[")
        assert len(head.encode()) == cap and tail.endswith(" more bytes not kept]"), kept[-80:]


def test_kept_body_rules() -> None:
    assert kept_body(b"", 10, b"") == ""
    assert kept_body(b"abc", 0, b"") is None  # bodies off
    assert kept_body(b'{"secret": "s", "n": [{"password": "p\\"q"}], "token":"t"}', 100, b"") == (
        '{"secret": "[redacted]", "n": [{"password": "[redacted]"}], "token":"[redacted]"}'
    )
    # The cap cuts inside the secret: what is left of it is redacted too.
    assert kept_body(b'{"id":"w","secret":"whsec_abcdef"}', 25, b"") == (
        '{"id":"w","secret":"[redacted]"…[9 more bytes not kept]'
    )
    assert kept_body(b'{"secret": broken', 100, b"") == '{"secret": broken'  # not a string value: as sent
    assert kept_body(b"key-123456789 here", 100, b"key-123456789") == "[redacted] here"
    assert kept_body(b"0123key-123456789", 6, b"key-123456789") == "0123[r…[11 more bytes not kept]"
    assert kept_body("é".encode() * 10, 5, b"") == "éé\ufffd…[15 more bytes not kept]"
    assert kept_body(b"a\x00b", 10, b"") == "ab"
    assert kept_body(b"0123456789", 4, b"", size=1000) == "0123…[996 more bytes not kept]"


def test_a_key_confined_to_a_prefix_cannot_read_the_audit_log(http: TestClient, engine: Any) -> None:
    """The log holds every tenant's calls: a confined admin key gets 403, not a filtered view."""
    from ledgerq.shared.apikeys import create_key

    confined = {"Authorization": f"Bearer {create_key(engine, 'admin', prefix=uid('t') + ':')[0]}"}
    for path in ("/v1/audit", "/v1/audit/1"):
        refused = http.get(path, headers=confined)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text


def test_one_audit_entry_needs_an_admin_key_and_an_existing_id(http: TestClient, keys: dict[str, str]) -> None:
    assert http.get("/v1/audit/1").status_code == 403  # the write key
    missing = http.get("/v1/audit/999999999", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert http.get("/v1/audit/0", headers={"Authorization": f"Bearer {keys['admin']}"}).status_code == 400
