"""The shipped supervisord config, run for real: it starts the API, one worker per partition and the
webhook deliveries; a worker killed with SIGKILL is replaced and nothing is lost; a shutdown
releases every lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from ledgerq.shared.keys import lease_key
from tests.chaos.cluster import PARTITIONS, Cluster
from tests.chaos.workload import line, run

CONFIG = Path(__file__).resolve().parents[2] / "shared" / "deploy" / "supervisord.conf"
WORKER = "ledgerq-worker:ledgerq-worker-{}"


class Supervisor:
    def __init__(self, cluster: Cluster, run_dir: Path) -> None:
        self.cluster = cluster
        self.env = {
            **cluster.env,
            "LEDGERQ_RUN_DIR": str(run_dir),
            "LEDGERQ_API_PORT": str(cluster.api_port),
            # `ledgerq` as installed beside this Python, as a deployment's PATH would have it.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(CONFIG)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONFIG), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout

    def pid(self, name: str) -> int:
        text = self.ctl("pid", name).strip()
        return int(text) if text.isdigit() else 0

    def wait_running(self, timeout_s: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Until supervisord's socket is up, `status` prints an error line, not states.
            rows = [line.split()[:2] for line in self.ctl("status").splitlines()]
            states = dict(row for row in rows if len(row) == 2)
            if len(states) == PARTITIONS + 2 and set(states.values()) == {"RUNNING"} and self.api_answers():
                return states
            time.sleep(0.2)
        raise AssertionError(f"not all RUNNING and answering: {self.ctl('status')}")

    def api_answers(self) -> bool:
        """RUNNING only means the API process lived `startsecs`; wait until it also listens."""
        try:
            return httpx.get(f"{self.cluster.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Cluster, Supervisor]]:
    cluster = Cluster(tmp_path)
    supervisor = Supervisor(cluster, tmp_path)
    try:
        supervisor.wait_running()
        yield cluster, supervisor
    finally:
        if supervisor.process.poll() is None:
            supervisor.process.send_signal(signal.SIGTERM)
            supervisor.process.wait(timeout=120)
        cluster.close()


def test_supervisord_replaces_a_killed_worker_and_nothing_is_lost(supervised: tuple[Cluster, Supervisor]) -> None:
    cluster, supervisor = supervised
    assert httpx.get(f"{cluster.url}/healthz", timeout=5).status_code == 200
    victim = WORKER.format(2)
    replaced: list[tuple[int, int]] = []

    def chaos(stop: threading.Event) -> None:
        time.sleep(1.0)
        before = supervisor.pid(victim)
        os.kill(before, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = supervisor.pid(victim)
            if after not in (0, before):
                replaced.append((before, after))
                return
            time.sleep(0.2)

    history, report = run(cluster, commands_min=1500, commands_max=6000, chaos=chaos)
    print(line("supervisord: kill -9 worker 2", history, report, cluster, replaced=replaced))
    assert len(replaced) == 1, "supervisord did not start a new worker 2"
    assert report.ok(), report.problems[:5]
    assert report.lost == report.duplicated == report.out_of_order == 0
    assert "RUNNING" in supervisor.ctl("status", victim)

    # A shutdown sends SIGTERM: each worker finishes its batch and releases its lease.
    redis = Redis.from_url(cluster.settings.redis_url)
    assert all(redis.exists(lease_key(p)) for p in range(PARTITIONS))
    supervisor.ctl("shutdown")
    assert supervisor.process.wait(timeout=120) == 0
    assert not any(redis.exists(lease_key(p)) for p in range(PARTITIONS))
    logs = [(supervisor.env["LEDGERQ_RUN_DIR"] + f"/worker-{p}.log") for p in range(PARTITIONS)]
    assert all("releasing leases" in Path(path).read_text() for path in logs)
