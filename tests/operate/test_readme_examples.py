"""The README's Python examples, run as written against a live API and worker: the client session,
and the Django, Flask and FastAPI snippets (only the URL and key come from the test's cluster); and
the webhook receivers, each through its framework's test client, given deliveries signed as
ledgerq's sender signs them, and tampered, stale or unsigned ones."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import Cluster
from tests.conftest import uid

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
WEBHOOK_SECRET = "whsec_readme0123456789abcdef0123456789"
WEBHOOK_PATH = "/ledgerq/webhook"
urlpatterns: list[Any] = []  # the URLconf of the Django tests (ROOT_URLCONF is this module)


def block_after(marker: str) -> str:
    """The first ```python block after `marker` in the README."""
    found = re.search(re.escape(marker) + r".*?```python\n(.*?)```", README, re.S)
    assert found, marker
    return found.group(1)


def load(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"README:{name}", "exec"), module.__dict__)
    return module


@pytest.fixture
def live(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    cluster.add_worker([])
    monkeypatch.setenv("LEDGERQ_URL", cluster.url)
    monkeypatch.setenv("LEDGERQ_API_KEY", cluster.key)
    yield cluster


def open_account(cluster: Cluster, balance: int = 0) -> str:
    from ledgerq_client import LedgerqClient

    account = uid("readme")
    with LedgerqClient(cluster.url, cluster.key) as ledger:
        ledger.create_account(account, "USD")
        if balance:
            assert ledger.wait(ledger.submit("deposit", account, balance, "USD").id).status == "applied"
    return account


def configure_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__, SECRET_KEY="t" * 50)
        django.setup()


def test_the_client_session(live: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    source = block_after("## From Python")
    source = source.replace('"http://127.0.0.1:8000", "lq_…"', f'"{live.url}", "{live.key}"')
    source = source.replace('"carol"', f'"{uid("carol")}"')
    load("readme_session", source)
    first, second = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"cmd-[0-9a-f]{32} queued", first)
    assert second == "applied 2500"


def test_the_django_view(live: Cluster) -> None:
    configure_django()
    from django.test import RequestFactory

    views = load("readme_django_views", block_after("**Django**"))
    account = open_account(live, balance=1000)
    token = uid("tok")
    answer = views.withdraw(RequestFactory().post("/", {"amount": "300", "token": token}), account)
    assert answer.status_code == 202
    body: dict[str, Any] = json.loads(answer.content)
    assert body["command"] == f"wd-{token}" and body["status"] == "queued"
    refused = views.withdraw(RequestFactory().post("/", {"amount": "5", "token": uid("t")}), uid("nobody"))
    assert refused.status_code == 422 and json.loads(refused.content)["error"] == "unknown_account"


def test_the_flask_app(live: Cluster) -> None:
    app = load("readme_flask", block_after("**Flask**")).app
    account = open_account(live)
    answer = app.test_client().post(f"/accounts/{account}/deposits", json={"amount": 700, "token": uid("dep")})
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "applied" and answer.get_json()["error"] is None


def test_the_fastapi_app(live: Cluster) -> None:
    from fastapi.testclient import TestClient

    app = load("readme_fastapi", block_after("**FastAPI**")).app
    account = open_account(live, balance=100)
    with TestClient(app) as client:
        done = client.post(f"/accounts/{account}/withdrawals", params={"amount": 40, "token": uid("t")})
        refused = client.post(f"/accounts/{account}/withdrawals", params={"amount": 400, "token": uid("t")})
    assert done.status_code == 200 and done.json()["status"] == "applied"
    assert refused.json()["status"] == "rejected"


def test_the_curl_session_answers_what_the_readme_shows(live: Cluster) -> None:
    """The README's curl lines, run by bash as written (only URL and KEY set): each answers the status,
    and where shown the body, that its comment promises."""
    found = re.search(r"## A curl session.*?```sh\n(.*?)```", README, re.S)
    assert found
    script = found.group(1)
    script = re.sub(r"^URL=\S+", f"URL={live.url}", script, count=1, flags=re.M)
    script = re.sub(r"^KEY=\S+", f"KEY={live.key}", script, count=1, flags=re.M)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, check=True)
    status = re.compile(r"(?:^HTTP/1\.1 (\d{3})|[}\]] (\d{3})$)")
    promised = [m.group(1) or m.group(2) for line in script.splitlines() if (m := status.search(line[2:]))]
    answered = [m.group(1) or m.group(2) for line in done.stdout.splitlines() if (m := status.search(line))]
    assert len(promised) >= 13 and answered == promised, done.stdout
    for line in script.splitlines():  # the concrete values the comments show
        for fact in re.findall(r'"(?:balance|status|code)":(?:\d+|"[a-z_]+")', line):
            assert fact in done.stdout, fact


def test_the_marketplace_split(live: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    source = block_after("**A marketplace split**").replace(
        '"http://127.0.0.1:8000", "lq_…"', f'"{live.url}", "{live.key}"'
    )
    load("readme_split", source)
    assert capsys.readouterr().out.split() == ["applied", "8500"]


def promised_output(source: str) -> list[str]:
    """The `# ...` lines after the block's last statement: what it prints, as the README shows it."""
    lines = source.rstrip().splitlines()
    shown: list[str] = []
    while lines and lines[-1].startswith("# "):
        shown.insert(0, lines.pop()[2:])
    assert shown, "the example shows no output"
    return shown


def test_the_payout_through_a_failing_gateway(live: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    source = block_after("**A payout through a gateway that may fail**").replace(
        '"http://127.0.0.1:8000", "lq_…"', f'"{live.url}", "{live.key}"'
    )
    load("readme_payout", source)
    assert capsys.readouterr().out.splitlines() == promised_output(source)


def test_the_refund(live: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    source = block_after("**A refund**").replace('"http://127.0.0.1:8000", "lq_…"', f'"{live.url}", "{live.key}"')
    load("readme_refund", source)
    assert capsys.readouterr().out.splitlines() == promised_output(source)


def test_the_events_reader(live: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    source = block_after("**Reading the events**").replace(
        '"http://127.0.0.1:8000", "lq_…"', f'"{live.url}", "{live.key}"'
    )
    load("readme_events", source)
    assert capsys.readouterr().out.splitlines() == promised_output(source)


Post = Callable[[bytes, dict[str, str]], int]
"""Posts a body with headers to the receiver's path; answers the status code."""


def delivery(event_id: int, t: int, secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    """A body and headers as ledgerq's webhook sender makes them (its own functions), for one event."""
    from ledgerq.shared.event_view import event_body
    from ledgerq.webhooks.send import signature

    event = {
        "id": event_id,
        "type": "command.applied",
        "command_id": f"order-{event_id}",
        "accounts": ["buyer-7", "seller-3"],
        "at": datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC),
        "data": {"type": "transfer", "status": "applied", "partition": 1},
    }
    body = event_body(event)
    headers = {
        "Content-Type": "application/json",
        "Ledgerq-Event-Id": str(event_id),
        "Ledgerq-Event-Type": "command.applied",
        "Ledgerq-Attempt": "1",
        "Ledgerq-Signature": signature(secret, t, body),
    }
    return body, headers


def receives_once(post: Post, capsys: pytest.CaptureFixture[str]) -> None:
    """A signed delivery is handled and answered 204; its retry (a new attempt and timestamp) is answered
    204 and not handled again; tampered, wrongly signed, stale, future, unsigned and malformed ones are
    400 and not handled."""
    event_id, now = random.randrange(1, 2**62), int(time.time())
    body, headers = delivery(event_id, now)
    assert post(body, headers) == 204
    assert capsys.readouterr().out.splitlines() == [f"handled command.applied order-{event_id}"]
    retry, retry_headers = delivery(event_id, now + 1)
    assert retry == body and post(retry, {**retry_headers, "Ledgerq-Attempt": "2"}) == 204
    unsigned = {k: v for k, v in headers.items() if k != "Ledgerq-Signature"}
    refused = [  # each would be a new event (an id not handled yet) if it were accepted
        (body.replace(str(event_id).encode(), str(event_id + 1).encode()), headers),  # tampered
        delivery(event_id + 1, now, secret="whsec_someone_else"),
        delivery(event_id + 1, now - 3600),  # a replay of an old capture
        delivery(event_id + 1, now + 3600),
        (body, unsigned),
        (body, {**headers, "Ledgerq-Signature": "t=now,v1=nonsense"}),
    ]
    assert [post(b, h) for b, h in refused] == [400] * len(refused)
    assert capsys.readouterr().out == ""


@pytest.fixture
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERQ_WEBHOOK_SECRET", WEBHOOK_SECRET)


@pytest.mark.usefixtures("webhook_secret")
def test_the_django_webhook_receiver(capsys: pytest.CaptureFixture[str]) -> None:
    configure_django()
    from django.test import Client
    from django.urls import clear_url_caches, path

    views = load("readme_django_webhooks", block_after("**A webhook receiver in Django**"))
    urlpatterns[:] = [path(WEBHOOK_PATH.lstrip("/"), views.ledgerq_webhook)]
    clear_url_caches()
    client = Client()

    def post(body: bytes, headers: dict[str, str]) -> int:
        answer = client.post(WEBHOOK_PATH, data=body, content_type="application/json", headers=headers)
        return int(answer.status_code)

    receives_once(post, capsys)
    assert client.get(WEBHOOK_PATH).status_code == 405


@pytest.mark.usefixtures("webhook_secret")
def test_the_flask_webhook_receiver(capsys: pytest.CaptureFixture[str]) -> None:
    client = load("readme_flask_webhooks", block_after("**A webhook receiver in Flask**")).app.test_client()

    def post(body: bytes, headers: dict[str, str]) -> int:
        answer = client.post(WEBHOOK_PATH, data=body, headers=headers)
        assert answer.status_code == 204 or answer.get_json()["error"], answer.data
        return int(answer.status_code)

    receives_once(post, capsys)


@pytest.mark.usefixtures("webhook_secret")
def test_the_fastapi_webhook_receiver(capsys: pytest.CaptureFixture[str]) -> None:
    from fastapi.testclient import TestClient

    app = load("readme_fastapi_webhooks", block_after("**A webhook receiver in FastAPI**")).app
    with TestClient(app) as client:

        def post(body: bytes, headers: dict[str, str]) -> int:
            answer = client.post(WEBHOOK_PATH, content=body, headers=headers)
            assert answer.status_code == 204 or answer.json()["error"], answer.text
            return answer.status_code

        receives_once(post, capsys)
