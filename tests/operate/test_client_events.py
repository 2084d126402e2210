"""`events()` on the sync, async and in-process clients against a live `ledgerq api` process and worker:
every event once, in id order, each request resuming from the previous answer's `next_after_id`;
a reader that stops anywhere (mid-page too) and resumes from its last `event.id` sees the rest, none
twice; following, it long-polls through empty rounds for events that come later."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import httpx
import pytest

import ledgerq_client as remote
from ledgerq.api.inprocess import InProcessClient
from ledgerq.shared import errors as server_errors
from ledgerq_client import AsyncLedgerqClient, Event, LedgerqClient, RetryPolicy
from tests.chaos.cluster import Cluster
from tests.conftest import uid

FAST = RetryPolicy(attempts_max=6, backoff_s_initial=0.01, backoff_s_max=0.2, total_s_max=20)
# A bound on a reader that should have seen everything long before: a bug fails the test, not hangs it.
BOUND_S = 120
T = TypeVar("T")
REFUSED_QUERIES: list[dict[str, Any]] = [{"limit": 0}, {"limit": 1001}, {"wait_s": 31}, {"after_id": -1}]


class Outcome(Protocol):
    """An event as either door answers it (`ledgerq_client.Event`, the server's `EventOut`)."""

    @property
    def id(self) -> int: ...
    @property
    def command_id(self) -> str: ...


E = TypeVar("E", bound=Outcome)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("events"))
    running.start_api()
    running.add_worker([])
    yield running
    running.close()


class Pages:
    """What each `GET /v1/events` asked (`after_id`, `wait`) and was answered (`next_after_id`, how many)."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, float]] = []
        self.answered: list[tuple[int, int]] = []

    def record(self, request: httpx.Request, response: httpx.Response) -> None:
        if request.url.path == "/v1/events" and response.status_code == 200:
            body = json.loads(response.content)
            self.asked.append((int(request.url.params["after_id"]), float(request.url.params["wait"])))
            self.answered.append((body["next_after_id"], len(body["events"])))

    def resumed_exactly(self, after_id: int) -> bool:
        """Each request after the first asked from where the one before said to resume."""
        return [a for a, _ in self.asked] == [after_id, *(n for n, _ in self.answered[:-1])]


class Recording(httpx.BaseTransport):
    def __init__(self, pages: Pages) -> None:
        self.inner, self.pages = httpx.HTTPTransport(), pages

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.pages.record(request, response)
        return response


class AsyncRecording(httpx.AsyncBaseTransport):
    def __init__(self, pages: Pages) -> None:
        self.inner, self.pages = httpx.AsyncHTTPTransport(), pages

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.pages.record(request, response)
        return response


def bounded(work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in a thread, failing the test if it has not returned within BOUND_S."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(work(*args)), daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert out, f"no result within {BOUND_S} s (or it raised: see the thread's traceback)"
    return out[0]


def until_seen(events: Iterable[E], wanted: set[str]) -> list[E]:
    """Every event the iterator yields until each command id in `wanted` has had one."""
    seen: list[E] = []
    left = set(wanted)
    for event in events:
        seen.append(event)
        left.discard(event.command_id)
        if not left:
            return seen
    raise AssertionError(f"the iterator ended before events of {sorted(left)}")


async def until_seen_async(events: AsyncIterator[Event], wanted: set[str]) -> list[Event]:
    seen: list[Event] = []
    left = set(wanted)
    async for event in events:
        seen.append(event)
        left.discard(event.command_id)
        if not left:
            return seen
    raise AssertionError(f"the iterator ended before events of {sorted(left)}")


def head(ledger: LedgerqClient) -> int:
    """The id a reader starting now resumes after."""
    return max((e.id for e in ledger.events(follow=False, limit=1000)), default=0)


def outcomes(ledger: LedgerqClient, n: int) -> tuple[str, list[str]]:
    """An account, and the ids of `n` final commands on it: deposits applied, then one withdrawal rejected."""
    account = uid("ev")
    ledger.create_account(account, "USD")
    ids = [ledger.submit("deposit", account, 10 + i, "USD").id for i in range(n - 1)]
    ids.append(ledger.submit("withdraw", account, 10**9, "USD").id)
    for command_id in ids:
        assert ledger.wait(command_id, timeout_s=30).final
    return account, ids


def ordered_once(events: list[Event]) -> bool:
    return all(a.id < b.id for a, b in itertools.pairwise(events))


def test_pages_in_order_each_once_resuming_from_next_after_id(live: Cluster) -> None:
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        start = head(ledger)
        account, ids = outcomes(ledger, 12)
    pages = Pages()
    with LedgerqClient(live.url, live.key, retry=FAST, transport=Recording(pages)) as reader:
        seen = bounded(until_seen, reader.events(after_id=start, limit=5, wait_s=1), set(ids))
    ours = [e for e in seen if e.command_id in ids]
    assert [e.command_id for e in ours] == ids and ordered_once(seen)
    assert [e.type for e in ours] == ["command.applied"] * 11 + ["command.rejected"]
    applied = ours[0]
    assert applied.accounts == [account] and applied.data["status"] == "applied" and applied.at.tzinfo is not None
    assert ours[-1].data["error"]["code"] == "insufficient_funds"
    assert len(pages.asked) >= 3 and pages.resumed_exactly(start)  # 12 events, 5 a page
    assert {wait for _, wait in pages.asked} == {1.0}


def test_a_reader_that_stops_mid_page_resumes_from_its_last_event_id(live: Cluster) -> None:
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        start = head(ledger)
        _, ids = outcomes(ledger, 9)
        everything = bounded(until_seen, ledger.events(after_id=start, wait_s=1), set(ids))
        for stop_after in (1, 3, 4, 8):  # 4 a page: inside one, and at one's end
            first = bounded(until_seen, ledger.events(after_id=start, limit=4, wait_s=1), {ids[stop_after - 1]})
            rest = bounded(until_seen, ledger.events(after_id=first[-1].id, limit=4, wait_s=1), {ids[-1]})
            assert first + rest == everything, stop_after
        caught_up = list(ledger.events(after_id=everything[-1].id, follow=False))
    assert caught_up == [] and [e.command_id for e in everything if e.command_id in ids] == ids


def test_following_long_polls_through_empty_rounds_for_events_that_come_later(live: Cluster) -> None:
    """The reader starts first and finds nothing (a round ends empty after its `wait`); the commands
    submitted afterwards reach it, each once."""
    pages = Pages()
    with (
        LedgerqClient(live.url, live.key, retry=FAST, transport=Recording(pages)) as reader,
        LedgerqClient(live.url, live.key, retry=FAST) as writer,
    ):
        start = head(writer)
        account = uid("later")
        writer.create_account(account, "USD")
        ids = [f"later-{account}-{i}" for i in range(4)]
        found: list[list[Event]] = []
        thread = threading.Thread(
            target=lambda: found.append(until_seen(reader.events(after_id=start, wait_s=0.5), set(ids))), daemon=True
        )
        thread.start()
        for _ in range(BOUND_S * 20):  # until the reader has come back from one empty round
            if any(n == 0 for _, n in pages.answered) or not thread.is_alive():
                break
            time.sleep(0.05)
        assert pages.answered and pages.answered[0][1] == 0, pages.answered
        for command_id in ids:
            writer.wait(writer.submit("deposit", account, 1, "USD", id=command_id).id, timeout_s=30)
        thread.join(BOUND_S)
    assert found, "the reader did not see every command"
    assert [e.command_id for e in found[0] if e.command_id in ids] == ids and ordered_once(found[0])
    assert pages.resumed_exactly(start)


def test_follow_false_reads_up_to_now_then_ends(live: Cluster) -> None:
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        start = head(ledger)
        _, ids = outcomes(ledger, 3)
        seen = bounded(until_seen, ledger.events(after_id=start, wait_s=1), set(ids))
        pages = Pages()
        with LedgerqClient(live.url, live.key, retry=FAST, transport=Recording(pages)) as counted:
            again = list(counted.events(after_id=start, limit=2, follow=False))
        # 3 events at 2 a page: a full page, then a short one ends it, each asked with wait 0.
        assert again == seen and pages.asked == [(start, 0.0), (seen[1].id, 0.0)]
        assert list(ledger.events(after_id=seen[-1].id, follow=False)) == []


def test_the_async_client_follows_and_resumes_the_same_way(live: Cluster) -> None:
    pages = Pages()

    async def scenario() -> tuple[int, list[str], list[Event], list[Event], list[Event]]:
        async with AsyncLedgerqClient(live.url, live.key, retry=FAST, transport=AsyncRecording(pages)) as ledger:
            start = max([e.id async for e in ledger.events(follow=False, limit=1000)], default=0)
            account = uid("aev")
            await ledger.create_account(account, "USD")
            ids = [f"aev-{account}-{i}" for i in range(6)]
            reader = asyncio.create_task(until_seen_async(ledger.events(after_id=start, limit=4, wait_s=1), set(ids)))
            for _ in range(BOUND_S * 20):  # until the reader has come back from one empty round
                if any(n == 0 for _, n in pages.answered[1:]) or reader.done():
                    break
                await asyncio.sleep(0.05)
            for command_id in ids:
                await ledger.wait((await ledger.submit("deposit", account, 2, "USD", id=command_id)).id, timeout_s=30)
            everything = await asyncio.wait_for(reader, BOUND_S)
            head_part = await until_seen_async(ledger.events(after_id=start, limit=4, wait_s=1), {ids[2]})
            rest = await asyncio.wait_for(
                until_seen_async(ledger.events(after_id=head_part[-1].id, wait_s=1), {ids[-1]}), BOUND_S
            )
            return start, ids, everything, head_part, rest

    start, ids, everything, head_part, rest = asyncio.run(scenario())
    assert [e.command_id for e in everything if e.command_id in ids] == ids and ordered_once(everything)
    assert head_part + rest == everything
    assert pages.asked[1] == (start, 1.0) and pages.answered[1][1] == 0  # an empty round, then on


def test_a_refused_query_raises_the_typed_error_on_the_first_step(live: Cluster) -> None:
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        for refused in REFUSED_QUERIES:
            with pytest.raises(remote.InvalidRequest) as error:
                next(ledger.events(**refused))
            assert error.value.status == 400, refused
    with LedgerqClient(live.url, "lq_not_a_key", retry=FAST) as stranger, pytest.raises(remote.Unauthorized):
        next(stranger.events())


def test_the_in_process_door_reads_the_same_events(live: Cluster) -> None:
    """`InProcessClient.events`: the same events, fields and order as over HTTP; its refusals are its own."""
    with LedgerqClient(live.url, live.key, retry=FAST) as ledger:
        start = head(ledger)
        _, ids = outcomes(ledger, 5)
        over_http = bounded(until_seen, ledger.events(after_id=start, wait_s=1), set(ids))
    with InProcessClient(live.settings) as local:
        here = until_seen(local.events(after_id=start, limit=3, wait_s=1), set(ids))
        assert [dataclasses.asdict(e) for e in over_http] == [e.model_dump() for e in here]
        assert list(local.events(after_id=here[-1].id, follow=False)) == []
        for refused in REFUSED_QUERIES:
            with pytest.raises(server_errors.InvalidRequest):
                next(local.events(**refused))
