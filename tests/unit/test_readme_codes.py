"""Every problem `code` the API can answer is in the README's code list."""

from __future__ import annotations

import re
from pathlib import Path

from ledgerq.shared.errors import LedgerError

ROOT = Path(__file__).resolve().parents[2]
# Codes recorded on commands or used inside the worker, never answered as a problem by the API.
OUTCOMES_ONLY = {
    "rejected",
    "insufficient_funds",
    "fenced",
    "lease_lost",
    "stopping",
    "invariant_violation",
    "ledger_error",
}


def error_codes() -> set[str]:
    found, todo = set(), [LedgerError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo += cls.__subclasses__()
    return found - OUTCOMES_ONLY


def literal_codes() -> set[str]:
    """Codes written as literals where the API builds problems by hand."""
    api = ROOT / "api" / "ledgerq" / "api"
    sources = [(api / "problems.py").read_text(), (api / "routes" / "ops.py").read_text()]
    found = set()
    for source in sources:
        found |= set(re.findall(r'problem\(\s*\d{3},\s*"([a-z_]+)"', source))
        found |= set(re.findall(r'\d{3}: "([a-z_]+)"', source))
        found |= set(re.findall(r'"\w+": "([a-z]+_unavailable)"', source))
    return found


def test_the_readme_lists_every_code_the_api_answers() -> None:
    table = (ROOT / "README.md").read_text().split("The codes the API answers:")[1].split("\n\n")[1]
    listed = set(re.findall(r"`([a-z_]+)`", table))
    answered = error_codes() | literal_codes()
    assert {"method_not_allowed", "unsupported_media_type", "not_ready", "redis_unavailable"} <= answered
    assert "database_unavailable" in answered
    assert answered - listed == set(), "codes the README does not list"
