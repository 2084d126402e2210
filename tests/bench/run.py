"""The benchmark: what users do, side by side with the baselines, in one run (it asserts nothing).

    python -m tests.bench [--commands N] [--shapes hot spread] [--doors http batch many open]
                          [--drain N] [--soak-minutes M] [--chart PATH]

Starts private PostgreSQL (fsync on, synchronous commit) and Redis (AOF appendfsync always) and measures:
- B: `SELECT ... FOR UPDATE` + UPDATE + INSERT per command, 16 connections;
- E: stock RQ, one job per command, a SimpleWorker applying the same SQL;
- F: the HTTP framework's floor, a bare FastAPI POST under uvicorn, driven like the `http` door
  (`tests/bench/floor.py`), with its server's CPU per request;
- ledgerq end to end (accepted -> applied, P worker processes, `ledgerq api` as one uvicorn process):
  - `http`: 32 threads, each a keep-alive connection sending one command and waiting for its 202
    (a web backend's worker pool);
  - `batch`: `POST /v1/commands/batch`, 100 commands a request, 8 threads;
  - `many`: the in-process `submit_many`, 100 a call, 16 threads (the API's work is in this process);
  - `open`: requests at a fixed rate, half the best `http` rate, with p50/p99/p999 accepted -> applied;
  each on one hot account and on 10,000 accounts, with the CPU seconds of every process (this client,
  the API, the workers, Postgres, Redis) per command, and Redis commands per command (Lua's inner
  calls included). Ratios are against B and E of the same run.
- `--drain N`: N commands queued with no worker, then one worker process drains them (its RSS sampled).
- `--soak-minutes M`: the open loop at half the best `http` rate for M minutes, every 30 s a line of
  Redis used_memory, the database's size, every process's RSS, p99 and throughput; then a chart.
A table is printed and the doors are drawn side by side (`--chart`, PNG).
"""

from __future__ import annotations

import argparse
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

from tests.bench import doors
from tests.bench.cpu import CpuMeter, self_cpu_s, tree_cpu_s

CONNECTIONS = 16
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
        queue.enqueue("tests.bench.run.rq_job", url, 0 if hot else random.randrange(ACCOUNTS_SPREAD))
    SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False, logging_level="WARNING")
    per_s = n / (time.perf_counter() - started)
    return per_s, (redis_calls(redis) - calls) / n


def baseline_f(n: int) -> tuple[float, float, float]:
    """Requests/s, server CPU ms and client CPU ms per request of the bare FastAPI app."""
    from ledgerq.ops.embedded import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.bench.floor:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        wait_http(port)
        bodies = [json.dumps({"id": f"f{i}", "amount": 1}).encode() for i in range(n)]
        server_s, client_s = tree_cpu_s([server.pid]), self_cpu_s()
        per_s = doors.closed_loop(port, "unused", bodies)
        return per_s, 1000 * (tree_cpu_s([server.pid]) - server_s) / n, 1000 * (self_cpu_s() - client_s) / n
    finally:
        server.terminate()
        server.wait()


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


@contextmanager
def api_server(ledger: Ledger) -> Iterator[tuple[int, str, subprocess.Popen[bytes]]]:
    """`ledgerq api` on a free port with a write key: (port, key, process)."""
    from ledgerq.ops.embedded import free_port
    from ledgerq.shared.apikeys import create_key
    from ledgerq.shared.db import make_engine

    engine = make_engine(ledger.settings(), pool_size=1)
    token, _ = create_key(engine, "write", name="bench")
    engine.dispose()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ledgerq.ops.cli", "api", "--port", str(port), "--workers", str(HTTP_PROCESSES)],
        env=ledger.env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(port)
        yield port, token, server
    finally:
        server.terminate()
        server.wait()


def wait_http(port: int) -> None:
    import http.client

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


@dataclass
class Servers:
    pg: Any
    redis: Any

    @property
    def roles(self) -> dict[str, list[int]]:
        return {"postgres": [self.pg.process.pid], "redis": [self.redis.process.pid]}


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, int(len(values) * q) - 1))] if values else float("nan")


def ledgerq_run(
    servers: Servers,
    n: int,
    hot: bool,
    partitions: int,
    door: str,
    rate_per_s: float = 0,
    audit_body_bytes: int | None = None,
) -> dict[str, Any]:
    ledger = fresh_ledger(servers.pg, servers.redis.url, hot, partitions)
    ledger.audit_body_bytes = audit_body_bytes
    workers = ledger.start_workers(list(range(partitions)))
    redis = Redis.from_url(servers.redis.url)
    commands = [ledger.command(i) for i in range(n)]
    bodies = [json.dumps(c).encode() for c in commands]
    try:
        time.sleep(1.5)  # let them take their leases
        with api_server(ledger) as (port, token, api):
            roles = {**servers.roles, "api": [api.pid], "workers": [w.pid for w in workers]}
            meter = CpuMeter(roles)
            calls = redis_calls(redis)
            meter.start()
            with RssSampler([w.pid for w in workers] + [api.pid]).sampling() as rss:
                started = time.perf_counter()
                if door == "http":
                    accepted_per_s = doors.closed_loop(port, token, bodies)
                elif door == "batch":
                    accepted_per_s = doors.batches(port, token, commands)
                elif door == "open":
                    accepted_per_s = doors.open_loop(port, token, bodies, rate_per_s)
                else:
                    accepted_per_s, _ = submit_in_process(ledger, n, many=True)
                ledger.wait_applied()
                elapsed = time.perf_counter() - started
            cpu = meter.stop()
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
        "p99_ms": percentile(lat, 0.99),
        "p999_ms": percentile(lat, 0.999),
        "rss_mb": max(rss.samples, default=rss.rss_mb()),
        "redis_per_command": redis_per_command,
        "cpu_ms": {role: 1000 * seconds / n for role, seconds in cpu.items()},
    }


def drain(servers: Servers, n: int) -> dict[str, float]:
    """Queue `n` commands with no worker, then let one worker process drain them, sampling its RSS."""
    from ledgerq.api.inprocess import LedgerClient

    ledger = fresh_ledger(servers.pg, servers.redis.url, hot=False, partitions=1)
    client = LedgerClient.from_settings(ledger.settings())
    with ThreadPoolExecutor(4) as pool:
        chunks = [range(s, min(n, s + 1000)) for s in range(0, n, 1000)]
        list(pool.map(lambda ids: client.submit_many([ledger.command(i) for i in ids]), chunks))
    client.close()
    redis = Redis.from_url(servers.redis.url)
    redis_mb = int(redis.info("memory")["used_memory"]) / 2**20
    (worker,) = ledger.start_workers([0])
    meter = CpuMeter({**servers.roles, "workers": [worker.pid]})
    meter.start()
    started = time.perf_counter()
    with RssSampler([worker.pid]).sampling() as rss:
        ledger.wait_applied(timeout_s=1200)
        drained_s = time.perf_counter() - started
    cpu = meter.stop()
    worker.terminate()
    worker.wait()
    samples = rss.samples or [rss.rss_mb()]
    result = {
        "per_s": n / drained_s,
        "redis_mb_queued": redis_mb,
        "rss_first": samples[0],
        "rss_max": max(samples),
        "rss_last": samples[-1],
        "worker_cpu_ms": 1000 * cpu["workers"] / n,
        "postgres_cpu_ms": 1000 * cpu["postgres"] / n,
    }
    print(
        f"drain: {n} commands queued (Redis used_memory {redis_mb:.0f} MB), one worker applied them at "
        f"{result['per_s']:.0f}/s; worker CPU {result['worker_cpu_ms']:.3f} ms/cmd, Postgres "
        f"{result['postgres_cpu_ms']:.3f} ms/cmd; worker RSS MB first {samples[0]:.0f}, max {max(samples):.0f}, "
        f"last {samples[-1]:.0f}",
        flush=True,
    )
    return result


ROLES = ("client", "api", "workers", "postgres", "redis")
HEADER = (
    f"{'what':<40} {'cmds/s':>7} {'accept/s':>8} {'p50ms':>6} {'p99ms':>7} {'p999ms':>7} {'redis/c':>7} "
    + " ".join(f"{r[:6]:>6}" for r in ROLES)
    + f" {'cpu ms':>6} {'xB':>5} {'xE':>5}"
)


def row(what: str, r: dict[str, Any], b: float, e: float) -> str:
    cpu = r["cpu_ms"]
    return (
        f"{what:<40} {r['per_s']:>7.0f} {r['accepted_per_s']:>8.0f} {r['p50_ms']:>6.1f} {r['p99_ms']:>7.1f} "
        f"{r['p999_ms']:>7.1f} {r['redis_per_command']:>7.1f} "
        + " ".join(f"{cpu.get(role, 0):>6.3f}" for role in ROLES)
        + f" {sum(cpu.values()):>6.3f} {r['per_s'] / b:>5.2f} {r['per_s'] / e:>5.1f}"
    )


def chart(results: dict[tuple[str, str], dict[str, Any]], baselines: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({s for _, s in results}, key=["hot", "spread"].index)
    door_names = [d for d in ("http", "batch", "many", "open") if any(d == k for k, _ in results)]
    fig, (rate_ax, cpu_ax) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(shapes))
    for i, shape in enumerate(shapes):
        xs = [j + i * width for j in range(len(door_names))]
        rates = [results.get((d, shape), {}).get("per_s", 0) for d in door_names]
        rate_ax.bar(xs, rates, width, label=f"ledgerq, {LABELS[shape]}")
        rate_ax.axhline(baselines[shape], linestyle="--", color=f"C{i}", label=f"B (lock the row), {LABELS[shape]}")
    rate_ax.set_xticks([j + width * (len(shapes) - 1) / 2 for j in range(len(door_names))], door_names)
    rate_ax.set_ylabel("commands/s, accepted -> applied")
    rate_ax.set_title("Throughput by door")
    rate_ax.legend(fontsize=8)
    bottoms = [0.0] * len(door_names)
    for role in ROLES:
        values = [results.get((d, "hot"), {}).get("cpu_ms", {}).get(role, 0) for d in door_names]
        cpu_ax.bar(door_names, values, bottom=bottoms, label=role)
        bottoms = [a + b for a, b in zip(bottoms, values, strict=True)]
    cpu_ax.set_ylabel("CPU ms per command (all processes)")
    cpu_ax.set_title("CPU per command, hot account")
    cpu_ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


LABELS = {"hot": "hot account", "spread": f"{ACCOUNTS_SPREAD} accounts"}


def soak(servers: Servers, minutes: float, rate_per_s: float, path: Path) -> None:
    """The open loop at `rate_per_s` for `minutes`, sampled every 30 s."""
    ledger = fresh_ledger(servers.pg, servers.redis.url, hot=False, partitions=4)
    workers = ledger.start_workers(list(range(4)))
    redis = Redis.from_url(servers.redis.url)
    time.sleep(1.5)
    samples: list[dict[str, float]] = []
    with api_server(ledger) as (port, token, api):
        stop = time.monotonic() + minutes * 60
        window = 30.0
        n = 0
        started = time.monotonic()
        while time.monotonic() < stop:
            count = int(rate_per_s * window)
            bodies = [json.dumps(ledger.command(n + i)).encode() for i in range(count)]
            since = time.time()
            achieved = doors.open_loop(port, token, bodies, rate_per_s)
            n += count
            with psycopg.connect(ledger.url) as conn:
                lat = [
                    r[0]
                    for r in conn.execute(
                        "SELECT 1000 * extract(epoch FROM finished_at - accepted_at)::float8 FROM commands"
                        " WHERE accepted_at >= to_timestamp(%s) AND finished_at IS NOT NULL ORDER BY 1",
                        (since,),
                    ).fetchall()
                ]
                db_mb = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
            rss = {
                name: RssSampler([pid]).rss_mb()
                for name, pid in [
                    ("api", api.pid),
                    ("redis", servers.redis.process.pid),
                    *((f"w{i}", w.pid) for i, w in enumerate(workers)),
                ]
            }
            sample = {
                "t_min": (time.monotonic() - started) / 60,
                "redis_mb": int(redis.info("memory")["used_memory"]) / 2**20,
                "db_mb": db_mb,
                "p99_ms": percentile(lat, 0.99),
                "per_s": achieved,
                **{f"rss_{k}": v for k, v in rss.items()},
            }
            samples.append(sample)
            print(
                f"soak t={sample['t_min']:5.1f} min: {achieved:6.0f}/s p99 {sample['p99_ms']:6.1f} ms, "
                f"Redis used_memory {sample['redis_mb']:6.1f} MB, database {db_mb:7.1f} MB, RSS MB "
                + " ".join(f"{k}={v:.0f}" for k, v in rss.items()),
                flush=True,
            )
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = [s["t_min"] for s in samples]
    axes[0].plot(t, [s["redis_mb"] for s in samples], label="Redis used_memory")
    axes[0].plot(t, [s["db_mb"] for s in samples], label="Postgres database")
    for key in sorted(k for k in samples[0] if k.startswith("rss_")):
        axes[0].plot(t, [s[key] for s in samples], label=key.replace("rss_", "RSS "), linewidth=0.8)
    axes[0].set_ylabel("MB")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, [s["p99_ms"] for s in samples])
    axes[1].set_ylabel("p99 accepted -> applied, ms")
    axes[2].plot(t, [s["per_s"] for s in samples])
    axes[2].set_ylabel("commands/s")
    for ax in axes:
        ax.set_xlabel("minutes")
    fig.suptitle(f"Soak: {rate_per_s:.0f} commands/s for {minutes:g} min over {ACCOUNTS_SPREAD} accounts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"soak chart: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000, help="per ledgerq run")
    parser.add_argument("--baseline-commands", type=int, default=5_000, help="per B run")
    parser.add_argument("--rq-commands", type=int, default=1_000, help="per E run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--doors", nargs="*", default=["http", "batch", "many", "open"], choices=["http", "batch", "many", "open"]
    )
    parser.add_argument("--shapes", nargs="*", default=["hot", "spread"], choices=["hot", "spread"])
    parser.add_argument("--drain", type=int, default=100_000, help="commands for the one-worker drain (0: skip)")
    parser.add_argument("--soak-minutes", type=float, default=0, help="run the soak for this long (0: skip)")
    parser.add_argument("--chart", type=Path, default=Path("tests/bench/results/doors.png"))
    parser.add_argument("--soak-chart", type=Path, default=Path("tests/bench/results/soak.png"))
    parser.add_argument(
        "--audit-body-bytes",
        type=int,
        nargs="*",
        default=[None],
        help="run the http door once per value of LEDGERQ_AUDIT_BODY_BYTES, to price the audit",
    )
    args = parser.parse_args()
    from ledgerq.ops.embedded import PostgresServer, RedisServer

    root = Path(tempfile.mkdtemp(prefix="ledgerq-bench-"))
    os.chmod(root, 0o755)
    servers = Servers(PostgresServer(root / "pg").start(), RedisServer(root / "redis").start())
    results: dict[tuple[str, str], dict[str, Any]] = {}
    baselines: dict[str, float] = {}
    try:
        info = Redis.from_url(servers.redis.url).info()
        print(
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; PostgreSQL fsync=on "
            f"synchronous_commit=on; Redis {info['redis_version']} appendonly appendfsync always; "
            f"P={args.partitions}; CPU columns: ms per command"
        )
        print(HEADER)
        if "http" in args.doors:
            f_rate, f_server, f_client = baseline_f(args.commands)
            print(
                f"{'F  bare FastAPI POST (framework floor)':<40} {f_rate:>7.0f} {'':>8} {'':>6} {'':>7} {'':>7} "
                f"{'':>7} {f_client:>6.3f} {f_server:>6.3f}"
            )
        best_http: dict[str, float] = {}
        for shape in args.shapes:
            hot = shape == "hot"
            b = baseline_b(servers.pg.url, args.baseline_commands, hot)
            e, e_calls = baseline_e(servers.pg.url, servers.redis.url, args.rq_commands, hot)
            baselines[shape] = b
            print(f"{'B  SELECT FOR UPDATE, ' + LABELS[shape]:<40} {b:>7.0f}")
            print(
                f"{'E  stock RQ SimpleWorker, ' + LABELS[shape]:<40} {e:>7.0f} {'':>8} {'':>6} {'':>7} {'':>7} "
                f"{e_calls:>7.1f}"
            )
            for door in [d for d in args.doors if d != "open"]:
                for audit in args.audit_body_bytes if door == "http" else [None]:
                    r = ledgerq_run(servers, args.commands, hot, args.partitions, door, audit_body_bytes=audit)
                    what = f"ledgerq {door}, {LABELS[shape]}" + ("" if audit is None else f" audit={audit}")
                    print(row(what, r, b, e), flush=True)
                    results[(door, shape)] = r
                    if door == "http":
                        best_http[shape] = max(best_http.get(shape, 0), r["per_s"])
            if "open" in args.doors and shape in best_http:
                rate = best_http[shape] / 2
                n = min(args.commands, int(rate * 30))
                r = ledgerq_run(servers, n, hot, args.partitions, "open", rate_per_s=rate)
                print(row(f"ledgerq open {rate:.0f}/s, {LABELS[shape]}", r, b, e), flush=True)
                results[("open", shape)] = r
        if results:
            chart(results, baselines, args.chart)
        if args.drain:
            drain(servers, args.drain)
        if args.soak_minutes:
            rate = best_http.get("spread") or best_http.get("hot") or 500.0
            soak(servers, args.soak_minutes, rate / 2, args.soak_chart)
    finally:
        servers.redis.stop()
        servers.pg.stop()


if __name__ == "__main__":
    main()
