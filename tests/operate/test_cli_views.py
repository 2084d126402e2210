"""What operators read: `ledgerq status` (a rich table on a terminal, plain lines or JSON otherwise), `rq info`
(RQ's own view of ledgerq's queues), and `ledgerq verify`'s progress, on a terminal and off one, against real
processes."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from typing import Any

import httpx
from redis import Redis
from rich.console import Console

from ledgerq.ops.cli import status_table
from ledgerq.ops.verify import CHECKS
from ledgerq.shared.keys import job_key
from tests.chaos.cluster import LEDGERQ, PARTITIONS, Cluster
from tests.conftest import uid

STATUS_FIELDS = ["partition", "owner", "queued", "inflight", "oldest_job_age_s", "applied", "rejected", "failed"]


def piped(env: dict[str, str]) -> dict[str, str]:
    """The environment without the variables that make rich treat a pipe as a terminal."""
    return {k: v for k, v in env.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}


def ledgerq(cluster: Cluster, *args: str) -> str:
    done = subprocess.run([*LEDGERQ, *args], env=piped(cluster.env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def on_a_terminal(cluster: Cluster, *args: str) -> str:
    """What `ledgerq ARGS` shows on a terminal: run under a pseudo-terminal made by `script`."""
    command = shlex.join([*LEDGERQ, *args])
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"], env=cluster.env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stdout
    return shown.stdout


def status_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """`ledgerq status --json`'s partitions."""
    rows: list[dict[str, Any]] = json.loads(ledgerq(cluster, "status", "--json"))["partitions"]
    return rows


def status_row(cluster: Cluster, partition: int) -> dict[str, Any]:
    return status_rows(cluster)[partition]


def submit(http: httpx.Client, account: str, kind: str, amount: int) -> tuple[str, int]:
    command_id = uid(kind)
    command = {"id": command_id, "type": kind, "account_id": account, "amount": amount, "currency": "USD"}
    sent = http.post("/v1/commands", json=command)
    assert sent.status_code == 202, sent.text
    return command_id, int(sent.json()["partition"])


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
    sent = [submit(http, account, "deposit", 10) for _ in range(3)]
    ids, partition = [command_id for command_id, _ in sent], sent[0][1]

    # No worker: three queued, nobody owns the partition.
    row = status_row(cluster, partition)
    assert row["owner"] is None and (row["queued"], row["inflight"]) == (3, 0)
    assert row["oldest_job_age_s"] is not None and row["oldest_job_age_s"] >= 0
    assert (row["applied"], row["rejected"], row["failed"]) == (0, 0, 0)
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 3, 0 executing, 0 finished, 0 failed"

    # A worker that dies right after taking the batch: the jobs are in flight, in order, for the next owner.
    dying = cluster.add_worker([partition], LEDGERQ_FAULT_POINTS="after_take:1")
    dying.restart = False
    assert dying.process is not None
    dying.process.wait(timeout=60)
    row = status_row(cluster, partition)
    assert (row["queued"], row["inflight"], row["applied"]) == (0, 3, 0)
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 0, 3 executing, 0 finished, 0 failed"

    # A healthy worker finishes them.
    worker = cluster.add_worker([partition])
    for command_id in ids:
        assert http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()["status"] == "applied"
    done = {"queued": 0, "inflight": 0, "oldest_job_age_s": None, "applied": 3}
    wait_until(lambda: done.items() <= status_row(cluster, partition).items())
    assert worker.process is not None
    assert f":{worker.process.pid}:" in status_row(cluster, partition)["owner"]
    # Finished jobs leave Redis with their outcome (LEDGERQ_RESULT_TTL_S=0): Postgres has them, so `rq info`
    # counts none finished, and no job hash is left behind.
    assert rq_queue_line(cluster, partition) == f"queue ledgerq-p{partition} 0, 0 executing, 0 finished, 0 failed"
    redis = Redis.from_url(cluster.redis.url)
    assert not any(redis.exists(job_key(command_id)) for command_id in ids)


def test_piped_status_is_one_plain_line_per_partition_and_json_counts_outcomes(cluster: Cluster) -> None:
    http = httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40)
    account = uid("count")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    sent = [submit(http, account, "deposit", 10), submit(http, account, "deposit", 5)]
    sent.append(submit(http, account, "withdraw", 1000))  # more than the balance: rejected
    worker = cluster.add_worker(list(range(PARTITIONS)))
    finals = [http.get(f"/v1/commands/{command_id}", params={"wait": 30}).json()["status"] for command_id, _ in sent]
    assert finals == ["applied", "applied", "rejected"]
    partition = sent[0][1]
    settled = {"queued": 0, "inflight": 0, "oldest_job_age_s": None}
    wait_until(lambda: all(settled.items() <= row.items() for row in status_rows(cluster)))

    rows = status_rows(cluster)
    assert [list(row) for row in rows] == [STATUS_FIELDS] * PARTITIONS
    assert [row["partition"] for row in rows] == list(range(PARTITIONS))
    assert (rows[partition]["applied"], rows[partition]["rejected"], rows[partition]["failed"]) == (2, 1, 0)
    assert sum(row["applied"] + row["rejected"] for row in rows) == 3
    assert worker.process is not None
    assert all(f":{worker.process.pid}:" in row["owner"] for row in rows)

    plain = ledgerq(cluster, "status")
    assert not re.search("[\u2500-\u257f]", plain) and "\x1b[" not in plain  # no box drawing, no colour
    lines = plain.splitlines()
    assert len(lines) == PARTITIONS
    for number, (line, row) in enumerate(zip(lines, rows, strict=True)):
        first, *fields = line.split(" ")
        assert first == str(number)
        expected = {k: "-" if v is None else str(v) for k, v in row.items() if k != "partition"}
        assert dict(field.split("=", 1) for field in fields) == expected


def test_status_on_a_terminal_draws_the_table(cluster: Cluster) -> None:
    worker = cluster.add_worker([0])
    assert worker.process is not None
    wait_until(lambda: status_row(cluster, 0)["owner"] is not None)
    owner = status_row(cluster, 0)["owner"]
    assert f":{worker.process.pid}:" in owner

    cluster.env["COLUMNS"] = "200"  # wide enough that the owner is not cut short
    shown = on_a_terminal(cluster, "status")
    assert "┏" in shown and "partition" in shown and "oldest job" in shown
    lines = re.sub(r"\x1b\[[0-9;]*m", "", shown).splitlines()  # the table's colours aside
    rows = [[cell.strip() for cell in line.strip("│ \r").split("│")] for line in lines]
    assert [row[:2] for row in rows if row[0].isdigit()] == [
        ["0", owner],
        *([str(p), "none"] for p in range(1, PARTITIONS)),
    ]
    assert "owner=" not in shown
    # --json is for scripts, whatever stdout is.
    assert len(json.loads(on_a_terminal(cluster, "status", "--json"))["partitions"]) == PARTITIONS


def test_the_table_shows_owners_as_they_are_not_as_markup_or_emoji() -> None:
    record = dict.fromkeys(STATUS_FIELDS, 0) | {"owner": "host:100:[bold]x", "oldest_job_age_s": None}
    console = Console(force_terminal=True, width=200, record=True)
    console.print(status_table([record]))
    assert "host:100:[bold]x" in console.export_text()


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
    assert plain.rstrip().endswith(f"ledgerq verify: ok ({len(CHECKS)} checks)")
    assert "\x1b[" not in plain  # no terminal codes in a log

    # On a terminal (a pty made by `script`): a rich progress bar, then the same verdict.
    shown = on_a_terminal(cluster, "verify", "--step-rows", "10")
    assert "━" in shown and "accounts" in shown
    assert not re.search(r"^verify: accounts", shown, re.M)
    assert f"ledgerq verify: ok ({len(CHECKS)} checks)" in shown
