"""The contract in shared/: command validation, canonical payloads, routing, key names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ledgerq.shared.commands import AMOUNT_MAX, Deposit, parse_command
from ledgerq.shared.keys import job_id
from ledgerq.shared.routing import partition_for, stable_hash, world_account

GOOD = {"id": "c-1", "type": "deposit", "account_id": "a:1", "amount": 1, "currency": "USD"}


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -5},
        {"amount": 1.5},
        {"amount": 100.0},
        {"amount": "100"},
        {"amount": True},
        {"amount": AMOUNT_MAX + 1},
        {"currency": "usd"},
        {"currency": "US"},
        {"type": "refund"},
        {"id": "bad id"},
        {"id": "x" * 129},
        {"id": ""},
        {"account_id": "a/b"},
        {"extra": 1},
        {"reference": "r" * 257},
        {"metadata": {"k": "v" * 5000}},
    ],
)
def test_bad_commands_are_refused(change: dict[str, object]) -> None:
    """Each malformed field is a validation error before anything else happens."""
    with pytest.raises(ValidationError):
        parse_command({**GOOD, **change})


def test_transfer_to_self_and_missing_target_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_command({**GOOD, "type": "transfer", "to_account_id": "a:1"})
    with pytest.raises(ValidationError):
        parse_command({**GOOD, "type": "transfer"})


def test_largest_amount_is_accepted_and_payload_hash_ignores_key_order() -> None:
    command = parse_command({**GOOD, "amount": AMOUNT_MAX})
    assert isinstance(command, Deposit)
    reordered = parse_command(
        dict(reversed(list({**GOOD, "amount": AMOUNT_MAX, "metadata": {"b": 1, "a": 2}}.items())))
    )
    same = parse_command({**GOOD, "amount": AMOUNT_MAX, "metadata": {"a": 2, "b": 1}})
    assert reordered.payload_hash() == same.payload_hash() != command.payload_hash()


def test_routing_is_stable_and_in_range() -> None:
    """Known values pin the hash: changing it would silently reroute every account."""
    assert stable_hash("alice") == 0x4DEAEC0CCE54DA89
    assert partition_for("alice", 4) == 0x4DEAEC0CCE54DA89 % 4
    spread = {partition_for(f"acct-{n}", 8) for n in range(200)}
    assert spread == set(range(8))
    # Same answer in a fresh interpreter (Python's hash() would differ per process).
    out = subprocess.run(
        [sys.executable, "-c", "from ledgerq.shared.routing import stable_hash; print(stable_hash('alice'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == stable_hash("alice")
    assert world_account("USD", 3) == "@world:USD:3"


def test_job_ids_are_valid_rq_ids_and_distinct() -> None:
    ids = {job_id(c) for c in ("a.b", "a:b", "a-b", "a_b")}
    assert len(ids) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)


def test_importing_the_api_does_not_load_the_worker() -> None:
    """Dependencies point one way: api → shared ← worker."""
    code = (
        "import sys, ledgerq.api.app, ledgerq.api.inprocess, ledgerq.ops.cli; "
        "print(any(m.startswith('ledgerq.worker') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = "import sys, ledgerq.worker.main; print(any(m.startswith('ledgerq.api') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_parts_import_only_what_the_layout_allows() -> None:
    """shared imports neither api, worker nor ops; api and worker never import each other or ops; the
    client nothing of ledgerq (read from the syntax tree, so every import form counts)."""
    root = Path(__file__).resolve().parents[2]
    forbidden = {
        "shared/ledgerq/shared": ("ledgerq.api", "ledgerq.worker", "ledgerq.ops"),
        "api/ledgerq/api": ("ledgerq.worker", "ledgerq.ops"),
        "worker/ledgerq/worker": ("ledgerq.api", "ledgerq.ops"),
        "api/client/ledgerq_client": ("ledgerq",),
    }
    found = []
    for folder, names in forbidden.items():
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                else:
                    continue
                bad = [m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names)]
                found += [f"{path.relative_to(root)}:{node.lineno}: {m}" for m in bad]
    assert found == []
