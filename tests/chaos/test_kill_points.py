"""Workers SIGKILL themselves at each named fault point, over and over, while clients keep submitting.
A supervisor restarts them. Nothing acknowledged may be lost, doubled or reordered."""

from __future__ import annotations

import pytest

from tests.chaos.cluster import PARTITIONS, Cluster
from tests.chaos.workload import line, run

KILLS_MIN = 10


@pytest.mark.parametrize(
    ("point", "probability"), [("after_take", 0.04), ("before_commit", 0.04), ("after_commit", 0.04)]
)
def test_kill_minus_9_at_a_fault_point(cluster: Cluster, point: str, probability: float) -> None:
    for partition in range(PARTITIONS):
        cluster.add_worker([partition], LEDGERQ_FAULT_POINTS=f"{point}:{probability}")
    history, report = run(cluster, commands_min=2000, commands_max=8000, enough=lambda: cluster.kills() >= KILLS_MIN)
    print(line(f"kill -9 at {point}", history, report, cluster))
    assert cluster.kills() >= KILLS_MIN
    assert report.ok(), report.problems[:5]
    assert report.lost == report.duplicated == report.out_of_order == 0
