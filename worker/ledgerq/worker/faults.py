"""Named fault points for the chaos suite: the worker kills (or freezes) itself at a chosen step.

Read once from `LEDGERQ_FAULT_POINTS`, which only the tests set, e.g.
`before_commit:0.05,after_take:0.02` (point:probability per batch), or
`before_commit:stop:1` to SIGSTOP instead of SIGKILL. Unset, every hit is a no-op.

`LEDGERQ_FAULT_POISON_PREFIX=poison-` makes applying any command whose id starts so raise.

Points:
- `after_take`: jobs moved in flight, nothing applied.
- `before_commit`: entries, balances and outcomes written, transaction not committed.
- `after_commit`: committed in Postgres, jobs not yet completed in Redis.
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass

POINTS = ("after_take", "before_commit", "after_commit")


@dataclass(frozen=True, slots=True)
class Fault:
    probability: float
    signal: int


def _parse(spec: str) -> dict[str, Fault]:
    faults: dict[str, Fault] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fields = item.split(":")
        point, probability = fields[0], float(fields[-1])
        if point not in POINTS or not 0 <= probability <= 1:
            raise ValueError(f"bad fault point {item!r}; points are {', '.join(POINTS)}")
        kind = signal.SIGSTOP if len(fields) == 3 and fields[1] == "stop" else signal.SIGKILL
        faults[point] = Fault(probability, kind)
    return faults


_FAULTS = _parse(os.environ.get("LEDGERQ_FAULT_POINTS", ""))
_RANDOM = random.Random()
# Commands whose id starts with this raise inside the apply step, as a bug would.
_POISON_PREFIX = os.environ.get("LEDGERQ_FAULT_POISON_PREFIX", "")


def hit(point: str) -> None:
    fault = _FAULTS.get(point)
    if fault is not None and _RANDOM.random() < fault.probability:
        os.kill(os.getpid(), fault.signal)


def check_poison(command_id: str) -> None:
    if _POISON_PREFIX and command_id.startswith(_POISON_PREFIX):
        raise RuntimeError(f"injected fault: command {command_id} is poisoned")
