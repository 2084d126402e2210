"""Group commit: callers that arrive while a flush is running share the next flush.

The first caller with nothing in flight starts a flush at once, alone: no
added wait when the load is light. Under load, everyone who arrived during a
flush is flushed together in the next round, so one fsynced transaction and
one Redis round trip serve many callers. One flush runs at a time per
instance, rounds take callers in arrival order, and one caller's items stay
together and in order.

Two doors: `run` for threads (the caller flushes rounds itself until its own
items are done) and `run_async` for the event loop (a round runs on this
instance's flush thread and wakes the awaiting coroutines; no thread is held
per waiting request). Work left pending when a flusher's own items are done
is handed to the flush thread, so nothing waits for a caller that never
comes.

`flush` gets a list of items and returns one result per item, in order; a
result may be an exception instance (that item failed). If `flush` raises,
every item of that round gets the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class _Ticket(Generic[In, Out]):
    __slots__ = ("done", "item", "loop", "on_done", "result")

    def __init__(self, item: In) -> None:
        self.item = item
        self.result: Out | BaseException | None = None
        self.done = False
        self.on_done: Callable[[], None] | None = None  # run on `loop` once the ticket is done
        self.loop: asyncio.AbstractEventLoop | None = None


class GroupCommit(Generic[In, Out]):
    def __init__(self, flush: Callable[[list[In]], Sequence[Out | BaseException]], max_batch: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Ticket[In, Out]] = []
        self._flushing = False
        self._executor: ThreadPoolExecutor | None = None
        self.rounds = 0  # flushes run, for the benchmark's round-size figure
        self.items = 0

    def run(self, items: Sequence[In]) -> list[Out | BaseException]:
        """Flush `items` (with whatever else is waiting) and return their results in order."""
        if not items:
            return []
        tickets = [_Ticket[In, Out](item) for item in items]
        with self._cond:
            self._pending.extend(tickets)
            while self._flushing and not tickets[-1].done:
                self._cond.wait()
            if tickets[-1].done:  # tickets are flushed in order, so the last one done means all
                return [t.result for t in tickets]  # type: ignore[misc]
            self._flushing = True  # this thread flushes until its own items are done
        while not tickets[-1].done:
            if not self._one_round():
                break
        with self._cond:
            self._hand_off()
        return [t.result for t in tickets]  # type: ignore[misc]

    async def run_async(self, items: Sequence[In]) -> list[Out | BaseException]:
        """`run` for coroutines: await the results without holding a thread."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        tickets = [_Ticket[In, Out](item) for item in items]

        def wake() -> None:
            if not finished.done():
                finished.set_result(None)

        tickets[-1].on_done, tickets[-1].loop = wake, loop
        with self._cond:
            self._pending.extend(tickets)
            if not self._flushing:
                self._flushing = True
                self._flush_thread().submit(self._drain)
        await finished
        return [t.result for t in tickets]  # type: ignore[misc]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # -- rounds ------------------------------------------------------------------------------------

    def _drain(self) -> None:
        """On the flush thread: run rounds until nothing is pending (checked and stood down atomically,
        so a caller that saw `_flushing` and left its items pending is always served)."""
        while True:
            with self._cond:
                if not self._pending:
                    self._flushing = False
                    self._cond.notify_all()
                    return
            self._one_round()

    def _hand_off(self) -> None:
        """Called with the lock held by a flusher that is done: pass pending work on, or stand down."""
        if self._pending:
            self._flush_thread().submit(self._drain)
        else:
            self._flushing = False
        self._cond.notify_all()

    def _one_round(self) -> bool:
        """Flush the next batch; False if nothing was pending."""
        with self._cond:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        if not batch:
            return False
        self.rounds += 1
        self.items += len(batch)
        try:
            results: Sequence[Out | BaseException] = self._flush([t.item for t in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # handed to every caller of the round, who re-raises it
            results = [exc] * len(batch)
        except BaseException:  # the flushing thread is being interrupted: give the round back, in order
            with self._cond:
                self._pending[:0] = batch
                self._hand_off()
            raise
        wakes: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
        for ticket, result in zip(batch, results, strict=True):
            ticket.result = result
            ticket.done = True
            if ticket.on_done is not None and ticket.loop is not None:
                wakes.setdefault(ticket.loop, []).append(ticket.on_done)
        for loop, callbacks in wakes.items():  # one cross-thread wake-up per loop and round, not per caller
            _call_soon(loop, partial(_run_all, callbacks))
        with self._cond:
            self._cond.notify_all()
        return True

    def _flush_thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        return self._executor


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: its caller is gone, the outcome stands
        loop.call_soon_threadsafe(callback)
