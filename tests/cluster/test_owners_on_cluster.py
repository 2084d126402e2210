"""Owners on a cluster: the epoch fences a stale owner, a dead owner's in-flight batch goes first, a
second worker waits for the lease, and claims whose job the cluster lost apply in acceptance order."""

from tests.integration.test_orphans import (  # noqa: F401
    client,
    fast,
    test_a_claim_younger_than_the_orphan_age_waits_for_its_job,
    test_a_lost_job_is_applied_in_acceptance_order_ahead_of_later_commands,
    test_a_whole_lost_queue_is_drained_from_the_claims_in_order,
    test_an_orphans_job_turning_up_later_is_a_replay,
    test_an_owner_already_serving_finds_a_lost_job_in_its_next_batch,
)
from tests.integration.test_worker import (  # noqa: F401
    test_a_dead_owners_inflight_batch_is_applied_first_and_in_order,
    test_a_second_worker_waits_while_the_first_owns_the_partition,
    test_replaying_an_applied_command_is_a_noop,
    test_stale_epoch_cannot_commit,
)
