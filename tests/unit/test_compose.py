"""docker-compose.yml cannot run here (no Docker engine); check it against the Compose schema instead,
and check that every command it runs is a real `ledgerq` command with valid options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ledgerq.ops.cli import cli

ROOT = Path(__file__).parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_file_matches_the_compose_schema() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())
    schema.pop("$schema")  # draft 2019-09 is what jsonschema picks anyway; silence its warning
    jsonschema.validate(compose(), schema)


def test_compose_commands_are_real_cli_commands() -> None:
    services = compose()["services"]
    ran = []
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "ledgerq":
            continue
        group_ctx = cli.make_context("ledgerq", list(command[1:]), resilient_parsing=True)
        sub = cli.get_command(group_ctx, command[1])
        assert sub is not None, name
        sub.make_context(command[1], list(command[2:]))  # raises click.UsageError on a bad option
        ran.append(command[1])
    assert sorted(set(ran)) == ["api", "init", "webhooks", "worker"]


def test_compose_ships_durable_redis_claiming_workers_and_healthchecks() -> None:
    services = compose()["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendfsync") + 1] == "always"
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    # N workers without --partition: they share the partitions out by lease.
    assert services["worker"]["command"] == ["ledgerq", "worker"] and services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["stop_signal"] == "SIGTERM"
    long_running = [n for n, s in services.items() if s.get("restart") != "no"]
    assert sorted(long_running) == ["api", "postgres", "redis", "rq-dashboard", "webhooks", "worker"]
    assert all(services[n]["healthcheck"]["test"] for n in long_running)
    # Optional dashboard: off unless asked for, published on localhost only, never without a password.
    dashboard = services["rq-dashboard"]
    assert dashboard["profiles"] == ["dashboard"] and dashboard["ports"] == ["127.0.0.1:9181:9181"]
    assert "--password" in dashboard["command"][-1] and "--disable-delete" in dashboard["command"][-1]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    # Least privilege: each process connects as its own role; Redis is password-protected.
    users = {
        name: s["environment"]["LEDGERQ_DATABASE_URL"].split("//")[1].split(":")[0]
        for name, s in services.items()
        if "environment" in s and "LEDGERQ_DATABASE_URL" in s["environment"]
    }
    assert users["api"] == "ledgerq_api_login" and users["worker"] == users["webhooks"] == "ledgerq_worker_login"
    assert users["migrate"] == "ledgerq"
    assert "--requirepass" in redis_cmd and all(
        "@redis:6379" in s["environment"]["LEDGERQ_REDIS_URL"]
        for n, s in services.items()
        if n.startswith(("api", "worker"))
    )
    assert (
        services["api"]["environment"]["LEDGERQ_SIGNING_KEY"]
        == services["worker"]["environment"]["LEDGERQ_SIGNING_KEY"]
    )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
