"""`ledgerq reconcile` as operators run it, a real process against the session's PostgreSQL: exit 0 when
every record matches, 1 on any discrepancy (each printed, then the summary), 2 on malformed input naming
the row (nothing kept), JSON files and `--json`, the window options, a progress bar on a terminal only,
and the README's Stripe payout example run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from ledgerq.shared.reconciliation import CHUNK_REFERENCES
from ledgerq.shared.settings import Settings
from tests.conftest import Workers, uid

LEDGERQ = [sys.executable, "-m", "ledgerq.ops.cli"]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
HEADER = "external_id,amount,currency,reference,date\n"


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The CLI's environment: the session's database, and no variable that makes rich see a terminal."""
    plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**plain, "LEDGERQ_DATABASE_URL": settings.database_url, "LEDGERQ_REDIS_URL": settings.redis_url}


def reconcile(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEDGERQ, "reconcile", *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


def applied(http: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    body = {"id": uid(body["type"]), **body}
    assert http.post("/v1/commands", json=body).status_code == 202
    done: dict[str, Any] = http.get(f"/v1/commands/{body['id']}", params={"wait": 30}).json()
    assert done["status"] == "applied", done
    return done


def deposit(http: TestClient, account: str, amount: int, reference: str) -> dict[str, Any]:
    return applied(
        http, {"type": "deposit", "account_id": account, "amount": amount, "currency": "USD", "reference": reference}
    )


def kept(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT (SELECT count(*) FROM reconciliations), (SELECT count(*) FROM reconciliation_items)")
        ).one()
    return row[0], row[1]


def summary_line(stdout: str) -> str:
    *_, last = stdout.rstrip("\n").splitlines()
    return last


def test_every_record_matched_exits_0_and_the_run_is_kept_as_a_cli_run(
    http: TestClient, make_account: Callable[..., str], workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    account = make_account()
    refs = [uid("ref") for _ in range(3)]
    for i, ref in enumerate(refs):
        deposit(http, account, 100 * (i + 1), ref)
    rows = "".join(f"po_{i},{100 * (i + 1)},usd,{ref},2024-03-0{i + 1}\n" for i, ref in enumerate(refs))
    (tmp_path / "payouts.csv").write_text(HEADER + rows)
    done = reconcile(env, str(tmp_path / "payouts.csv"), "--account", account)
    assert done.returncode == 0, done.stderr
    line = summary_line(done.stdout)
    assert done.stdout.count("\n") == 1, done.stdout  # the summary alone: nothing to report
    found = re.fullmatch(r"ledgerq reconcile: (rec_[0-9a-f]+) (.*) \(ok\)", line)
    assert found, line
    assert found.group(2) == "records=3 matched=3 mismatched=0 unmatched_external=0 unmatched_ledger=0"
    run = http.get(f"/v1/reconciliations/{found.group(1)}").json()
    assert (run["source"], run["account_id"], run["summary"]["matched"]) == ("cli", account, 3)


def test_discrepancies_are_printed_each_and_exit_1(
    http: TestClient, make_account: Callable[..., str], workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    account = make_account()
    ref_ok, ref_off, ref_ledger = uid("ref"), uid("ref"), uid("ref")
    deposit(http, account, 1_000, ref_ok)
    off = deposit(http, account, 2_000, ref_off)
    ledger_only = deposit(http, account, 400, ref_ledger)
    body = HEADER + f"po_1,1000,USD,{ref_ok},\npo_2,2500,USD,{ref_off},2024-03-05\npo_3,300,USD,{uid('ref')},\n"
    (tmp_path / "statement.csv").write_text(body)
    done = reconcile(env, str(tmp_path / "statement.csv"), "--account", account)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        f"MISMATCHED n=2 external_id=po_2 reference={ref_off} command_id={off['id']} date=2024-03-05"
        " external=2500 USD ledger=2000 USD"
    )
    assert lines[1].startswith("UNMATCHED_EXTERNAL n=3 external_id=po_3 ") and lines[1].endswith("external=300 USD")
    assert lines[2] == f"UNMATCHED_LEDGER n=4 reference={ref_ledger} command_id={ledger_only['id']} ledger=400 USD"
    assert lines[3].endswith(
        "records=3 matched=1 mismatched=1 unmatched_external=1 unmatched_ledger=1 (3 discrepancies)"
    )
    assert len(lines) == 4

    # --json: the run as the API shows it, and the same exit code.
    as_json = reconcile(env, str(tmp_path / "statement.csv"), "--account", account, "--json")
    assert as_json.returncode == 1, as_json.stderr
    run = json.loads(as_json.stdout)
    assert run["source"] == "cli" and [i["status"] for i in run["items"]] == [
        "matched",
        "mismatched",
        "unmatched_external",
        "unmatched_ledger",
    ]
    assert http.get(f"/v1/reconciliations/{run['id']}").json()["items"] == run["items"]


def test_json_files_are_read_as_a_list_or_the_apis_body(
    http: TestClient, make_account: Callable[..., str], workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    account = make_account()
    ref = uid("ref")
    deposit(http, account, 700, ref)
    records = [{"external_id": "po_1", "amount": 700, "currency": "usd", "reference": ref, "note": "ignored"}]
    (tmp_path / "list.json").write_text(json.dumps(records))
    (tmp_path / "body.txt").write_text(json.dumps({"records": records}))
    for args in (["list.json"], ["body.txt", "--format", "json"]):
        done = reconcile(env, *args, "--account", account, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "matched=1 " in summary_line(done.stdout)


def test_the_window_options_take_rfc_3339_times_or_dates(
    http: TestClient, make_account: Callable[..., str], workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    """A window that ends before the account's commands leaves nothing unmatched on the ledger side."""
    account = make_account()
    deposit(http, account, 100, uid("ref"))
    (tmp_path / "empty.csv").write_text(HEADER)
    in_window = reconcile(env, "empty.csv", "--account", account, "--since", "2000-01-01T00:00:00Z", cwd=tmp_path)
    assert in_window.returncode == 1 and "unmatched_ledger=1" in summary_line(in_window.stdout)
    before = reconcile(env, "empty.csv", "--account", account, "--until", "2000-01-01", cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert summary_line(before.stdout).endswith("unmatched_ledger=0 (ok)")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (HEADER + "po_1,100,USD,r1,\npo_2,12.50,USD,r2,\n", "row 3, amount: must be an integer of minor units"),
        ("external_id,amount,currency\npo_1,100,USD\n", "row 1: no column 'reference'"),
        (HEADER + 'po_1,100,USD,"r1\n', "row 2: is not valid CSV"),
    ],
)
def test_a_malformed_row_is_a_usage_error_naming_it_and_nothing_is_kept(
    env: dict[str, str], engine: Engine, tmp_path: Path, body: str, says: str
) -> None:
    (tmp_path / "bad.csv").write_text(body)
    before = kept(engine)
    done = reconcile(env, str(tmp_path / "bad.csv"))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr and "Invalid value for FILE" in done.stderr, done.stderr
    assert kept(engine) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--account", "no-such-account-anywhere"], "not found"),
        (["--since", "2024-03-01T00:00:00"], "no time zone"),
        (["--since", "yesterday"], "not an RFC 3339 time"),
        (["--since", "2024-03-02", "--until", "2024-03-01"], "since must be before until"),
        (["--columns", "amount"], "is not ours=theirs"),
        (["--columns", "total=amount"], "none of external_id"),
    ],
)
def test_bad_options_are_usage_errors_and_nothing_is_kept(
    env: dict[str, str], engine: Engine, tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "ok.csv").write_text(HEADER)
    before = kept(engine)
    done = reconcile(env, str(tmp_path / "ok.csv"), *args)
    assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
    assert kept(engine) == before


def test_a_large_file_shows_a_bar_on_a_terminal_and_no_progress_lines_off_one(
    make_account: Callable[..., str], env: dict[str, str], tmp_path: Path, settings: Settings
) -> None:
    account = make_account()
    rows = "".join(f"po_{i},{i + 1},USD,{account}-unknown-{i},\n" for i in range(CHUNK_REFERENCES * 2 + 500))
    (tmp_path / "large.csv").write_text(HEADER + rows)
    args = ["large.csv", "--account", account]

    piped = reconcile(env, *args, cwd=tmp_path)
    assert piped.returncode == 1
    assert "\x1b[" not in piped.stdout and "reconcile: match" not in piped.stdout
    assert summary_line(piped.stdout).endswith("unmatched_external=2500 unmatched_ledger=0 (2500 discrepancies)")

    shown = subprocess.run(
        ["script", "-qec", shlex.join([*LEDGERQ, "reconcile", *args]), "/dev/null"],
        env={**env, "TERM": "xterm-256color", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert shown.returncode == 1, shown.stdout[-2000:]
    assert "match" in shown.stdout and "store" in shown.stdout and "\x1b[" in shown.stdout
    assert "2500/2500" in shown.stdout  # rich's M/N column at the end of the match step
    assert "unmatched_external=2500 unmatched_ledger=0 (2500 discrepancies)" in shown.stdout


def readme_example() -> tuple[str, list[str], list[str], int]:
    """The README's reconciliation example: the CSV, the command's arguments, its output and exit code."""
    section = README.split("\n## Reconciliation\n")[1].split("\n## ")[0]
    csv_block = re.search(r"```csv\n(.*?)```", section, re.S)
    console = re.search(r"```console\n(.*?)```", section, re.S)
    assert csv_block and console
    lines = console.group(1).splitlines()
    command = lines[0].removeprefix("$ ")
    rest = lines[1:]
    while command.endswith("\\"):
        command = command[:-1] + rest.pop(0)
    echo = rest.index("$ echo $?")
    return csv_block.group(1), shlex.split(command), rest[:echo], int(rest[echo + 1])


def test_the_readme_stripe_payout_example_runs_as_written(
    http: TestClient, workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    """The README's ledger (three withdrawals), its export and command: the output it shows, exit 1; the
    curl call with `columns` in the query answers the same summary."""
    payouts, args, expected, code = readme_example()
    assert args[:3] == ["ledgerq", "reconcile", "payouts.csv"]
    section = README.split("\n## Reconciliation\n")[1]
    commands = re.findall(r"`(w-\d+)`\s+\((\d+),\s+`([^`]+)`\)", section.split("```csv")[0])
    assert len(commands) == 3, commands
    account = uid("acme")
    assert http.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    applied(http, {"type": "deposit", "account_id": account, "amount": 1_000_000, "currency": "USD"})
    ids = {}
    for readme_id, amount, reference in commands:
        body = {"type": "withdraw", "account_id": account, "amount": int(amount), "currency": "USD"}
        ids[readme_id] = applied(http, {**body, "id": uid(readme_id), "reference": reference})["id"]
    (tmp_path / "payouts.csv").write_text(payouts)

    argv = [account if a == "acme" else a for a in args[2:]]
    done = reconcile(env, *argv, cwd=tmp_path)
    assert done.returncode == code == 1, done.stderr
    shown = done.stdout.splitlines()
    run_id = re.search(r"rec_[0-9a-f]+", shown[-1])
    assert run_id
    for readme_id, real_id in ids.items():
        expected = [line.replace(f"command_id={readme_id} ", f"command_id={real_id} ") for line in expected]
    expected = [line.replace("rec_…", run_id.group(0)) for line in expected]
    assert shown == expected

    url = re.search(r'curl -s -X POST "http://127.0.0.1:8000(/v1/reconciliations\?[^"]+)"', section)
    assert url
    answer = http.post(
        url.group(1).replace("account_id=acme", f"account_id={account}"),
        content=payouts,
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 201, answer.text
    items = answer.json()["items"]
    assert [i["status"] for i in items] == ["matched", "mismatched", "unmatched_external", "unmatched_ledger"]
    assert items[0]["command_id"] == ids["w-0304"] and items[0]["date"] == "2024-03-04"


@pytest.mark.slow
def test_a_hundred_thousand_rows_are_reconciled_in_one_run(
    http: TestClient, make_account: Callable[..., str], workers: Workers, env: dict[str, str], tmp_path: Path
) -> None:
    """A statement of 100k rows (the size the API's 10 MiB body holds) through the CLI: every row kept."""
    account = make_account()
    ref = uid("ref")
    command = deposit(http, account, 1, ref)
    rows = "".join(f"po_{i},{i + 1},usd,{ref if i == 0 else f'{ref}-{i}'},2024-03-04\n" for i in range(100_000))
    (tmp_path / "big.csv").write_text(HEADER + rows)
    done = reconcile(env, "big.csv", "--account", account, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["summary"] == {
        "records": 100_000,
        "matched": 1,
        "mismatched": 0,
        "unmatched_external": 99_999,
        "unmatched_ledger": 0,
    }
    assert run["items"][0]["command_id"] == command["id"]
    assert [i["n"] for i in run["items"]] == list(range(1, 100_001))
