"""Fixtures: private PostgreSQL and Redis processes for the session, and factories on top of them.

Tests use random ids, so none depends on cleanup or on another test's data.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from ledgerq.api.app import create_app
from ledgerq.api.context import Context
from ledgerq.ops.embedded import PostgresServer, RedisServer
from ledgerq.shared.apikeys import create_key
from ledgerq.shared.db import fix_partitions, make_engine, migrate
from ledgerq.shared.settings import Settings

if TYPE_CHECKING:
    from tests.chaos.cluster import Cluster

PARTITIONS = 4
SIGNING_KEY = "test-signing-key-0123456789abcdef0123"


def redis_major_version() -> int:
    """The major version of the redis-server the fixtures and `ledgerq dev` start."""
    import re
    import subprocess

    from ledgerq.ops.embedded import find_redis_server

    out = subprocess.run([str(find_redis_server()), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+)\.", out)
    assert match, out
    return int(match.group(1))


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, RedisServer]]:
    root: Path = tmp_path_factory.mktemp("servers")
    postgres = PostgresServer(root / "pgdata").start()
    redis = RedisServer(root / "redis").start()
    yield postgres, redis
    redis.stop()
    postgres.stop()


@pytest.fixture(scope="session")
def settings(servers: tuple[PostgresServer, RedisServer]) -> Settings:
    postgres, redis = servers
    return service_settings(postgres.url, redis.url)


def service_settings(database_url: str, redis_url: str) -> Settings:
    """The tests' settings for a service on these servers, its schema migrated and P fixed."""
    s = Settings(
        database_url=database_url,
        redis_url=redis_url,
        partitions=PARTITIONS,
        lease_ttl_ms=2000,
        backoff_s_max=0.5,
        signing_key=SIGNING_KEY,
        # The tests' webhook receivers listen on loopback.
        webhook_allow_hosts="*,127.0.0.1,::1",
    )
    migrate(s)
    engine = make_engine(s, pool_size=1)
    fix_partitions(engine, PARTITIONS)
    engine.dispose()
    return s


@pytest.fixture(scope="session")
def scratch_engine(servers: tuple[PostgresServer, RedisServer]) -> Iterator[Any]:
    """A migrated database of its own, for tests that write drift on purpose."""
    postgres, redis = servers
    url = postgres.create_database(uid("scratch").replace("-", "_"))
    s = Settings(database_url=url, redis_url=redis.url, partitions=PARTITIONS)
    migrate(s)
    engine = make_engine(s, pool_size=2)
    fix_partitions(engine, PARTITIONS)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def ctx(settings: Settings) -> Iterator[Context]:
    context = Context.build(settings)
    yield context
    context.close()


@pytest.fixture(scope="session")
def engine(ctx: Context) -> Any:
    return ctx.engine


@pytest.fixture(scope="session")
def keys(engine: Any) -> dict[str, str]:
    return {scope: create_key(engine, scope, name=f"test {scope}")[0] for scope in ("read", "write", "admin")}


@pytest.fixture(scope="session")
def http(ctx: Context, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(context=ctx), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {keys['write']}"
        yield client


class Workers:
    """In-process `ledgerq worker` over every partition, stoppable like SIGTERM would."""

    def __init__(self, settings: Settings) -> None:
        from ledgerq.worker.main import run_worker

        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run_worker, args=(settings, list(range(settings.partitions)), self.stop), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture(scope="module")
def workers(settings: Settings) -> Iterator[Workers]:
    running = Workers(settings)
    yield running
    running.close()


@pytest.fixture
def make_account(http: TestClient) -> Callable[..., str]:
    """Factory: a fresh account, funded by a deposit that has been applied."""

    def make(balance: int = 0, currency: str = "USD", overdraft_limit: int = 0, prefix: str = "acct") -> str:
        account_id = uid(prefix)
        created = http.post(
            "/v1/accounts", json={"id": account_id, "currency": currency, "overdraft_limit": overdraft_limit}
        )
        assert created.status_code == 201, created.text
        if balance:
            command_id = uid("fund")
            sent = http.post(
                "/v1/commands",
                json={
                    "id": command_id,
                    "type": "deposit",
                    "account_id": account_id,
                    "amount": balance,
                    "currency": currency,
                },
            )
            assert sent.status_code == 202, sent.text
            final = http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()
            assert final["status"] == "applied", final
        return account_id

    return make


def refused_at_the_door(http: TestClient, engine: Any, cases: dict[str, list[dict[str, Any]]]) -> None:
    """Each body (code -> bodies; a body without an id gets one) is answered 422 with that code, and
    none of them is claimed."""
    ids = []
    for code, bodies in cases.items():
        for body in bodies:
            body = {"id": uid("refused"), **body}
            answer = http.post("/v1/commands", json=body)
            assert answer.status_code == 422 and answer.json()["code"] == code, (code, body, answer.text)
            ids.append(body["id"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM commands WHERE id = ANY(:ids)"), {"ids": ids}).scalar() == 0


def wait_final(http: TestClient, command_id: str, timeout_s: int = 30) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/v1/commands/{command_id}", params={"wait": timeout_s}).json()
    return body


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """PostgreSQL, Redis and `ledgerq api` as real processes of their own; workers are the test's to start."""
    from tests.chaos.cluster import Cluster

    running = Cluster(tmp_path)
    running.start_api()
    yield running
    running.close()


# The chaos tests' result lines ride on their reports, so the summary has them also when pytest-xdist
# runs the tests in worker processes (only the reports come back to the process that prints).
_CHAOS_LINES_SENT = 0
CHAOS_LINES: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    global _CHAOS_LINES_SENT
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "teardown" and "tests/chaos/" in str(item.fspath):
        from tests.chaos.workload import RESULTS

        report.user_properties.extend(("chaos", text) for text in RESULTS[_CHAOS_LINES_SENT:])
        _CHAOS_LINES_SENT = len(RESULTS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    CHAOS_LINES.extend(str(text) for name, text in report.user_properties if name == "chaos")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CHAOS_LINES:
        terminalreporter.section("chaos results")
        for text in CHAOS_LINES:
            terminalreporter.write_line(text)
