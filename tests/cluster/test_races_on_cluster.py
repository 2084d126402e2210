"""Races through a real `ledgerq api` process on a cluster: holds reserving what is there, a capture
and a void for one hold, identical and rival submits of one id."""

from tests.e2e.test_races import (  # noqa: F401
    api_url,
    client,
    module_pool,
    pool,
    test_a_capture_and_a_void_racing_for_one_hold_exactly_one_wins,
    test_identical_submits_of_one_capture_are_one_202_and_replays_applied_once,
    test_racing_equal_holds_reserve_exactly_what_is_there,
    test_rival_payloads_for_one_id_are_one_202_replays_of_it_and_409s,
)
