"""Progress of long commands: a rich progress bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

Report = Callable[[str, int, int], None]


def is_terminal() -> bool:
    """Whether stdout is a terminal, as rich decides (it honours FORCE_COLOR and TTY_COMPATIBLE)."""
    return Console().is_terminal


@contextlib.contextmanager
def progress_reporter(label: str) -> Iterator[Report]:
    """Yield `report(what, done, total)`: a bar per `what` on a terminal, else one line per call."""
    if not is_terminal():

        def plain(what: str, done: int, total: int) -> None:
            percent = 100 if total == 0 else done * 100 // total
            print(f"{label}: {what} {done}/{total} ({percent}%)", file=sys.stdout, flush=True)

        yield plain
        return
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield report
