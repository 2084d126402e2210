"""Group commit: rounds share a flush, keep each caller's order, and hand every item an outcome."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledgerq.api.group_commit import GroupCommit


class Recorder:
    """A flush that records its rounds; it can be held open to let callers pile up behind it."""

    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.entered.set()
        self.gate.wait()
        self.rounds.append(list(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def test_a_lone_caller_is_flushed_at_once_and_alone() -> None:
    flush = Recorder()
    rounds = GroupCommit(flush, max_batch=100)
    assert rounds.run([2]) == [20]
    assert flush.rounds == [[2]]


def test_callers_arriving_during_a_flush_share_the_next_round_in_order() -> None:
    flush = Recorder()
    rounds = GroupCommit(flush, max_batch=100)
    flush.gate.clear()
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(rounds.run, [0])
        assert flush.entered.wait(5)
        later = [pool.submit(rounds.run, [n, n + 100]) for n in range(2, 18, 2)]
        while len(rounds._pending) < 16:  # all eight callers queued behind the held flush
            time.sleep(0.001)
        flush.gate.set()
        assert first.result() == [0]
        assert [f.result() for f in later] == [[n * 10, (n + 100) * 10] for n in range(2, 18, 2)]
    assert flush.rounds[0] == [0]
    # Everyone who arrived during the first flush went in one second round, each caller's pair adjacent.
    assert len(flush.rounds) == 2 and len(flush.rounds[1]) == 16
    pairs = list(zip(flush.rounds[1][::2], flush.rounds[1][1::2], strict=True))
    assert all(b == a + 100 for a, b in pairs)


def test_per_item_errors_and_a_failed_round_reach_their_callers() -> None:
    rounds = GroupCommit(Recorder(), max_batch=100)
    ok, odd = rounds.run([4, 5])
    assert ok == 40 and isinstance(odd, ValueError)

    def broken(items: list[int]) -> list[int]:
        raise ConnectionError("postgres away")

    failing = GroupCommit(broken, max_batch=100)
    results = failing.run([1, 2, 3])
    assert all(isinstance(r, ConnectionError) for r in results)
    assert failing.run([]) == []


def test_max_batch_splits_rounds_without_reordering() -> None:
    flush = Recorder()
    rounds = GroupCommit(flush, max_batch=3)
    assert rounds.run([0, 2, 4, 6, 8, 10, 12]) == [0, 20, 40, 60, 80, 100, 120]
    assert flush.rounds == [[0, 2, 4], [6, 8, 10], [12]]


def test_async_callers_are_flushed_on_the_flush_thread_and_woken() -> None:
    flush = Recorder()
    rounds = GroupCommit(flush, max_batch=100)

    async def many() -> list[list[int | BaseException]]:
        return await asyncio.gather(*(rounds.run_async([n]) for n in range(0, 40, 2)))

    results = asyncio.run(many())
    rounds.close()
    assert results == [[n * 10] for n in range(0, 40, 2)]
    assert sum(len(r) for r in flush.rounds) == 20 and len(flush.rounds) < 20  # shared rounds
    assert sorted(i for r in flush.rounds for i in r) == list(range(0, 40, 2))


def test_sync_and_async_callers_mixed_are_all_served() -> None:
    """A thread flushing its own round hands what is left to the flush thread, so async waiters behind
    it are never stranded."""
    flush = Recorder()
    rounds = GroupCommit(flush, max_batch=2)
    flush.gate.clear()
    results: dict[str, object] = {}

    def sync_caller() -> None:
        results["sync"] = rounds.run([100])

    thread = threading.Thread(target=sync_caller)
    thread.start()
    assert flush.entered.wait(5)

    async def waiters() -> list[list[int | BaseException]]:
        pending = [asyncio.ensure_future(rounds.run_async([n])) for n in range(0, 10, 2)]
        await asyncio.sleep(0.05)
        flush.gate.set()
        return await asyncio.gather(*pending)

    results["async"] = asyncio.run(waiters())
    thread.join(5)
    rounds.close()
    assert results["sync"] == [1000]
    assert results["async"] == [[n * 10] for n in range(0, 10, 2)]


def test_an_interrupted_flusher_gives_its_round_back() -> None:
    calls: list[list[int]] = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return items

    rounds = GroupCommit(flaky, max_batch=100)
    with pytest.raises(KeyboardInterrupt):
        rounds.run([1, 2])
    # The round went back to the head of the queue and was flushed again by the flush thread.
    for _ in range(200):
        if len(calls) == 2:
            break
        time.sleep(0.01)
    rounds.close()
    assert calls == [[1, 2], [1, 2]]
