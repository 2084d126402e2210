"""The `ledgerq` command line's flags: help on every option, `--version`, and `keys list`'s outputs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from datetime import datetime
from importlib.metadata import version
from typing import Any

import click
import pytest

from ledgerq.ops.cli import cli
from ledgerq.shared.apikeys import create_key, revoke_key
from ledgerq.shared.settings import Settings
from tests.chaos.cluster import LEDGERQ
from tests.conftest import uid


def commands(command: click.Command = cli, ctx: click.Context | None = None) -> Iterator[tuple[str, click.Command]]:
    """Every command under `command` (itself included), the lazy `api` and `worker` ones loaded."""
    ctx = ctx or click.Context(command, info_name="ledgerq")
    yield ctx.command_path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from commands(sub, click.Context(sub, info_name=name, parent=ctx))


OPTIONS = {f"{path} {p.opts[0]}": p for path, c in commands() for p in c.params if isinstance(p, click.Option)}


def test_the_walk_reaches_every_command_including_the_lazy_ones() -> None:
    paths = {path for path, _ in commands()}
    assert {"ledgerq api", "ledgerq worker", "ledgerq keys create", "ledgerq status", "ledgerq dev"} <= paths
    assert {"ledgerq api --port", "ledgerq worker --metrics-port", "ledgerq --log-level"} <= set(OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_has_help_and_names_the_variable_it_reads(name: str) -> None:
    option = OPTIONS[name]
    assert option.help and option.help.strip(), name
    if option.envvar:
        assert option.show_envvar, f"{name} reads {option.envvar} without saying so"


def test_every_command_says_what_it_does() -> None:
    for path, command in commands():
        assert command.help and command.help.strip(), path


def test_version_is_the_installed_distributions() -> None:
    for program in (["ledgerq"], LEDGERQ):
        done = subprocess.run([*program, "--version"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"ledgerq {version('ledgerq')}\n"


def keys_list(settings: Settings, *args: str, terminal: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env |= {"LEDGERQ_DATABASE_URL": settings.database_url, "LEDGERQ_REDIS_URL": settings.redis_url}
    command = [*LEDGERQ, "keys", "list", *args]
    if terminal:  # a pseudo-terminal made by `script`
        command = ["script", "-qec", shlex.join(command), "/dev/null"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_keys_list_as_json_plain_lines_and_a_table(settings: Settings, engine: Any) -> None:
    name = uid("flags")
    secret, key = create_key(engine, "read", prefix="shop9:", name=name)

    (listed,) = [k for k in json.loads(keys_list(settings, "--json"))["keys"] if k["name"] == name]
    assert listed == {
        "id": key.id,
        "scope": "read",
        "prefix": "shop9:",
        "name": name,
        "created_at": listed["created_at"],
        "revoked_at": None,
    }
    assert datetime.fromisoformat(listed["created_at"]) == key.created_at

    # Plain lines (stable for scripts): the id first, whitespace-separated; never the secret.
    plain = keys_list(settings)
    (line,) = [line for line in plain.splitlines() if line.endswith(name)]
    assert line.split()[:4] == [key.id, "read", "prefix='shop9:'", "active"]
    assert secret not in plain and secret not in keys_list(settings, "--json")

    assert revoke_key(engine, key.id)
    (listed,) = [k for k in json.loads(keys_list(settings, "--json"))["keys"] if k["id"] == key.id]
    assert datetime.fromisoformat(listed["revoked_at"]) >= key.created_at

    shown = keys_list(settings, terminal=True)
    assert "┏" in shown and key.id in shown and "revoked" in shown
