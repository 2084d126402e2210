"""Accepting commands on a cluster: idempotency (one job for 32 racing submits), conflicts, a claim
without a job healed by the retry, back-pressure, refusals at the door, multi-leg transactions."""

from tests.e2e.test_submit import (  # noqa: F401 - collected here, run on the cluster's fixtures
    account,
    test_32_racing_identical_submits_enqueue_once,
    test_a_claim_without_a_job_heals_on_retry,
    test_a_full_partition_queue_pushes_back_with_503,
    test_bad_inputs_are_refused_with_problem_json_and_nothing_enqueued,
    test_replay_after_rq_job_expired_does_not_enqueue_again,
    test_same_id_other_payload_is_a_conflict,
)
from tests.e2e.test_transactions import (  # noqa: F401
    test_a_marketplace_split_is_posted_whole,
    test_one_uncovered_debit_refuses_every_leg,
    test_refusals_at_the_door_claim_nothing,
)
