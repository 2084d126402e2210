"""A random workload over every command type on a cluster, every invariant checked at the end."""

import pytest

from tests.e2e.test_workload import test_random_workload_keeps_every_invariant  # noqa: F401

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def commands_n() -> int:
    """Half the single-Redis run's 2,000: the same mix, inside the CI budget."""
    return 1000
