"""docker-compose.yml's services, run for real without Docker: each service's own command, environment
and healthcheck, with the compose host names (postgres, redis) and ports mapped to this machine.
Postgres gets the roles from shared/deploy/postgres-init.sh, Redis runs with the compose flags, then
migrate, the API, two workers (claim mode), the webhook deliveries and the optional rq-dashboard; money
moves end to end and its events reach a webhook, each process under its own role."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from ledgerq.ops.embedded import PostgresServer, find_redis_server, free_port
from ledgerq.shared.keys import lease_key
from ledgerq.shared.observe import redis_durability
from tests.conftest import SIGNING_KEY, uid

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ rules."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"  # an escaped dollar, left for the container's shell
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise AssertionError(f"compose would refuse to start: {rest}")
        return rest or ""

    return VARIABLE.sub(one, value)


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        self.services: dict[str, Any] = self.compose["services"]
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.vars = {"LEDGERQ_SIGNING_KEY": SIGNING_KEY, "RQ_DASHBOARD_PASSWORD": "dashboard-test-password"}
        self.processes: list[subprocess.Popen[bytes]] = []

    def localize(self, text: str) -> str:
        return (
            interpolate(text, self.vars)
            .replace("@postgres:5432", f"@127.0.0.1:{self.pg_port}")
            .replace("@redis:6379", f"@127.0.0.1:{self.redis_port}")
        )

    def env(self, service: str, **extra: str) -> dict[str, str]:
        declared = self.services[service].get("environment", {})
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            **{k: self.localize(str(v)) for k, v in declared.items()},
            **extra,
        }

    def command(self, service: str, ports: dict[str, str] | None = None) -> list[str]:
        args = [self.localize(str(a)) for a in self.services[service]["command"]]
        for ours, theirs in (ports or {}).items():
            args = [a.replace(ours, theirs) for a in args]
        return args

    def start(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with open(self.root / log, "ab") as out:
            process = subprocess.Popen(args, env=env, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def healthy(self, service: str, env: dict[str, str], ports: dict[str, str], timeout_s: float = 60) -> None:
        """Run the service's own healthcheck until it passes."""
        kind, *test = [interpolate(t, self.vars) for t in self.services[service]["healthcheck"]["test"]]
        for ours, theirs in ports.items():
            test = [t.replace(ours, theirs) for t in test]
        args = ["sh", "-c", test[0]] if kind == "CMD-SHELL" else test
        args = [sys.executable if a == "python" else a for a in args]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if subprocess.run(args, env=env, capture_output=True, timeout=30).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{service}: healthcheck never passed: {args}")

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Stack, PostgresServer]]:
    running = Stack(tmp_path)
    postgres = PostgresServer(tmp_path / "pgdata", port=running.pg_port).start()
    try:
        yield running, postgres
    finally:
        running.close()
        postgres.stop()


def start_postgres_roles(stack: Stack, postgres: PostgresServer) -> None:
    """What the postgres image does: the POSTGRES_USER superuser owns POSTGRES_DB; initdb.d scripts run."""
    env = stack.env("postgres")
    with psycopg.connect(postgres.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{env["POSTGRES_USER"]}" LOGIN SUPERUSER')
        conn.execute(f'ALTER DATABASE "{env["POSTGRES_DB"]}" OWNER TO "{env["POSTGRES_USER"]}"')
    psql_env = {**env, "PGHOST": "127.0.0.1", "PGPORT": str(stack.pg_port)}
    subprocess.run(["sh", str(ROOT / "shared" / "deploy" / "postgres-init.sh")], env=psql_env, check=True)
    stack.healthy("postgres", psql_env | {"PGHOST": "127.0.0.1"}, {"pg_isready": f"pg_isready -p {stack.pg_port}"})


def start_redis(stack: Stack) -> Redis:
    args = stack.command("redis")
    assert args[0] == "redis-server"
    (stack.root / "redis").mkdir()
    args = [str(find_redis_server()), *args[1:], "--port", str(stack.redis_port), "--dir", str(stack.root / "redis")]
    env = stack.env("redis")
    stack.start(args, env, "redis.log")
    cli = {"redis-cli": f"redis-cli -p {stack.redis_port}"}
    if shutil.which("redis-cli"):
        stack.healthy("redis", env, cli)
    password = env["REDIS_PASSWORD"]
    redis = Redis(port=stack.redis_port, password=password)
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.ping()
            break
        except Exception:
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)
    return redis


def test_the_compose_stack_runs_for_real(stack: tuple[Stack, PostgresServer]) -> None:
    s, postgres = stack
    start_postgres_roles(s, postgres)
    redis = start_redis(s)
    # Redis: durable (AOF fsync always) and closed to clients without the password.
    assert redis_durability(redis)[0] is True
    with pytest.raises((AuthenticationError, ResponseError)):
        Redis(port=s.redis_port).set("x", 1)

    migrate = subprocess.run(s.command("migrate"), env=s.env("migrate"), capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    migrate_env = s.env("migrate")  # as in `docker compose run --rm migrate ledgerq keys create ...`
    key = subprocess.run(
        ["ledgerq", "keys", "create", "--scope", "admin", "--name", "compose"],
        env=migrate_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    api_ports = {"8000": str(s.api_port)}
    # The receiver of this test is on loopback, which the compose default ("*": public only) refuses.
    api_env = s.env("api", LEDGERQ_WEBHOOK_ALLOW_HOSTS="127.0.0.1")
    assert api_env["LEDGERQ_DATABASE_URL"].startswith("postgresql://ledgerq_api_login:")
    s.start([*s.command("api", api_ports)[:-3], "127.0.0.1", "--port", str(s.api_port)], api_env, "api.log")
    s.healthy("api", api_env, {"127.0.0.1:8000": f"127.0.0.1:{s.api_port}"})

    workers = []
    for n in range(s.services["worker"]["deploy"]["replicas"]):
        metrics_port = str(free_port())  # one host here, one container each under compose
        env = s.env("worker", LEDGERQ_METRICS_PORT=metrics_port)
        assert env["LEDGERQ_DATABASE_URL"].startswith("postgresql://ledgerq_worker_login:")
        workers.append(s.start(s.command("worker"), env, f"worker-{n}.log"))
        s.healthy("worker", env, {"9600": metrics_port})

    http = httpx.Client(
        base_url=f"http://127.0.0.1:{s.api_port}", headers={"Authorization": f"Bearer {key}"}, timeout=40
    )
    # A webhook made by the API's role, delivered by the webhooks service as ledgerq_worker.
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(self.headers["Ledgerq-Event-Id"])
            self.send_response(204)
            self.end_headers()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    made = http.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver.server_address[1]}/hook"})
    assert made.status_code == 201, made.text
    hooks_port = str(free_port())
    hooks_env = s.env("webhooks", LEDGERQ_METRICS_PORT=hooks_port, LEDGERQ_WEBHOOK_ALLOW_HOSTS="127.0.0.1")
    assert hooks_env["LEDGERQ_DATABASE_URL"].startswith("postgresql://ledgerq_worker_login:")
    s.start(s.command("webhooks"), hooks_env, "webhooks.log")
    s.healthy("webhooks", hooks_env, {"9600": hooks_port})

    alice, bob = uid("alice"), uid("bob")
    for account in (alice, bob):
        assert http.post("/v1/accounts", json={"id": account, "currency": "EUR"}).status_code == 201
    ids = []
    for n in range(20):
        body = {"id": uid("c"), "type": "deposit", "account_id": alice, "amount": 100, "currency": "EUR"}
        if n % 2:
            body |= {"type": "transfer", "to_account_id": bob, "amount": 50}
        assert http.post("/v1/commands", json=body).status_code == 202
        ids.append(body["id"])
    assert all(http.get(f"/v1/commands/{i}", params={"wait": 30}).json()["status"] == "applied" for i in ids)
    assert (
        http.get(f"/v1/accounts/{alice}").json()["balance"] == 500
        and http.get(f"/v1/accounts/{bob}").json()["balance"] == 500
    )
    # Two workers, four partitions: two each, once the second has joined and the first handed two back.
    partitions = int(api_env["LEDGERQ_PARTITIONS"])
    deadline = time.monotonic() + 30
    while True:
        tokens = [redis.get(lease_key(p)) for p in range(partitions)]
        owners = [t.decode().split(":")[1] if t else "" for t in tokens]
        shares = sorted(owners.count(str(w.pid)) for w in workers)
        if shares == [2, 2] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert shares == [2, 2], owners
    deadline = time.monotonic() + 60
    while len(set(received)) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(set(received)) == len(ids), (received, (s.root / "webhooks.log").read_text()[-2000:])
    receiver.shutdown()

    # The optional dashboard: refuses to start without a password, then serves behind basic auth.
    assert s.services["rq-dashboard"]["ports"] == ["127.0.0.1:9181:9181"]
    dash_port = str(free_port())
    without = subprocess.run(
        s.command("rq-dashboard", {"9181": dash_port}),
        env=s.env("rq-dashboard") | {"RQ_DASHBOARD_PASSWORD": ""},
        capture_output=True,
        timeout=30,
    )
    assert without.returncode == 1 and b"set RQ_DASHBOARD_PASSWORD" in without.stderr
    dash_env = s.env("rq-dashboard")
    s.start(s.command("rq-dashboard", {"9181": dash_port}), dash_env, "dashboard.log")
    s.healthy("rq-dashboard", dash_env, {"9181": dash_port})
    url = f"http://127.0.0.1:{dash_port}"
    assert httpx.get(f"{url}/", timeout=10).status_code == 401
    auth = ("ledgerq", s.vars["RQ_DASHBOARD_PASSWORD"])
    queues = httpx.get(f"{url}/0/data/queues.json", auth=auth, timeout=10)
    assert queues.status_code == 200, queues.text
    names = {q["name"] for q in queues.json()["queues"]}
    assert {f"ledgerq-p{p}" for p in range(4)} <= names
