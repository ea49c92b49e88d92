"""CPU time by process role, from /proc, for the benchmarks.

Jobs/s on a small shared machine moves with whatever else runs; the CPU
each part of the market spends per job does not, so the benchmarks report
both. Times come from /proc/PID/stat (readable even for the workers, which
make themselves non-dumpable): user + system of the process, plus that of
its reaped children (a fork server's job children, once reaped, count there).
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

#: role of a process, by a word of its command line (first match wins)
ROLES = (
    ("forkserver.py", "sandbox"),
    ("ledger.query_agent", "queries"),
    ("ledger.agent", "ledger"),
    ("agents.scheduler.agent", "scheduler"),
    ("celery", "celery"),
    ("worker", "workers"),
    ("beam.smp", "broker"),
)


def process_times(pid: int) -> tuple[int, float, float, int] | None:
    """(parent pid, its own CPU seconds, CPU seconds of its reaped children,
    their minor page faults) of a process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing paren
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return int(fields[1]), (utime + stime) / TICKS, (cutime + cstime) / TICKS, int(fields[8])


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    times = process_times(pid)
    return None if times is None else (times[0], times[1] + times[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def snapshot(root_pid: int, broker_word: str) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds) for the descendants of ``root_pid`` and the
    broker node whose command line holds ``broker_word``."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    ours, stack = {root_pid}, [root_pid]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, ()):
            if child not in ours:
                ours.add(child)
                stack.append(child)
    found = {}
    for pid, (_, seconds) in stats.items():
        command = _cmdline(pid)
        if pid in ours or ("beam.smp" in command and broker_word in command):
            role = "bench" if pid == root_pid else next((name for word, name in ROLES if word in command), "other")
            found[pid] = (role, seconds)
    return found


def by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent by each role between two snapshots (processes that
    started in between count from zero)."""
    spent = defaultdict(float)
    for pid, (role, seconds) in after.items():
        spent[role] += seconds - before.get(pid, (role, 0.0))[1]
    return dict(spent)
