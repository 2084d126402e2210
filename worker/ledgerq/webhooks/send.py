"""One attempt over HTTP: signed, to an address the allow list passed, bounded in time and size.

The whole attempt (resolving the name, connecting, sending, the answer up to 64 KiB) has one
deadline, `LEDGERQ_WEBHOOK_TIMEOUT_S`, enforced by cancelling it: a receiver that trickles its
answer a byte at a time is cut off like one that never answers, so an attempt never outlives the
lease its claim took. Each attempt has a client of its own (no pooled connection is reused for
another host that shares an address, so every TLS handshake checks the certificate of the URL's
own host).

The request goes to the checked address itself (the `Host` header and TLS server name keep the
URL's host), so the name cannot resolve to something else between the check and the connect.
Redirects are not followed: a 3xx is a failed attempt like any other non-2xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import httpx

from ledgerq.shared.event_view import event_body
from ledgerq.shared.webhook_targets import AllowList, Resolver, TargetRefused, check_target, system_resolver
from ledgerq.webhooks.store import Attempt, Outcome

ANSWER_BYTES_MAX = 64 * 1024
EXCERPT_CHARS = 512
ADDRESSES_TRIED_MAX = 3
USER_AGENT = "ledgerq-webhooks/1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`Ledgerq-Signature`: `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class Sender:
    def __init__(self, allow: AllowList, timeout_s: float, resolve: Resolver = system_resolver) -> None:
        self.allow = allow
        self.timeout_s = timeout_s
        self.resolve = resolve
        # Name lookups block; they run here so a hung one costs a thread of this pool, not the
        # attempt's deadline (asyncio.run would wait for its own default executor on the way out).
        self.lookups = ThreadPoolExecutor(8, thread_name_prefix="ledgerq-webhook-dns")

    def send(self, attempt: Attempt) -> Outcome:
        """Make the attempt within the deadline (called from a thread of the webhook process's pool)."""
        started = time.monotonic()
        try:
            return asyncio.run(asyncio.wait_for(self._send(attempt, started), self.timeout_s))
        except TimeoutError:
            return Outcome(None, f"timeout: no complete answer within {self.timeout_s:g} s", _ms_since(started), "")

    async def _send(self, attempt: Attempt, started: float) -> Outcome:
        loop = asyncio.get_running_loop()
        try:  # the resolver may block: in a thread, so the deadline still holds
            target = await loop.run_in_executor(self.lookups, check_target, attempt.url, self.allow, self.resolve)
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
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s), follow_redirects=False, trust_env=False
        ) as client:
            for address in target.addresses[:ADDRESSES_TRIED_MAX]:
                try:
                    return await _post(client, attempt.url, address, headers, body, started)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # the next address may answer
                    error = f"connect: {type(exc).__name__}: {exc}"
                except httpx.HTTPError as exc:
                    return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], _ms_since(started), "")
        return Outcome(None, error[:500], _ms_since(started), "")


async def _post(
    client: httpx.AsyncClient, url: str, address: str, headers: dict[str, str], body: bytes, started: float
) -> Outcome:
    parts = urlsplit(url)
    shown = f"[{address}]" if ipaddress.ip_address(address.split("%")[0]).version == 6 else address
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host = parts.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    request = client.build_request(
        "POST", pinned, content=body, headers={**headers, "Host": host}, extensions=extensions
    )
    response = await client.send(request, stream=True)
    try:
        answer = bytearray()
        async for chunk in response.aiter_raw():
            answer += chunk
            if len(answer) >= ANSWER_BYTES_MAX:
                break  # enough to show; the status is what counts
    finally:
        await response.aclose()
    excerpt = bytes(answer[: EXCERPT_CHARS * 4]).decode("utf-8", "replace")[:EXCERPT_CHARS].replace("\x00", "")
    error = None if 200 <= response.status_code < 300 else f"answered {response.status_code}"
    return Outcome(response.status_code, error, _ms_since(started), excerpt)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
