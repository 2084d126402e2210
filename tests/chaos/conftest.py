from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.chaos.hosts import Network


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def network() -> Iterator[Network]:
    """Two bridges (the Redis and the Postgres network) that worker "hosts" (namespaces) join."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    net = Network()
    yield net
    net.close()
