from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """PostgreSQL, Redis and `ledgerq api` as real processes; workers are the test's to start."""
    running = Cluster(tmp_path)
    running.start_api()
    yield running
    running.close()
