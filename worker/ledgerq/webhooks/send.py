"""One attempt over HTTP: signed, to an address the allow list passed, bounded in time and size.

The request goes to the checked address itself (the `Host` header and TLS server name keep the
URL's host), so the name cannot resolve to something else between the check and the connect.
Redirects are not followed: a 3xx is a failed attempt like any other non-2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from ledgerq.shared.event_view import event_body
from ledgerq.shared.webhook_targets import AllowList, Resolver, TargetRefused, check_target, system_resolver
from ledgerq.webhooks.store import Attempt, Outcome

ANSWER_BYTES_MAX = 64 * 1024
EXCERPT_CHARS = 512
USER_AGENT = "ledgerq-webhooks/1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`Ledgerq-Signature`: `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class Sender:
    def __init__(
        self, client: httpx.Client, allow: AllowList, timeout_s: float, resolve: Resolver = system_resolver
    ) -> None:
        self.client = client
        self.allow = allow
        self.timeout_s = timeout_s
        self.resolve = resolve

    def send(self, attempt: Attempt) -> Outcome:
        started = time.monotonic()
        try:
            target = check_target(attempt.url, self.allow, self.resolve)
        except TargetRefused as exc:
            return Outcome(None, f"refused: {exc}", _ms_since(started), "")
        body = event_body(attempt.event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Ledgerq-Event-Id": str(attempt.event["id"]),
            "Ledgerq-Event-Type": attempt.event["type"],
            "Ledgerq-Attempt": str(attempt.n),
            "Ledgerq-Signature": signature(attempt.secret, int(time.time()), body),
        }
        error = "no address"
        for address in target.addresses:
            try:
                return self._post(attempt.url, address, headers, body, started)
            except httpx.ConnectError as exc:  # the next address may answer
                error = f"connect: {exc}"
            except httpx.HTTPError as exc:
                return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], _ms_since(started), "")
        return Outcome(None, error[:500], _ms_since(started), "")

    def _post(self, url: str, address: str, headers: dict[str, str], body: bytes, started: float) -> Outcome:
        parts = urlsplit(url)
        shown = f"[{address}]" if ipaddress.ip_address(address.split("%")[0]).version == 6 else address
        netloc = f"{shown}:{parts.port}" if parts.port else shown
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host = parts.netloc.rpartition("@")[2]
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        deadline = started + self.timeout_s
        request = self.client.build_request(
            "POST", pinned, content=body, headers={**headers, "Host": host}, extensions=extensions
        )
        response = self.client.send(request, stream=True)
        try:
            answer = bytearray()
            for chunk in response.iter_raw():
                answer += chunk
                if len(answer) >= ANSWER_BYTES_MAX or time.monotonic() > deadline:
                    break  # enough to show; the status is what counts
        finally:
            response.close()
        if time.monotonic() > deadline and not 200 <= response.status_code < 300:
            return Outcome(response.status_code, "answer body exceeded the timeout", _ms_since(started), "")
        excerpt = bytes(answer[: EXCERPT_CHARS * 4]).decode("utf-8", "replace")[:EXCERPT_CHARS].replace("\x00", "")
        error = None if 200 <= response.status_code < 300 else f"answered {response.status_code}"
        return Outcome(response.status_code, error, _ms_since(started), excerpt)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def make_client(timeout_s: float) -> httpx.Client:
    """Each phase (connect, send, each read) bounded by the timeout; proxies from the environment
    ignored (a delivery goes where the allow list said); TLS verified."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
    )
