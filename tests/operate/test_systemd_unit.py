"""The shipped systemd units: systemd itself checks them; the worker template's ExecStart, with the
instance name filled in, serves that partition, and each unit's process exits 0 on its KillSignal
within TimeoutStopSec."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.chaos.cluster import Cluster
from tests.conftest import uid

DEPLOY = Path(__file__).resolve().parents[2] / "shared" / "deploy"
UNIT = DEPLOY / "ledgerq-worker@.service"
WEBHOOKS_UNIT = DEPLOY / "ledgerq-webhooks.service"


def service_section(unit: Path = UNIT) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return parser["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(("unit", "instance"), [(UNIT, "ledgerq-worker@3.service"), (WEBHOOKS_UNIT, None)])
def test_systemd_accepts_the_unit(tmp_path: Path, unit: Path, instance: str | None) -> None:
    shutil.copy(unit, tmp_path / unit.name)
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / (instance or unit.name))], capture_output=True, text=True
    )
    # Warnings (a bad signal name, an unknown key) go to stderr with exit 0: both must be empty.
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr


def test_the_units_exec_start_serves_its_partition_and_stops_on_its_kill_signal(cluster: Cluster) -> None:
    service = service_section()
    assert service["Restart"] == "always" and int(service["TimeoutStopSec"]) >= 30
    command = service["ExecStart"].replace("%i", "1").split()
    assert command[:2] == ["/usr/bin/env", "ledgerq"]
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(dict(line.split("=", 1) for line in [service["Environment"]]))
    worker = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)
    # An account on partition 1, found by asking the API where its commands go.
    for _ in range(200):
        account = uid("unit")
        assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
        command_id = uid("dep")
        sent = http.post(
            "/v1/commands",
            json={"id": command_id, "type": "deposit", "account_id": account, "amount": 7, "currency": "USD"},
        )
        if sent.json()["partition"] == 1:
            break
    assert sent.json()["partition"] == 1
    assert http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()["status"] == "applied"
    worker.send_signal(getattr(signal, service["KillSignal"]))
    started = time.monotonic()
    assert worker.wait(timeout=int(service["TimeoutStopSec"])) == 0
    print(f"stopped {time.monotonic() - started:.2f}s after {service['KillSignal']}")
    assert worker.stderr is not None
    assert "releasing leases" in worker.stderr.read()


def test_the_webhooks_units_exec_start_runs_and_stops_on_its_kill_signal(cluster: Cluster) -> None:
    service = service_section(WEBHOOKS_UNIT)
    assert service["Restart"] == "always" and int(service["TimeoutStopSec"]) >= 30
    command = service["ExecStart"].split()
    assert command == ["/usr/bin/env", "ledgerq", "webhooks"]
    env = {**cluster.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(dict(line.split("=", 1) for line in [service["Environment"]]))
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    assert "ledgerq webhooks: delivering" in process.stderr.readline()
    process.send_signal(getattr(signal, service["KillSignal"]))
    assert process.wait(timeout=int(service["TimeoutStopSec"])) == 0
