"""One attempt over real HTTP: to the address that was checked, with the URL's Host, no redirects
followed, the answer read up to its bound."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ledgerq.shared.webhook_targets import AllowList
from ledgerq.webhooks.send import ANSWER_BYTES_MAX, Sender, signature
from ledgerq.webhooks.store import Attempt

SEEN: list[dict[str, Any]] = []
TRICKLE: dict[str, bool] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        SEEN.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle":  # a byte at a time, each well inside the per-read timeout
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for _ in range(40):
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
                    time.sleep(0.2)
                self.wfile.write(b"Content-Length: 0\r\n\r\n")
                TRICKLE["finished"] = True
            except OSError:
                TRICKLE["cut_off"] = True
        elif self.path == "/huge":
            self.send_response(500)
            self.send_header("Content-Length", str(10 * ANSWER_BYTES_MAX))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"x" * (10 * ANSWER_BYTES_MAX))
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"thank")


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SEEN.clear()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def attempt(url: str) -> Attempt:
    event = {
        "id": 42,
        "type": "command.applied",
        "command_id": "c-1",
        "accounts": ["a"],
        "at": datetime(2026, 12, 2, tzinfo=UTC),
        "data": {},
    }
    return Attempt(1, 1, datetime.now(UTC), url, "whsec_test", event, token="t")


def test_the_attempt_goes_to_the_checked_address_with_the_urls_host(port: int) -> None:
    # "receiver.test" resolves (here) to loopback and is listed: the request reaches that address,
    # never asking the resolver twice, and the receiver sees the name it was configured with.
    asked: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    outcome = Sender(AllowList.parse("receiver.test"), 2, resolve).send(attempt(f"http://receiver.test:{port}/in?x=1"))
    assert outcome.delivered and outcome.excerpt == "thank", outcome
    assert asked == ["receiver.test"]
    (seen,) = SEEN
    assert seen["path"] == "/in?x=1" and seen["headers"]["Host"] == f"receiver.test:{port}"
    assert (
        seen["body"] == b'{"id":42,"type":"command.applied","command_id":"c-1","accounts":["a"],'
        b'"at":"2026-12-02T00:00:00Z","data":{}}'
    )
    t = seen["headers"]["Ledgerq-Signature"].split(",")[0].removeprefix("t=")
    assert seen["headers"]["Ledgerq-Signature"] == signature("whsec_test", int(t), seen["body"])
    assert seen["headers"]["Ledgerq-Event-Id"] == "42" and seen["headers"]["Ledgerq-Attempt"] == "1"


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(port: int) -> None:
    outcome = Sender(AllowList.parse("127.0.0.1"), 2).send(attempt(f"http://127.0.0.1:{port}/redirect"))
    assert (outcome.status_code, outcome.error, outcome.delivered) == (307, "answered 307", False)
    assert [s["path"] for s in SEEN] == ["/redirect"]


def test_an_answer_is_read_only_up_to_its_bound(port: int) -> None:
    outcome = Sender(AllowList.parse("127.0.0.1"), 2).send(attempt(f"http://127.0.0.1:{port}/huge"))
    assert outcome.status_code == 500 and len(outcome.excerpt) == 512


def test_a_target_refused_at_send_time_is_not_connected_to(port: int) -> None:
    outcome = Sender(AllowList.parse("*"), 2).send(attempt(f"http://127.0.0.1:{port}/in"))
    assert outcome.status_code is None and outcome.error is not None and outcome.error.startswith("refused:")
    assert SEEN == []


def test_nothing_listening_is_a_connect_error() -> None:
    outcome = Sender(AllowList.parse("127.0.0.1"), 1).send(attempt("http://127.0.0.1:9/in"))
    assert outcome.status_code is None and outcome.error is not None and outcome.error.startswith("connect:")


def test_an_answer_trickled_byte_by_byte_is_cut_off_at_the_deadline(port: int) -> None:
    """Each read arrives inside the timeout, but the whole attempt may not outlive it (nor its lease)."""
    outcome = Sender(AllowList.parse("127.0.0.1"), 1).send(attempt(f"http://127.0.0.1:{port}/trickle"))
    assert outcome.status_code is None and outcome.error is not None and outcome.error.startswith("timeout"), outcome
    deadline = time.monotonic() + 30
    while not TRICKLE and time.monotonic() < deadline:  # the receiver notices the closed connection
        time.sleep(0.05)
    assert TRICKLE == {"cut_off": True}
