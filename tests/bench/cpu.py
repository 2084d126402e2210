"""CPU seconds of whole process trees (a process, its living descendants and the children it has
reaped), read from /proc: Postgres' backends come and go, and their time lands in the postmaster's
cutime/cstime when they exit, so nothing a door costs escapes the count."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) * TICK_S


def tree_cpu_s(roots: list[int]) -> float:
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, seen, todo = 0.0, set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children[pid]
    return total


def self_cpu_s() -> float:
    """This process (every thread), without its child processes (they are counted as their roles)."""
    times = os.times()
    return times.user + times.system


class CpuMeter:
    """CPU seconds per role between `start` and `stop`; roles are named process trees, plus `client`
    (this process)."""

    def __init__(self, roles: Mapping[str, list[int]]) -> None:
        self.roles = dict(roles)
        self.before: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        return {"client": self_cpu_s(), **{role: tree_cpu_s(pids) for role, pids in self.roles.items()}}

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> dict[str, float]:
        after = self.read()
        return {role: max(0.0, after[role] - self.before.get(role, 0.0)) for role in after}
