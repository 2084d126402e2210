from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.chaos.workload import RESULTS

    if RESULTS:
        terminalreporter.section("chaos results")
        for text in RESULTS:
            terminalreporter.write_line(text)
