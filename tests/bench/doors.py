"""Load generators that behave as web backends do.

- `closed_loop`: a gunicorn-style pool: N threads, each with its own keep-alive connection (the
  standard library's sync client), sending one command and waiting for its 202 before the next.
- `batches`: the same with `POST /v1/commands/batch`, 100 commands a request.
- `open_loop`: requests leave at a fixed rate whatever the answers do (a sender pool big enough
  that none waits for a free connection), so latency is measured without coordinated omission.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Body = bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects if the server closed it."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body, self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _threads(n: int, work: Callable[[int], None]) -> float:
    """Run `work(i)` in n threads; the wall time."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def _callers(
    port: int, token: str, path: str, bodies: Sequence[Body], threads: int, accepted: Callable[[int, bytes], bool]
) -> float:
    """`threads` callers, each with its own connection, posting the bodies one at a time; the wall time."""
    items: Iterator[Body] = iter(bodies)
    lock = threading.Lock()
    errors: list[str] = []

    def caller(_: int) -> None:
        conn = Connection(port, token)
        try:
            while True:
                with lock:
                    body = next(items, None)
                if body is None:
                    return
                status, answer = conn.post(path, body)
                if not accepted(status, answer):
                    errors.append(f"{status} {answer[:200]!r}")
                    return
        finally:
            conn.close()

    elapsed = _threads(threads, caller)
    if errors:
        raise RuntimeError(errors[0])
    return elapsed


def closed_loop(port: int, token: str, bodies: Sequence[Body], threads: int = 32) -> float:
    """Commands accepted per second, `threads` callers one command at a time each."""
    return len(bodies) / _callers(port, token, "/v1/commands", bodies, threads, lambda status, _: status == 202)


def batches(port: int, token: str, commands: Sequence[dict[str, Any]], per: int = 100, threads: int = 8) -> float:
    """Commands accepted per second through the batch endpoint."""
    bodies = [json.dumps({"commands": list(commands[i : i + per])}).encode() for i in range(0, len(commands), per)]

    def accepted(status: int, answer: bytes) -> bool:
        return status == 200 and all(r["http_status"] == 202 for r in json.loads(answer)["results"])

    return len(commands) / _callers(port, token, "/v1/commands/batch", bodies, threads, accepted)


def open_loop(port: int, token: str, bodies: Sequence[Body], rate_per_s: float, senders: int = 64) -> float:
    """Send at `rate_per_s` (each request due at its slot, sent by the first free sender); the rate
    achieved. A sender pool much larger than rate x latency means no request waits for a sender."""
    due: queue.Queue[tuple[float, Body] | None] = queue.Queue()
    errors: list[str] = []
    late: list[float] = []

    def sender(_: int) -> None:
        conn = Connection(port, token)
        try:
            while (item := due.get()) is not None:
                at, body = item
                wait = at - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:
                    late.append(-wait)
                status, answer = conn.post("/v1/commands", body)
                if status != 202:
                    errors.append(f"{status} {answer[:200]!r}")
        finally:
            conn.close()

    started = time.perf_counter() + 0.2
    for i, body in enumerate(bodies):
        due.put((started + i / rate_per_s, body))
    for _ in range(senders):
        due.put(None)
    elapsed = _threads(senders, sender) - 0.2
    if errors:
        raise RuntimeError(errors[0])
    late.sort()
    if late and late[int(len(late) * 0.99) - 1] > 0.05:
        print(f"  open loop: 1% of requests left > {late[int(len(late) * 0.99) - 1] * 1000:.0f} ms late (senders busy)")
    return len(bodies) / elapsed
