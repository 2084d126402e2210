"""Webhooks against a real local HTTP receiver and real `ledgerq webhooks` processes.

Each test makes its endpoints with an admin key confined to a prefix of its own, so its receiver
gets the events of its own accounts only, however many other tests run beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.settings import Settings
from tests.conftest import uid

LEDGERQ = [sys.executable, "-m", "ledgerq.ops.cli"]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    started: float
    ended: float = 0.0


@dataclass
class Receiver:
    """Answers by path: `/ok` 200; `/flaky` 500 to the first three attempts of each event, then 200;
    `/hang` never answers an event's first attempt in time, then 200; `/slow` answers after 0.3 s."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hang_s: float = 5.0

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def seen(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def event_ids(self, path: str) -> set[int]:
        return {int(r.headers["ledgerq-event-id"]) for r in self.seen(path) if r.ended}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            with receiver.lock:
                earlier = sum(
                    1
                    for r in receiver.requests
                    if r.path == self.path and r.headers["ledgerq-event-id"] == seen.headers["ledgerq-event-id"]
                )
                receiver.requests.append(seen)
            code = 200
            if self.path == "/flaky" and earlier < 3:
                code = 500
            elif self.path == "/hang" and earlier == 0:
                time.sleep(receiver.hang_s)
            elif self.path == "/slow":
                time.sleep(0.3)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the webhook process gave up on us (timeout) or was killed
            seen.ended = time.monotonic()

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    found = Receiver(server)
    server.RequestHandlerClass = _handler(found)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


class Tenant:
    """An admin key confined to a fresh prefix, with a client using it and the webhooks it made."""

    def __init__(self, http: TestClient, engine: Any) -> None:
        self.prefix = f"{uid('wh')}:"
        self.key = create_key(engine, "admin", prefix=self.prefix, name="webhook test")[0]
        self.http = http
        self.made: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {self.key}"}, **kwargs)

    def webhook(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, **({"events": events} if events else {})}
        made = self.call("POST", "/v1/webhooks", json=body)
        assert made.status_code == 201, made.text
        self.made.append(made.json()["id"])
        return dict(made.json())

    def deposits(self, n: int, amount: int = 100) -> list[str]:
        account = f"{self.prefix}a"
        self.call("POST", "/v1/accounts", json={"id": account, "currency": "USD"})
        ids = []
        for _ in range(n):
            command_id = uid("dep")
            sent = self.call(
                "POST",
                "/v1/commands",
                json={"id": command_id, "type": "deposit", "account_id": account, "amount": amount, "currency": "USD"},
            )
            assert sent.status_code == 202, sent.text
            ids.append(command_id)
        for command_id in ids:
            assert self.call("GET", f"/v1/commands/{command_id}", params={"wait": 30}).json()["status"] == "applied"
        return ids

    def event_ids(self) -> set[int]:
        found: set[int] = set()
        after = 0
        while True:
            page = self.call("GET", "/v1/events", params={"after_id": after, "limit": 1000}).json()
            found |= {e["id"] for e in page["events"]}
            if not page["events"]:
                return found
            after = page["next_after_id"]

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        page = self.call("GET", f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 1000})
        assert page.status_code == 200, page.text
        return list(page.json()["deliveries"])

    def close(self) -> None:
        for webhook_id in self.made:
            self.call("DELETE", f"/v1/webhooks/{webhook_id}")


@pytest.fixture
def tenant(http: TestClient, engine: Any) -> Iterator[Tenant]:
    made = Tenant(http, engine)
    yield made
    made.close()


class WebhookProcesses:
    def __init__(self, settings: Settings, tmp_path: Path, **overrides: str) -> None:
        self.env = {
            **os.environ,
            "LEDGERQ_DATABASE_URL": settings.database_url,
            "LEDGERQ_REDIS_URL": settings.redis_url,
            "LEDGERQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "LEDGERQ_WEBHOOK_TIMEOUT_S": "3",
            "LEDGERQ_WEBHOOK_BACKOFF_S": "0.05",
            "LEDGERQ_WEBHOOK_BACKOFF_S_MAX": "0.2",
            "LEDGERQ_WEBHOOK_POLL_S": "0.05",
            "LEDGERQ_LOG_FORMAT": "text",
            **overrides,
        }
        self.tmp_path = tmp_path
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"webhooks-{len(self.running)}.log").open("wb")
        process = subprocess.Popen([*LEDGERQ, "webhooks"], env=self.env, stdout=log, stderr=log)
        self.running.append(process)
        return process

    def close(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def deliverers(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WebhookProcesses]]:
    made: list[WebhookProcesses] = []

    def make(**overrides: str) -> WebhookProcesses:
        made.append(WebhookProcesses(settings, tmp_path, **overrides))
        return made[-1]

    yield make
    for processes in made:
        processes.close()


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


def valid_signature(secret: str, request: Request) -> bool:
    fields = dict(part.split("=", 1) for part in request.headers["ledgerq-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(fields["v1"], expected)


def test_every_event_is_delivered_signed_with_its_event_id(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/ok")
    assert hook["secret"].startswith("whsec_") and hook["events"] == [
        "command.applied",
        "command.rejected",
        "command.failed",
        "hold.expired",
    ]
    assert "secret" not in tenant.call("GET", f"/v1/webhooks/{hook['id']}").json()  # shown once
    deliverers().start()
    tenant.deposits(20)
    expected = tenant.event_ids()
    assert len(expected) == 20
    eventually(lambda: receiver.event_ids("/ok") >= expected, "every event delivered")
    for request in receiver.seen("/ok"):
        assert valid_signature(hook["secret"], request), request.headers
        event = json.loads(request.body)
        assert str(event["id"]) == request.headers["ledgerq-event-id"]
        assert event["type"] == request.headers["ledgerq-event-type"] == "command.applied"
        assert event["accounts"] == [f"{tenant.prefix}a"]  # as the creating key sees it
    # The body is the event exactly as GET /v1/events shows it.
    listed = {e["id"]: e for e in tenant.call("GET", "/v1/events", params={"limit": 1000}).json()["events"]}
    for request in receiver.seen("/ok"):
        event = json.loads(request.body)
        assert {**event, "at": None} == {**listed[event["id"]], "at": None}
    eventually(lambda: all(d["status"] == "delivered" for d in tenant.deliveries(hook["id"])), "all recorded delivered")
    deliveries = tenant.deliveries(hook["id"])
    assert {d["event_id"] for d in deliveries} == expected
    # At least once: on a loaded machine an attempt may time out and be made again.
    assert all(d["attempts"][-1]["status_code"] == 200 for d in deliveries)


def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/flaky", events=["command.applied"])
    deliverers().start()
    (command_id,) = tenant.deposits(1)
    eventually(lambda: any(d["status"] != "pending" for d in tenant.deliveries(hook["id"])), "delivery settled")
    (delivery,) = tenant.deliveries(hook["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 200]
    assert all(a["error"] == "answered 500" for a in delivery["attempts"][:3])
    requests = receiver.seen("/flaky")
    assert [r.headers["ledgerq-attempt"] for r in requests] == ["1", "2", "3", "4"]
    assert {r.headers["ledgerq-event-id"] for r in requests} == {str(delivery["event_id"])}
    assert json.loads(requests[-1].body)["command_id"] == command_id


def test_a_receiver_that_hangs_is_timed_out_and_retried(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/hang")
    deliverers(LEDGERQ_WEBHOOK_TIMEOUT_S="1").start()
    tenant.deposits(1)
    eventually(lambda: any(d["status"] == "delivered" for d in tenant.deliveries(hook["id"])), "delivered")
    (delivery,) = tenant.deliveries(hook["id"])
    first, *_, last = delivery["attempts"]
    assert first["status_code"] is None and first["error"].startswith("timeout"), first
    assert first["duration_ms"] < receiver.hang_s * 1000  # given up on before the receiver answered
    assert last["status_code"] == 200


def test_a_deleted_endpoint_gets_nothing_more(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/ok")
    deliverers().start()
    tenant.deposits(3)
    eventually(lambda: len(receiver.event_ids("/ok")) == 3, "three delivered")
    assert tenant.call("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 204
    assert tenant.call("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 404
    assert hook["id"] not in {w["id"] for w in tenant.call("GET", "/v1/webhooks").json()["webhooks"]}
    assert tenant.call("GET", f"/v1/webhooks/{hook['id']}").json()["deleted_at"] is not None
    tenant.deposits(5)
    # A second, live endpoint on the same receiver proves the process has moved past those events.
    witness = tenant.webhook(f"{receiver.base}/slow")
    tenant.deposits(2)
    eventually(lambda: len(receiver.event_ids("/slow")) == 2, "the live endpoint got the later events")
    assert len(receiver.seen("/ok")) == 3
    assert len(tenant.deliveries(hook["id"])) == 3
    tenant.call("DELETE", f"/v1/webhooks/{witness['id']}")


def test_a_webhook_process_killed_mid_delivery_loses_nothing(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/hang")
    # A long timeout: the first attempt is still waiting for the receiver when the process dies.
    processes = deliverers(LEDGERQ_WEBHOOK_TIMEOUT_S="3")
    first = processes.start()
    tenant.deposits(1)
    eventually(lambda: len(receiver.seen("/hang")) == 1, "the first attempt is under way")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    processes.start()
    eventually(lambda: any(d["status"] == "delivered" for d in tenant.deliveries(hook["id"])), "redelivered")
    (delivery,) = tenant.deliveries(hook["id"])
    interrupted, *_, delivered = delivery["attempts"]
    assert interrupted["finished_at"] is None  # its process died with it
    assert interrupted["made_by"].endswith(f":{first.pid}") and not delivered["made_by"].endswith(f":{first.pid}")
    assert delivered["status_code"] == 200
    assert [r.headers["ledgerq-attempt"] for r in receiver.seen("/hang")][:2] == ["1", "2"]


def test_two_webhook_processes_never_make_one_attempt_at_once(
    tenant: Tenant, receiver: Receiver, deliverers: Callable[..., WebhookProcesses], workers: Any
) -> None:
    hook = tenant.webhook(f"{receiver.base}/slow")
    processes = deliverers(LEDGERQ_WEBHOOK_TIMEOUT_S="5")
    pids = {processes.start().pid, processes.start().pid}
    tenant.deposits(40)
    expected = tenant.event_ids()
    eventually(lambda: receiver.event_ids("/slow") >= expected, "all delivered", timeout_s=120)
    requests = receiver.seen("/slow")
    by_event: dict[str, list[Request]] = {}
    for request in requests:
        by_event.setdefault(request.headers["ledgerq-event-id"], []).append(request)
    assert len(by_event) == len(expected)
    for attempts in by_event.values():
        attempts.sort(key=lambda r: r.started)
        assert [r.headers["ledgerq-attempt"] for r in attempts] == [str(n) for n in range(1, len(attempts) + 1)]
        for before, after in itertools.pairwise(attempts):
            assert before.ended <= after.started, "two attempts of one delivery overlapped"
    makers = {a["made_by"].rsplit(":", 1)[1] for d in tenant.deliveries(hook["id"]) for a in d["attempts"]}
    assert makers == {str(pid) for pid in pids}, "both processes took part"


def test_disallowed_targets_are_refused_at_creation_and_before_every_attempt(
    tenant: Tenant,
    ctx: Context,
    engine: Any,
    receiver: Receiver,
    deliverers: Callable[..., WebhookProcesses],
    workers: Any,
) -> None:
    strict = Context(ctx.settings.model_copy(update={"webhook_allow_hosts": "*"}), ctx.engine, ctx.redis)
    try:
        with TestClient(create_app(context=strict), raise_server_exceptions=False) as client:
            key = {"Authorization": f"Bearer {tenant.key}"}
            port = receiver.server.server_address[1]
            for url in (
                f"http://127.0.0.1:{port}/ok",
                f"http://localhost:{port}/ok",
                "http://10.1.2.3/x",
                "http://[::1]:9/x",
                "http://169.254.169.254/latest/meta-data",
            ):
                refused = client.post("/v1/webhooks", json={"url": url}, headers=key)
                assert refused.status_code == 422, (url, refused.text)
                assert refused.json()["code"] == "webhook_target_refused"
                assert "LEDGERQ_WEBHOOK_ALLOW_HOSTS" in refused.json()["detail"]
            for url in ("ftp://example.com/x", "http://user:pw@example.com/", "http:///nohost", "not a url"):
                refused = client.post("/v1/webhooks", json={"url": url}, headers=key)
                assert refused.status_code == 422 and refused.json()["code"] == "webhook_target_refused", url
            bad = client.post("/v1/webhooks", json={"url": "https://example.com", "events": ["nope"]}, headers=key)
            assert bad.status_code == 422 and bad.json()["code"] == "validation_failed"
    finally:
        for rounds in (strict.submits, strict.audits, strict.auths):
            rounds.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhooks WHERE prefix = :p"), {"p": tenant.prefix}).scalar() == 0
    # Made while allowed (the session's API lists 127.0.0.1); a webhook process that does not allow
    # loopback refuses each attempt without connecting, and records why.
    hook = tenant.webhook(f"http://localhost:{receiver.server.server_address[1]}/ok")
    deliverers(LEDGERQ_WEBHOOK_ALLOW_HOSTS="*", LEDGERQ_WEBHOOK_MAX_ATTEMPTS="2").start()
    tenant.deposits(1)
    eventually(lambda: any(d["status"] == "failed" for d in tenant.deliveries(hook["id"])), "given up")
    (delivery,) = tenant.deliveries(hook["id"])
    assert [a["status_code"] for a in delivery["attempts"]] == [None, None]
    assert all("does not allow" in a["error"] for a in delivery["attempts"])
    assert receiver.seen("/ok") == []


def test_an_unconfined_admin_sees_and_may_delete_every_tenants_endpoints(
    tenant: Tenant, http: TestClient, keys: dict[str, str]
) -> None:
    hook = tenant.webhook("http://127.0.0.1:9/tenant")
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert hook["id"] in {w["id"] for w in http.get("/v1/webhooks", headers=admin).json()["webhooks"]}
    other = Tenant(http, tenant.http.app.state.ctx.engine)  # another tenant sees none of it
    assert other.call("GET", f"/v1/webhooks/{hook['id']}").status_code == 404
    assert other.call("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 404
    assert http.delete(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert tenant.call("GET", f"/v1/webhooks/{hook['id']}").json()["deleted_at"] is not None
