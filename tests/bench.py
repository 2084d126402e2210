"""Throughput benchmark, side by side in one run (not a test: it prints figures, it asserts nothing).

    python -m tests.bench [--commands N] [--rq-commands N] [--partitions P ...] [--queued N]

Starts private PostgreSQL (fsync on, synchronous commit) and Redis (AOF appendfsync always) and measures:
- B: `SELECT ... FOR UPDATE` + UPDATE + INSERT per command, 16 connections;
- E: stock RQ, one job per command, a SimpleWorker applying the same SQL;
- ledgerq end to end (accepted -> applied), P worker processes, through
  - the in-process client, one command per call from 16 threads (`submit`),
  - the in-process client, 100 commands per call from 16 threads (`submit_many`),
  - HTTP: `ledgerq api` (uvicorn, 2 processes) with 64 keep-alive connections (an asyncio load generator),
    one command per request;
each on one hot account and on 10,000 accounts. Ratios are against B and E measured in the same run.
Then (`--queued`) the flat-memory run: N commands queued with no worker, then one worker drains them
while its RSS is sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

CONNECTIONS = 16
HTTP_CONNECTIONS = 128
HTTP_PROCESSES = 1
MANY = 100
ACCOUNTS_SPREAD = 10_000
SIGNING_KEY = "bench-signing-key-0123456789abcdef0123"


def timed(n: int, work: Callable[[int], None], threads: int = CONNECTIONS) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(n)))
    return n / (time.perf_counter() - started)


# -- B: lock the row per command -------------------------------------------------------------------


def baseline_b(url: str, n: int, hot: bool) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS b_entries, b_accounts")
        conn.execute("CREATE TABLE b_accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("CREATE TABLE b_entries (id bigserial PRIMARY KEY, account int, amount bigint, after bigint)")
        conn.execute("INSERT INTO b_accounts SELECT g, 0 FROM generate_series(0, %s) g", (ACCOUNTS_SPREAD,))
    local = threading.local()

    def work(i: int) -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(url)
        account = 0 if hot else random.randrange(ACCOUNTS_SPREAD)
        with local.conn.transaction():
            (balance,) = local.conn.execute(
                "SELECT balance FROM b_accounts WHERE id = %s FOR UPDATE", (account,)
            ).fetchone()
            local.conn.execute("UPDATE b_accounts SET balance = %s WHERE id = %s", (balance + 1, account))
            local.conn.execute(
                "INSERT INTO b_entries (account, amount, after) VALUES (%s, 1, %s)", (account, balance + 1)
            )

    return timed(n, work)


# -- E: stock RQ, one job per command ---------------------------------------------------------------


def rq_job(url: str, account: int) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        (balance,) = conn.execute("SELECT balance FROM b_accounts WHERE id = %s FOR UPDATE", (account,)).fetchone()
        conn.execute("UPDATE b_accounts SET balance = %s WHERE id = %s", (balance + 1, account))
        conn.execute("INSERT INTO b_entries (account, amount, after) VALUES (%s, 1, %s)", (account, balance + 1))


def baseline_e(url: str, redis_url: str, n: int, hot: bool) -> tuple[float, float]:
    """Commands/s and Redis commands per job."""
    from rq import Queue, SimpleWorker

    logging.getLogger("rq").setLevel(logging.WARNING)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    queue = Queue("bench-e", connection=redis)
    calls = redis_calls(redis)
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue("tests.bench.rq_job", url, 0 if hot else random.randrange(ACCOUNTS_SPREAD))
    SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False, logging_level="WARNING")
    per_s = n / (time.perf_counter() - started)
    return per_s, (redis_calls(redis) - calls) / n


# -- ledgerq ------------------------------------------------------------------------------------------


def redis_calls(redis: Redis) -> int:
    """Commands Redis has run (Lua's inner calls included), less the INFO calls that read this."""
    stats = redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


@dataclass
class RssSampler:
    pids: list[int]
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            total = max(total, int(text.split("VmRSS:")[1].split()[0]))
        return total / 1024

    def run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self.rss_mb())

    @contextmanager
    def sampling(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


@dataclass
class Ledger:
    """A fresh ledgerq database with its accounts, and the environment its processes need."""

    url: str
    redis_url: str
    partitions: int
    accounts: list[str]
    audit_body_bytes: int | None = None  # None: the default setting

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LEDGERQ_DATABASE_URL": self.url,
            "LEDGERQ_REDIS_URL": self.redis_url,
            "LEDGERQ_PARTITIONS": str(self.partitions),
            "LEDGERQ_SIGNING_KEY": SIGNING_KEY,
            "LEDGERQ_LOG_LEVEL": "WARNING",
            "LEDGERQ_RATE_LIMIT": "1000000/second",  # the benchmark is one key; production keeps a limit
            "LEDGERQ_QUEUE_DEPTH_MAX": "10000000",
            **({} if self.audit_body_bytes is None else {"LEDGERQ_AUDIT_BODY_BYTES": str(self.audit_body_bytes)}),
        }

    def settings(self) -> Any:
        from ledgerq.shared.settings import Settings

        return Settings(
            database_url=self.url,
            redis_url=self.redis_url,
            partitions=self.partitions,
            signing_key=SIGNING_KEY,
            queue_depth_max=10_000_000,
        )

    def start_workers(self, partitions: list[int]) -> list[subprocess.Popen[bytes]]:
        return [
            subprocess.Popen([sys.executable, "-m", "ledgerq.ops.cli", "worker", "--partition", str(p)], env=self.env)
            for p in partitions
        ]

    def wait_applied(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.url, autocommit=True) as conn:
            while conn.execute("SELECT 1 FROM commands WHERE status = 'queued' LIMIT 1").fetchone():
                if time.monotonic() > deadline:
                    raise TimeoutError("commands still queued")
                time.sleep(0.02)

    def latencies_ms(self) -> list[float]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT 1000 * extract(epoch FROM finished_at - accepted_at)::float8 FROM commands ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def command(self, i: int) -> dict[str, Any]:
        return {"id": f"c{i}", "type": "deposit", "account_id": random.choice(self.accounts), "amount": 1,
                "currency": "USD"}  # fmt: skip


def fresh_ledger(pg: Any, redis_url: str, hot: bool, partitions: int) -> Ledger:
    from ledgerq.shared.db import fix_partitions, make_engine, migrate

    url = pg.create_database(f"bench_{time.time_ns()}")
    Redis.from_url(redis_url).flushdb()
    ledger = Ledger(url, redis_url, partitions, ["hot"] if hot else [f"a{i}" for i in range(ACCOUNTS_SPREAD)])
    settings = ledger.settings()
    migrate(settings)
    engine = make_engine(settings, pool_size=1)
    fix_partitions(engine, partitions)
    engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO accounts (id, currency, overdraft_limit) SELECT unnest(%s::text[]), 'USD', 0",
            (ledger.accounts,),
        )
    return ledger


def submit_in_process(ledger: Ledger, n: int, many: bool) -> tuple[float, float]:
    """Accepted commands/s and the mean claim round size."""
    from ledgerq.api.inprocess import LedgerClient

    client = LedgerClient.from_settings(ledger.settings())
    try:
        if many:
            chunks = [list(range(s, min(n, s + MANY))) for s in range(0, n, MANY)]
            started = time.perf_counter()
            with ThreadPoolExecutor(CONNECTIONS) as pool:
                list(pool.map(lambda ids: client.submit_many([ledger.command(i) for i in ids]), chunks))
            per_s = n / (time.perf_counter() - started)
        else:
            per_s = timed(n, lambda i: client.submit(ledger.command(i)))
        rounds = client.ctx.submits
        return per_s, rounds.items / max(1, rounds.rounds)
    finally:
        client.close()


def submit_http(ledger: Ledger, n: int) -> tuple[float, float]:
    from ledgerq.shared.apikeys import create_key
    from ledgerq.shared.db import make_engine

    engine = make_engine(ledger.settings(), pool_size=1)
    token, _ = create_key(engine, "write", name="bench")
    engine.dispose()
    port = 18_000 + random.randrange(1000)
    server = subprocess.Popen(
        [sys.executable, "-m", "ledgerq.ops.cli", "api", "--port", str(port), "--workers", str(HTTP_PROCESSES)],
        env=ledger.env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(port)
        started = time.perf_counter()
        asyncio.run(post_all(port, token, [json.dumps(ledger.command(i)).encode() for i in range(n)]))
        return n / (time.perf_counter() - started), float("nan")
    finally:
        server.terminate()
        server.wait()


async def post_all(port: int, token: str, bodies: list[bytes]) -> None:
    """A lean load generator (asyncio, keep-alive, one request in flight per connection), so the
    client's own CPU takes as little as possible from the two cores the server side shares."""
    queue = iter(bodies)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for body in queue:
            writer.write(
                b"POST /v1/commands HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if status != 202:
                raise RuntimeError(f"HTTP {status}")
        writer.close()

    await asyncio.gather(*(connection() for _ in range(HTTP_CONNECTIONS)))


def wait_http(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("ledgerq api did not start")


def ledgerq_run(
    pg: Any, redis_url: str, n: int, hot: bool, partitions: int, door: str, audit_body_bytes: int | None = None
) -> dict[str, float]:
    ledger = fresh_ledger(pg, redis_url, hot, partitions)
    ledger.audit_body_bytes = audit_body_bytes
    workers = ledger.start_workers(list(range(partitions)))
    redis = Redis.from_url(redis_url)
    try:
        time.sleep(1.5)  # let them take their leases
        calls = redis_calls(redis)
        with RssSampler([w.pid for w in workers]).sampling() as rss:
            started = time.perf_counter()
            if door == "http":
                accepted_per_s, round_size = submit_http(ledger, n)
            else:
                accepted_per_s, round_size = submit_in_process(ledger, n, many=door == "many")
            ledger.wait_applied()
            elapsed = time.perf_counter() - started
        redis_per_command = (redis_calls(redis) - calls) / n
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait()
    lat = ledger.latencies_ms()
    return {
        "per_s": n / elapsed,
        "accepted_per_s": accepted_per_s,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[int(len(lat) * 0.99) - 1],
        "rss_mb": max(rss.samples, default=rss.rss_mb()),
        "redis_per_command": redis_per_command,
        "round_size": round_size,
    }


def flat_memory(pg: Any, redis_url: str, n: int) -> None:
    """Queue `n` commands with no worker, then let one worker drain them, sampling its RSS."""
    from ledgerq.api.inprocess import LedgerClient

    ledger = fresh_ledger(pg, redis_url, hot=False, partitions=1)
    client = LedgerClient.from_settings(ledger.settings())
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        chunks = [range(s, min(n, s + 1000)) for s in range(0, n, 1000)]
        list(pool.map(lambda ids: client.submit_many([ledger.command(i) for i in ids]), chunks))
    queued_s = time.perf_counter() - started
    redis = Redis.from_url(redis_url)
    depth = redis.llen("rq:queue:ledgerq-p0")
    redis_mb = int(redis.info("memory")["used_memory"]) / 2**20
    client.close()
    (worker,) = ledger.start_workers([0])
    started = time.perf_counter()
    with RssSampler([worker.pid]).sampling() as rss:
        ledger.wait_applied(timeout_s=1200)
        drained_s = time.perf_counter() - started
    worker.terminate()
    worker.wait()
    samples = rss.samples
    print(
        f"flat memory: {depth} commands queued in {queued_s:.1f} s (Redis used_memory {redis_mb:.0f} MB); "
        f"one worker drained them in {drained_s:.1f} s ({n / drained_s:.0f}/s); worker RSS MB: "
        f"first {samples[0]:.0f}, median {statistics.median(samples):.0f}, max {max(samples):.0f}, "
        f"last {samples[-1]:.0f} ({len(samples)} samples)",
        flush=True,
    )


HEADER = (
    f"{'what':<44} {'cmds/s':>8} {'accept/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} "
    f"{'redis/cmd':>9} {'round':>6} {'xB':>6} {'xE':>6}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000, help="per ledgerq run")
    parser.add_argument("--baseline-commands", type=int, default=5_000, help="per B run")
    parser.add_argument("--rq-commands", type=int, default=1_000, help="per E run")
    parser.add_argument("--partitions", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--doors", nargs="*", default=["submit", "many", "http"], choices=["submit", "many", "http"])
    parser.add_argument("--shapes", nargs="*", default=["hot", "spread"], choices=["hot", "spread"])
    parser.add_argument("--queued", type=int, default=200_000, help="commands for the flat-memory run (0: skip)")
    parser.add_argument(
        "--audit-body-bytes",
        type=int,
        nargs="*",
        default=[None],
        help="run the http door once per value of LEDGERQ_AUDIT_BODY_BYTES (0: no bodies kept), to price the audit",
    )
    args = parser.parse_args()
    from ledgerq.ops.embedded import PostgresServer, RedisServer

    root = Path(tempfile.mkdtemp(prefix="ledgerq-bench-"))
    os.chmod(root, 0o755)
    pg = PostgresServer(root / "pg").start()
    redis = RedisServer(root / "redis").start()
    try:
        info = Redis.from_url(redis.url).info()
        print(
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; PostgreSQL fsync=on "
            f"synchronous_commit=on; Redis {info['redis_version']} appendonly appendfsync always"
        )
        print(HEADER)
        for shape in args.shapes:
            hot = shape == "hot"
            label = "hot account" if hot else f"{ACCOUNTS_SPREAD} accounts"
            b = baseline_b(pg.url, args.baseline_commands, hot)
            e, e_calls = baseline_e(pg.url, redis.url, args.rq_commands, hot)
            print(f"{'B  SELECT FOR UPDATE, ' + label:<44} {b:>8.0f}")
            print(
                f"{'E  stock RQ SimpleWorker, ' + label:<44} {e:>8.0f} {'':>9} {'':>7} {'':>7} {'':>7} {e_calls:>9.1f}"
            )
            runs = [
                (door, partitions, audit)
                for door in args.doors
                for partitions in args.partitions
                for audit in (args.audit_body_bytes if door == "http" else [None])
            ]
            for door, partitions, audit in runs:
                r = ledgerq_run(pg, redis.url, args.commands, hot, partitions, door, audit)
                what = f"ledgerq {door} P={partitions}, {label}" + ("" if audit is None else f" audit={audit}")
                print(
                    f"{what:<44} {r['per_s']:>8.0f} {r['accepted_per_s']:>9.0f} {r['p50_ms']:>7.1f} "
                    f"{r['p99_ms']:>7.1f} {r['rss_mb']:>7.0f} {r['redis_per_command']:>9.1f} "
                    f"{r['round_size']:>6.1f} {r['per_s'] / b:>6.2f} {r['per_s'] / e:>6.1f}",
                    flush=True,
                )
        if args.queued:
            flat_memory(pg, redis.url, args.queued)
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
