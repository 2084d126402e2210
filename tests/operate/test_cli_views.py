"""What operators read: `ledgerq status` (a rich table), `rq info` (RQ's own view of ledgerq's queues),
and `ledgerq verify`'s progress, on a terminal and off one, against real processes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time

import httpx

from tests.chaos.cluster import LEDGERQ, Cluster
from tests.conftest import uid


def ledgerq(cluster: Cluster, *args: str) -> str:
    done = subprocess.run([*LEDGERQ, *args], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def status_row(cluster: Cluster, partition: int) -> list[str]:
    """The cells of one partition's row in `ledgerq status`."""
    for line in ledgerq(cluster, "status").splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == str(partition):
            return cells
    raise AssertionError("no row for the partition")


def rq_queue_line(cluster: Cluster, partition: int) -> str:
    rq = [sys.executable, "-c", "from rq.cli import main; main()"]
    out = subprocess.run(
        [*rq, "info", "--url", cluster.settings.redis_url, "--raw", "--only-queues", f"ledgerq-p{partition}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("queue ")]
    return line


def wait_until(check: object, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition never held")


def test_status_and_rq_info_follow_jobs_from_queued_to_in_flight_to_finished(cluster: Cluster) -> None:
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)
    account = uid("view")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    ids = [uid("dep") for _ in range(3)]
    for command_id in ids:
        command = {"id": command_id, "type": "deposit", "account_id": account, "amount": 10, "currency": "USD"}
        partition = http.post("/v1/commands", json=command).json()["partition"]

    # No worker: three queued, nobody owns the partition.
    row = status_row(cluster, partition)
    assert row[1] == "none" and row[2:4] == ["3", "0"] and row[4].endswith("s") and row[5:] == ["0", "0", "0"]
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 3, 0 executing, 0 finished, 0 failed"

    # A worker that dies right after taking the batch: the jobs are in flight, in order, for the next owner.
    dying = cluster.add_worker([partition], LEDGERQ_FAULT_POINTS="after_take:1")
    dying.restart = False
    assert dying.process is not None
    dying.process.wait(timeout=60)
    row = status_row(cluster, partition)
    assert row[2:4] == ["0", "3"] and row[5] == "0"
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 0, 3 executing, 0 finished, 0 failed"

    # A healthy worker finishes them.
    worker = cluster.add_worker([partition])
    for command_id in ids:
        assert http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()["status"] == "applied"
    wait_until(lambda: status_row(cluster, partition)[2:6] == ["0", "0", "-", "3"])
    assert worker.process is not None
    assert f":{worker.process.pid}:" in status_row(cluster, partition)[1]
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 0, 0 executing, 3 finished, 0 failed"


def test_verify_shows_plain_progress_lines_off_a_terminal_and_a_bar_on_one(cluster: Cluster) -> None:
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)
    for _ in range(45):
        assert http.post("/v1/accounts", json={"id": uid("v"), "currency": "USD"}).status_code == 201

    plain = ledgerq(cluster, "verify", "--step-rows", "10")
    steps = re.findall(r"^verify: accounts (\d+)/(\d+) \((\d+)%\)$", plain, re.M)
    total = int(steps[0][1])
    assert total >= 45
    assert [int(done) for done, _, _ in steps] == [*range(0, total, 10), total]
    assert steps[-1][2] == "100"
    assert plain.rstrip().endswith("ledgerq verify: ok (8 checks)")
    assert "\x1b[" not in plain  # no terminal codes in a log

    # On a terminal (a pty made by `script`): a rich progress bar, then the same verdict.
    command = shlex.join([*LEDGERQ, "verify", "--step-rows", "10"])
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"], env=cluster.env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stdout
    assert "━" in shown.stdout and "accounts" in shown.stdout
    assert not re.search(r"^verify: accounts", shown.stdout, re.M)
    assert "ledgerq verify: ok (8 checks)" in shown.stdout
